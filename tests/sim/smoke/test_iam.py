"""IAM is evaluated where it matters to the executor, only for principals with policies in moto
(simulator module iam_access): a training job's execution role needs S3 access to its inputs and
output, and callers need iam:PassRole for CreateTrainingJob, CreateModel and RunTask."""
from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
ECS_TASKS = {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
SAGEMAKER = {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


# ------------------------------------------------------------------------------------ helpers
def doc(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource, **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action, resource) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


def make_role(iam, name: str, *inline: str, managed: tuple[str, ...] = ()) -> str:
    trust = doc({"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                 "Action": "sts:AssumeRole"})
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    for i, policy in enumerate(inline):
        iam.put_role_policy(RoleName=name, PolicyName=f"p{i}", PolicyDocument=policy)
    for i, policy in enumerate(managed):
        parn = iam.create_policy(PolicyName=f"{name}-m{i}", PolicyDocument=policy)["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=name, PolicyArn=parn)
    return arn


def client_as(sim, service: str, creds: dict):
    """A client signing with these credentials (an IAM user's keys or an STS session)."""
    return boto3.client(service, endpoint_url=sim.endpoint, region_name=sim.region,
                        aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds.get("SessionToken"),
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def make_user(iam, name: str, *inline: str) -> dict:
    iam.create_user(UserName=name)
    for i, policy in enumerate(inline):
        iam.put_user_policy(UserName=name, PolicyName=f"p{i}", PolicyDocument=policy)
    return iam.create_access_key(UserName=name)["AccessKey"]


def train(sm, name: str, role: str, bucket: str, out: str = "out", channel: str | None = None):
    spec = {"TrainingImage": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/train:1",
            "TrainingInputMode": "File", "ContainerEntrypoint": ["/bin/sh", "-c"],
            "ContainerArguments": ["echo hi > /opt/ml/model/m.txt"]}
    kw = dict(TrainingJobName=name, AlgorithmSpecification=spec, RoleArn=role,
              OutputDataConfig={"S3OutputPath": f"s3://{bucket}/{out}"},
              ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                              "VolumeSizeInGB": 10},
              StoppingCondition={"MaxRuntimeInSeconds": 600})
    if channel:
        kw["InputDataConfig"] = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{channel}"}}}]
    return sm.create_training_job(**kw)


def ended(sim, sm, name: str) -> dict:
    def probe():
        d = sm.describe_training_job(TrainingJobName=name)
        return d if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped") else None
    return sim.wait_for(probe, timeout=30, what=f"training job {name} ends")


@pytest.fixture
def world(sim, aws, unique):
    """(iam, s3, sagemaker clients with the dummy keys, a bucket with objects under in/ok/ and
    in/secret/)."""
    iam, s3, sm = aws("iam"), aws("s3"), aws("sagemaker")
    bucket = unique("iam-bucket")
    s3.create_bucket(Bucket=bucket)
    for key in ("in/ok/a.txt", "in/secret/b.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")
    return iam, s3, sm, bucket


# ------------------------------------------------------- execution role: S3 input and output
def test_an_output_path_the_role_cannot_write_fails_the_job_like_sagemaker(sim, world, unique):
    iam, s3, sm, bucket = world
    role = make_role(iam, unique("exec"), doc(
        allow(["s3:GetObject", "s3:ListBucket"], [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]),
        allow("s3:PutObject", f"arn:aws:s3:::{bucket}/allowed/*")))

    denied = unique("job")
    train(sm, denied, role, bucket, out="out")
    d = ended(sim, sm, denied)
    assert d["TrainingJobStatus"] == "Failed"
    uri = f"s3://{bucket}/out/{denied}/output/model.tar.gz"
    assert d["FailureReason"] == (f"ClientError: Artifact upload failed:Unable to upload object "
                                  f"{uri} (AccessDenied: Access Denied)"), d["FailureReason"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="out/"), "nothing uploaded"

    # The same role may write under allowed/: the policy is evaluated, not just present.
    ok = unique("job")
    train(sm, ok, role, bucket, out="allowed")
    d = ended(sim, sm, ok)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    s3.head_object(Bucket=bucket, Key=f"allowed/{ok}/output/model.tar.gz")


def test_inputs_need_list_bucket_and_get_object_from_attached_policies(sim, world, unique):
    iam, _s3, sm, bucket = world
    put = allow("s3:PutObject", f"arn:aws:s3:::{bucket}/out/*")
    listing = allow("s3:ListBucket", f"arn:aws:s3:::{bucket}")
    read_ok = allow("s3:GetObject", f"arn:aws:s3:::{bucket}/in/ok/*")
    role = make_role(iam, unique("exec"), managed=(doc(put, listing, read_ok),))

    job = unique("job")
    train(sm, job, role, bucket, channel="in/ok/")
    assert ended(sim, sm, job)["TrainingJobStatus"] == "Completed"

    job = unique("job")
    train(sm, job, role, bucket, channel="in/secret/")
    d = ended(sim, sm, job)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == (f"ClientError: Data download failed:Unable to download object "
                                  f"s3://{bucket}/in/secret/b.txt (AccessDenied: Access Denied)")

    no_list = make_role(iam, unique("exec"), doc(put, read_ok))
    job = unique("job")
    train(sm, job, no_list, bucket, channel="in/ok/")
    d = ended(sim, sm, job)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == (f"ClientError: Data download failed:Unable to list objects under "
                                  f"s3://{bucket}/in/ok/ (AccessDenied: Access Denied)")


def test_a_manifest_channel_needs_get_object_only_and_downloads_what_it_names(sim, world,
                                                                           unique):
    iam, s3, sm, bucket = world
    s3.put_object(Bucket=bucket, Key="in/ok/sub/c.txt", Body=b"more")
    manifest = [{"prefix": f"s3://{bucket}/in/ok/"}, "a.txt", "sub/c.txt"]
    s3.put_object(Bucket=bucket, Key="in/ok.manifest", Body=json.dumps(manifest).encode())
    put = allow("s3:PutObject", f"arn:aws:s3:::{bucket}/out/*")
    read_ok = allow("s3:GetObject", [f"arn:aws:s3:::{bucket}/in/ok/*",
                                     f"arn:aws:s3:::{bucket}/in/ok.manifest"])
    # No s3:ListBucket at all.
    role = make_role(iam, unique("exec"), doc(put, read_ok))
    spec = {"TrainingImage": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/train:1",
            "TrainingInputMode": "File", "ContainerEntrypoint": ["/bin/sh", "-c"],
            "ContainerArguments": ["cat /opt/ml/input/data/train/a.txt "
                                   "/opt/ml/input/data/train/sub/c.txt > /opt/ml/model/m.txt"]}
    def train_from(manifest_key: str) -> dict:
        job = unique("job")
        sm.create_training_job(
            TrainingJobName=job, AlgorithmSpecification=spec, RoleArn=role,
            OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                            "VolumeSizeInGB": 10},
            StoppingCondition={"MaxRuntimeInSeconds": 600},
            InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "ManifestFile", "S3Uri": f"s3://{bucket}/{manifest_key}"}}}])
        return ended(sim, sm, job)

    d = train_from("in/ok.manifest")
    job = d["TrainingJobName"]
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    body = s3.get_object(Bucket=bucket, Key=f"out/{job}/output/model.tar.gz")["Body"].read()
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        assert t.extractfile("m.txt").read() == b"datamore"

    # A manifest naming an object the role may not read fails the job as SageMaker does.
    bad = [{"prefix": f"s3://{bucket}/in/"}, "ok/a.txt", "secret/b.txt"]
    s3.put_object(Bucket=bucket, Key="in/ok/bad.manifest", Body=json.dumps(bad).encode())
    d = train_from("in/ok/bad.manifest")
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == (f"ClientError: Data download failed:Unable to download object "
                                  f"s3://{bucket}/in/secret/b.txt (AccessDenied: Access Denied)")


def test_an_explicit_deny_wins_and_conditions_on_the_prefix_apply(sim, world, unique):
    iam, _s3, sm, bucket = world
    role = make_role(iam, unique("exec"), doc(allow("s3:*", "*")),
                     doc(deny("s3:PutObject", f"arn:aws:s3:::{bucket}/out/*")))
    job = unique("job")
    train(sm, job, role, bucket)
    d = ended(sim, sm, job)
    assert d["TrainingJobStatus"] == "Failed"
    assert "Artifact upload failed" in d["FailureReason"]

    # ListBucket only for the prefix in/ok/ (s3:prefix condition).
    scoped = make_role(iam, unique("exec"), doc(
        allow(["s3:GetObject", "s3:PutObject"], f"arn:aws:s3:::{bucket}/*"),
        allow("s3:ListBucket", f"arn:aws:s3:::{bucket}",
              Condition={"StringLike": {"s3:prefix": "in/ok/*"}})))
    job = unique("job")
    train(sm, job, scoped, bucket, channel="in/ok/")
    assert ended(sim, sm, job)["TrainingJobStatus"] == "Completed"
    job = unique("job")
    train(sm, job, scoped, bucket, channel="in/secret/")
    d = ended(sim, sm, job)
    assert d["TrainingJobStatus"] == "Failed"
    assert "Unable to list objects under" in d["FailureReason"], d["FailureReason"]


def test_a_role_without_policies_or_unknown_to_iam_is_not_evaluated(sim, world, unique):
    iam, _s3, sm, bucket = world
    bare = make_role(iam, unique("exec"))
    for role in (bare, f"arn:aws:iam::{ACCOUNT}:role/{unique('nowhere')}"):
        job = unique("job")
        train(sm, job, role, bucket, channel="in/secret/")
        d = ended(sim, sm, job)
        assert d["TrainingJobStatus"] == "Completed", (role, d.get("FailureReason"))


# ----------------------------------------------------------------- iam:PassRole of the caller
def test_create_training_job_and_model_need_pass_role_for_sagemaker(sim, world, unique):
    iam, _s3, _sm, bucket = world
    good, other = make_role(iam, unique("exec")), make_role(iam, unique("exec"))
    ecs_only = make_role(iam, unique("exec"))
    keys = make_user(iam, unique("runner"), doc(
        allow(["sagemaker:*", "s3:*"], "*"),
        allow("iam:PassRole", good, Condition=SAGEMAKER),
        allow("iam:PassRole", ecs_only, Condition=ECS_TASKS)))
    sm = client_as(sim, "sagemaker", keys)

    train(sm, unique("job"), good, bucket)
    for role in (other, ecs_only):
        with pytest.raises(ClientError) as e:
            train(sm, unique("job"), role, bucket)
        err = e.value.response["Error"]
        assert err["Code"] == "AccessDeniedException"
        assert f"is not authorized to perform: iam:PassRole on resource: {role}" in err["Message"]
        assert ":user/" in err["Message"], err["Message"]

    container = {"Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/serve:1"}
    sm.create_model(ModelName=unique("model"), ExecutionRoleArn=good, PrimaryContainer=container)
    name = unique("model")
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName=name, ExecutionRoleArn=other, PrimaryContainer=container)
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert name not in [m["ModelName"] for m in sm.list_models(MaxResults=100)["Models"]]


def test_an_assumed_role_session_is_the_caller_too(sim, world, unique):
    iam, _s3, _sm, bucket = world
    exec_role = make_role(iam, unique("exec"))
    runner_role = make_role(iam, unique("runner-host"), doc(allow("sagemaker:*", "*")))
    creds = client_as(sim, "sts", {"AccessKeyId": "testing", "SecretAccessKey": "testing"}) \
        .assume_role(RoleArn=runner_role, RoleSessionName="ci")["Credentials"]
    with pytest.raises(ClientError) as e:
        train(client_as(sim, "sagemaker", creds), unique("job"), exec_role, bucket)
    err = e.value.response["Error"]
    assert err["Code"] == "AccessDeniedException"
    assert ":assumed-role/" in err["Message"] and "no identity-based policy allows" in err["Message"]


def test_callers_unknown_or_without_policies_are_not_evaluated(sim, world, unique):
    iam, _s3, sm, bucket = world
    role = make_role(iam, unique("exec"))
    train(sm, unique("job"), role, bucket)  # the dummy keys: no IAM user
    keys = make_user(iam, unique("runner"))
    train(client_as(sim, "sagemaker", keys), unique("job"), role, bucket)


def test_run_task_needs_pass_role_for_both_task_roles(sim, aws, unique):
    iam, ecs, logs = aws("iam"), aws("ecs"), aws("logs")
    execution, task_role, other = (make_role(iam, unique(n)) for n in ("exec", "task", "other"))
    cluster, family, group = unique("cluster"), unique("fam"), unique("/ecs/iam")
    ecs.create_cluster(clusterName=cluster)
    logs.create_log_group(logGroupName=group)
    net = sim.get("/_sim/default-network")
    netconf = {"awsvpcConfiguration": {"subnets": net["subnets"][:1],
                                       "securityGroups": net["security_groups"]}}
    ecs.register_task_definition(
        family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256",
        memory="512", executionRoleArn=execution, taskRoleArn=task_role,
        containerDefinitions=[{"name": "main", "image": "busybox", "command": ["true"],
                               "logConfiguration": {"logDriver": "awslogs", "options": {
                                   "awslogs-group": group, "awslogs-region": "us-east-1",
                                   "awslogs-stream-prefix": "x"}}}])
    keys = make_user(iam, unique("runner"), doc(
        allow("ecs:*", "*"),
        allow("iam:PassRole", [execution, other], Condition=ECS_TASKS)))
    runner = client_as(sim, "ecs", keys)

    def run(**kw):
        return runner.run_task(cluster=cluster, taskDefinition=family, launchType="FARGATE",
                               networkConfiguration=netconf, **kw)

    with pytest.raises(ClientError) as e:
        run()
    err = e.value.response["Error"]
    assert err["Code"] == "AccessDeniedException"
    assert f"iam:PassRole on resource: {task_role}" in err["Message"]
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == [], "nothing started"

    # Overridden with a role the caller may pass: it runs.
    r = run(overrides={"taskRoleArn": other})
    assert r["failures"] == [] and len(r["tasks"]) == 1
