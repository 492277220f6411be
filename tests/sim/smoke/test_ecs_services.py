"""Smoke tests: ECS service deployments move (simulator module ecs_services)."""
from __future__ import annotations

import pytest

BREAKER = {"deploymentCircuitBreaker": {"enable": True, "rollback": True}, "maximumPercent": 200,
           "minimumHealthyPercent": 100}


@pytest.fixture
def service_env(sim, aws, unique):
    """(ecs client, cluster, service name, [task definition ARN rev 1, rev 2])."""
    ecs = aws("ecs")
    cluster, family, name = unique("svc-cluster"), unique("web"), unique("svc")
    ecs.create_cluster(clusterName=cluster)
    tds = [ecs.register_task_definition(
        family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
        containerDefinitions=[{"name": "web", "image": f"nginx:{i}", "essential": True}],
    )["taskDefinition"]["taskDefinitionArn"] for i in (1, 2)]
    net = sim.get("/_sim/default-network")
    sim.outcomes(ecs_service=[{"name_contains": name, "rollout_seconds": 1.5}])  # the initial deployment
    svc = ecs.create_service(
        cluster=cluster, serviceName=name, taskDefinition=tds[0], desiredCount=2, launchType="FARGATE",
        deploymentConfiguration=BREAKER,
        networkConfiguration={"awsvpcConfiguration": {"subnets": net["subnets"][:1],
                                                      "securityGroups": net["security_groups"]}})["service"]
    assert svc["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    assert svc["deploymentConfiguration"] == BREAKER
    _wait_completed(sim, ecs, cluster, name)
    return ecs, cluster, name, tds


def _describe(ecs, cluster, name) -> dict:
    return ecs.describe_services(cluster=cluster, services=[name])["services"][0]


def _wait_completed(sim, ecs, cluster, name, timeout=20.0) -> dict:
    def probe():
        s = _describe(ecs, cluster, name)
        ds = s["deployments"]
        done = len(ds) == 1 and ds[0]["rolloutState"] == "COMPLETED" and ds[0]["runningCount"] == s["desiredCount"]
        return s if done else None
    return sim.wait_for(probe, timeout=timeout, what=f"service {name} rollout COMPLETED")


def test_rollout_completes(sim, service_env):
    ecs, cluster, name, (td1, td2) = service_env
    sim.outcomes(ecs_service=[{"name_contains": name, "rollout_seconds": 2}])
    svc = ecs.update_service(cluster=cluster, service=name, taskDefinition=td2)["service"]
    primary, old = svc["deployments"]
    assert primary["status"] == "PRIMARY" and primary["taskDefinition"] == td2
    assert primary["rolloutState"] == "IN_PROGRESS" and primary["id"].startswith("ecs-svc/")
    assert old["status"] == "ACTIVE" and old["taskDefinition"] == td1
    assert svc["taskDefinition"] == td2

    s = _wait_completed(sim, ecs, cluster, name)
    dep = s["deployments"][0]
    assert dep["id"] == primary["id"] and dep["taskDefinition"] == td2
    assert s["runningCount"] == 2 and s["deploymentConfiguration"] == BREAKER
    messages = [e["message"] for e in s["events"]]
    assert messages[0] == f"(service {name}) has reached a steady state."
    assert f"(service {name}) (deployment {dep['id']}) deployment completed." in messages
    assert any("has started 2 tasks" in m for m in messages)
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 5})

    history = ecs.list_service_deployments(cluster=cluster, service=name)["serviceDeployments"]
    assert history[0]["status"] == "SUCCESSFUL"
    full = ecs.describe_service_deployments(serviceDeploymentArns=[history[0]["serviceDeploymentArn"]])
    assert full["serviceDeployments"][0]["targetServiceRevision"]["runningTaskCount"] == 2


def test_circuit_breaker_rollback(sim, service_env):
    ecs, cluster, name, (td1, td2) = service_env
    sim.outcomes(ecs_service=[{"name_contains": name, "rollback": True, "rollout_seconds": 2}])
    new_id = ecs.update_service(cluster=cluster, service=name, taskDefinition=td2)["service"]["deployments"][0]["id"]

    def failed():
        s = _describe(ecs, cluster, name)
        return next((d for d in s["deployments"] if d["id"] == new_id and d["rolloutState"] == "FAILED"), None)

    dep = sim.wait_for(failed, timeout=15, what="the new deployment to fail")
    assert dep["rolloutStateReason"] == "ECS deployment circuit breaker: tasks failed to start."
    assert dep["taskDefinition"] == td2 and dep["failedTasks"] > 0

    s = _wait_completed(sim, ecs, cluster, name)
    rollback = s["deployments"][0]
    assert rollback["id"] != new_id and rollback["taskDefinition"] == td1
    assert s["taskDefinition"] == td1
    messages = [e["message"] for e in s["events"]]
    assert f"(service {name}) (deployment {new_id}) deployment failed: tasks failed to start." in messages
    assert any(m.startswith(f"(service {name}) rolling back to deployment ecs-svc/") for m in messages)
    history = ecs.list_service_deployments(cluster=cluster, service=name)["serviceDeployments"]
    assert history[0]["status"] == "ROLLBACK_SUCCESSFUL"


def test_vanishing_deployment(sim, service_env):
    ecs, cluster, name, (_, td2) = service_env
    sim.outcomes(ecs_service=[{"name_contains": name, "vanish": True, "rollout_seconds": 1.5}])
    new_id = ecs.update_service(cluster=cluster, service=name, taskDefinition=td2)["service"]["deployments"][0]["id"]
    sim.wait_for(lambda: all(d["id"] != new_id for d in _describe(ecs, cluster, name)["deployments"]),
                 timeout=15, what="the deployment to disappear")
    s = _wait_completed(sim, ecs, cluster, name)
    assert s["deployments"][0]["id"] != new_id


def test_force_new_deployment_and_scaling(sim, service_env):
    ecs, cluster, name, (td1, _) = service_env
    first = _describe(ecs, cluster, name)["deployments"][0]["id"]
    svc = ecs.update_service(cluster=cluster, service=name, desiredCount=3)["service"]
    assert [d["id"] for d in svc["deployments"]] == [first] and svc["desiredCount"] == 3
    sim.outcomes(ecs_service=[{"name_contains": name, "rollout_seconds": 1}])
    svc = ecs.update_service(cluster=cluster, service=name, forceNewDeployment=True)["service"]
    assert svc["deployments"][0]["id"] != first and svc["deployments"][0]["taskDefinition"] == td1
    s = _wait_completed(sim, ecs, cluster, name)
    assert s["runningCount"] == 3
