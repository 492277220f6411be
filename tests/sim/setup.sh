#!/usr/bin/env bash
# Creates <repo>/.venv with the simulator's pinned requirements.
# Idempotent: does nothing (and prints nothing) when the venv matches requirements.txt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv"
req="$here/requirements.txt"
stamp="$venv/.sim-requirements.sha256"

want="$( { sha256sum "$req" | cut -d' ' -f1; python3 -c 'import sys; print(sys.version_info[:2])'; } | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

echo "setting up $venv from tests/sim/requirements.txt" >&2
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
echo "$want" > "$stamp"
