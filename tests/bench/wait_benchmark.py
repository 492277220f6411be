#!/usr/bin/env python3
"""Benchmark (not a test): one executor `run` stage waiting on a long training job.

Starts the simulator, drives `sagemaker-executor run <script> build_script` exactly as the
runner would (JOB_RESPONSE_FILE, CUSTOM_ENV_CI_PROJECT_DIR, BUILD_EXIT_CODE_FILE), with a
training script that prints a wall-clock timestamp every second for --minutes. Measures:
  * the executor's peak and median RSS and its CPU share (from /proc, sampled every second),
  * AWS calls per minute at steady state (from the simulator's call log, after the first minute),
  * log latency: receipt time of each line on the executor's stdout minus the timestamp the
    training script printed (p50 / p95 / max).
Prints a Markdown table for BENCHMARKS.md.

Usage: .venv/bin/python tests/bench/wait_benchmark.py [--minutes 4] [--log-interval 5s] [--describe-interval 30s] [--exe target/release/sagemaker-executor]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, threading, time, urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXE = os.path.join(REPO, "target", "debug", "sagemaker-executor")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def start_sim(hide):
    p = subprocess.Popen([os.path.join(REPO, ".venv/bin/python"), os.path.join(REPO, "tests/sim/run.py"),
                          "--port", "0", "--exit-on-stdin-eof", "--hide", hide],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("SIM_READY "):
        sys.exit("simulator did not start")
    return p, line.split()[1]


def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    cpu = (int(parts[11]) + int(parts[12])) / TICKS
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    return cpu, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--log-interval", default="5s")
    ap.add_argument("--describe-interval", default="30s")
    ap.add_argument("--exe", default=EXE, help="the executor binary (default: the debug build)")
    a = ap.parse_args()
    exe_path = a.exe
    if not os.access(exe_path, os.X_OK):
        sys.exit("build first: cargo build --workspace --bins")
    work = tempfile.mkdtemp(prefix="sme-bench-")
    builds = os.path.join(work, "builds")
    project = os.path.join(builds, "77", "ml", "bench")
    os.makedirs(project)
    with open(os.path.join(project, "README.md"), "w") as f:
        f.write("bench\n")
    sim, endpoint = start_sim(builds)
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="b",
               AWS_SECRET_ACCESS_KEY="b", AWS_EC2_METADATA_DISABLED="true")
    import boto3  # from the simulator's venv
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="b",
                 aws_secret_access_key="b").create_bucket(Bucket="bench-staging")
    cfg = os.path.join(work, "executor.toml")
    with open(cfg, "w") as f:
        f.write(f'region = "us-east-1"\n[paths]\nbuilds_root = "{builds}"\ncache_root = "{work}/cache"\n'
                f'[staging]\nbucket = "bench-staging"\n[train]\nrole_arn = "arn:aws:iam::123456789012:role/B"\n'
                f'max_runtime = "2h"\nlog_interval = "{a.log_interval}"\ndescribe_interval = "{a.describe_interval}"\n')
    seconds = int(a.minutes * 60)
    resp = os.path.join(work, "response.json")
    with open(resp, "w") as f:
        json.dump({"id": 77, "job_info": {"name": "bench", "project_id": 5, "project_full_path": "ml/bench", "pipeline_id": 1},
                   "git_info": {"ref": "main", "sha": "abc"}, "runner_info": {"timeout": 7200},
                   "variables": [], "image": {"name": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/t:1"}}, f)
    script = os.path.join(work, "script")
    with open(script, "w") as f:
        f.write(f"#!/usr/bin/env bash\nfor i in $(seq 1 {seconds}); do echo \"tick $(date +%s.%N)\"; sleep 1; done\n")
    env.update(JOB_RESPONSE_FILE=resp, CUSTOM_ENV_CI_PROJECT_DIR=project, BUILD_EXIT_CODE_FILE=os.path.join(work, "code"))
    t0 = time.time()
    exe = subprocess.Popen([exe_path, "--config", cfg, "run", script, "build_script"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    samples, latencies = [], []

    def sampler():
        while exe.poll() is None:
            try:
                samples.append((time.time(),) + proc_sample(exe.pid))
            except OSError:
                break
            time.sleep(1)
    threading.Thread(target=sampler, daemon=True).start()
    for line in exe.stdout:
        now = time.time()
        if line.startswith("tick "):
            latencies.append(now - float(line.split()[1]))
    exe.wait()
    elapsed = time.time() - t0
    calls = json.load(urllib.request.urlopen(endpoint + "/_sim/calls"))["calls"]
    sim.stdin.close()
    sim.wait(timeout=30)
    steady = [c for c in calls if c["t"] >= t0 + 60 and not c["op"].startswith("S3.")]
    steady_minutes = max((elapsed - 60) / 60, 1e-9)
    per_op = {}
    for c in steady:
        per_op[c["op"]] = per_op.get(c["op"], 0) + 1
    cpu = (samples[-1][1] - samples[0][1]) / max(samples[-1][0] - samples[0][0], 1e-9) * 100 if len(samples) > 1 else 0
    rss = [s[2] / 2**20 for s in samples]
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    print(f"exit code {exe.returncode}; {len(latencies)}/{seconds} lines received in {elapsed:.0f} s")
    print("| measure | value |\n|---|---|")
    print(f"| binary | {os.path.relpath(exe_path, REPO)} |")
    print(f"| settings | log_interval {a.log_interval}, describe_interval {a.describe_interval}, {a.minutes:g} min of training |")
    print(f"| RSS (peak / median) | {max(rss):.1f} MiB / {statistics.median(rss):.1f} MiB |")
    print(f"| CPU (average over the wait) | {cpu:.2f} % of one core |")
    print(f"| AWS calls per minute after the first minute | {len(steady) / steady_minutes:.1f} ({', '.join(f'{k} {v / steady_minutes:.1f}' for k, v in sorted(per_op.items()))}) |")
    print(f"| log latency p50 / p95 / max | {pct(0.5):.2f} s / {pct(0.95):.2f} s / {lat[-1] if lat else float('nan'):.2f} s |")


if __name__ == "__main__":
    main()
