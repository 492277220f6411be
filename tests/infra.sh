#!/usr/bin/env bash
# The infrastructure-as-code checks for runner-setup/cloudformation/sagemaker-executor.yaml:
#   1. cfn-lint     (any finding fails; a rule that is wrong for this template is ignored
#                    in the template itself, Metadata: cfn-lint: config: ignore_checks)
#   2. checkov      (any failed check fails; skips live in the template with their reason)
#   3. pytest tests/infra: the template deployed into the AWS simulator (moto CloudFormation)
# Linters come from <repo>/.venv-infra (tests/infra/requirements.txt, pinned), the simulator from
# <repo>/.venv (tests/sim/setup.sh). Both are set up on first use and left alone afterwards while
# their requirements are unchanged, so a second run only runs the checks. Works offline once set up.
#   bash tests/infra.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
template="$repo/runner-setup/cloudformation/sagemaker-executor.yaml"
venv="$repo/.venv-infra"
req="$here/infra/requirements.txt"
stamp="$venv/.infra-requirements.sha256"

step() { printf '\n== %s\n' "$*" >&2; }
t0=$SECONDS

want="$( { sha256sum "$req" | cut -d' ' -f1; python3 -c 'import sys; print(sys.version_info[:2])'; } | sha256sum | cut -d' ' -f1)"
if ! { [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
    step "setting up $venv from tests/infra/requirements.txt"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
    printf '*\n' > "$venv/.gitignore"   # a build artifact, like .venv
    echo "$want" > "$stamp"
fi
bash "$repo/tests/sim/setup.sh"

step "cfn-lint $(basename "$template")"
"$venv/bin/cfn-lint" --format parseable -- "$template"
echo "cfn-lint: no findings" >&2

step "checkov -f $(basename "$template") --framework cloudformation"
# Offline: no policy-metadata download from the Prisma Cloud API (it is not needed for local checks).
BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false \
    "$venv/bin/checkov" -f "$template" --framework cloudformation --quiet --compact \
    --skip-download

step "pytest tests/infra (the template in the AWS simulator)"
cd "$repo"
"$repo/.venv/bin/python" -m pytest tests/infra -q -p no:cacheprovider

printf '\ninfra checks passed in %ss\n' "$((SECONDS - t0))" >&2
