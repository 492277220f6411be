#!/usr/bin/env python3
"""Benchmark (not a test): what the executor adds to a local stage and to `config`.

Target: median added wall time <= 5 ms for `config` and <= 3 ms for a local `run` stage over
running the same script with bash; both are measured with the full binary and with
`sagemaker-executor-run`, the small binary installed as the runner's config_exec and run_exec. Runs each
command --runs times (after a warm-up) and prints medians for BENCHMARKS.md.

Usage: python3 tests/bench/local_overhead.py [--runs 200] [--exe target/release/sagemaker-executor]
"""
import argparse, json, os, statistics, subprocess, tempfile, time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def timed(cmds, env, runs):
    """Median wall time (ms) of each command, the runs interleaved (one of each per round), so a
    drift of the machine (frequency, other load) weighs on every command alike."""
    def once(cmd):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return (time.perf_counter() - t) * 1000
    for cmd in cmds.values():
        for _ in range(5):
            once(cmd)
    out = {name: [] for name in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            out[name].append(once(cmd))
    return {name: statistics.median(v) for name, v in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--exe", default=os.path.join(REPO, "target", "debug", "sagemaker-executor"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sme-local-")
    cfg = os.path.join(work, "executor.toml")
    with open(cfg, "w") as f:
        f.write(f'region = "us-east-1"\n[paths]\nbuilds_root = "{work}/builds"\ncache_root = "{work}/cache"\n[staging]\nbucket = "b-bench"\n')
    resp = os.path.join(work, "response.json")
    with open(resp, "w") as f:
        json.dump({"id": 1, "job_info": {"project_id": 1, "project_full_path": "g/p"},
                   "variables": [{"key": f"VAR_{i}", "value": "x" * 40} for i in range(100)]}, f)
    script = os.path.join(work, "script")
    with open(script, "w") as f:
        f.write("#!/usr/bin/env bash\nset -eo pipefail\necho 'Running on host'\n")
    env = dict(os.environ, JOB_RESPONSE_FILE=resp, BUILD_EXIT_CODE_FILE=os.path.join(work, "code"), TMPDIR=work)
    # The runner's config_exec and run_exec as installed: the small binary beside the full one.
    small = os.path.join(os.path.dirname(a.exe), "sagemaker-executor-run")
    cmds = {
        "bash": ["bash", script],
        "run": [a.exe, "--config", cfg, "run", script, "prepare_script"],
        "config": [a.exe, "--config", cfg, "config"],
        "true": ["true"],
    }
    if os.access(small, os.X_OK):
        cmds["run_small"] = [small, "--config", cfg, "run", script, "prepare_script"]
        cmds["config_small"] = [small, "--config", cfg, "config"]
    t = timed(cmds, env, a.runs)
    bash, run, config, true = t["bash"], t["run"], t["config"], t["true"]
    run_small, config_small = t.get("run_small"), t.get("config_small")
    print(f"| binary | {os.path.relpath(a.exe, REPO)} ({a.runs} runs each, interleaved, medians) |")
    print("|---|---|")
    print(f"| `bash script` | {bash:.2f} ms |")
    print(f"| `run <script> prepare_script` (full binary) | {run:.2f} ms (added: {run - bash:.2f} ms) |")
    if run_small is not None:
        print(f"| `run <script> prepare_script` (`sagemaker-executor-run`, the run_exec) | {run_small:.2f} ms "
              f"(added: {run_small - bash:.2f} ms) |")
    print(f"| `config` (full binary) | {config:.2f} ms (over spawning `true`: {config - true:.2f} ms) |")
    if config_small is not None:
        print(f"| `config` (`sagemaker-executor-run`, the config_exec) | {config_small:.2f} ms "
              f"(over spawning `true`: {config_small - true:.2f} ms) |")


if __name__ == "__main__":
    main()
