"""The start contract and the /_sim control API."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import RUN_PY
from test_training import create_job, make_bucket, pid_gone, training_pid, wait_line, wait_status


def test_moto_is_the_pinned_version():
    """The simulator patches moto internals; it is only known to work with the pinned moto."""
    import moto
    req = os.path.join(os.path.dirname(RUN_PY), "requirements.txt")
    pins = dict(l.strip().split("==") for l in open(req) if "==" in l and not l.startswith("#"))
    assert moto.__version__ == pins["moto[server]"], (moto.__version__, pins)


def test_ready_line_health_and_unknown_control_path(sim):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.endpoint)
    assert sim.get("/_sim/health") == {"ok": True}
    status, obj = sim._req("GET", "/_sim/no-such-thing")
    assert status == 404 and "outcomes" in obj["known"]


def test_start_prints_exactly_one_stdout_line_and_exits_on_stdin_eof(tmp_path):
    proc = subprocess.Popen([sys.executable, RUN_PY, "--port", "0", "--exit-on-stdin-eof",
                             "--state-dir", str(tmp_path / "state")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        first = proc.stdout.readline().decode()
        assert re.fullmatch(r"SIM_READY http://127\.0\.0\.1:\d+\n", first), first
        proc.stdin.close()
        assert proc.wait(15) == 0
        assert proc.stdout.read() == b""  # nothing else on stdout
        assert (tmp_path / "state").is_dir()  # a given state dir is kept
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("how", ["stdin-eof", "sigterm"])
def test_exit_kills_running_jobs(start_sim, unique, how):
    s = start_sim("--stop-grace", "2")
    bucket = make_bucket(s, unique)
    name = unique("job-orphan")
    create_job(s, name, "trap '' TERM; echo started; while true; do sleep 0.1; done", bucket)
    wait_line(s, name, "started")
    pid = training_pid(s, name)
    assert pid and not pid_gone(pid)
    if how == "sigterm":
        s.proc.send_signal(signal.SIGTERM)
    else:
        s.proc.stdin.close()
    assert s.proc.wait(15) == 0
    s.wait_for(lambda: pid_gone(pid), 5, f"pid {pid} to be gone")


def test_calls_are_logged_with_normalised_names(sim, unique):
    bucket = make_bucket(sim, unique)
    sim.client("s3").put_object(Bucket=bucket, Key="a/b.txt", Body=b"x")
    sim.client("logs").describe_log_groups()
    sim.client("ecs").list_clusters()
    sim.client("sagemaker").list_training_jobs()
    # refused (not a JWT: test_oidc.py), but logged all the same
    with pytest.raises(Exception, match="InvalidIdentityToken"):
        sim.client("sts").assume_role_with_web_identity(
            RoleArn="arn:aws:iam::123456789012:role/ci", RoleSessionName="ci-session",
            WebIdentityToken="a-token")
    sim.client("sts").get_caller_identity()
    sim.client("secretsmanager").list_secrets()
    ops = [c["op"] for c in sim.calls()]
    for want in (f"S3.PUT /{bucket}", f"S3.PUT /{bucket}/a/b.txt", "Logs.DescribeLogGroups",
                 "ECS.ListClusters", "SageMaker.ListTrainingJobs",
                 "STS.AssumeRoleWithWebIdentity", "STS.GetCallerIdentity",
                 "SecretsManager.ListSecrets"):
        assert want in ops, (want, ops)
    assert all(isinstance(c["t"], float) and abs(c["t"] - time.time()) < 120
               for c in sim.calls())
    assert [c["op"] for c in sim.calls("ECS.")] == ["ECS.ListClusters"]


def test_reset_clears_outcomes_faults_and_calls(sim):
    sim.outcomes(training=[{"name_contains": "zzz", "fail": "capacity"}],
                 ecs_task=[{"name_contains": "fam"}])
    sim.faults({"match": "Nothing.Matches", "count": -1})
    assert set(sim.get("/_sim/outcomes")["outcomes"]) == {"training", "ecs_task"}
    sim.client("sagemaker").list_training_jobs()
    assert sim.calls()
    sim.reset()
    assert sim.get("/_sim/outcomes")["outcomes"] == {}
    assert sim.get("/_sim/faults")["rules"] == []
    assert sim.calls() == []


def test_outcomes_are_taken_by_kind_and_name(sim, unique):
    bucket = make_bucket(sim, unique)
    a, b = unique("job-out-a"), unique("job-out-b")
    # the first outcome does not match `a`, the second does: only that one is consumed
    sim.outcomes(training=[{"name_contains": b, "fail": "internal"},
                           {"name_contains": a, "fail": "capacity"}])
    create_job(sim, a, "true", bucket)
    d = wait_status(sim, a, ("Completed", "Failed", "Stopped"))
    assert d["FailureReason"].startswith("CapacityError")
    left = sim.get("/_sim/outcomes")["outcomes"]["training"]
    assert [o["name_contains"] for o in left] == [b]


def test_processes_lists_live_training_processes(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-procs")
    create_job(sim, name, "echo started; exec sleep 600", bucket)
    wait_line(sim, name, "started")
    procs = [p for p in sim.processes() if p["name"] == f"{name}/algo-1"]
    assert len(procs) == 1 and procs[0]["kind"] == "training"
    assert os.path.exists(f"/proc/{procs[0]['pid']}")
    sim.client("sagemaker").stop_training_job(TrainingJobName=name)
    wait_status(sim, name, "Stopped")
    assert not [p for p in sim.processes() if p["name"] == f"{name}/algo-1"]
