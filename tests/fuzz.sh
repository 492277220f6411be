#!/usr/bin/env bash
# Fuzzes the parsers and writers that take job-controlled input (fuzz/README.md): installs a
# pinned cargo-fuzz into <repo>/.tools (idempotent; a no-op when present), builds the four
# targets with libFuzzer and AddressSanitizer, and runs each for a bounded time from its
# committed seeds. Any crash, leak or failed property fails the script, and libFuzzer leaves the
# input that did it in fuzz/artifacts/<target>/.
#
#   tests/fuzz.sh [seconds per target, default 30] [target ...]
#
# The toolchain here is stable: cargo-fuzz needs nightly's -Z flags (sanitizers, coverage
# instrumentation), which RUSTC_BOOTSTRAP=1 unlocks on a stable rustc.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(spec_parser settings_resolver dotenv_writer tar_extractor)
fi

cargo_fuzz_version=0.13.1
tools="$repo/.tools"
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version" --root "$tools"
fi

export RUSTC_BOOTSTRAP=1
fuzz=("$tools/bin/cargo-fuzz")
# All targets in one build (one cargo invocation shares the dependency graph); `run` below
# then finds them built. `--dev` (unoptimised, still with coverage instrumentation and
# AddressSanitizer): cargo-fuzz's default release build compiles every AWS SDK crate the core
# links at opt-level 3 with one codegen unit and ASan, which took ~25 min here and was killed
# for memory on aws-sdk-ec2; the targets themselves run fast enough unoptimised.
"${fuzz[@]}" build --fuzz-dir fuzz --dev
status=0
for target in "${targets[@]}"; do
    work="fuzz/corpus/$target"
    mkdir -p "$work" "fuzz/artifacts/$target"
    start=$(date +%s)
    # The committed seeds are read, never written; new inputs go to the ignored work corpus.
    if "${fuzz[@]}" run --fuzz-dir fuzz --dev "$target" "$work" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"fuzz/artifacts/$target/log.txt" 2>&1; then
        echo "fuzz: $target: ok after $(($(date +%s) - start)) s ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/artifacts/$target/log.txt" | grep -o '[0-9]*$') runs)"
    else
        status=1
        echo "fuzz: $target: FAILED; the log is fuzz/artifacts/$target/log.txt:" >&2
        grep -E 'ERROR|panicked|SUMMARY|Test unit written' "fuzz/artifacts/$target/log.txt" | head -n 20 >&2
    fi
done
exit "$status"
