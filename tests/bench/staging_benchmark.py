#!/usr/bin/env python3
"""Benchmark (not a test): staging a workspace to S3, ours against `tar czf - DIR | aws s3 cp -`.

Starts the simulator (as wait_benchmark.py does), generates three workspaces and stages each one
--runs times with both commands, against the same simulator and bucket:
  * incompressible: --incompressible-mb of random bytes in 10 MB files named *.bin (no telling
    extension: the sampled ratio has to notice),
  * text: --text-mb of compressible log-like text in 10 MB files,
  * small files: --small-files files of 1-8 KiB of source-like text in 100 dirs.
"ours" is `staging_bench` (stages/examples/staging_bench.rs: `workspace::upload_tree`, what a
remote job's staging runs, with the executor's single-threaded runtime); "CLI" is
`tar czf - -C PARENT NAME | aws s3 cp - s3://bucket/key` with the venv's AWS CLI. Both are timed
as whole commands (process start to exit) with the files in the page cache (read once before the
first run); the table shows the median of the runs. Each uploaded object is checked to be a
gzip'd tar with every file in it (listing only, --verify-all reads every byte), then deleted.
Prints a Markdown table for BENCHMARKS.md.

Usage: .venv/bin/python tests/bench/staging_benchmark.py [--incompressible-mb 500] [--text-mb 500]
           [--small-files 10000] [--runs 3] [--exe target/release/examples/staging_bench]
           [--quick] [--work DIR] [--keep]
Build first: cargo build --release -p sagemaker-stages --example staging_bench
"""
import argparse, json, os, random, shutil, statistics, subprocess, sys, tarfile, tempfile, time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXE = os.path.join(REPO, "target", "release", "examples", "staging_bench")
AWS = os.path.join(REPO, ".venv", "bin", "aws")
BUCKET = "bench-staging"
FILE_MB = 10
MB = 1_000_000


def start_sim(hide):
    p = subprocess.Popen([os.path.join(REPO, ".venv/bin/python"), os.path.join(REPO, "tests/sim/run.py"),
                          "--port", "0", "--exit-on-stdin-eof", "--hide", hide],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("SIM_READY "):
        sys.exit("simulator did not start")
    return p, line.split()[1]


WORDS = ("epoch batch loss accuracy worker shard checkpoint gradient learning rate step "
         "validation train dataset tensor optimizer scheduler warmup device cuda memory "
         "throughput latency request queue retry timeout config model layer weight").split()


def text_block(rng, size):
    """Log-like lines: timestamps, levels, words and numbers (gzip -6 shrinks it about 4x)."""
    out, n = [], 0
    while n < size:
        line = "2026-%02d-%02dT%02d:%02d:%02d.%03dZ %s [%s-%d] %s %s=%d %s=%.4f\n" % (
            rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59),
            rng.randint(0, 59), rng.randint(0, 999), rng.choice(("INFO", "DEBUG", "WARN")),
            rng.choice(WORDS), rng.randint(0, 63), " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))),
            rng.choice(WORDS), rng.randint(0, 100000), rng.choice(WORDS), rng.random())
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def generate(root, kind, amount):
    """Fills root/<kind>/project with the data set; returns (project dir, files, bytes)."""
    project = os.path.join(root, "builds", "1", kind, "project")
    marker = os.path.join(root, f"{kind}.done")
    if os.path.exists(marker):
        with open(marker) as f:
            files, size = json.load(f)
        return project, files, size
    shutil.rmtree(project, ignore_errors=True)
    os.makedirs(project)
    rng = random.Random(7)
    files = size = 0
    if kind == "incompressible":
        left = amount * MB
        while left > 0:
            n = min(FILE_MB * MB, left)
            with open(os.path.join(project, f"shard-{files:04d}.bin"), "wb") as f:
                f.write(os.urandom(n))
            files, size, left = files + 1, size + n, left - n
    elif kind == "text":
        blocks = [text_block(rng, 1 << 20) for _ in range(8)]
        left = amount * MB
        while left > 0:
            n = min(FILE_MB * MB, left)
            with open(os.path.join(project, f"train-{files:04d}.log"), "wb") as f:
                written = 0
                while written < n:
                    chunk = rng.choice(blocks)[: n - written]
                    f.write(chunk)
                    written += len(chunk)
            files, size, left = files + 1, size + n, left - n
    else:
        source = text_block(rng, 4 << 20)
        for i in range(amount):
            d = os.path.join(project, f"pkg{i % 100:02d}")
            os.makedirs(d, exist_ok=True)
            n = rng.randint(1024, 8192)
            at = rng.randrange(0, len(source) - n)
            with open(os.path.join(d, f"mod{i:05d}.py"), "wb") as f:
                f.write(source[at:at + n])
            files, size = files + 1, size + n
    with open(marker, "w") as f:
        json.dump([files, size], f)
    return project, files, size


def warm(project):
    for dirpath, _, names in os.walk(project):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def check_and_delete(s3, key, files, verify_all, tmp):
    """The object is a gzip'd tar holding every file (its member list; --verify-all: every byte)."""
    size = s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    path = os.path.join(tmp, "check.tar.gz")
    s3.download_file(BUCKET, key, path)
    with tarfile.open(path, "r:gz") as tf:
        count = 0
        for m in tf:
            if m.isfile():
                count += 1
                if verify_all:
                    tf.extractfile(m).read()
    os.remove(path)
    s3.delete_object(Bucket=BUCKET, Key=key)
    if count != files:
        sys.exit(f"{key}: {count} files in the archive, expected {files}")
    return size


def timed(cmd, env, shell=False):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {cmd}\n{p.stderr}")
    return elapsed, p.stdout


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--incompressible-mb", type=int, default=500)
    ap.add_argument("--text-mb", type=int, default=500)
    ap.add_argument("--small-files", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="50 MB, 50 MB, 1000 files, 1 run")
    ap.add_argument("--exe", default=EXE, help="the staging_bench example binary")
    ap.add_argument("--arg", action="append", default=[], help="extra argument for staging_bench (repeatable)")
    ap.add_argument("--work", help="where to generate the data (kept and reused); default: a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--verify-all", action="store_true", help="read every archived byte back")
    a = ap.parse_args()
    if a.quick:
        a.incompressible_mb, a.text_mb, a.small_files, a.runs = 50, 50, 1000, 1
    if not os.access(a.exe, os.X_OK):
        sys.exit("build first: cargo build --release -p sagemaker-stages --example staging_bench")
    work = a.work or tempfile.mkdtemp(prefix="sme-staging-bench-")
    os.makedirs(work, exist_ok=True)
    sets = [("incompressible", a.incompressible_mb, "500 MB random (50 x 10 MB .bin)"),
            ("text", a.text_mb, "500 MB log text (50 x 10 MB)"),
            ("small", a.small_files, "10,000 small files (1-8 KiB)")]
    data = []
    for kind, amount, _ in sets:
        if amount > 0:
            t0 = time.time()
            data.append((kind,) + generate(work, kind, amount))
            print(f"generated {kind} in {time.time() - t0:.1f} s", file=sys.stderr)
    sim, endpoint = start_sim(os.path.join(work, "builds"))
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="b", AWS_SECRET_ACCESS_KEY="b", AWS_EC2_METADATA_DISABLED="true")
    import boto3  # from the simulator's venv
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="b",
                      aws_secret_access_key="b")
    s3.create_bucket(Bucket=BUCKET)
    rows = []
    loads = [loadavg()]
    try:
        for kind, project, files, size in data:
            warm(project)
            ours, cli, ours_obj, cli_obj, inner = [], [], 0, 0, []
            parent, name = os.path.split(project)
            for run in range(a.runs):
                prefix = f"ours/{kind}/{run}/"
                secs, out = timed([a.exe, "--bucket", BUCKET, "--prefix", prefix, "--path-style", *a.arg, project], env)
                ours.append(secs)
                summary = json.loads(out)
                inner.append(summary["seconds"])
                ours_obj = check_and_delete(s3, prefix + "workspace.tar.gz", files, a.verify_all, work)
                stored = summary["bytes_stored"]
                key = f"cli/{kind}/{run}/workspace.tar.gz"
                secs, _ = timed(f"tar czf - -C '{parent}' '{name}' | '{AWS}' s3 cp - 's3://{BUCKET}/{key}'",
                                env, shell=True)
                cli.append(secs)
                cli_obj = check_and_delete(s3, key, files, a.verify_all, work)
                loads.append(loadavg())
                print(f"{kind} run {run + 1}: ours {ours[-1]:.2f} s (upload {inner[-1]:.2f} s), "
                      f"CLI {cli[-1]:.2f} s", file=sys.stderr)
            o, c = statistics.median(ours), statistics.median(cli)
            rows.append((kind, files, size, o, statistics.median(inner), c, ours_obj, cli_obj, stored))
    finally:
        sim.stdin.close()
        sim.wait(timeout=30)
        if not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)
    label = {k: l for k, _, l in sets}
    print(f"\nmedian of {a.runs} run(s); load average (1 min) during the runs: {min(loads)}-{max(loads)}\n")
    print("| workspace | ours | ours MB/s | `tar czf \\| aws s3 cp -` | CLI MB/s | speed-up | "
          "archive, ours (stored as is) | archive, CLI |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, files, size, o, inner, c, ours_obj, cli_obj, stored in rows:
        name = label[kind] if (kind, size) in (("incompressible", 500 * MB), ("text", 500 * MB)) or \
            (kind == "small" and files == 10000) else f"{kind}: {files} files, {size / MB:.0f} MB"
        print(f"| {name} | {o:.2f} s (upload {inner:.2f} s) | {size / MB / o:.0f} | {c:.2f} s | {size / MB / c:.0f} | "
              f"**{c / o:.1f}x** | {ours_obj / MB:.0f} MB ({stored / MB:.0f} MB) | {cli_obj / MB:.0f} MB |")


if __name__ == "__main__":
    main()
