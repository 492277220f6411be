"""Fault injection: throttling, errors, latency and dropped connections, in each protocol's shape."""
from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from test_training import create_job, make_bucket, wait_status


def _code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture
def job(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-faults")
    create_job(sim, name, "true", bucket)
    wait_status(sim, name, "Completed")
    return name


def test_throttle_is_visible_without_retries_and_absorbed_with_default_retries(sim, job):
    since = time.time()
    sim.faults({"match": "SageMaker.DescribeTrainingJob", "kind": "throttle", "count": 2})
    no_retry = sim.client("sagemaker", retries=False)
    with pytest.raises(ClientError) as e:
        no_retry.describe_training_job(TrainingJobName=job)
    assert _code(e) == "ThrottlingException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # one use left: the SDK's default retries absorb it
    d = sim.client("sagemaker").describe_training_job(TrainingJobName=job)
    assert d["TrainingJobStatus"] == "Completed"
    calls = sim.calls("SageMaker.DescribeTrainingJob", since=since)
    assert [c.get("fault") for c in calls] == ["throttle", "throttle", None]
    assert [c.get("status") for c in calls] == [400, 400, 200]
    assert sim.get("/_sim/faults")["rules"] == []  # used up


def test_other_operations_are_not_affected(sim, job):
    sim.faults({"match": "SageMaker.DescribeTrainingJob", "kind": "throttle", "count": -1})
    sm = sim.client("sagemaker", retries=False)
    assert sm.list_training_jobs(NameContains=job)["TrainingJobSummaries"]
    for _ in range(3):
        with pytest.raises(ClientError):
            sm.describe_training_job(TrainingJobName=job)
    assert len(sim.get("/_sim/faults")["rules"]) == 1  # unlimited stays


def test_error_500_and_503_rules(sim, job):
    sim.faults({"match": "SageMaker.DescribeTrainingJob", "kind": "error", "status": 500,
                "code": "InternalFailure", "message": "injected 500"})
    sm = sim.client("sagemaker", retries=False)
    with pytest.raises(ClientError) as e:
        sm.describe_training_job(TrainingJobName=job)
    assert _code(e) == "InternalFailure"
    assert e.value.response["Error"]["Message"] == "injected 500"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500

    # 5 x 503 outlast 3 attempts
    sim.faults({"match": "SageMaker.DescribeTrainingJob", "kind": "error", "status": 503,
                "code": "ServiceUnavailable", "count": 5})
    with pytest.raises(ClientError) as e:
        sim.client("sagemaker", retries=3).describe_training_job(TrainingJobName=job)
    assert _code(e) == "ServiceUnavailable"
    assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 2


def test_skip_lets_first_calls_through(sim, job):
    sim.faults({"match": "SageMaker.DescribeTrainingJob", "skip": 1, "count": 1})
    sm = sim.client("sagemaker", retries=False)
    sm.describe_training_job(TrainingJobName=job)
    with pytest.raises(ClientError) as e:
        sm.describe_training_job(TrainingJobName=job)
    assert _code(e) == "ThrottlingException"
    sm.describe_training_job(TrainingJobName=job)


def test_latency_rule_delays_then_passes_through(sim, job):
    sim.faults({"match": "SageMaker.DescribeTrainingJob", "kind": "latency", "latency_ms": 700})
    sm = sim.client("sagemaker", retries=False)
    t0 = time.monotonic()
    assert sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] == "Completed"
    assert time.monotonic() - t0 >= 0.7
    t0 = time.monotonic()
    sm.describe_training_job(TrainingJobName=job)
    assert time.monotonic() - t0 < 0.5


def test_drop_rule_closes_the_connection(sim, job):
    sim.faults({"match": "SageMaker.DescribeTrainingJob", "kind": "drop"})
    sm = sim.client("sagemaker", retries=False)
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        sm.describe_training_job(TrainingJobName=job)
    calls = sim.calls("SageMaker.DescribeTrainingJob")
    assert calls[-1]["fault"] == "drop"
    # the server is fine afterwards
    assert sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] == "Completed"


def test_drop_response_serves_the_request_and_loses_the_answer(sim, unique):
    bucket = make_bucket(sim, unique)
    name = unique("job-lost-answer")
    sim.faults({"match": "SageMaker.CreateTrainingJob", "kind": "drop_response"})
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        sim.client("sagemaker", retries=False).create_training_job(**_create_args(name, bucket))
    assert sim.calls("SageMaker.CreateTrainingJob")[-1]["fault"] == "drop_response"
    # It was served: the job exists, and a retry of the same create is told so, as on AWS.
    sm = sim.client("sagemaker", retries=False)
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobName"] == name
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**_create_args(name, bucket))
    assert _code(e) == "ResourceInUse"


def _create_args(name: str, bucket: str) -> dict:
    return dict(
        TrainingJobName=name,
        RoleArn="arn:aws:iam::123456789012:role/SageMakerCI",
        AlgorithmSpecification={"TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
                                "TrainingInputMode": "File", "ContainerEntrypoint": ["/bin/sh", "-c", "true"]},
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )


def test_s3_query_and_logs_error_shapes(sim, unique):
    bucket = make_bucket(sim, unique)
    s3 = sim.client("s3", retries=False)
    sim.faults({"match": "S3.PUT", "kind": "throttle", "status": 503, "code": "SlowDown",
                "message": "Please reduce your request rate."})
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert _code(e) == "SlowDown"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    # a HEAD has no body: the status alone must come through
    sim.faults({"match": f"S3.HEAD /{bucket}/k", "kind": "error", "status": 500,
                "code": "InternalError"})
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="k")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    # and the default retries absorb a transient S3 error
    sim.faults({"match": "S3.GET", "kind": "error", "status": 500, "code": "InternalError"})
    assert sim.client("s3").get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"

    sts = sim.client("sts", retries=False)
    sim.faults({"match": "STS.AssumeRoleWithWebIdentity", "kind": "throttle",
                "code": "Throttling"})
    with pytest.raises(ClientError) as e:
        sts.assume_role_with_web_identity(RoleArn="arn:aws:iam::123456789012:role/ci",
                                          RoleSessionName="ci-session", WebIdentityToken="a-token")
    assert _code(e) == "Throttling"
    # the rule is spent: STS itself answers now (and refuses a token that is not a JWT)
    with pytest.raises(ClientError) as e:
        sts.assume_role_with_web_identity(RoleArn="arn:aws:iam::123456789012:role/ci",
                                          RoleSessionName="ci-session", WebIdentityToken="a-token")
    assert _code(e) == "InvalidIdentityToken"

    logs = sim.client("logs", retries=False)
    sim.faults({"match": "Logs.GetLogEvents", "kind": "throttle"})
    with pytest.raises(ClientError) as e:
        logs.get_log_events(logGroupName="/x", logStreamName="y")
    assert _code(e) == "ThrottlingException"


def test_bad_fault_rules_are_rejected(sim):
    status, obj = sim._req("POST", "/_sim/faults", {"rules": [{"match": "x", "kind": "explode"}]})
    assert status == 400 and "kind" in obj["error"]
    status, obj = sim._req("POST", "/_sim/faults", {"rules": [{"match": "x", "typo": 1}]})
    assert status == 400 and "typo" in obj["error"]
    assert sim.get("/_sim/faults")["rules"] == []
