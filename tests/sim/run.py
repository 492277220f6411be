#!/usr/bin/env python3
"""Start the AWS simulator. Run with the repo's venv (tests/sim/setup.sh creates it):

    <repo>/.venv/bin/python <repo>/tests/sim/run.py --port 0 [--host 127.0.0.1] [--hide PATH]...
        [--stop-grace SECONDS] [--exit-on-stdin-eof] [--state-dir DIR]

Prints exactly one line "SIM_READY http://127.0.0.1:<port>" on stdout once it answers HTTP.
See tests/README.md, section "Simulator".
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from simulator.server import main  # noqa: E402

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # don't wait for (or trip over) background threads at interpreter exit
