"""Smoke tests: ECS tasks really run their containers (simulator module ecs_tasks)."""
from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

# /mnt exists on the host: the runtime creates missing mount points on the host filesystem
SHARED = {"sourceVolume": "shared", "containerPath": "/mnt"}


def _logcfg(group: str) -> dict:
    return {"logDriver": "awslogs", "options": {"awslogs-group": group, "awslogs-region": "us-east-1",
                                                "awslogs-stream-prefix": "job", "awslogs-create-group": "true"}}


@pytest.fixture
def ecs_env(sim, aws, unique):
    """(ecs client, logs client, cluster name, awsvpc network configuration, register(...))."""
    ecs, logs = aws("ecs"), aws("logs")
    cluster = unique("cluster")
    ecs.create_cluster(clusterName=cluster)
    net = sim.get("/_sim/default-network")
    assert net["subnets"] and net["security_groups"] and net["vpc"].startswith("vpc-")
    netconf = {"awsvpcConfiguration": {"subnets": net["subnets"][:1], "securityGroups": net["security_groups"],
                                       "assignPublicIp": "DISABLED"}}

    def register(family: str, containers: list[dict], **kw) -> str:
        td = ecs.register_task_definition(
            family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
            containerDefinitions=containers, **kw)
        return td["taskDefinition"]["taskDefinitionArn"]

    return ecs, logs, cluster, netconf, register


def _run(ecs, cluster, netconf, td, **kw) -> str:
    r = ecs.run_task(cluster=cluster, taskDefinition=td, launchType="FARGATE", networkConfiguration=netconf, **kw)
    assert r["failures"] == [], r["failures"]
    assert r["tasks"][0]["lastStatus"] == "PROVISIONING"
    return r["tasks"][0]["taskArn"]


def _wait(sim, ecs, cluster, arn, status="STOPPED", timeout=30.0) -> dict:
    def probe():
        t = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        return t if t["lastStatus"] == status else None
    return sim.wait_for(probe, timeout=timeout, what=f"task {arn} {status}")


def _containers(task: dict) -> dict:
    return {c["name"]: c for c in task["containers"]}


def _log_lines(logs, group: str, stream: str) -> list[str]:
    ev = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
    return [e["message"] for e in ev]


def test_depends_on_order_volumes_exit_codes_and_logs(sim, ecs_env, unique):
    ecs, logs, cluster, netconf, register = ecs_env
    family, group = unique("deps"), unique("/ecs/deps")
    stamp = "date +%s.%N > /mnt/{0}.start; sleep 0.3; date +%s.%N > /mnt/{0}.end"
    hidden = sim.hidden_dir
    # init --SUCCESS--> side --START--> check --COMPLETE--> main. START only orders launches, so it is
    # observable through side's own SUCCESS dependency: check cannot begin before init ended.
    td = register(family, [
        {"name": "init", "image": "busybox", "essential": False, "mountPoints": [SHARED],
         "logConfiguration": _logcfg(group), "command": ["sh", "-c", stamp.format("init") + "; echo init-done"]},
        {"name": "side", "image": "busybox", "essential": False, "mountPoints": [SHARED],
         "logConfiguration": _logcfg(group), "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}],
         "command": ["sh", "-c", "date +%s.%N > /mnt/side.start; echo side-up; exec sleep 300"]},
        {"name": "check", "image": "busybox", "essential": False, "mountPoints": [SHARED],
         "logConfiguration": _logcfg(group), "dependsOn": [{"containerName": "side", "condition": "START"}],
         "entryPoint": ["sh", "-c"], "command": [stamp.format("check") + "; echo check-fails; exit 5"]},
        {"name": "main", "image": "busybox", "mountPoints": [SHARED], "logConfiguration": _logcfg(group),
         "dependsOn": [{"containerName": "check", "condition": "COMPLETE"}],
         "environment": [{"name": "GREETING", "value": "from-taskdef"}, {"name": "KEPT", "value": "kept"}],
         "command": ["sh", "-c",
                     "date +%s.%N > /mnt/main.start; for f in init.start init.end side.start check.start check.end "
                     "main.start; do echo \"$f $(cat /mnt/$f)\"; done; echo GREETING=$GREETING KEPT=$KEPT; "
                     f"echo endpoint=$AWS_ENDPOINT_URL; echo hidden=$(ls -A {hidden} | wc -l); exit 0"]},
    ], volumes=[{"name": "shared"}])
    arn = _run(ecs, cluster, netconf, td, startedBy="smoke", tags=[{"key": "t", "value": "1"}], overrides={
        "containerOverrides": [{"name": "main", "environment": [{"name": "GREETING", "value": "overridden"}]}]})
    task_id = arn.split("/")[-1]

    task = _wait(sim, ecs, cluster, arn)
    cs = _containers(task)
    assert list(cs) == ["init", "side", "check", "main"]
    assert {n: c.get("exitCode") for n, c in cs.items()} == {"init": 0, "side": 143, "check": 5, "main": 0}
    assert all(c["lastStatus"] == "STOPPED" for c in cs.values())
    assert task["stopCode"] == "EssentialContainerExited"
    assert task["stoppedReason"] == "Essential container in task exited"
    assert task["desiredStatus"] == "STOPPED" and task["startedBy"] == "smoke"
    assert task["taskDefinitionArn"] == td and task["group"] == f"family:{family}"
    assert task["launchType"] == "FARGATE" and task["cpu"] == "256" and task["memory"] == "512"
    assert task["createdAt"] <= task["startedAt"] <= task["stoppingAt"] <= task["stoppedAt"]

    # every line of every container reached CloudWatch, in <prefix>/<container>/<task-id>
    lines = _log_lines(logs, group, f"job/main/{task_id}")
    assert _log_lines(logs, group, f"job/init/{task_id}") == ["init-done"]
    assert _log_lines(logs, group, f"job/side/{task_id}") == ["side-up"]
    assert _log_lines(logs, group, f"job/check/{task_id}") == ["check-fails"]
    ts = {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.split()[0].endswith((".start", ".end"))}
    assert ts["init.start"] < ts["init.end"] <= ts["side.start"], ts  # SUCCESS
    assert ts["init.end"] <= ts["check.start"], ts  # START (of side, which itself waited for init)
    assert ts["check.start"] < ts["check.end"] <= ts["main.start"], ts  # COMPLETE
    assert "GREETING=overridden KEPT=kept" in lines
    assert f"endpoint={sim.endpoint}" in lines
    assert "hidden=0" in lines, "the runner's hidden builds dir is visible inside the container"

    running = ecs.list_tasks(cluster=cluster)["taskArns"]
    stopped = ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"]
    assert arn not in running and arn in stopped
    tagged = ecs.describe_tasks(cluster=cluster, tasks=[arn], include=["TAGS"])["tasks"][0]
    assert tagged["tags"] == [{"key": "t", "value": "1"}]


def test_success_dependency_failure_blocks_the_dependent(sim, ecs_env, unique):
    ecs, _, cluster, netconf, register = ecs_env
    td = register(unique("blocked"), [
        {"name": "init", "image": "busybox", "essential": False, "command": ["sh", "-c", "exit 3"]},
        {"name": "main", "image": "busybox", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}],
         "command": ["sh", "-c", "echo must-not-run"]},
    ])
    task = _wait(sim, ecs, cluster, _run(ecs, cluster, netconf, td))
    cs = _containers(task)
    assert cs["init"]["exitCode"] == 3
    assert "exitCode" not in cs["main"], cs["main"]
    assert cs["main"]["reason"].startswith("CannotStartContainerError") and "init" in cs["main"]["reason"]
    assert task["stopCode"] == "EssentialContainerExited"


def test_oom_outcome_kills_the_container(sim, ecs_env, unique):
    ecs, _, cluster, netconf, register = ecs_env
    family = unique("oom")
    sim.outcomes(ecs_task=[{"name_contains": family, "oom": "main", "after_seconds": 0.2}])
    td = register(family, [{"name": "main", "image": "busybox", "command": ["sleep", "60"]}])
    task = _wait(sim, ecs, cluster, _run(ecs, cluster, netconf, td))
    main = _containers(task)["main"]
    assert main["exitCode"] == 137
    assert main["reason"] == "OutOfMemoryError: Container killed due to memory usage"
    assert task["stopCode"] == "EssentialContainerExited"


def test_stop_task_terminates_and_honours_stop_timeout(sim, ecs_env, unique):
    ecs, logs, cluster, netconf, register = ecs_env
    family, group = unique("stop"), unique("/ecs/stop")
    td = register(family, [
        {"name": "main", "image": "busybox", "logConfiguration": _logcfg(group),
         "command": ["sh", "-c", "echo pid=$$; exec sleep 300"]},
        {"name": "stubborn", "image": "busybox", "essential": False, "stopTimeout": 1,
         "command": ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]},
    ])
    arn = _run(ecs, cluster, netconf, td)
    stream = f"job/main/{arn.split('/')[-1]}"

    def pid():
        try:
            got = [ln for ln in _log_lines(logs, group, stream) if ln.startswith("pid=")]
        except ClientError:
            return None
        return int(got[0][4:]) if got else None

    sleeper = sim.wait_for(pid, timeout=20, what="the container's pid line")
    os.kill(sleeper, 0)  # alive
    assert arn in ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"]
    stopped = ecs.stop_task(cluster=cluster, task=arn, reason="cancelled by the smoke test")["task"]
    assert stopped["desiredStatus"] == "STOPPED"

    task = _wait(sim, ecs, cluster, arn)
    assert task["stopCode"] == "UserInitiated"
    assert task["stoppedReason"] == "cancelled by the smoke test"
    cs = _containers(task)
    assert cs["main"]["exitCode"] == 143  # SIGTERM
    assert cs["stubborn"]["exitCode"] == 137  # ignored SIGTERM, SIGKILLed after stopTimeout
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper, 0)
    assert sleeper not in [p["pid"] for p in sim.processes()]


def test_essential_exit_stops_the_other_containers(sim, ecs_env, unique):
    ecs, _, cluster, netconf, register = ecs_env
    td = register(unique("essential"), [
        {"name": "sidecar", "image": "busybox", "essential": False, "command": ["sleep", "300"]},
        {"name": "main", "image": "busybox", "dependsOn": [{"containerName": "sidecar", "condition": "START"}],
         "command": ["sh", "-c", "sleep 0.3; exit 7"]},
    ])
    task = _wait(sim, ecs, cluster, _run(ecs, cluster, netconf, td))
    cs = _containers(task)
    assert cs["main"]["exitCode"] == 7 and cs["sidecar"]["exitCode"] == 143
    assert task["stopCode"] == "EssentialContainerExited"


def test_scripted_start_failure_capacity_and_spot(sim, ecs_env, unique):
    ecs, _, cluster, netconf, register = ecs_env
    fam_fail, fam_cap, fam_spot = unique("nostart"), unique("cap"), unique("spot")
    sim.outcomes(ecs_task=[
        {"name_contains": fam_fail, "fail_to_start": "CannotPullContainerError: pull image manifest has been retried 5 time(s)"},
        {"name_contains": fam_cap, "capacity": True},
        {"name_contains": fam_spot, "spot_interruption": True, "after_seconds": 0.3},
    ])
    box = [{"name": "main", "image": "busybox", "command": ["sleep", "60"]}]

    task = _wait(sim, ecs, cluster, _run(ecs, cluster, netconf, register(fam_fail, box)))
    assert task["stopCode"] == "TaskFailedToStart"
    assert task["stoppedReason"].startswith("CannotPullContainerError")
    assert "exitCode" not in task["containers"][0]

    r = ecs.run_task(cluster=cluster, taskDefinition=register(fam_cap, box), launchType="FARGATE",
                     networkConfiguration=netconf)
    assert r["tasks"] == []
    assert r["failures"][0]["reason"].startswith("Capacity is unavailable at this time")

    spot = ecs.run_task(cluster=cluster, taskDefinition=register(fam_spot, box), networkConfiguration=netconf,
                        capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])["tasks"][0]
    assert spot["capacityProviderName"] == "FARGATE_SPOT" and "launchType" not in spot
    task = _wait(sim, ecs, cluster, spot["taskArn"])
    assert task["stopCode"] == "SpotInterruption"
    assert task["stoppedReason"] == "Your Spot Task was interrupted."


def test_run_task_network_validation(sim, ecs_env, unique):
    ecs, _, cluster, netconf, register = ecs_env
    td = register(unique("net"), [{"name": "main", "image": "busybox", "command": ["true"]}])
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=td, launchType="FARGATE",
                     networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-00000000"]}})
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=td, launchType="FARGATE")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    # no securityGroups: AWS uses the VPC's default group
    subnets_only = {"awsvpcConfiguration": {"subnets": netconf["awsvpcConfiguration"]["subnets"]}}
    task = _wait(sim, ecs, cluster, _run(ecs, cluster, subnets_only, td))
    assert task["containers"][0]["exitCode"] == 0
    missing = ecs.describe_tasks(cluster=cluster, tasks=["0123456789abcdef0123456789abcdef"])
    assert missing["tasks"] == [] and missing["failures"][0]["reason"] == "MISSING"


def test_secrets_and_command_override(sim, ecs_env, aws, unique):
    ecs, logs, cluster, netconf, register = ecs_env
    family, group = unique("secrets"), unique("/ecs/secrets")
    secret_arn = aws("secretsmanager").create_secret(Name=unique("token"), SecretString='{"user": "u1", "pw": "s3cr3t"}')["ARN"]
    param = f"/{family}/flag"
    aws("ssm").put_parameter(Name=param, Value="on", Type="SecureString")
    td = register(family, [{
        "name": "main", "image": "busybox", "logConfiguration": _logcfg(group),
        "command": ["sh", "-c", "echo from-taskdef; exit 9"],
        "secrets": [{"name": "PW", "valueFrom": f"{secret_arn}:pw::"}, {"name": "WHOLE", "valueFrom": secret_arn},
                    {"name": "FLAG", "valueFrom": param}],
    }])
    arn = _run(ecs, cluster, netconf, td, overrides={"containerOverrides": [
        {"name": "main", "command": ["sh", "-c", "echo pw=$PW flag=$FLAG whole=${#WHOLE}; exit 4"]}]})
    task = _wait(sim, ecs, cluster, arn)
    assert task["containers"][0]["exitCode"] == 4
    assert _log_lines(logs, group, f"job/main/{arn.split('/')[-1]}") == ["pw=s3cr3t flag=on whole=30"]

    sim.outcomes()  # a secret that does not exist: the task fails to start
    bad = register(family, [{"name": "main", "image": "busybox", "command": ["true"],
                             "secrets": [{"name": "X", "valueFrom": secret_arn + "-missing"}]}])
    task = _wait(sim, ecs, cluster, _run(ecs, cluster, netconf, bad))
    assert task["stopCode"] == "TaskFailedToStart"
    assert task["stoppedReason"].startswith("ResourceInitializationError: unable to pull secrets")


def test_task_definition_revisions_listing_and_tags(sim, ecs_env, unique):
    ecs, _, _, _, register = ecs_env
    family = unique("tdrev")
    box = [{"name": "main", "image": "busybox:1", "command": ["true"]}]
    arns = [register(family, box, tags=[{"key": "rev", "value": str(i)}]) for i in (1, 2, 3)]
    assert [a.rsplit(":", 1)[1] for a in arns] == ["1", "2", "3"]
    assert ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["revision"] == 3
    assert ecs.describe_task_definition(taskDefinition=f"{family}:2")["taskDefinition"]["revision"] == 2
    assert ecs.describe_task_definition(taskDefinition=arns[0])["taskDefinition"]["revision"] == 1
    assert ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"] == arns
    assert ecs.list_task_definitions(familyPrefix=family, sort="DESC", maxResults=1)["taskDefinitionArns"] == [arns[2]]
    assert ecs.list_tags_for_resource(resourceArn=arns[1])["tags"] == [{"key": "rev", "value": "2"}]
    ecs.deregister_task_definition(taskDefinition=arns[2])
    assert ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["revision"] == 2
    assert register(family, box).endswith(":4")


def test_stop_before_the_containers_start(sim, ecs_env, unique):
    ecs, _, cluster, netconf, register = ecs_env
    td = register(unique("early"), [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo started"]}])
    arn = _run(ecs, cluster, netconf, td)
    ecs.stop_task(cluster=cluster, task=arn, reason="changed my mind")
    task = _wait(sim, ecs, cluster, arn)
    assert task["stopCode"] == "UserInitiated" and task["stoppedReason"] == "changed my mind"
    assert "startedAt" not in task
    assert task["containers"][0]["lastStatus"] == "STOPPED" and "exitCode" not in task["containers"][0]


def test_a_repeated_client_token_answers_with_the_task_it_started(sim, ecs_env, unique):
    ecs, _, cluster, netconf, register = ecs_env
    td = register(unique("token"), [{"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 30"]}])
    first = _run(ecs, cluster, netconf, td, clientToken="gl-1-42", startedBy="gl-1-42")
    again = ecs.run_task(cluster=cluster, taskDefinition=td, launchType="FARGATE", networkConfiguration=netconf,
                         clientToken="gl-1-42", startedBy="gl-1-42")
    assert [t["taskArn"] for t in again["tasks"]] == [first]
    assert ecs.list_tasks(cluster=cluster, startedBy="gl-1-42")["taskArns"] == [first]
    other = _run(ecs, cluster, netconf, td, clientToken="gl-1-43")
    assert other != first
    for arn in (first, other):
        ecs.stop_task(cluster=cluster, task=arn)
        _wait(sim, ecs, cluster, arn)


def _plain_logcfg(group: str, **extra: str) -> dict:
    """awslogs without awslogs-create-group, as sagemaker-executor's task definitions are."""
    return {"logDriver": "awslogs", "options": {"awslogs-group": group, "awslogs-region": "us-east-1",
                                                "awslogs-stream-prefix": "sme", **extra}}


def _group_exists(logs, group: str) -> bool:
    return any(g["logGroupName"] == group
               for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"])


def test_missing_log_group_fails_the_task_to_start(sim, ecs_env, unique, tmp_path):
    ecs, logs, cluster, netconf, register = ecs_env
    family, group = unique("nolog"), unique("/ecs/missing")
    ran = tmp_path / "ran"
    td = register(family, [
        {"name": "helper", "image": "busybox", "essential": False,
         "command": ["sh", "-c", f"touch {ran}-helper"]},
        {"name": "main", "image": "busybox", "logConfiguration": _plain_logcfg(group),
         "dependsOn": [{"containerName": "helper", "condition": "SUCCESS"}],
         "command": ["sh", "-c", f"touch {ran}-main"]},
    ])
    task = _wait(sim, ecs, cluster, _run(ecs, cluster, netconf, td))
    assert task["stopCode"] == "TaskFailedToStart"
    assert task["stoppedReason"].startswith("ResourceInitializationError: failed to validate logger args: ")
    assert "ResourceNotFoundException: The specified log group does not exist." in task["stoppedReason"]
    assert task["desiredStatus"] == "STOPPED"
    for c in task["containers"]:
        assert c["lastStatus"] == "STOPPED" and "exitCode" not in c, c
    # No container ran, not even the one that logs nowhere; and the group was not created.
    assert not os.path.exists(f"{ran}-helper") and not os.path.exists(f"{ran}-main")
    assert not _group_exists(logs, group)


def test_existing_or_created_log_group_lets_the_task_run(sim, ecs_env, unique):
    ecs, logs, cluster, netconf, register = ecs_env
    # 1. The admin created the group beforehand (what sagemaker-executor expects).
    family, group = unique("withlog"), unique("/ecs/present")
    logs.create_log_group(logGroupName=group)
    td = register(family, [{"name": "main", "image": "busybox", "logConfiguration": _plain_logcfg(group),
                            "command": ["sh", "-c", "echo logged"]}])
    arn = _run(ecs, cluster, netconf, td)
    task = _wait(sim, ecs, cluster, arn)
    assert task["stopCode"] == "EssentialContainerExited", task.get("stoppedReason")
    assert _containers(task)["main"]["exitCode"] == 0
    assert _log_lines(logs, group, f"sme/main/{arn.split('/')[-1]}") == ["logged"]
    # 2. awslogs-create-group "true": the agent creates it.
    family, group = unique("mklog"), unique("/ecs/created")
    assert not _group_exists(logs, group)
    td = register(family, [{"name": "main", "image": "busybox",
                            "logConfiguration": _plain_logcfg(group, **{"awslogs-create-group": "true"}),
                            "command": ["sh", "-c", "echo created"]}])
    arn = _run(ecs, cluster, netconf, td)
    task = _wait(sim, ecs, cluster, arn)
    assert task["stopCode"] == "EssentialContainerExited", task.get("stoppedReason")
    assert _group_exists(logs, group)
    assert _log_lines(logs, group, f"sme/main/{arn.split('/')[-1]}") == ["created"]


def test_containers_run_as_the_image_user_on_a_volume_owned_by_root(sim, ecs_env, unique):
    ecs, logs, cluster, netconf, register = ecs_env
    family, group = unique("nonroot"), unique("/ecs/nonroot")
    image = f"registry.example/{unique('distroless')}:nonroot"
    sim.post("/_sim/images", {"images": {image: {"entrypoint": ["/bin/sh"], "user": "65532"}}})
    # /mnt as in the other tests: any user may traverse to it (unlike a temp dir of the host).
    mount, vol = SHARED, SHARED["containerPath"]
    probe = (f"echo uid=$(id -u) volume=$(stat -c %u:%a {vol}); "
             f"if touch {vol}/{{0}} 2>/dev/null; then echo {{0}}=wrote; else echo {{0}}=denied; fi; "
             f"ls {vol}")
    td = register(family, [
        # The image's USER applies: a fresh volume is root's, so this one cannot write.
        {"name": "before", "image": image, "essential": False, "mountPoints": [mount],
         "logConfiguration": _logcfg(group), "command": ["sh", "-c", probe.format("before")]},
        # The definition's `user` wins over the image's: root opens the volume.
        {"name": "opener", "image": image, "user": "0", "essential": False, "mountPoints": [mount],
         "logConfiguration": _logcfg(group), "dependsOn": [{"containerName": "before", "condition": "COMPLETE"}],
         "command": ["sh", "-c", f"echo uid=$(id -u); chmod 1777 {vol}"]},
        {"name": "after", "image": image, "mountPoints": [mount], "logConfiguration": _logcfg(group),
         "dependsOn": [{"containerName": "opener", "condition": "SUCCESS"}],
         "command": ["sh", "-c", probe.format("after")]},
    ], volumes=[{"name": "shared"}])
    arn = _run(ecs, cluster, netconf, td)
    task = _wait(sim, ecs, cluster, arn)
    tid = arn.split("/")[-1]
    assert _containers(task)["after"]["exitCode"] == 0, task.get("stoppedReason")
    assert _log_lines(logs, group, f"job/before/{tid}") == ["uid=65532 volume=0:755", "before=denied"]
    assert _log_lines(logs, group, f"job/opener/{tid}") == ["uid=0"]
    assert _log_lines(logs, group, f"job/after/{tid}") == ["uid=65532 volume=0:1777", "after=wrote", "after"]
