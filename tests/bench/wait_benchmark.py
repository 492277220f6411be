#!/usr/bin/env python3
"""Benchmark (not a test): one executor `run` stage waiting on a long training job.

Starts the simulator, drives `sagemaker-executor run <script> build_script` exactly as the
runner would (JOB_RESPONSE_FILE, CUSTOM_ENV_CI_PROJECT_DIR, BUILD_EXIT_CODE_FILE), with a
training script that prints a numbered wall-clock timestamp every second for --minutes, then an
`end <timestamp>` line as it exits. Measures:
  * the executor's peak and median RSS and its CPU share (from /proc, sampled every second),
  * AWS calls per minute at steady state (from the simulator's call log, after the first minute),
  * log latency: receipt time of each line on the executor's stdout minus the timestamp the
    training script printed (p50 / p95 / max),
  * lines lost / duplicated / out of order (by the tick numbers),
  * how late the job's end was noticed: the executor's exit minus the timestamp of the script's
    `end` line (printed as it exits).
With --throttle, once the first line has arrived and --throttle-after seconds more have passed,
it installs simulator fault rules (POST /_sim/faults): a burst of 9 throttled
SageMaker.DescribeTrainingJob and 12 throttled Logs.GetLogEvents (each rule hits the next
matching calls, so the throttles fall wherever the executor's calls fall), and reports when the
throttled calls happened.
Prints a Markdown table for BENCHMARKS.md.

Usage: .venv/bin/python tests/bench/wait_benchmark.py [--minutes 4] [--log-interval 5s] [--describe-interval 30s]
           [--throttle [--throttle-after 30] [--describe-throttles 9] [--logs-throttles 12]] [--exe target/release/sagemaker-executor]
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


def event_queue(endpoint):
    """A queue fed with training job state changes, as a runner admin sets it up; its URL."""
    import boto3  # from the simulator's venv
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b")
    sqs, events = boto3.client("sqs", **kw), boto3.client("events", **kw)
    url = sqs.create_queue(QueueName="bench-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = events.put_rule(Name="bench", EventPattern=json.dumps(
        {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Training Job State Change"]}))["RuleArn"]
    events.put_targets(Rule="bench", Targets=[{"Id": "q", "Arn": arn}])
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule}}}]})})
    return url


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--log-interval", default="5s")
    ap.add_argument("--describe-interval", default="30s")
    ap.add_argument("--push", action="store_true",
                    help="[watch]: a state-change queue fed by an EventBridge rule, and Live Tail for the lines")
    ap.add_argument("--exe", default=EXE, help="the executor binary (default: the debug build)")
    ap.add_argument("--throttle", action="store_true",
                    help="throttle a burst of status and log calls once the job is running")
    ap.add_argument("--throttle-after", type=float, default=30,
                    help="seconds after the first line arrives to install the fault rules (default 30)")
    ap.add_argument("--lines-csv", help="also write each line's number, print time and receipt time here")
    ap.add_argument("--describe-throttles", type=int, default=9)
    ap.add_argument("--logs-throttles", type=int, default=12)
    ap.add_argument("--throttle-window", type=float, default=0,
                    help="instead of the counted burst: throttle every status and log call for this many seconds")
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
        if a.push:
            f.write(f'[watch]\nqueue_url = "{event_queue(endpoint)}"\nlive_tail = true\n')
    seconds = int(a.minutes * 60)
    resp = os.path.join(work, "response.json")
    with open(resp, "w") as f:
        json.dump({"id": 77, "job_info": {"name": "bench", "project_id": 5, "project_full_path": "ml/bench", "pipeline_id": 1},
                   "git_info": {"ref": "main", "sha": "abc"}, "runner_info": {"timeout": 7200},
                   "variables": [], "image": {"name": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/t:1"}}, f)
    script = os.path.join(work, "script")
    with open(script, "w") as f:
        f.write(f"#!/usr/bin/env bash\nfor i in $(seq 1 {seconds}); do echo \"tick $i $(date +%s.%N)\"; sleep 1; done\n"
                f"echo \"end $(date +%s.%N)\"\n")
    env.update(JOB_RESPONSE_FILE=resp, CUSTOM_ENV_CI_PROJECT_DIR=project, BUILD_EXIT_CODE_FILE=os.path.join(work, "code"))
    t0 = time.time()
    exe = subprocess.Popen([exe_path, "--config", cfg, "run", script, "build_script"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    samples, latencies, ticks, rows = [], [], [], []
    end_printed = None
    throttle_at = None
    window = a.throttle_window > 0
    rules = [{"match": "SageMaker.DescribeTrainingJob", "kind": "throttle", "count": -1 if window else a.describe_throttles},
             {"match": "Logs.GetLogEvents", "kind": "throttle", "count": -1 if window else a.logs_throttles}]

    def lift_faults():
        urllib.request.urlopen(urllib.request.Request(endpoint + "/_sim/faults", method="DELETE")).read()

    def install_faults():
        nonlocal throttle_at
        req = urllib.request.Request(endpoint + "/_sim/faults", data=json.dumps({"rules": rules}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req).read()
        throttle_at = time.time()
        if window:
            t = threading.Timer(a.throttle_window, lift_faults)
            t.daemon = True
            t.start()

    def sampler():
        while exe.poll() is None:
            try:
                samples.append((time.time(),) + proc_sample(exe.pid))
            except OSError:
                break
            time.sleep(1)
    threading.Thread(target=sampler, daemon=True).start()
    timer = None
    for line in exe.stdout:
        now = time.time()
        if line.startswith("tick "):
            _, n, ts = line.split()[:3]
            ticks.append(int(n))
            latencies.append(now - float(ts))
            rows.append((n, float(ts), now))
            if a.throttle and timer is None:
                timer = threading.Timer(a.throttle_after, install_faults)
                timer.daemon = True
                timer.start()
        elif line.startswith("end "):
            end_printed = float(line.split()[1])
            latencies.append(now - end_printed)
            rows.append(("end", end_printed, now))
    exe.wait()
    exited = time.time()
    elapsed = exited - t0
    if timer is not None:
        timer.cancel()
    calls = json.load(urllib.request.urlopen(endpoint + "/_sim/calls"))["calls"]
    left = json.load(urllib.request.urlopen(endpoint + "/_sim/faults")).get("rules", [])
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
    if a.lines_csv:
        with open(a.lines_csv, "w") as f:
            f.write("line,printed,received,latency\n")
            f.writelines(f"{n},{p:.3f},{r:.3f},{r - p:.3f}\n" for n, p, r in rows)
    first = rows[0][2] - rows[0][1] if rows else float("nan")
    later = sorted(r - p for _, p, r in rows if rows and p >= rows[0][1] + 60)
    late_lines = [n for n, p, r in rows if r - p > 5]
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    try:
        with open(os.path.join(work, "code")) as f:
            build_code = f.read().strip() or "-"
    except OSError:
        build_code = "-"
    seen = set(ticks)
    lost = seconds - len(seen & set(range(1, seconds + 1)))
    dup = len(ticks) - len(seen)
    disorder = sum(1 for x, y in zip(ticks, ticks[1:]) if y < x)
    late = exited - end_printed if end_printed is not None else float("nan")
    throttled = [c for c in calls if c.get("fault") == "throttle"]
    print(f"exit code {exe.returncode} (build exit code file: {build_code}); {len(seen)}/{seconds} tick lines "
          f"received in {elapsed:.0f} s; end line {'received' if end_printed else 'NOT received'}")
    print("| measure | value |\n|---|---|")
    print(f"| binary | {os.path.relpath(exe_path, REPO)} |")
    print(f"| settings | log_interval {a.log_interval}, describe_interval {a.describe_interval}, {a.minutes:g} min of training"
          f"{', [watch] queue + live_tail' if a.push else ''} |")
    print(f"| RSS (peak / median) | {max(rss):.1f} MiB / {statistics.median(rss):.1f} MiB |")
    print(f"| CPU (average over the wait) | {cpu:.2f} % of one core |")
    print(f"| AWS calls per minute after the first minute | {len(steady) / steady_minutes:.1f} ({', '.join(f'{k} {v / steady_minutes:.1f}' for k, v in sorted(per_op.items()))}) |")
    print(f"| log latency p50 / p95 / max | {pct(0.5):.2f} s / {pct(0.95):.2f} s / {lat[-1] if lat else float('nan'):.2f} s |")
    print(f"| latency of the first line; p50 / p95 of lines printed after the script's first minute | {first:.2f} s; "
          f"{later[len(later) // 2] if later else float('nan'):.2f} s / {later[min(len(later) - 1, int(0.95 * len(later)))] if later else float('nan'):.2f} s |")
    print(f"| lines later than 5 s | {len(late_lines)}" + (f" (lines {late_lines[0]}..{late_lines[-1]})" if late_lines else "") + " |")
    print(f"| lines lost / duplicated / out of order | {lost} / {dup} / {disorder} (of {seconds} + end line) |")
    print(f"| job's end noticed (executor exit − script's `end` line) | {late:.1f} s |")
    if a.throttle:
        if throttle_at is None:
            print("| throttles | fault rules never installed (run too short) |")
        else:
            by = {}
            for c in throttled:
                by.setdefault(c["op"], []).append(c["t"] - throttle_at)
            spans = "; ".join(f"{op} {len(ts)} at +{min(ts):.0f}..+{max(ts):.0f} s" for op, ts in sorted(by.items()))
            unspent = ", ".join(f"{r['match']} {r['count']}" for r in left) or "none"
            what = (f"every DescribeTrainingJob and GetLogEvents for {a.throttle_window:g} s" if window else
                    f"the next {a.describe_throttles} DescribeTrainingJob and {a.logs_throttles} GetLogEvents")
            print(f"| throttles | {what}, installed {throttle_at - t0:.0f} s after start; {len(throttled)} throttled calls: {spans} "
                  f"(after install); unspent: {unspent} |")


if __name__ == "__main__":
    main()
