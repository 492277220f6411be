"""Smoke tests: SageMaker endpoint lifecycle and InvokeEndpoint handlers (simulator module endpoints)."""
from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

ROLE = "arn:aws:iam::123456789012:role/sagemaker-exec"
BLUE_GREEN = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 60,
                                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}},
        "TerminationWaitInSeconds": 0,
    },
    "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "endpoint-5xx"}]},
}


@pytest.fixture
def hosting(sim, aws, unique):
    """(sagemaker client, runtime client, [config-1, config-2], endpoint name)."""
    sm, rt = aws("sagemaker"), aws("sagemaker-runtime", retries=False)
    model = unique("model")
    sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "serve:1"})
    configs = []
    for i in (1, 2):
        cfg = unique(f"cfg{i}")
        sm.create_endpoint_config(EndpointConfigName=cfg, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": i,
            "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
        configs.append(cfg)
    return sm, rt, configs, unique("ep")


def _status(sm, name) -> dict:
    return sm.describe_endpoint(EndpointName=name)


def _wait_status(sim, sm, name, *want, timeout=15.0) -> dict:
    def probe():
        d = _status(sm, name)
        return d if d["EndpointStatus"] in want else None
    return sim.wait_for(probe, timeout=timeout, what=f"endpoint {name} in {want}")


def test_create_update_rollback_delete(sim, hosting):
    sm, rt, (cfg1, cfg2), name = hosting
    sm.create_endpoint(EndpointName=name, EndpointConfigName=cfg1)
    assert _status(sm, name)["EndpointStatus"] == "Creating"
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name, Body=b"{}")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as e:
        sm.create_endpoint(EndpointName=name, EndpointConfigName=cfg1)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    _wait_status(sim, sm, name, "InService")

    # blue/green update to config 2
    sm.update_endpoint(EndpointName=name, EndpointConfigName=cfg2, DeploymentConfig=BLUE_GREEN)
    d = _status(sm, name)
    assert d["EndpointStatus"] == "Updating" and d["EndpointConfigName"] == cfg1
    assert d["PendingDeploymentSummary"]["EndpointConfigName"] == cfg2
    with pytest.raises(ClientError) as e:
        sm.update_endpoint(EndpointName=name, EndpointConfigName=cfg1)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "in-progress" in e.value.response["Error"]["Message"]
    d = _wait_status(sim, sm, name, "InService")
    assert d["EndpointConfigName"] == cfg2 and d["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    assert d["LastDeploymentConfig"] == BLUE_GREEN and "FailureReason" not in d

    # scripted alarm rollback: back in service on the old (current) config
    sim.outcomes(endpoint=[{"name_contains": name, "rollback": "Alarm endpoint-5xx fired; rolled back", "update_seconds": 0.5}])
    sm.update_endpoint(EndpointName=name, EndpointConfigName=cfg1, DeploymentConfig=BLUE_GREEN)
    assert _status(sm, name)["EndpointStatus"] == "Updating"
    d = _wait_status(sim, sm, name, "InService")
    assert d["EndpointConfigName"] == cfg2
    assert d["FailureReason"] == "Alarm endpoint-5xx fired; rolled back"

    sm.delete_endpoint(EndpointName=name)
    assert _status(sm, name)["EndpointStatus"] == "Deleting"

    def gone():
        try:
            _status(sm, name)
        except ClientError as err:
            return err.response["Error"]
        return None

    err = sim.wait_for(gone, timeout=10, what="the endpoint to be deleted")
    assert err["Code"] == "ValidationException" and "Could not find endpoint" in err["Message"]


def test_create_failure(sim, hosting):
    sm, _, (cfg1, _), name = hosting
    sim.outcomes(endpoint=[{"name_contains": name, "fail": "ResourceLimitExceeded: no ml.m5.large capacity",
                            "create_seconds": 0.3}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=cfg1)
    d = _wait_status(sim, sm, name, "Failed", "InService")
    assert d["EndpointStatus"] == "Failed"
    assert d["FailureReason"] == "ResourceLimitExceeded: no ml.m5.large capacity"
    with pytest.raises(ClientError) as e:
        sm.update_endpoint(EndpointName=name, EndpointConfigName=cfg1)
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_invoke_handler_echo_and_model_error(sim, hosting):
    sm, rt, (cfg1, _), name = hosting
    sim.outcomes(endpoint=[{"name_contains": name, "create_seconds": 0.2}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=cfg1)
    _wait_status(sim, sm, name, "InService")

    # no handler: the request body comes back
    r = rt.invoke_endpoint(EndpointName=name, Body=b'{"ping": 1}', ContentType="application/json")
    assert r["Body"].read() == b'{"ping": 1}' and r["InvokedProductionVariant"] == "AllTraffic"

    # a local handler: body on stdin, stdout is the answer
    script = 'read body; printf \'{"input": %s, "config": "%s"}\' "$body" "$SM_ENDPOINT_CONFIG_NAME"'
    sim.post("/_sim/endpoint-handlers", {"endpoint": name, "argv": ["sh", "-c", script]})
    r = rt.invoke_endpoint(EndpointName=name, Body=b'{"x": [1, 2]}', ContentType="application/json")
    assert r["ContentType"] == "application/json"
    assert json.loads(r["Body"].read()) == {"input": {"x": [1, 2]}, "config": cfg1}

    # a failing handler is a ModelError (424) carrying the container's status and stderr
    sim.post("/_sim/endpoint-handlers", {"endpoint": name, "argv": ["sh", "-c", "echo 'bad input shape' >&2; exit 1"],
                                         "error_status": 400})
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name, Body=b"{}")
    resp = e.value.response
    assert resp["Error"]["Code"] == "ModelError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["OriginalStatusCode"] == 400 and resp["OriginalMessage"] == "bad input shape"

    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name + "-missing", Body=b"{}")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert "not found" in e.value.response["Error"]["Message"]


def test_duplicate_model_and_config_rejected(sim, hosting, unique):
    sm, _, (cfg1, _), _ = hosting
    with pytest.raises(ClientError) as e:
        sm.create_endpoint_config(EndpointConfigName=cfg1, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "x", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    assert "already existing endpoint configuration" in e.value.response["Error"]["Message"]
    model = unique("dup-model")
    sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "serve:1"})
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "serve:2"})
    assert "already existing model" in e.value.response["Error"]["Message"]
