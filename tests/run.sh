#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, builds once with the one
# dev profile, checks formatting and lints, then runs every Rust test with nextest and the
# simulator's own smoke tests, the infrastructure-as-code checks and a bounded fuzz run.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Optional shells the bootstrap is also tested under; their tests say so and skip when absent.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! { command -v dash && command -v busybox; } >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq dash busybox) >/dev/null 2>&1 || echo "note: dash/busybox not installed; those bootstrap variants will be skipped" >&2
fi

bash tests/sim/setup.sh

cargo fmt --all -- --check
# One build of everything (binaries included: the e2e tests drive the real executor).
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace --no-fail-fast

.venv/bin/python -m pytest tests/sim/smoke -q

# The CloudFormation template: cfn-lint, checkov, and a deployment into the simulator.
bash tests/infra.sh

# Bounded fuzzing of the parsers and writers that take job-controlled input: 15 s per target
# from the committed seeds (the build is the long part; `tests/fuzz.sh 600` fuzzes for longer).
bash tests/fuzz.sh 15
