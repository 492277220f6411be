"""State-change events reach SQS through EventBridge rules (events.py), with delivery faults."""
from __future__ import annotations

import json
import re

import pytest

ROLE = "arn:aws:iam::123456789012:role/sagemaker-exec"
EVENT_KEYS = {"version", "id", "detail-type", "source", "account", "time", "region", "resources",
              "detail"}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Bus:
    """One SQS queue fed by EventBridge rules on the default bus."""

    def __init__(self, sim, aws, unique, policy=True):
        self.sim, self.events, self.sqs = sim, aws("events"), aws("sqs")
        self.unique = unique
        self.url = self.sqs.create_queue(QueueName=unique("events"))["QueueUrl"]
        self.arn = self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.rule_arns = []
        self.got: list[dict] = []
        self.policy = policy

    def rule(self, pattern: dict, **kw) -> str:
        name = self.unique("rule")
        arn = self.events.put_rule(Name=name, EventPattern=json.dumps(pattern), **kw)["RuleArn"]
        self.events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": self.arn}])
        self.rule_arns.append(arn)
        if self.policy:
            # What an admin must set on AWS: EventBridge may send, for these rules only.
            self.sqs.set_queue_attributes(QueueUrl=self.url, Attributes={"Policy": json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                               "Action": "sqs:SendMessage", "Resource": self.arn,
                               "Condition": {"ArnEquals": {"aws:SourceArn": self.rule_arns}}}]})})
        return name

    def poll(self) -> list[dict]:
        r = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        for m in r.get("Messages", []):
            self.got.append(json.loads(m["Body"]))
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return self.got

    def wait(self, pred, what: str, timeout: float = 30.0) -> list[dict]:
        return self.sim.wait_for(lambda: pred(self.poll()) and self.got, timeout=timeout,
                                 what=what)


@pytest.fixture
def bus(sim, aws, unique):
    return Bus(sim, aws, unique)


def _check_envelope(ev: dict, detail_type: str, source: str, resource: str) -> None:
    assert set(ev) == EVENT_KEYS, ev.keys()  # no moto "ingestion-time"
    assert ev["version"] == "0" and ev["detail-type"] == detail_type and ev["source"] == source
    assert ev["account"] == "123456789012" and ev["region"] == "us-east-1"
    assert TIME_RE.match(ev["time"]), ev["time"]
    assert ev["resources"] == [resource]


def test_training_job_state_changes_reach_the_queue(sim, aws, bus, unique):
    s3, sm = aws("s3"), aws("sagemaker")
    bucket = unique("sim-bucket")
    s3.create_bucket(Bucket=bucket)
    name = unique("evjob")
    bus.rule({"source": ["aws.sagemaker"], "detail-type": ["SageMaker Training Job State Change"],
              "detail": {"TrainingJobName": [name]}})
    arn = sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": "train:1", "TrainingInputMode": "File",
                                "ContainerEntrypoint": ["/bin/sh", "-c"],
                                "ContainerArguments": ["echo hi"]},
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600})["TrainingJobArn"]
    got = bus.wait(lambda evs: any(e["detail"]["TrainingJobStatus"] == "Completed" for e in evs),
                   "the Completed event")
    for ev in got:
        _check_envelope(ev, "SageMaker Training Job State Change", "aws.sagemaker", arn)
        assert ev["detail"]["TrainingJobName"] == name and ev["detail"]["TrainingJobArn"] == arn
        assert isinstance(ev["detail"]["CreationTime"], int)  # epoch ms, as AWS sends
        assert ev["detail"]["Tags"] == {}
    secondary = [e["detail"]["SecondaryStatus"] for e in got]
    assert secondary == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert [e["detail"]["TrainingJobStatus"] for e in got] == ["InProgress"] * 4 + ["Completed"]
    assert len({e["id"] for e in got}) == len(got)
    assert "S3ModelArtifacts" in got[-1]["detail"]["ModelArtifacts"]
    assert "ModelArtifacts" not in got[0]["detail"]


def test_ecs_task_state_changes_carry_exit_codes_and_stop_code(sim, aws, bus, unique):
    ecs = aws("ecs")
    cluster, family = unique("evcluster"), unique("evtask")
    ecs.create_cluster(clusterName=cluster)
    net = sim.get("/_sim/default-network")
    td = ecs.register_task_definition(
        family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256",
        memory="512", containerDefinitions=[{"name": "main", "image": "busybox", "essential": True,
                                             "entryPoint": ["/bin/sh", "-c"],
                                             "command": ["exit 3"]}])["taskDefinition"]
    bus.rule({"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
              "detail": {"group": [f"family:{family}"]}})
    task = ecs.run_task(cluster=cluster, taskDefinition=td["taskDefinitionArn"],
                        launchType="FARGATE", networkConfiguration={"awsvpcConfiguration": {
                            "subnets": net["subnets"][:1],
                            "securityGroups": net["security_groups"]}})["tasks"][0]
    got = bus.wait(lambda evs: any(e["detail"]["lastStatus"] == "STOPPED" for e in evs),
                   "the STOPPED event")
    for ev in got:
        _check_envelope(ev, "ECS Task State Change", "aws.ecs", task["taskArn"])
        d = ev["detail"]
        assert d["taskArn"] == task["taskArn"] and d["clusterArn"] == task["clusterArn"]
        assert d["taskDefinitionArn"] == td["taskDefinitionArn"]
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", d["createdAt"])
    statuses = [e["detail"]["lastStatus"] for e in got]
    assert statuses[0] == "PROVISIONING" and statuses[-1] == "STOPPED"
    assert statuses.index("PENDING") < statuses.index("RUNNING") < statuses.index("STOPPED")
    last = got[-1]["detail"]
    assert last["desiredStatus"] == "STOPPED"
    assert last["stopCode"] == "EssentialContainerExited"
    assert [(c["name"], c.get("exitCode"), c["lastStatus"]) for c in last["containers"]] == \
        [("main", 3, "STOPPED")]
    versions = [e["detail"]["version"] for e in got]
    assert versions == sorted(versions)  # what a consumer orders duplicates by


def test_endpoint_and_service_deployment_events(sim, aws, bus, unique):
    sm, ecs = aws("sagemaker"), aws("ecs")
    model, cfg, ep = unique("evmodel"), unique("evcfg"), unique("evep")
    sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "serve:1"})
    sm.create_endpoint_config(EndpointConfigName=cfg, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
    cluster, svc_name = unique("evsvc-cluster"), unique("evsvc")
    ecs.create_cluster(clusterName=cluster)
    td = ecs.register_task_definition(
        family=unique("web"), requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
        cpu="256", memory="512",
        containerDefinitions=[{"name": "web", "image": "nginx:1", "essential": True}],
    )["taskDefinition"]["taskDefinitionArn"]
    bus.rule({"source": ["aws.sagemaker"], "detail-type": ["SageMaker Endpoint State Change"],
              "detail": {"EndpointName": [ep]}})
    bus.rule({"source": ["aws.ecs"], "detail-type": ["ECS Deployment State Change"],
              "resources": [{"suffix": f"/{svc_name}"}]})
    sim.outcomes(endpoint=[{"name_contains": ep, "create_seconds": 0.3}],
                 ecs_service=[{"name_contains": svc_name, "rollout_seconds": 0.6}])
    ep_arn = sm.create_endpoint(EndpointName=ep, EndpointConfigName=cfg)["EndpointArn"]
    net = sim.get("/_sim/default-network")
    svc = ecs.create_service(
        cluster=cluster, serviceName=svc_name, taskDefinition=td, desiredCount=1,
        launchType="FARGATE", networkConfiguration={"awsvpcConfiguration": {
            "subnets": net["subnets"][:1], "securityGroups": net["security_groups"]}})["service"]

    def done(evs):
        kinds = {(e["detail"].get("EndpointStatus") or e["detail"].get("eventName")) for e in evs}
        return {"IN_SERVICE", "SERVICE_DEPLOYMENT_COMPLETED"} <= kinds
    got = bus.wait(done, "endpoint IN_SERVICE and deployment COMPLETED events")
    eps = [e for e in got if e["detail-type"] == "SageMaker Endpoint State Change"]
    deps = [e for e in got if e["detail-type"] == "ECS Deployment State Change"]
    for e in eps:
        _check_envelope(e, "SageMaker Endpoint State Change", "aws.sagemaker", ep_arn)
        assert e["detail"]["EndpointConfigName"] == cfg and e["detail"]["EndpointArn"] == ep_arn
    # AWS's event spelling, not DescribeEndpoint's (Creating/InService)
    assert [e["detail"]["EndpointStatus"] for e in eps] == ["CREATING", "IN_SERVICE"]
    for e in deps:
        _check_envelope(e, "ECS Deployment State Change", "aws.ecs", svc["serviceArn"])
        assert e["detail"]["deploymentId"] == svc["deployments"][0]["id"]
        assert e["detail"]["eventType"] == "INFO"
    assert [e["detail"]["eventName"] for e in deps] == ["SERVICE_DEPLOYMENT_IN_PROGRESS",
                                                        "SERVICE_DEPLOYMENT_COMPLETED"]


def test_rules_that_must_not_deliver(sim, aws, bus, unique):
    """A DISABLED rule, a schedule-only rule and a queue whose policy does not let EventBridge
    send get nothing, while an enabled rule on an allowed queue does (moto delivered to all)."""
    no_policy = Bus(sim, aws, unique, policy=False)
    disabled = Bus(sim, aws, unique)
    scheduled = Bus(sim, aws, unique)
    source = unique("custom.app")
    pattern = {"source": [source]}
    bus.rule(pattern)
    no_policy.rule(pattern)
    disabled.rule(pattern, State="DISABLED")
    name = scheduled.unique("sched")
    arn = scheduled.events.put_rule(Name=name, ScheduleExpression="rate(1 hour)")["RuleArn"]
    scheduled.events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": scheduled.arn}])
    scheduled.rule_arns.append(arn)
    scheduled.rule({"source": [unique("nothing")]})  # sets the policy for both rules
    r = bus.events.put_events(Entries=[{"Source": source, "DetailType": "Thing Happened",
                                        "Detail": json.dumps({"n": 1})}])
    assert r["FailedEntryCount"] == 0
    got = bus.wait(lambda evs: len(evs) >= 1, "the custom event")
    assert set(got[0]) == EVENT_KEYS and got[0]["detail"] == {"n": 1}
    assert TIME_RE.match(got[0]["time"])
    # PutEvents delivers synchronously to every rule: the others have had their chance.
    assert no_policy.poll() == [] and disabled.poll() == [] and scheduled.poll() == []


def test_delivery_refused_by_the_queue_policy_is_logged(sim, aws, unique):
    """Simulator events go through the same check; /_sim/events says why nothing arrived."""
    b = Bus(sim, aws, unique, policy=False)
    sm = aws("sagemaker")
    model, cfg, ep = unique("pmodel"), unique("pcfg"), unique("pep")
    sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "serve:1"})
    sm.create_endpoint_config(EndpointConfigName=cfg, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
    b.rule({"detail": {"EndpointName": [ep]}})
    sm.create_endpoint(EndpointName=ep, EndpointConfigName=cfg)
    logged = sim.wait_for(lambda: [e for e in sim.get(f"/_sim/events?match={ep}")["events"]
                                   if e["failures"]], what="a logged failed delivery")
    assert "policy" in logged[0]["failures"][0]["error"]
    assert logged[0]["deliveries"] == [] and b.poll() == []


# ------------------------------------------------------------------------------------ faults
def _endpoint(sim, aws, unique, bus, create_seconds=0.3):
    sm = aws("sagemaker")
    model, cfg, ep = unique("fmodel"), unique("fcfg"), unique("fep")
    sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "serve:1"})
    sm.create_endpoint_config(EndpointConfigName=cfg, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
    bus.rule({"detail-type": ["SageMaker Endpoint State Change"], "detail": {"EndpointName": [ep]}})
    sim.outcomes(endpoint=[{"name_contains": ep, "create_seconds": create_seconds}])
    return sm, cfg, ep


def _statuses(evs):
    return [e["detail"]["EndpointStatus"] for e in evs]


def test_duplicate_delivery(sim, aws, bus, unique):
    sm, cfg, ep = _endpoint(sim, aws, unique, bus)
    sim.post("/_sim/event-faults", {"rules": [{"kind": "duplicate", "resource": ep,
                                               "match": "Endpoint State Change"}]})
    sm.create_endpoint(EndpointName=ep, EndpointConfigName=cfg)
    got = bus.wait(lambda evs: "IN_SERVICE" in _statuses(evs), "IN_SERVICE")
    assert _statuses(got) == ["CREATING", "CREATING", "IN_SERVICE"]
    assert got[0]["id"] == got[1]["id"] != got[2]["id"]  # the same event, twice


@pytest.mark.parametrize("rule", [{"kind": "reorder"}, {"kind": "delay", "delay_ms": 1500}])
def test_out_of_order_delivery(sim, aws, bus, unique, rule):
    sm, cfg, ep = _endpoint(sim, aws, unique, bus)
    sim.post("/_sim/event-faults", {"rules": [dict(rule, resource=ep)]})
    sm.create_endpoint(EndpointName=ep, EndpointConfigName=cfg)
    got = bus.wait(lambda evs: len(evs) >= 2, "both events")
    assert _statuses(got) == ["IN_SERVICE", "CREATING"]  # the later state arrives first
    assert sm.describe_endpoint(EndpointName=ep)["EndpointStatus"] == "InService"


def test_stalled_deliveries_resume_in_order(sim, aws, bus, unique):
    sm, cfg, ep = _endpoint(sim, aws, unique, bus)
    sim.post("/_sim/event-faults", {"rules": [{"kind": "stall", "resource": ep}]})
    sm.create_endpoint(EndpointName=ep, EndpointConfigName=cfg)
    sim.wait_for(lambda: sim.get("/_sim/event-faults")["stalled"] == 2,
                 what="both events held")
    assert sm.describe_endpoint(EndpointName=ep)["EndpointStatus"] == "InService"
    assert bus.poll() == []  # held, so nothing can have been delivered
    assert sim.delete("/_sim/event-faults")["stalled"] == 0
    got = bus.wait(lambda evs: len(evs) >= 2, "the released events")
    assert _statuses(got) == ["CREATING", "IN_SERVICE"]


def test_event_fault_rules_are_validated(sim):
    status, obj = sim._req("POST", "/_sim/event-faults", {"rules": [{"kind": "explode"}]})
    assert status == 400 and "kind" in obj["error"]
    status, obj = sim._req("POST", "/_sim/event-faults", {"rules": [{"kind": "delay",
                                                                     "sleep": 1}]})
    assert status == 400 and "sleep" in obj["error"]
