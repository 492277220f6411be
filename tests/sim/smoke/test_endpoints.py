"""Smoke tests: SageMaker endpoint lifecycle, InvokeEndpoint handlers, served models (registered images) and
blue/green updates (simulator modules endpoints and images)."""
from __future__ import annotations

import json
import os

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


# --------------------------------------------------------------------------------------------
# serving: registered images run `<entrypoint> serve` with /opt/ml/model from ModelDataUrl
# --------------------------------------------------------------------------------------------
SERVE_PY = r'''
import http.server, json, os, sys

assert sys.argv[1:] == ["serve"], sys.argv
PORT = int(os.environ["SAGEMAKER_BIND_TO_PORT"])
ANSWER = open("/opt/ml/model/answer.txt").read().strip()
PING = os.environ.get("PING", "ok")


class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping" and PING == "ok":
            self._send(200, b"")
        else:
            self._send(503, b"not ready", "text/plain")

    def do_POST(self):
        data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        if self.path != "/invocations":
            return self._send(404, b"no such path", "text/plain")
        if isinstance(data, dict) and data.get("fail"):
            return self._send(int(data["fail"]), b"model exploded on purpose", "text/plain")
        hidden = os.environ.get("HIDDEN_FILE")
        self._send(200, json.dumps({
            "answer": ANSWER, "input": data, "accept": self.headers.get("Accept"),
            "greeting": os.environ.get("GREETING"), "image_env": os.environ.get("FROM_IMAGE"),
            "aws": os.environ.get("AWS_ENDPOINT_URL"),
            "hidden_visible": bool(hidden) and os.path.exists(hidden)}).encode())

    def log_message(self, fmt, *args):
        print("request: " + fmt % args, flush=True)


print(f"serving {ANSWER} on {PORT}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
'''


@pytest.fixture
def serving(sim, aws, unique, tmp_path):
    """Registers image `<unique>:1` running SERVE_PY; model(answer, **env) -> model name (its
    model.tar.gz holds answer.txt); config(model, count=1) -> endpoint config name."""
    import io
    import sys
    import tarfile

    sm, s3 = aws("sagemaker"), aws("s3")
    script = tmp_path / "serve.py"
    script.write_text(SERVE_PY)
    image = f"{unique('serve-img')}:1"
    listed = sim.post("/_sim/images", {"images": {image: {"entrypoint": [sys.executable, str(script)],
                                                          "cmd": ["ignored-by-serve"],
                                                          "env": {"FROM_IMAGE": "yes"}}}})
    assert listed["images"][image]["entrypoint"][1] == str(script)
    bucket = unique("models")
    s3.create_bucket(Bucket=bucket)

    def model(answer: str, image: str = image, **env) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            data = answer.encode()
            info = tarfile.TarInfo("answer.txt")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        key = f"{answer}/model.tar.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
        name = unique("model")
        env.setdefault("HIDDEN_FILE", os.path.join(sim.hidden_dir, "secret-checkout.txt"))
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": image, "ModelDataUrl": f"s3://{bucket}/{key}", "Environment": env})
        return name

    def config(model_name: str, count: int = 1) -> str:
        cfg = unique("cfg")
        sm.create_endpoint_config(EndpointConfigName=cfg, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": model_name, "InitialInstanceCount": count,
            "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
        return cfg

    model.image = image
    model.bucket = bucket
    return model, config


def _endpoint_procs(sim, name) -> list[dict]:
    return [p for p in sim.processes() if p["kind"] == "endpoint" and p["name"].startswith(name + "/")]


def _invoke(rt, name, payload) -> dict:
    r = rt.invoke_endpoint(EndpointName=name, Body=json.dumps(payload).encode(), ContentType="application/json",
                           Accept="application/json")
    assert r["ContentType"] == "application/json"
    return dict(json.loads(r["Body"].read()), variant=r["InvokedProductionVariant"])


def _delete_and_wait(sim, sm, name) -> None:
    sm.delete_endpoint(EndpointName=name)
    sim.wait_for(lambda: not _endpoint_procs(sim, name), timeout=15, what=f"{name}'s processes to stop")


def test_images_control(sim, unique):
    img = unique("img")
    sim.post("/_sim/images", {"images": {img: {"cmd": ["true"], "user": "0:0"}}})
    assert sim.get("/_sim/images")["images"][img] == {"entrypoint": [], "cmd": ["true"], "user": "0:0", "env": {}}
    status, obj = sim._req("POST", "/_sim/images", {"images": {img: {"entrypoint": "sh -c true"}}})
    assert status == 400 and "exec form" in obj["error"]
    status, obj = sim._req("POST", "/_sim/images", {"images": {img: {"cmd": ["x"], "user": "no-such-user-here"}}})
    assert status == 400 and "does not exist" in obj["error"]
    sim.delete("/_sim/images", {"images": [img]})
    assert img not in sim.get("/_sim/images")["images"]


def test_serve_invoke_model_error_logs_delete(sim, aws, serving, unique):
    model, config = serving
    sm, rt, logs = aws("sagemaker"), aws("sagemaker-runtime", retries=False), aws("logs")
    name = unique("ep")
    cfg = config(model("v1", GREETING="hello"), count=2)
    sim.outcomes(endpoint=[{"name_contains": name, "create_seconds": 0}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=cfg)
    assert _status(sm, name)["EndpointStatus"] == "Creating"
    d = _wait_status(sim, sm, name, "InService", "Failed", timeout=30)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    procs = _endpoint_procs(sim, name)
    assert len(procs) == 2 and {p["name"].split("/")[1] for p in procs} == {"AllTraffic"}
    variant = d["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 2
    assert variant["DeployedImages"][0]["SpecifiedImage"] == serving[0].image
    assert "@sha256:" in variant["DeployedImages"][0]["ResolvedImage"]

    # the answer comes from the model file, the model's and the image's environment
    out = _invoke(rt, name, {"x": [1, 2]})
    assert out == {"answer": "v1", "input": {"x": [1, 2]}, "accept": "application/json", "greeting": "hello",
                   "image_env": "yes", "aws": sim.endpoint, "hidden_visible": False, "variant": "AllTraffic"}

    # a non-2xx answer from the model is a ModelError carrying its status and body
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name, Body=b'{"fail": 500}', ContentType="application/json")
    resp = e.value.response
    assert resp["Error"]["Code"] == "ModelError" and resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["OriginalStatusCode"] == 500 and resp["OriginalMessage"] == "model exploded on purpose"

    # the serving processes' output is in CloudWatch, one stream per instance
    group = f"/aws/sagemaker/Endpoints/{name}"

    def streams():
        ss = logs.describe_log_streams(logGroupName=group)["logStreams"]
        return ss if len(ss) == 2 else None
    names = [s["logStreamName"] for s in sim.wait_for(streams, what="two log streams")]
    assert all(n.startswith("AllTraffic/i-") for n in names)

    def lines():
        got = [ev["message"] for n in names for ev in logs.get_log_events(logGroupName=group, logStreamName=n)["events"]]
        return got if any(m.startswith("serving v1 on") for m in got) and any("POST /invocations" in m for m in got) else None
    sim.wait_for(lines, what="the serving output in CloudWatch")

    _delete_and_wait(sim, sm, name)
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name + "-missing", Body=b"{}")
    assert e.value.response["Error"]["Code"] == "ValidationError"


def test_serve_ping_failures(sim, aws, serving, unique):
    """A process that never answers /ping, or exits, fails CreateEndpoint and is gone."""
    model, config = serving
    sm, logs = aws("sagemaker"), aws("logs")
    crash_image = unique("crash") + ":1"
    sim.post("/_sim/images", {"images": {crash_image: {"entrypoint": ["sh", "-c", 'echo "cannot load model: $0" >&2; exit 3']}}})
    never, crash = unique("ep-noping"), unique("ep-crash")
    sim.outcomes(endpoint=[{"name_contains": never, "create_seconds": 0, "ping_timeout_seconds": 1.5},
                           {"name_contains": crash, "create_seconds": 0}])
    sm.create_endpoint(EndpointName=never, EndpointConfigName=config(model("v1", PING="never")))
    sm.create_endpoint(EndpointName=crash, EndpointConfigName=config(model("v1", image=crash_image)))
    for name in (never, crash):
        d = _wait_status(sim, sm, name, "InService", "Failed", timeout=30)
        assert d["EndpointStatus"] == "Failed"
        assert d["FailureReason"] == ("The primary container for production variant AllTraffic did not pass the ping "
                                      "health check. Please check CloudWatch logs for this endpoint.")
        sim.wait_for(lambda: not _endpoint_procs(sim, name), timeout=15, what=f"{name}'s processes to stop")

    group = f"/aws/sagemaker/Endpoints/{crash}"

    def crash_line():
        for st in logs.describe_log_streams(logGroupName=group)["logStreams"]:
            for ev in logs.get_log_events(logGroupName=group, logStreamName=st["logStreamName"])["events"]:
                if ev["message"] == "cannot load model: serve":
                    return True
        return False
    sim.wait_for(crash_line, what="the crashed container's output")
    sm.delete_endpoint(EndpointName=never)
    sm.delete_endpoint(EndpointName=crash)


def _canary(wait: int, alarms=(), termination: int = 0, percent: int = 10) -> dict:
    dc = {"BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": wait,
                                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": percent}},
        "TerminationWaitInSeconds": termination, "MaximumExecutionTimeoutInSeconds": 600}}
    if alarms:
        dc["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return dc


def _served_endpoint(sim, sm, unique, config, model_name) -> tuple[str, str]:
    name, cfg = unique("ep"), config(model_name)
    sim.outcomes(endpoint=[{"name_contains": name, "create_seconds": 0}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=cfg)
    d = _wait_status(sim, sm, name, "InService", "Failed", timeout=30)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    return name, cfg


def _wait_baking(sim, sm, name, share: str) -> dict:
    def probe():
        d = _status(sm, name)
        pending = (d.get("PendingDeploymentSummary") or {}).get("ProductionVariants") or [{}]
        st = (pending[0].get("VariantStatus") or [{}])[0]
        return d if st.get("Status") == "Baking" and f"{share} of traffic" in st.get("StatusMessage", "") else None
    return sim.wait_for(probe, timeout=30, what=f"{name} baking with {share} of the traffic on green")


def test_canary_update_shifts_traffic_then_finishes(sim, aws, serving, unique):
    model, config = serving
    sm, rt = aws("sagemaker"), aws("sagemaker-runtime", retries=False)
    name, cfg1 = _served_endpoint(sim, sm, unique, config, model("v1"))
    blue_pids = {p["pid"] for p in _endpoint_procs(sim, name)}
    cfg2 = config(model("v2"))
    sim.outcomes(endpoint=[{"name_contains": name, "update_seconds": 0}])
    deployment = _canary(wait=8, termination=1)
    sm.update_endpoint(EndpointName=name, EndpointConfigName=cfg2, DeploymentConfig=deployment)

    d = _wait_baking(sim, sm, name, "10%")
    assert d["EndpointStatus"] == "Updating" and d["EndpointConfigName"] == cfg1
    pending = d["PendingDeploymentSummary"]
    assert pending["EndpointConfigName"] == cfg2
    assert pending["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    # both fleets run side by side; every 10th request goes to green
    assert len(_endpoint_procs(sim, name)) == 2
    answers = [_invoke(rt, name, {"i": i})["answer"] for i in range(10)]
    assert answers == ["v1"] * 9 + ["v2"], answers

    # then 100% on green, the termination wait, and blue stops
    _wait_baking(sim, sm, name, "100%")
    assert {_invoke(rt, name, {"i": i})["answer"] for i in range(3)} == {"v2"}
    d = _wait_status(sim, sm, name, "InService", timeout=30)
    assert d["EndpointConfigName"] == cfg2 and "PendingDeploymentSummary" not in d and "FailureReason" not in d
    assert d["LastDeploymentConfig"] == deployment
    sim.wait_for(lambda: not blue_pids & {p["pid"] for p in _endpoint_procs(sim, name)}, timeout=15,
                 what="the blue fleet to stop")
    assert len(_endpoint_procs(sim, name)) == 1
    assert _invoke(rt, name, {})["answer"] == "v2"
    _delete_and_wait(sim, sm, name)


def test_alarm_during_bake_rolls_back(sim, aws, serving, unique):
    model, config = serving
    sm, rt, cw = aws("sagemaker"), aws("sagemaker-runtime", retries=False), aws("cloudwatch")
    name, cfg1 = _served_endpoint(sim, sm, unique, config, model("v1"))
    alarm = unique("endpoint-5xx")
    cw.put_metric_alarm(AlarmName=alarm, Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
                        Dimensions=[{"Name": "EndpointName", "Value": name}], Statistic="Sum", Period=60,
                        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold")
    sim.outcomes(endpoint=[{"name_contains": name, "update_seconds": 0}])
    sm.update_endpoint(EndpointName=name, EndpointConfigName=config(model("v2")),
                       DeploymentConfig=_canary(wait=300, alarms=[alarm], percent=50))
    _wait_baking(sim, sm, name, "50%")
    assert sorted(_invoke(rt, name, {})["answer"] for _ in range(2)) == ["v1", "v2"]
    assert len(_endpoint_procs(sim, name)) == 2

    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5xx on the canary")
    d = _wait_status(sim, sm, name, "InService", timeout=15)
    assert d["EndpointConfigName"] == cfg1 and "PendingDeploymentSummary" not in d
    assert alarm in d["FailureReason"] and "rolled back" in d["FailureReason"]
    assert {_invoke(rt, name, {})["answer"] for _ in range(4)} == {"v1"}
    sim.wait_for(lambda: len(_endpoint_procs(sim, name)) == 1, timeout=15, what="the green fleet to stop")

    # an update whose new fleet never passes /ping also rolls back, blue keeps serving
    sim.outcomes(endpoint=[{"name_contains": name, "update_seconds": 0, "ping_timeout_seconds": 1}])
    sm.update_endpoint(EndpointName=name, EndpointConfigName=config(model("v3", PING="never")))
    d = _wait_status(sim, sm, name, "InService", timeout=15)
    assert d["EndpointConfigName"] == cfg1 and "did not pass the ping health check" in d["FailureReason"]
    assert _invoke(rt, name, {})["answer"] == "v1"
    _delete_and_wait(sim, sm, name)


def test_model_package_model_is_served(sim, aws, serving, unique):
    """A model whose container names a ModelPackageName runs the package's inference containers."""
    model, config = serving
    sm, rt = aws("sagemaker"), aws("sagemaker-runtime", retries=False)
    model("pkg-v1")  # uploads s3://<bucket>/pkg-v1/model.tar.gz
    group = unique("group")
    sm.create_model_package_group(ModelPackageGroupName=group)
    arn = sm.create_model_package(ModelPackageGroupName=group, ModelApprovalStatus="Approved", InferenceSpecification={
        "Containers": [{"Image": model.image, "ModelDataUrl": f"s3://{model.bucket}/pkg-v1/model.tar.gz"}],
        "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    pkg_model = unique("model")
    sm.create_model(ModelName=pkg_model, ExecutionRoleArn=ROLE,
                    PrimaryContainer={"ModelPackageName": arn, "Environment": {"GREETING": "from-package"}})
    name, _ = _served_endpoint(sim, sm, unique, config, pkg_model)
    out = _invoke(rt, name, {"q": 1})
    assert out["answer"] == "pkg-v1" and out["greeting"] == "from-package"
    _delete_and_wait(sim, sm, name)


def test_linear_update_without_alarms(sim, aws, serving, unique):
    model, config = serving
    sm, rt = aws("sagemaker"), aws("sagemaker-runtime", retries=False)
    name, _ = _served_endpoint(sim, sm, unique, config, model("v1"))
    cfg2 = config(model("v2"))
    sim.outcomes(endpoint=[{"name_contains": name, "update_seconds": 0}])
    sm.update_endpoint(EndpointName=name, EndpointConfigName=cfg2, DeploymentConfig={"BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "LINEAR", "WaitIntervalInSeconds": 4,
                                        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 50}}}})
    _wait_baking(sim, sm, name, "50%")
    state = sim.get("/_sim/endpoints")["endpoints"][name]
    assert state["green_share"] == 0.5 and state["green"]["config"] == cfg2
    assert [_invoke(rt, name, {})["answer"] for _ in range(4)] == ["v1", "v2", "v1", "v2"]
    d = _wait_status(sim, sm, name, "InService", timeout=30)
    assert d["EndpointConfigName"] == cfg2 and "FailureReason" not in d
    _delete_and_wait(sim, sm, name)
