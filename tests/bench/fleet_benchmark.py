#!/usr/bin/env python3
"""Benchmark (not a test): what a CI job WAITING on a long training job costs, for our executor
(one job and a fleet of jobs on one host) and for the two ways users follow a job without it.

Every scenario runs against its own fresh simulator (tests/sim) a training job whose script prints
`tick <n> <wall-clock timestamp>` every second for --minutes, then `end <timestamp>`. Followers:
  1. ours, polling: `sagemaker-executor --config CFG run SCRIPT build_script`, driven as
     gitlab-runner drives it (JOB_RESPONSE_FILE, CUSTOM_ENV_CI_PROJECT_DIR,
     BUILD_EXIT_CODE_FILE), default config;
  2. ours, push: the same with `[watch] queue_url` (an SQS queue fed by an EventBridge rule) and
     `live_tail = true`; the first waiting job starts the host watcher (`watch-host`), whose
     processes are counted with the job's;
  3. the SageMaker Python SDK (tests/bench/requirements-peers.txt, installed into
     <repo>/.venv-bench when missing): `sagemaker.session.Session().logs_for_job(job, wait=True)`
     on a job created with boto3 CreateTrainingJob running the same tick script;
  4. a boto3 loop (DescribeTrainingJob + GetLogEvents on the job's stream every 5 s, printing
     lines), what glue scripts do, on such a job;
  5. --jobs concurrent jobs of ours on one host (one config, so one host watcher), once polling
     and once push, started 0.1 s apart;
  6. the same push fleet under the simulator's faults (LIVE_TAIL_FAULTS and EVENT_FAULTS below):
     in every Live Tail session a sampled update, a duplicated one, one delivered an update late,
     and the session dropped after 90 updates; every state-change event delivered twice.
For each it prints a Markdown table row:
  * AWS calls per minute per job at steady state: the simulator's call log (/_sim/calls), S3
    staging excluded, between the first minute after the last follower started and the first
    `end` line printed (so neither start-up nor the final drain counts);
  * log latency p50 / p95: receipt time of each line on the follower's stdout minus the timestamp
    the training script printed in it (all lines, the `end` line included);
  * lines lost / duplicated / out of order, by tick number, summed over jobs;
  * RSS and PSS (/proc/<pid>/smaps_rollup) summed over the follower's processes (children, and
    any process whose command line holds `watch-host` and this run's config), median of the
    per-second samples in the steady window; CPU % of one core over that window; the host
    watcher's share of both in brackets;
  * the simulator's own CPU and the machine's busy share in the same window, so that an
    overloaded 2-core machine shows.
Python followers run unbuffered (PYTHONUNBUFFERED=1), as a CI job should run them.
Then it prints, on paper, how many concurrent waiting jobs each way sustains within the default
AWS quotas of one account (constants below, each with its source).

Usage (from the repo root, after `bash tests/sim/setup.sh` and
`cargo build --release -p sagemaker-executor`):
  .venv/bin/python tests/bench/fleet_benchmark.py [--minutes 3] [--jobs 100]
      [--only ours-poll,ours-push,sdk,boto3,fleet-poll,fleet-push,fleet-push-faults] [--keep]
      [--exe target/release/sagemaker-executor]
  .venv/bin/python tests/bench/fleet_benchmark.py --quick      # 1.5 min, 10 jobs, 30 s warm-up
The defaults take about 25 minutes on 2 cores (--quick about 14); --keep leaves each scenario's
work dir (config, the followers' stdout and stderr, the simulator's call log) in /tmp.
"""
import argparse
import collections
import hashlib
import json
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from wait_benchmark import REPO, event_queue, start_sim

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/B"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/t:1"
BUCKET = "bench-staging"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
PEERS_VENV = os.path.join(REPO, ".venv-bench")
PEERS_REQUIREMENTS = os.path.join(REPO, "tests", "bench", "requirements-peers.txt")
TICK = re.compile(r"\btick (\d+) (\d+\.\d+)")
END = re.compile(r"\bend (\d+\.\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
BOTO3_LOOP_INTERVAL = 5
FLEET_STAGGER = 0.1

# --- Default quotas of one AWS account, and what each follower asks of them (on paper) ----------
# CloudWatch Logs quotas, https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html
# (read 2026-12-01):
GET_LOG_EVENTS_TPS = 25        # per account per Region, not adjustable (10 in us-west-2, eu-west-1,
                               # eu-central-1 and a few more; 30 in eu-west-3)
DESCRIBE_LOG_STREAMS_TPS = 25  # per account per Region, adjustable
LIVE_TAIL_SESSIONS = 15        # concurrent Live Tail sessions per account, adjustable
LIVE_TAIL_GROUPS = 10          # log groups one Live Tail session may scan, not adjustable
START_LIVE_TAIL_TPS = 5        # per account per Region, not adjustable
CWL_QUOTAS = "https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html"
# A Live Tail session times out after three hours:
# https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_StartLiveTail.html
LIVE_TAIL_SESSION_HOURS = 3
LIVE_TAIL_API = "https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_StartLiveTail.html"
# SQS standard queues: "a nearly unlimited number of API calls per second, per API action
# (SendMessage, ReceiveMessage, or DeleteMessage)"; ~120,000 in-flight messages per queue; long
# polls wait at most 20 s:
SQS_IN_FLIGHT = 120_000
SQS_LONG_POLL_S = 20
SQS_QUOTAS = ("https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html, "
              "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-queues.html")
# SageMaker: no default rate for DescribeTrainingJob is published; its quota page lists resource
# and instance quotas, and its management APIs throttle per account and Region
# (https://docs.aws.amazon.com/general/latest/gr/sagemaker.html,
# https://repost.aws/knowledge-center/sagemaker-python-throttlingexception).
SAGEMAKER_QUOTAS = "https://docs.aws.amazon.com/general/latest/gr/sagemaker.html"
# What each follower asks per job, from its defaults:
OURS_LOG_INTERVAL_S = 5        # [train] log_interval (stages/src/config), one read per stream
OURS_DESCRIBE_INTERVAL_S = 30  # [train] describe_interval
OURS_SAFETY_INTERVAL_S = 300   # [watch] safety_interval: describes while the queue delivers
SDK_POLL_S = 10                # Session.logs_for_job(poll=10): GetLogEvents until an empty page
                               # (2 a poll), and DescribeLogStreams every poll (its stream list is
                               # a local rebound in _flush_log_streams), DescribeTrainingJob / 30 s
JOB_HOURS = 1                  # assumed length of a training job, for the calls at start and end
# Ours with push, per job outside the steady state (this script's push rows, --keep's calls.json,
# 2026-12-01): GetLogEvents for the stream's head and the final drain (8 for a lone job, 14.5 each
# when 100 jobs start within 10 s), DescribeTrainingJob at the start and on each state-change
# event (6), one DescribeLogStreams at the drain.
PUSH_GET_LOG_EVENTS_PER_JOB = 15
PUSH_DESCRIBES_PER_JOB = 6


def sh_ticks(seconds):
    """The training script: a numbered timestamp every second, then `end`."""
    return (f'for i in $(seq 1 {seconds}); do echo "tick $i $(date +%s.%N)"; sleep 1; done\n'
            'echo "end $(date +%s.%N)"\n')


# --- Processes: who follows, and what they use ----------------------------------------------------
def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def stat_fields(pid):
    """(ppid, cumulative CPU seconds, start time) of a process, or None once it is gone."""
    text = read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    parts = text.rsplit(")", 1)[1].split()
    return int(parts[1]), (int(parts[11]) + int(parts[12])) / CLK_TCK, int(parts[19])


def rss_pss(pid):
    """(RSS, PSS) in bytes, or None once the process is gone."""
    text = read_text(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return None
    values = dict(re.findall(r"^(Rss|Pss):\s+(\d+) kB", text, re.M))
    return int(values.get("Rss", 0)) * 1024, int(values.get("Pss", 0)) * 1024


def machine_jiffies():
    """(busy, total) jiffies of the whole machine since boot."""
    fields = [int(x) for x in read_text("/proc/stat").split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# One /proc sample: the followers' summed RSS / PSS (bytes) and cumulative CPU (s), the same for
# their helpers (processes other than the followers themselves: the host watcher), the
# simulator's cumulative CPU, the machine's busy and total jiffies, how many processes were counted.
Sample = collections.namedtuple("Sample", "t rss pss cpu helper_pss helper_cpu sim_cpu busy total processes")


class Sampler:
    """Once a second: the followers' processes (roots, their descendants, and host watchers of
    this run's config), their summed RSS / PSS and cumulative CPU, the simulator's CPU, the
    machine's jiffies. A process's CPU is kept after it exits, so the sum only grows."""

    def __init__(self, sim_pid, config=None):
        self.sim_pid = sim_pid
        self.config = config  # the executor config of this run, None for the peers
        self.roots = set()
        self.known = {}      # pid -> (ppid, start time, cmdline), read once per process
        self.members = {}    # (pid, start time) -> last cumulative CPU seconds
        self.samples = []    # Sample

    def _is_member(self, pid, member_pids):
        ppid, _, cmdline = self.known[pid]
        return pid in self.roots or ppid in member_pids or self._is_watcher(cmdline)

    def _is_watcher(self, cmdline):
        return self.config is not None and "watch-host" in cmdline and self.config in cmdline

    def sample(self):
        now = time.time()
        alive = {int(d) for d in os.listdir("/proc") if d.isdigit()}
        for pid in sorted(alive - self.known.keys()):
            fields = stat_fields(pid)
            if fields is not None:
                self.known[pid] = (fields[0], fields[2], (read_text(f"/proc/{pid}/cmdline") or "").replace("\0", " "))
        for pid in list(self.known):
            if pid not in alive:
                del self.known[pid]
        rss = pss = helper_pss = 0
        current = 0
        member_pids = {pid for pid, _ in self.members}
        for pid in sorted(self.known):  # parents before children, mostly; the next turn fixes the rest
            if not self._is_member(pid, member_pids):
                continue
            member_pids.add(pid)
            fields, mem = stat_fields(pid), rss_pss(pid)
            if fields is None or mem is None:
                continue
            self.members[(pid, fields[2])] = fields[1]
            rss, pss, current = rss + mem[0], pss + mem[1], current + 1
            if pid not in self.roots:
                helper_pss += mem[1]
        sim = stat_fields(self.sim_pid)
        busy, total = machine_jiffies()
        helper_cpu = sum(cpu for (pid, _), cpu in self.members.items() if pid not in self.roots)
        self.samples.append(Sample(now, rss, pss, sum(self.members.values()), helper_pss, helper_cpu,
                                   sim[1] if sim else 0.0, busy, total, current))

    def watchers(self):
        """Host watchers of this run's config now alive (command lines read afresh)."""
        pids = (int(d) for d in os.listdir("/proc") if d.isdigit())
        return [pid for pid in pids if self._is_watcher((read_text(f"/proc/{pid}/cmdline") or "").replace("\0", " "))]


# --- Followers ------------------------------------------------------------------------------------
class Follower:
    """One process whose stdout carries the training job's lines."""

    def __init__(self, name, argv, env, log_path, start_at, seconds):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.start_at, self.seconds = start_at, seconds
        self.proc = None
        self.started = None
        self.pending = b""
        self.ticks, self.latencies = [], []
        self.end_printed = None
        self.other_lines = []  # the follower's own messages (status, warnings), for --keep

    def start(self):
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err)
        self.started = time.time()
        os.set_blocking(self.proc.stdout.fileno(), False)

    def feed(self, data, now):
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        for raw in lines:
            self.line(raw.decode("utf-8", "replace"), now)

    def line(self, text, now):
        tick = TICK.search(text)
        if tick:
            self.ticks.append(int(tick.group(1)))
            self.latencies.append(now - float(tick.group(2)))
            return
        end = END.search(text)
        if end:
            self.end_printed = float(end.group(1))
            self.latencies.append(now - self.end_printed)
        else:
            self.other_lines.append(f"{now:.3f} {text}\n")

    def lost_dup_disorder(self):
        seen = set(self.ticks)
        lost = self.seconds - len(seen & set(range(1, self.seconds + 1)))
        disorder = sum(1 for a, b in zip(self.ticks, self.ticks[1:]) if b < a)
        return lost, len(self.ticks) - len(seen), disorder


def run_followers(followers, sampler, deadline):
    """Starts each follower at its time, reads every stdout as lines arrive, samples /proc every
    second, until all stdouts closed (or the deadline: the rest are killed)."""
    sel = selectors.DefaultSelector()
    waiting = sorted(followers, key=lambda f: f.start_at)
    open_pipes = 0
    next_sample = time.time()
    while (waiting or open_pipes) and time.time() < deadline:
        now = time.time()
        while waiting and waiting[0].start_at <= now:
            f = waiting.pop(0)
            f.start()
            sel.register(f.proc.stdout, selectors.EVENT_READ, f)
            sampler.roots.add(f.proc.pid)
            open_pipes += 1
        wake = min(next_sample, waiting[0].start_at) if waiting else next_sample
        for key, _ in sel.select(max(0.0, wake - time.time())):
            data = os.read(key.fd, 65536)
            if data:
                key.data.feed(data, time.time())
            else:
                sel.unregister(key.fileobj)
                open_pipes -= 1
        if time.time() >= next_sample:
            sampler.sample()
            next_sample += 1.0
    for f in followers:
        if f.proc is None:
            continue
        try:
            f.proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            f.proc.kill()
            f.proc.wait()
            print(f"  {f.name}: killed at the deadline", file=sys.stderr)


# --- The simulator and the jobs -------------------------------------------------------------------
def aws_env(endpoint):
    return dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION,
                AWS_ACCESS_KEY_ID="b", AWS_SECRET_ACCESS_KEY="b", AWS_EC2_METADATA_DISABLED="true")


def boto3_client(service, endpoint):
    import boto3  # the simulator's venv
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="b", aws_secret_access_key="b")


# Faults of the fault row, repeated in every Live Tail session (the watcher's session is dropped
# every 90 updates, so each job sees them again): a sampled update, a duplicated one, one a
# second late; and every state-change event delivered twice.
LIVE_TAIL_FAULTS = [
    {"kind": "sample", "keep_every": 2, "after_updates": 20, "count": -1},
    {"kind": "duplicate", "after_updates": 40, "count": -1},
    {"kind": "reorder", "after_updates": 60, "count": -1},
    {"kind": "drop_session", "after_updates": 90, "count": -1},
]
EVENT_FAULTS = [{"kind": "duplicate", "copies": 2, "count": -1}]


def sim_post(endpoint, path, body):
    request = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as r:
        r.read()


def sim_calls(endpoint):
    with urllib.request.urlopen(endpoint + "/_sim/calls") as r:
        return json.load(r)["calls"]


def send(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_watchers(sampler, grace=10.0):
    """SIGTERM to the host watchers of this run's config (they would otherwise stay for
    host_watcher_idle); SIGKILL to any still there after the grace."""
    send(sampler.watchers(), signal.SIGTERM)
    until = time.time() + grace
    while sampler.watchers() and time.time() < until:
        time.sleep(0.2)
    send(sampler.watchers(), signal.SIGKILL)


def executor_followers(a, work, endpoint, push, jobs):
    """Config, job payloads, project dirs and training script for `jobs` executor runs."""
    builds = os.path.join(work, "builds")
    cfg = os.path.join(work, "executor.toml")
    with open(cfg, "w") as f:
        f.write(f'region = "{REGION}"\n[paths]\nbuilds_root = "{builds}"\ncache_root = "{work}/cache"\n'
                f'[staging]\nbucket = "{BUCKET}"\n[train]\nrole_arn = "{ROLE}"\nmax_runtime = "2h"\n')
        if push:
            f.write(f'[watch]\nqueue_url = "{event_queue(endpoint)}"\nlive_tail = true\n')
    script = os.path.join(work, "script")
    with open(script, "w") as f:
        f.write("#!/usr/bin/env bash\n" + sh_ticks(a.seconds))
    followers = []
    t0 = time.time() + 0.5
    for n in range(jobs):
        job_id = 1000 + n
        project = os.path.join(builds, str(job_id), "ml", "bench")
        os.makedirs(project)
        with open(os.path.join(project, "README.md"), "w") as f:
            f.write("bench\n")
        resp = os.path.join(work, f"response-{job_id}.json")
        with open(resp, "w") as f:
            json.dump({"id": job_id, "job_info": {"name": "bench", "project_id": 5,
                                                  "project_full_path": "ml/bench", "pipeline_id": 1},
                       "git_info": {"ref": "main", "sha": "abc"}, "runner_info": {"timeout": 7200},
                       "variables": [], "image": {"name": IMAGE}}, f)
        env = dict(aws_env(endpoint), JOB_RESPONSE_FILE=resp, CUSTOM_ENV_CI_PROJECT_DIR=project,
                   BUILD_EXIT_CODE_FILE=os.path.join(work, f"code-{job_id}"))
        followers.append(Follower(f"job {job_id}", [a.exe, "--config", cfg, "run", script, "build_script"],
                                  env, os.path.join(work, f"stderr-{job_id}.log"), t0 + n * FLEET_STAGGER,
                                  a.seconds))
    return followers, cfg


def peer_follower(a, work, endpoint, kind):
    """A training job created with boto3 (the same tick script), and the peer that follows it."""
    name = f"bench-{kind}-{int(time.time())}"
    boto3_client("sagemaker", endpoint).create_training_job(
        TrainingJobName=name, RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                "ContainerEntrypoint": ["bash", "-c", sh_ticks(a.seconds)]},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/peers/"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 7200})
    env = dict(aws_env(endpoint), PYTHONUNBUFFERED="1")
    python = os.path.join(REPO, ".venv", "bin", "python")
    if kind == "sdk":
        python = os.path.join(PEERS_VENV, "bin", "python")
        # The SDK's defaults come from this file alone (none from /etc or ~): telemetry off.
        sdk_config = os.path.join(work, "sagemaker-config.yaml")
        with open(sdk_config, "w") as f:
            f.write("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
        env.update(SAGEMAKER_ADMIN_CONFIG_OVERRIDE=sdk_config, SAGEMAKER_USER_CONFIG_OVERRIDE=sdk_config)
    return Follower(kind, [python, os.path.abspath(__file__), f"follow-{kind}", name], env,
                    os.path.join(work, f"stderr-{kind}.log"), time.time(), a.seconds)


def follow_with_sdk(job):
    """Peer 3, run with .venv-bench's python: the SageMaker Python SDK's own log follower."""
    import sagemaker.session
    sagemaker.session.Session().logs_for_job(job, wait=True)


def follow_with_boto3(job):
    """Peer 4, run with the simulator venv's python: the loop users write in glue scripts."""
    import boto3
    sm, logs = boto3.client("sagemaker"), boto3.client("logs")
    stream, token = None, None
    while True:
        status = sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"]
        if stream is None:
            found = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=job + "/")["logStreams"]
            stream = found[0]["logStreamName"] if found else None
        done = status in ("Completed", "Failed", "Stopped")
        while stream is not None:
            page = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True,
                                       **({"nextToken": token} if token else {}))
            for event in page["events"]:
                print(event["message"], flush=True)
            fresh = page["nextForwardToken"] != token
            token = page["nextForwardToken"]
            if not (done and fresh):  # one read a turn; after the end, read until the token repeats
                break
        if done:
            return
        time.sleep(BOTO3_LOOP_INTERVAL)


def ensure_peers_venv():
    """Creates .venv-bench with requirements-peers.txt unless it already matches the file."""
    with open(PEERS_REQUIREMENTS, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(PEERS_VENV, ".peers-requirements.sha256")
    if read_text(stamp) == want:
        return
    print(f"setting up {PEERS_VENV} from {os.path.relpath(PEERS_REQUIREMENTS, REPO)}", file=sys.stderr)
    if not os.path.exists(os.path.join(PEERS_VENV, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", PEERS_VENV], check=True)
    subprocess.run([os.path.join(PEERS_VENV, "bin", "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "-r", PEERS_REQUIREMENTS], check=True)
    with open(stamp, "w") as f:
        f.write(want)


# --- One scenario, and its row ----------------------------------------------------------------------
def scenario(a, key, label):
    print(f"  {time.strftime('%H:%M:%S')} {label} ...", file=sys.stderr, flush=True)
    work = tempfile.mkdtemp(prefix=f"sme-fleet-{key}-")
    sim, endpoint = start_sim(os.path.join(work, "builds"))
    try:
        boto3_client("s3", endpoint).create_bucket(Bucket=BUCKET)
        if key.endswith("-faults"):
            sim_post(endpoint, "/_sim/livetail-faults", {"rules": LIVE_TAIL_FAULTS})
            sim_post(endpoint, "/_sim/event-faults", {"rules": EVENT_FAULTS})
        if key in ("sdk", "boto3"):
            followers, cfg = [peer_follower(a, work, endpoint, key)], None
        else:
            jobs = a.jobs if key.startswith("fleet") else 1
            followers, cfg = executor_followers(a, work, endpoint, "push" in key, jobs)
        sampler = Sampler(sim.pid, cfg)
        last_start = max(f.start_at for f in followers)
        run_followers(followers, sampler, last_start + a.seconds + 300)
        if cfg:
            stop_watchers(sampler)
        calls = sim_calls(endpoint)
    finally:
        sim.stdin.close()
        sim.wait(timeout=30)
    row = measure(a, label, followers, sampler, calls)
    if a.keep:
        with open(os.path.join(work, "calls.json"), "w") as f:
            json.dump({"started": [f.started for f in followers], "calls": calls}, f)
        for follower in followers:
            with open(os.path.join(work, f"stdout-{follower.name.replace(' ', '-')}.log"), "w") as f:
                f.writelines(follower.other_lines)
        print(f"  {label}: kept {work} (calls.json: the simulator's call log; stdout-*.log: the followers' "
              "other lines)", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return row


def measure(a, label, followers, sampler, calls):
    """The table row of one scenario (see the module doc for the window)."""
    ws = max(f.started for f in followers) + a.warmup
    ends = [f.end_printed for f in followers if f.end_printed] or [time.time()]
    we = min(min(ends), sampler.samples[-1].t)
    window = [s for s in sampler.samples if ws <= s.t <= we]
    if len(window) < 2:
        return f"| {label} | (no steady window: the run was too short) |"
    first, last = window[0], window[-1]
    span = last.t - first.t
    n = len(followers)
    steady = [c for c in calls if first.t <= c["t"] <= last.t and not c["op"].startswith("S3.")]
    per_op = collections.Counter(c["op"].split(".", 1)[-1] for c in steady)
    per_job_min = 60 / span / n
    ops = ", ".join(f"{op} {count * per_job_min:.2f}" for op, count in per_op.most_common())
    lat = sorted(x for f in followers for x in f.latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    lost, dup, disorder = (sum(v) for v in zip(*(f.lost_dup_disorder() for f in followers)))
    no_end = sum(1 for f in followers if f.end_printed is None)
    share = lambda field: (getattr(last, field) - getattr(first, field)) / span * 100
    busy = (last.busy - first.busy) / max(last.total - first.total, 1) * 100
    mib = lambda field: statistics.median(getattr(s, field) for s in window) / 2**20
    rss, pss, helper_pss = mib("rss"), mib("pss"), mib("helper_pss")
    procs = max(s.processes for s in window)
    failed = sum(1 for f in followers if f.proc is None or f.proc.returncode != 0)
    pss_note = "; ".join(([f"{pss / n:.1f} per job"] if n > 1 else []) +
                         ([f"watcher {helper_pss:.1f}"] if helper_pss else []))
    cpu_note = f"{procs} processes" + (f"; watcher {share('helper_cpu'):.2f} %" if helper_pss else "")
    return (f"| {label} | {n} | **{len(steady) * per_job_min:.2f}** ({ops}) | {pct(0.5):.2f} s / **{pct(0.95):.2f} s** "
            f"| {lost} / {dup} / {disorder}{f' ({no_end} end lines missing)' if no_end else ''} "
            f"| {rss:.1f} MiB | {pss:.1f} MiB{f' ({pss_note})' if pss_note else ''} | {share('cpu'):.2f} % ({cpu_note}) "
            f"| {share('sim_cpu'):.0f} % | {busy:.0f} % of {CORES} cores "
            f"| {span:.0f} s{f', {failed} exited non-zero' if failed else ''} |")


# --- On paper -----------------------------------------------------------------------------------
def on_paper(hosts=10, jobs=1000):
    """How many concurrent waiting jobs one account sustains, from the constants above."""
    per_host = jobs // hosts
    poll_reads = 60 / OURS_LOG_INTERVAL_S
    poll_max = GET_LOG_EVENTS_TPS * 60 / poll_reads
    sdk_reads = 2 * 60 / SDK_POLL_S
    sdk_streams = 60 / SDK_POLL_S
    sdk_max = min(GET_LOG_EVENTS_TPS * 60 / sdk_reads, DESCRIBE_LOG_STREAMS_TPS * 60 / sdk_streams)
    loop_max = GET_LOG_EVENTS_TPS * 60 / (60 / BOTO3_LOOP_INTERVAL)
    starts_per_s = jobs / (JOB_HOURS * 3600)
    push_reads_tps = starts_per_s * PUSH_GET_LOG_EVENTS_PER_JOB
    describes_per_s = jobs / OURS_SAFETY_INTERVAL_S + starts_per_s * PUSH_DESCRIBES_PER_JOB
    receive_per_min = hosts * 60 / SQS_LONG_POLL_S
    restarts_per_s = hosts / (LIVE_TAIL_SESSION_HOURS * 3600)
    push_steady = 60 / SQS_LONG_POLL_S / per_host + 60 / OURS_SAFETY_INTERVAL_S
    lines = [
        f"Default quotas of one account and Region (sources: {CWL_QUOTAS}; {LIVE_TAIL_API}; {SQS_QUOTAS}; "
        f"{SAGEMAKER_QUOTAS}):",
        f"- GetLogEvents {GET_LOG_EVENTS_TPS}/s (10/s in us-west-2, eu-west-1, eu-central-1, ...; not adjustable), "
        f"DescribeLogStreams {DESCRIBE_LOG_STREAMS_TPS}/s, StartLiveTail {START_LIVE_TAIL_TPS}/s, "
        f"{LIVE_TAIL_SESSIONS} concurrent Live Tail sessions (adjustable) of up to {LIVE_TAIL_GROUPS} log groups, "
        f"sessions end after {LIVE_TAIL_SESSION_HOURS} h; SQS standard queue: nearly unlimited calls/s per action, "
        f"~{SQS_IN_FLIGHT:,} messages in flight, long poll <= {SQS_LONG_POLL_S} s; SageMaker DescribeTrainingJob: "
        "no default rate in its published quotas.",
        f"- ours, polling: {poll_reads:.0f} GetLogEvents/min per job (log_interval {OURS_LOG_INTERVAL_S} s; "
        f"and {60 / OURS_DESCRIBE_INTERVAL_S:.0f} DescribeTrainingJob/min, describe_interval "
        f"{OURS_DESCRIBE_INTERVAL_S} s) -> "
        f"{GET_LOG_EVENTS_TPS} x 60 / {poll_reads:.0f} = **{poll_max:.0f} jobs per account** "
        f"({10 * 60 / poll_reads:.0f} in the 10/s Regions); {jobs:,} jobs would need {jobs * poll_reads / 60:.0f} "
        f"GetLogEvents/s, {jobs * poll_reads / 60 / GET_LOG_EVENTS_TPS:.0f}x the quota.",
        f"- SageMaker SDK logs_for_job: {sdk_reads:.0f} GetLogEvents and {sdk_streams:.0f} DescribeLogStreams/min "
        f"per job (poll {SDK_POLL_S} s) -> **{sdk_max:.0f} jobs per account**.",
        f"- boto3 loop every {BOTO3_LOOP_INTERVAL} s: {60 / BOTO3_LOOP_INTERVAL:.0f} GetLogEvents/min per job -> "
        f"**{loop_max:.0f} jobs per account**.",
        f"- ours, push, one watcher per host, {jobs:,} jobs on {hosts} hosts ({per_host} per host): per job at steady "
        f"state {60 / SQS_LONG_POLL_S:.0f} ReceiveMessage/min per host / {per_host} jobs + 1 DescribeTrainingJob per "
        f"safety_interval = **{push_steady:.2f} calls/min**; "
        f"Live Tail sessions = hosts x log groups = {hosts} x 1 = {hosts} <= {LIVE_TAIL_SESSIONS} "
        f"(training and ECS jobs on every host: {2 * hosts} > {LIVE_TAIL_SESSIONS}, the sessions over the quota "
        f"fall back to polling); StartLiveTail {restarts_per_s * 3600:.1f}/h (a session per host every "
        f"{LIVE_TAIL_SESSION_HOURS} h) << {START_LIVE_TAIL_TPS}/s; ReceiveMessage {receive_per_min:.0f}/min "
        f"({hosts} hosts x 60 / {SQS_LONG_POLL_S} s) within SQS's unlimited rate; DescribeTrainingJob "
        f"{describes_per_s:.1f}/s ({jobs:,} x 1 per safety_interval {OURS_SAFETY_INTERVAL_S // 60} min, plus "
        f"{PUSH_DESCRIBES_PER_JOB} per job at its start and state changes, jobs of {JOB_HOURS} h); GetLogEvents only "
        f"at a job's start and end: {PUSH_GET_LOG_EVENTS_PER_JOB} per job -> {push_reads_tps:.1f}/s << "
        f"{GET_LOG_EVENTS_TPS}/s (and < 10/s). "
        f"**{jobs:,} jobs on {hosts} hosts fit the published quotas** (SageMaker's describe rate is not published); "
        f"the account's ceiling is {LIVE_TAIL_SESSIONS} hosts per log group in use, then each host's own size.",
    ]
    return "\n".join(lines)


def sdk_version():
    with open(PEERS_REQUIREMENTS) as f:
        return re.search(r"^sagemaker==(\S+)", f.read(), re.M).group(1)


SCENARIOS = [("ours-poll", "ours, polling"), ("ours-push", "ours, push (queue + Live Tail, host watcher)"),
             ("sdk", f"SageMaker Python SDK {sdk_version()} `logs_for_job`"),
             ("boto3", f"boto3 loop (Describe + GetLogEvents every {BOTO3_LOOP_INTERVAL} s)"),
             ("fleet-poll", "ours x{jobs}, polling"), ("fleet-push", "ours x{jobs}, push (one host watcher)"),
             ("fleet-push-faults", "ours x{jobs}, push, under Live Tail and event faults")]


def main():
    if len(sys.argv) == 3 and sys.argv[1] in ("follow-sdk", "follow-boto3"):
        (follow_with_sdk if sys.argv[1] == "follow-sdk" else follow_with_boto3)(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--minutes", type=float, default=3, help="training length (default 3)")
    ap.add_argument("--jobs", type=int, default=100, help="concurrent jobs of the fleet rows (default 100)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1.5 minutes, 10 jobs, 30 s warm-up")
    ap.add_argument("--only", default=",".join(k for k, _ in SCENARIOS), help="scenarios, comma-separated")
    ap.add_argument("--keep", action="store_true",
                    help="keep each scenario's work dir (stdout and stderr logs, config, the call log)")
    ap.add_argument("--exe", default=os.path.join(REPO, "target", "release", "sagemaker-executor"))
    a = ap.parse_args()
    a.exe = os.path.abspath(a.exe)
    a.warmup = 60
    if a.quick:
        a.minutes, a.jobs, a.warmup = 1.5, 10, 30
    a.seconds = int(a.minutes * 60)
    if not os.access(a.exe, os.X_OK):
        sys.exit(f"{a.exe}: build first (cargo build --release -p sagemaker-executor)")
    keys = a.only.split(",")
    if "sdk" in keys:
        ensure_peers_venv()
    print(f"{a.minutes:g} min of training per job, warm-up {a.warmup} s, binary {os.path.relpath(a.exe, REPO)}, "
          f"{CORES} cores\n")
    print("| follower | jobs | AWS calls/min per job, steady (by operation) | log latency p50 / p95 "
          "| lines lost / dup / out of order | RSS | PSS | CPU, % of one core | simulator CPU | machine busy "
          "| steady window |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, label in SCENARIOS:
        if key in keys:
            print(scenario(a, key, label.format(jobs=a.jobs)), flush=True)
    print("\n" + on_paper())


if __name__ == "__main__":
    main()
