"""SageMaker training jobs really run in the simulator (and moto's patch points still hold)."""
from __future__ import annotations

import io
import json
import os
import tarfile
import time

import pytest
from botocore.exceptions import ClientError

GROUP = "/aws/sagemaker/TrainingJobs"
ROLE = "arn:aws:iam::123456789012:role/sagemaker-exec"


# ------------------------------------------------------------------------------------ helpers
def make_bucket(sim, unique) -> str:
    name = unique("sim-bucket")
    sim.client("s3").create_bucket(Bucket=name)
    return name


def create_job(sim, name: str, script: str, bucket: str, *, instances: int = 1,
               channels=None, metric_defs=None, stopping=None, spot=False, env=None,
               checkpoint=None, hyper=None, tags=None, entrypoint=True, region=None, **extra):
    spec = {"TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1",
            "TrainingInputMode": "File"}
    if entrypoint:
        spec["ContainerEntrypoint"] = ["/bin/sh", "-c"]
        spec["ContainerArguments"] = [script]
    if metric_defs:
        spec["MetricDefinitions"] = metric_defs
    kw = dict(
        TrainingJobName=name,
        AlgorithmSpecification=spec,
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": instances,
                        "VolumeSizeInGB": 10},
        StoppingCondition=stopping or {"MaxRuntimeInSeconds": 3600},
    )
    if channels:
        kw["InputDataConfig"] = channels
    if spot:
        kw["EnableManagedSpotTraining"] = True
    if env:
        kw["Environment"] = env
    if checkpoint:
        kw["CheckpointConfig"] = checkpoint
    if hyper:
        kw["HyperParameters"] = hyper
    if tags:
        kw["Tags"] = tags
    kw.update(extra)
    return sim.client("sagemaker", region=region).create_training_job(**kw)


def describe(sim, name, region=None):
    return sim.client("sagemaker", region=region).describe_training_job(TrainingJobName=name)


def wait_status(sim, name, statuses, timeout=30.0, region=None):
    statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    return sim.wait_for(
        lambda: (lambda d: d if d["TrainingJobStatus"] in statuses else None)(
            describe(sim, name, region)),
        timeout, f"{name} to reach {statuses}")


def log_lines(sim, name, region=None) -> dict[str, list[str]]:
    logs = sim.client("logs", region=region)
    try:
        streams = logs.describe_log_streams(logGroupName=GROUP,
                                            logStreamNamePrefix=f"{name}/")["logStreams"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return {}
        raise
    out = {}
    for s in streams:
        ev = logs.get_log_events(logGroupName=GROUP, logStreamName=s["logStreamName"],
                                 startFromHead=True)["events"]
        out[s["logStreamName"]] = [e["message"] for e in ev]
    return out


def all_lines(sim, name, region=None) -> list[str]:
    return [l for v in log_lines(sim, name, region).values() for l in v]


def wait_line(sim, name, needle, timeout=20.0):
    return sim.wait_for(lambda: [l for l in all_lines(sim, name) if needle in l],
                        timeout, f"log line containing {needle!r} in {name}")


def tar_members(sim, bucket, key) -> dict[str, bytes]:
    body = sim.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body[:2] == b"\x1f\x8b", "not gzip"
    out = {}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tf:
        for m in tf.getmembers():
            if m.isfile():
                out[m.name] = tf.extractfile(m).read()
    return out


def training_pid(sim, name, host="algo-1"):
    procs = [p for p in sim.processes() if p["name"] == f"{name}/{host}"]
    return procs[0]["pid"] if procs else None


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # still exists: maybe a zombie not yet reaped by the simulator
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


# ------------------------------------------------------------------------------------ tests
def test_entrypoint_runs_logs_stream_live_and_model_lands_in_s3(sim, unique, tmp_path):
    bucket = make_bucket(sim, unique)
    name = unique("job-ok")
    go = tmp_path / "go"
    script = (f'echo line-1; echo "line-2 $TRAINING_JOB_NAME"; echo "t=$(date +%s.%N)"; '
              f'while [ ! -e {go} ]; do sleep 0.05; done; '
              'echo weights-v1 > /opt/ml/model/weights.txt; mkdir -p /opt/ml/model/sub; '
              'echo x > /opt/ml/model/sub/extra.bin; echo result > /opt/ml/output/data/result.txt; '
              'echo line-3')
    arn = create_job(sim, name, script, bucket)["TrainingJobArn"]
    assert arn.endswith(f":training-job/{name}")

    d = describe(sim, name)
    assert d["TrainingJobStatus"] == "InProgress", d["TrainingJobStatus"]  # moto says Completed
    assert "ModelArtifacts" not in d or not d["ModelArtifacts"].get("S3ModelArtifacts")

    # lines reach CloudWatch while the job still runs, within ~1 s of being printed
    (stamp,) = wait_line(sim, name, "t=", timeout=20)
    assert time.time() - float(stamp[2:]) < 1.5, "log line took more than ~1 s to appear"
    wait_line(sim, name, "line-2")
    d = describe(sim, name)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("InProgress", "Training")
    assert "TrainingStartTime" in d and "TrainingEndTime" not in d
    streams = log_lines(sim, name)
    assert len(streams) == 1
    (stream,) = streams
    host, epoch = stream[len(name) + 1:].rsplit("-", 1)
    assert host == "algo-1" and abs(int(epoch) - time.time()) < 120

    go.write_text("")
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["SecondaryStatus"] == "Completed"
    assert [t["Status"] for t in d["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in t for t in d["SecondaryStatusTransitions"])
    assert d["TrainingEndTime"] >= d["TrainingStartTime"]
    assert d["TrainingTimeInSeconds"] >= 1 and d["BillableTimeInSeconds"] == d["TrainingTimeInSeconds"]
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/out/{name}/output/model.tar.gz"
    assert "FailureReason" not in d

    lines = all_lines(sim, name)
    assert lines == ["line-1", f"line-2 {name}", stamp, "line-3"]

    model = tar_members(sim, bucket, f"out/{name}/output/model.tar.gz")
    assert model == {"weights.txt": b"weights-v1\n", "sub/extra.bin": b"x\n"}
    output = tar_members(sim, bucket, f"out/{name}/output/output.tar.gz")
    assert output == {"result.txt": b"result\n"}

    summaries = sim.client("sagemaker").list_training_jobs(NameContains=name)["TrainingJobSummaries"]
    assert [(s["TrainingJobName"], s["TrainingJobStatus"]) for s in summaries] == [(name, "Completed")]
    assert sim.calls("SageMaker.CreateTrainingJob")


def test_failing_entrypoint_reports_failure_file(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-fail")
    create_job(sim, name, "echo about-to-fail; printf '  bad input: column x missing \\n' "
                          "> /opt/ml/output/failure; echo partial > /opt/ml/output/data/p.txt; "
                          "exit 3", bucket)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Failed"
    assert d["SecondaryStatus"] == "Failed"
    assert d["FailureReason"] == "AlgorithmError: bad input: column x missing"
    assert "ModelArtifacts" not in d or not d["ModelArtifacts"].get("S3ModelArtifacts")
    assert "about-to-fail" in all_lines(sim, name)
    # best effort: the output that exists is uploaded even for a failed job
    assert tar_members(sim, bucket, f"out/{name}/output/output.tar.gz") == {"p.txt": b"partial\n"}


def test_background_children_do_not_outlive_the_job(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-bg")
    create_job(sim, name, 'sleep 600 & echo "bg=$!"; exit 0', bucket)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"), timeout=10)
    assert d["TrainingJobStatus"] == "Completed"
    (line,) = [l for l in all_lines(sim, name) if l.startswith("bg=")]
    sim.wait_for(lambda: pid_gone(int(line[3:])), 5, "the background child to be killed")


def test_failing_entrypoint_without_failure_file_reports_exit_code(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-exit")
    create_job(sim, name, "exit 7", bucket)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == "AlgorithmError: process exited with code 7"


def test_long_failure_file_is_capped(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-cap")
    create_job(sim, name, "head -c 5000 /dev/zero | tr '\\0' 'e' > /opt/ml/output/failure; exit 1",
               bucket)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["FailureReason"] == "AlgorithmError: " + "e" * 1024


def test_stop_training_job_kills_the_process_group(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-stop")
    # ignores SIGTERM, so only the SIGKILL after --stop-grace (2 s) ends it; a child too
    create_job(sim, name, "trap '' TERM; sleep 600 & echo started; "
                          "while true; do sleep 0.1; done", bucket)
    wait_line(sim, name, "started")
    pid = training_pid(sim, name)
    assert pid and not pid_gone(pid)
    sm = sim.client("sagemaker")
    t0 = time.monotonic()
    sm.stop_training_job(TrainingJobName=name)
    d = describe(sim, name)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopping", "Stopping")
    d = wait_status(sim, name, ("Stopped", "Completed", "Failed"), timeout=20)
    elapsed = time.monotonic() - t0
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert 1.5 <= elapsed < 15, elapsed  # waited for the grace period, then SIGKILL
    assert [t["Status"] for t in d["SecondaryStatusTransitions"]][-2:] == ["Stopping", "Stopped"]
    assert pid_gone(pid)
    assert training_pid(sim, name) is None
    assert [c for c in sim.calls() if c["op"] == "SageMaker.StopTrainingJob"]

    # like AWS: stopping a finished or unknown job is a ValidationException
    for job in (name, unique("no-such-job")):
        with pytest.raises(ClientError) as e:
            sm.stop_training_job(TrainingJobName=job)
        assert e.value.response["Error"]["Code"] == "ValidationException"


def test_stop_is_prompt_when_the_process_obeys_sigterm(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-stop-term")
    create_job(sim, name, "echo started; exec sleep 600", bucket)
    wait_line(sim, name, "started")
    pid = training_pid(sim, name)
    t0 = time.monotonic()
    sim.client("sagemaker").stop_training_job(TrainingJobName=name)
    d = wait_status(sim, name, ("Stopped", "Completed", "Failed"))
    assert d["TrainingJobStatus"] == "Stopped"
    assert time.monotonic() - t0 < 1.9
    assert pid_gone(pid)


def test_hidden_path_is_empty_inside_the_job(sim, unique):
    hidden = sim.hidden_dir
    assert os.listdir(hidden), "the hidden dir must have files on the host"
    bucket = make_bucket(sim, unique)
    name = unique("job-hide")
    create_job(sim, name, f'echo "entries=$(ls -A {hidden} | wc -l)"; '
                          f'cat {hidden}/secret-checkout.txt 2>/dev/null && echo LEAKED; '
                          'cat /opt/ml/input/config/resourceconfig.json; echo', bucket)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    lines = all_lines(sim, name)
    assert "entries=0" in lines, lines
    assert "LEAKED" not in lines
    rc = json.loads(lines[1])
    assert rc["current_host"] == "algo-1" and rc["hosts"] == ["algo-1"]
    assert os.path.exists(os.path.join(hidden, "secret-checkout.txt"))


def test_input_channels_config_files_and_environment(sim, unique):
    bucket = make_bucket(sim, unique)
    s3 = sim.client("s3")
    s3.put_object(Bucket=bucket, Key="data/train/a.csv", Body=b"1,2\n")
    s3.put_object(Bucket=bucket, Key="data/train/sub/b.csv", Body=b"3,4\n")
    s3.put_object(Bucket=bucket, Key="data/other/c.csv", Body=b"no\n")
    name = unique("job-input")
    channels = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/train/",
        "S3DataDistributionType": "FullyReplicated"}}}]
    # Like SageMaker, the simulator sets no SM_* variable (the training toolkit in framework
    # images does; sagemaker-executor's bootstrap does it itself): only the job's own.
    script = ('cd /opt/ml/input/data/train && find . -type f | sort; cat a.csv sub/b.csv; '
              'echo "sm-vars=$(env | grep ^SM_ | sort | paste -sd, -)"; '
              'echo "job=$TRAINING_JOB_NAME"; '
              'echo "arn=$TRAINING_JOB_ARN"; echo "my=$MY_SETTING region=$AWS_REGION"; '
              'echo "endpoint=$AWS_ENDPOINT_URL"; '
              'cat /opt/ml/input/config/hyperparameters.json; echo; '
              'cat /opt/ml/input/config/inputdataconfig.json; echo')
    create_job(sim, name, script, bucket, channels=channels,
               env={"MY_SETTING": "v1", "SM_FROM_THE_JOB": "kept"},
               hyper={"epochs": "3"}, RetryStrategy={"MaximumRetryAttempts": 2})
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["Environment"] == {"MY_SETTING": "v1", "SM_FROM_THE_JOB": "kept"}  # moto drops it
    assert d["RetryStrategy"] == {"MaximumRetryAttempts": 2}  # and this
    lines = all_lines(sim, name)
    assert lines[:4] == ["./a.csv", "./sub/b.csv", "1,2", "3,4"], lines
    assert "sm-vars=SM_FROM_THE_JOB=kept" in lines, lines
    assert f"job={name}" in lines
    assert f"arn={d['TrainingJobArn']}" in lines
    assert "my=v1 region=us-east-1" in lines
    assert f"endpoint={sim.endpoint}" in lines
    assert json.loads(lines[-2]) == {"epochs": "3"}
    assert json.loads(lines[-1])["train"]["TrainingInputMode"] == "File"


def test_missing_input_data_fails_with_client_error(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-noinput")
    channels = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/nothing-here/"}}}]
    create_job(sim, name, "echo should-not-run", bucket, channels=channels)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("ClientError: No S3 objects found under S3 URL")
    assert all_lines(sim, name) == []


def test_two_instances_get_two_streams_and_private_opt_ml(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-two")
    # No SM_CURRENT_HOST here (see above): the host comes from resourceconfig.json.
    create_job(sim, name, r'rc=/opt/ml/input/config/resourceconfig.json; '
                          r'host=$(sed -n "s/.*\"current_host\": *\"\([^\"]*\)\".*/\1/p" $rc); '
                          'n=$(grep -o "algo-[0-9]*" $rc | sort -u | wc -l); '
                          'echo "I am $host of $n"; '
                          'echo "$host" > /opt/ml/model/host-$host; '
                          'ls /opt/ml/model', bucket, instances=2)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    streams = log_lines(sim, name)
    assert sorted(s.split("/")[1].rsplit("-", 1)[0] for s in streams) == ["algo-1", "algo-2"]
    for stream, lines in streams.items():
        host = stream.split("/")[1].rsplit("-", 1)[0]
        # each instance sees only its own /opt/ml/model
        assert lines == [f"I am {host} of 2", f"host-{host}"], lines
    assert tar_members(sim, bucket, f"out/{name}/output/model.tar.gz") == {
        "host-algo-1": b"algo-1\n"}


def test_capacity_outcome_fails_before_running_anything(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-capacity")
    sim.outcomes(training=[{"name_contains": name, "fail": "capacity"}])
    create_job(sim, name, "echo should-not-run", bucket)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith(
        "CapacityError: Unable to provision requested ML compute capacity.")
    assert "TrainingStartTime" not in d
    assert all_lines(sim, name) == []
    assert sim.get("/_sim/outcomes")["outcomes"] == {}  # consumed


def test_internal_outcome_and_start_delay(sim, unique):
    bucket = make_bucket(sim, unique)
    bad, slow = unique("job-internal"), unique("job-slow")
    sim.outcomes(training=[{"name_contains": bad, "fail": "internal"},
                           {"name_contains": slow, "start_delay_s": 1.5}])
    create_job(sim, bad, "true", bucket)
    t0 = time.monotonic()
    create_job(sim, slow, "true", bucket)
    d = wait_status(sim, bad, ("Completed", "Failed", "Stopped"))
    assert d["FailureReason"] == ("InternalServerError: We encountered an internal error. "
                                  "Please try again.")
    d = describe(sim, slow)
    if time.monotonic() - t0 < 1.2:
        assert d["SecondaryStatus"] == "Starting"
    d = wait_status(sim, slow, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Completed"
    assert time.monotonic() - t0 >= 1.5


def test_metric_definitions_give_final_metrics(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-metrics")
    defs = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"},
            {"Name": "validation:accuracy", "Regex": r"acc=([0-9.]+)"},
            {"Name": "never", "Regex": r"nomatch=([0-9.]+)"}]
    create_job(sim, name, "echo epoch=1 loss=0.5; echo epoch=2 loss=0.25 acc=0.9; "
                          "echo acc=oops", bucket, metric_defs=defs)
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["AlgorithmSpecification"]["MetricDefinitions"] == defs  # moto replaces them
    got = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert got == {"train:loss": 0.25, "validation:accuracy": 0.9}


def test_max_runtime_stops_the_job(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-maxrt")
    create_job(sim, name, "echo started; exec sleep 600", bucket,
               stopping={"MaxRuntimeInSeconds": 1})
    wait_line(sim, name, "started")
    pid = training_pid(sim, name)
    d = wait_status(sim, name, ("Stopped", "Completed", "Failed"), timeout=20)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert pid is None or pid_gone(pid)


def test_spot_billing_max_wait_and_checkpoints(sim, unique):
    bucket = make_bucket(sim, unique)
    s3 = sim.client("s3")
    s3.put_object(Bucket=bucket, Key="ckpt/job/step-1.ckpt", Body=b"old")
    name = unique("job-spot")
    create_job(sim, name, "ls /opt/ml/checkpoints; echo new > /opt/ml/checkpoints/step-2.ckpt; "
                          "sleep 1.2", bucket, spot=True,
               stopping={"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 120},
               checkpoint={"S3Uri": f"s3://{bucket}/ckpt/job"})
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["EnableManagedSpotTraining"] is True
    assert d["CheckpointConfig"] == {"S3Uri": f"s3://{bucket}/ckpt/job"}
    t = d["TrainingTimeInSeconds"]
    assert t >= 2 and d["BillableTimeInSeconds"] == -(-3 * t // 10)  # ceil(0.3 * t)
    assert all_lines(sim, name) == ["step-1.ckpt"]
    got = s3.get_object(Bucket=bucket, Key="ckpt/job/step-2.ckpt")["Body"].read()
    assert got == b"new\n"

    # MaxWaitTimeInSeconds covers waiting + running: exceeding it stops the job
    # (here the wait for "spot capacity" is a scripted start delay longer than MaxWait)
    name2 = unique("job-maxwait")
    sim.outcomes(training=[{"name_contains": name2, "start_delay_s": 30}])
    create_job(sim, name2, "exec sleep 600", bucket, spot=True,
               stopping={"MaxRuntimeInSeconds": 1, "MaxWaitTimeInSeconds": 1})
    d = wait_status(sim, name2, ("Stopped", "Completed", "Failed"), timeout=20)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "MaxWaitTimeExceeded")
    assert "TrainingStartTime" not in d

    with pytest.raises(ClientError) as e:  # spot needs MaxWaitTimeInSeconds
        create_job(sim, unique("job-spot-bad"), "true", bucket, spot=True,
                   stopping={"MaxRuntimeInSeconds": 60})
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_validation_duplicates_no_entrypoint_tags_and_list(sim, unique):
    bucket = make_bucket(sim, unique)
    sm = sim.client("sagemaker")
    name = unique("job-misc")
    tags = [{"Key": "gitlab:job-id", "Value": "42"}]
    arn = create_job(sim, name, "true", bucket, tags=tags)["TrainingJobArn"]
    with pytest.raises(ClientError) as e:
        create_job(sim, name, "true", bucket)
    assert e.value.response["Error"]["Code"] == "ResourceInUse"  # as AWS answers a duplicate
    assert "already exists" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        create_job(sim, "bad_name!", "true", bucket)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as e:
        describe(sim, unique("no-such-job"))
    assert e.value.response["Error"]["Code"] == "ValidationException"

    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "extra", "Value": "1"}])
    got = sm.list_tags(ResourceArn=arn)["Tags"]
    assert {"Key": "gitlab:job-id", "Value": "42"} in got and {"Key": "extra", "Value": "1"} in got

    noep = unique("job-noentry")
    create_job(sim, noep, "", bucket, entrypoint=False)
    d = wait_status(sim, noep, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Failed"
    assert "ContainerEntrypoint" in d["FailureReason"]

    wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    # filters apply before paging; sort works (moto pages first and ignores SortBy)
    prefix = unique("lst")
    for i in range(3):
        create_job(sim, f"{prefix}-{i}", "true", bucket)
    page = sm.list_training_jobs(NameContains=prefix, MaxResults=2, SortBy="Name",
                                 SortOrder="Descending")
    assert [s["TrainingJobName"] for s in page["TrainingJobSummaries"]] == [
        f"{prefix}-2", f"{prefix}-1"]
    rest = sm.list_training_jobs(NameContains=prefix, MaxResults=2, SortBy="Name",
                                 SortOrder="Descending", NextToken=page["NextToken"])
    assert [s["TrainingJobName"] for s in rest["TrainingJobSummaries"]] == [f"{prefix}-0"]
    assert "NextToken" not in rest
    for i in range(3):
        wait_status(sim, f"{prefix}-{i}", "Completed")
    done = sm.list_training_jobs(NameContains=prefix, StatusEquals="Completed")
    assert len(done["TrainingJobSummaries"]) == 3


def test_stop_while_starting_and_other_regions(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-stop-early")
    sim.outcomes(training=[{"name_contains": name, "start_delay_s": 60}])
    create_job(sim, name, "echo should-not-run", bucket)
    sm = sim.client("sagemaker")
    assert describe(sim, name)["SecondaryStatus"] == "Starting"
    sm.stop_training_job(TrainingJobName=name)
    d = wait_status(sim, name, ("Stopped", "Completed", "Failed"), timeout=10)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "TrainingStartTime" not in d and all_lines(sim, name) == []

    # any region works; logs go to that region's CloudWatch
    name = unique("job-eu")
    create_job(sim, name, "echo hello-eu", bucket, region="eu-west-1")
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"), region="eu-west-1")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobArn"].startswith("arn:aws:sagemaker:eu-west-1:")
    assert all_lines(sim, name, region="eu-west-1") == ["hello-eu"]
    assert all_lines(sim, name) == []


def test_warm_pool_status_with_keep_alive(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-warm")
    create_job(sim, name, "true", bucket)
    d = wait_status(sim, name, "Completed")
    assert "WarmPoolStatus" not in d
    name = unique("job-warm2")
    kw = {"ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                             "VolumeSizeInGB": 10, "KeepAlivePeriodInSeconds": 1}}
    create_job(sim, name, "true", bucket, **kw)
    d = wait_status(sim, name, "Completed")
    assert d["WarmPoolStatus"]["Status"] in ("Available", "Terminated")
    sim.wait_for(lambda: describe(sim, name)["WarmPoolStatus"]["Status"] == "Terminated", 10,
                 "the warm pool to end")


BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                         "stages", "src", "workspace", "bootstrap.sh")


def test_the_executor_bootstrap_exports_what_the_simulator_does_not(sim, unique):
    """The product's bootstrap.sh as the entrypoint (as CreateTrainingJob from the executor):
    the SM_* variables a script sees are the bootstrap's, derived from /opt/ml/input/config."""
    bucket = make_bucket(sim, unique)
    s3 = sim.client("s3")
    project = "/opt/ml/code/proj"  # inside each host's private /opt/ml
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"workspace file\n"
        info = tarfile.TarInfo(project.lstrip("/") + "/README")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    script = ('echo "hosts=$SM_HOSTS cur=$SM_CURRENT_HOST n=$SM_NUM_HOSTS"\n'
              'echo "channels=$SM_CHANNELS rows=$(cat "$SM_CHANNEL_TRAIN/rows.csv")"\n'
              'echo "hps=$SM_HPS msg=$SM_HP_MESSAGE"\n'
              'echo "weights-$SM_CURRENT_HOST" > "$SM_MODEL_DIR/model-$SM_CURRENT_HOST.bin"\n')
    with open(BOOTSTRAP, "rb") as f:
        bootstrap = f.read()
    for key, body in (("ws/workspace.tar.gz", buf.getvalue()), ("ws/bootstrap.sh", bootstrap),
                      ("ws/script", script.encode()),
                      ("ws/job.env", f"SME_PROJECT_DIR={project}\nSME_MODE=sagemaker\n".encode()),
                      ("data/rows.csv", b"1,2\n")):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    channel = "/opt/ml/input/data/sm-workspace"

    def s3_channel(name, prefix):
        return {"ChannelName": name, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{prefix}",
            "S3DataDistributionType": "FullyReplicated"}}}

    name = unique("job-bootstrap")
    sim.client("sagemaker").create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/t:1",
                                "TrainingInputMode": "File",
                                "ContainerEntrypoint": ["/bin/sh"],
                                "ContainerArguments": [f"{channel}/bootstrap.sh", channel]},
        RoleArn=ROLE, OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        InputDataConfig=[s3_channel("sm-workspace", "ws/"), s3_channel("train", "data/")],
        HyperParameters={"epochs": "2", "message": 'it\'s "ok" now'})
    d = wait_status(sim, name, ("Completed", "Failed", "Stopped"))
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    streams = log_lines(sim, name)
    assert len(streams) == 2, streams
    for stream, lines in streams.items():
        host = stream.split("/")[1].rsplit("-", 1)[0]
        assert f'hosts=["algo-1","algo-2"] cur={host} n=2' in lines, lines
        assert 'channels=["sm-workspace","train"] rows=1,2' in lines, lines
        assert 'hps={"epochs":2,"message":"it\'s \\"ok\\" now"} msg=it\'s "ok" now' in lines, lines
    assert tar_members(sim, bucket, f"out/{name}/output/model.tar.gz") == {
        "model-algo-1.bin": b"weights-algo-1\n"}
