"""SageMaker endpoints with a lifecycle, blue/green UpdateEndpoint, and InvokeEndpoint served by
the model's own serving process (or, for images the simulator does not know, local handlers).

moto's endpoints are InService at once, duplicate models/endpoint configs are silently replaced, UpdateEndpoint is missing and InvokeEndpoint answers for
endpoints that do not exist. Here:

    CreateEndpoint   Creating -> InService (after create_seconds, default 2) | Failed (FailureReason)
    UpdateEndpoint   needs InService (else ValidationException); Updating (PendingDeploymentSummary
                     shows the new config) -> InService with the new EndpointConfigName and variants,
                     LastDeploymentConfig = the request's DeploymentConfig; or a rollback:
                     InService on the OLD config with FailureReason set, or UpdateRollbackFailed
    CreateModel / CreateEndpointConfig with an existing name: ValidationException, as AWS
    DeleteEndpoint   Deleting -> gone (DescribeEndpoint: ValidationException "Could not find endpoint")
    InvokeEndpoint   ValidationError unless the endpoint exists and serves traffic (InService, or
                     Updating/SystemUpdating, which keep serving the old variants as AWS does).

Serving (images registered with POST /_sim/images, see images.py): every production variant whose
model has a container with a registered image gets InitialInstanceCount "instances"; each runs,
per container, `docker run <image> serve` (the image's entrypoint + ["serve"]) as a local process
in a private mount namespace (runtime.launch: own /opt/ml, hide paths covered) with
/opt/ml/model = the extracted ModelDataUrl (model.tar.gz in S3; ModelDataSource S3Prefix too),
environment = image env, AWS_* pointing at the simulator, the model's Environment, and
SAGEMAKER_BIND_TO_PORT=<free port>. The variant is up once every process answers GET /ping with
200 (bounded: outcome ping_timeout_seconds, else ContainerStartupHealthCheckTimeoutInSeconds
capped at 30 s); a process that exits or never answers fails CreateEndpoint ("The primary
container for production variant X did not pass the ping health check...") or rolls an update
back. Output lines go to /aws/sagemaker/Endpoints/<name>, stream <variant>/<instance id> (plus
/<container hostname> with several containers). InvokeEndpoint then POSTs the body (Content-Type,
Accept, custom attributes) to /invocations: 2xx is the answer, anything else ModelError (424)
with OriginalStatusCode/OriginalMessage. Several containers: Serial (default) chains them, Direct
needs TargetContainerHostname. Models whose images are not registered keep the old behaviour: no
process; with a handler registered (POST /_sim/endpoint-handlers) argv runs per request with the
body on stdin, stdout is the answer, a non-zero exit is a ModelError; else the body is echoed.

Blue/green (an update whose new config is served): the new (green) fleet starts while the old
(blue) one keeps serving; then DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration
shifts traffic: ALL_AT_ONCE (100%), CANARY (CanarySize INSTANCE_COUNT|CAPACITY_PERCENT, then the
rest) or LINEAR (LinearStepSize per step), baking WaitIntervalInSeconds after every step, then
TerminationWaitInSeconds, then blue stops. The green share of InvokeEndpoint requests is
deterministic: request n (counted from the step's start) goes to green when
floor((n+1)*share) > floor(n*share) (10% -> the 10th, 20th, ... request). A CloudWatch alarm
named in AutoRollbackConfiguration.Alarms in state ALARM (moto: PutMetricAlarm + SetAlarmState)
during a bake, or MaximumExecutionTimeoutInSeconds passing, rolls back: traffic back to blue,
green stopped, InService on the old config with FailureReason. No DeploymentConfig = ALL_AT_ONCE
without waits. Updates to a config without registered images keep the old timer behaviour.
GET /_sim/endpoints shows the fleets (pids, ports, green share, stage).

Scripted outcomes, kind "endpoint", matched on the endpoint name (CreateEndpoint and UpdateEndpoint
each take one):
    {"create_seconds": N}  {"fail": "<FailureReason>"}                   for CreateEndpoint
    {"update_seconds": N}  {"rollback": "<FailureReason>"}  {"rollback_failed": "<FailureReason>"}
                                                                         for UpdateEndpoint
    {"ping_timeout_seconds": N}                                           for either (served models)
    {"delete_seconds": N}                                                 taken by UpdateEndpoint/Create too
create_seconds/update_seconds are minimum times in Creating/Updating (a served fleet also waits for
/ping); "fail", "rollback" and "rollback_failed" start no processes.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import traceback
import uuid
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.sagemaker import models as smm
from moto.sagemaker import responses as smr
from moto.sagemaker.exceptions import ValidationError
from moto.sagemakerruntime import responses as rtr

from . import events, images, s3util
from .common import _check_moto, _now

DEFAULT_CREATE_SECONDS = 2.0
DEFAULT_UPDATE_SECONDS = 2.0
DEFAULT_DELETE_SECONDS = 1.0
DEFAULT_PING_TIMEOUT = 30.0
PING_INTERVAL = 0.1
INVOKE_TIMEOUT = 60.0
SERVING = ("InService", "Updating", "SystemUpdating", "UpdateRollbackFailed")
LOG_GROUP = "/aws/sagemaker/Endpoints/"

_ctx: Any = None
_handlers: dict[str, dict[str, Any]] = {}
_handlers_lock = threading.Lock()
_live: dict[str, Any] = {}  # endpoint ARN -> FakeEndpoint with serving state (for /_sim/endpoints)


def _after(seconds: float, fn: Any) -> None:
    def run() -> None:
        try:
            with _ctx.lock:
                fn()
        except Exception:
            traceback.print_exc()

    t = threading.Timer(max(0.0, seconds), run)
    t.daemon = True
    t.start()


def _thread(name: str, fn: Any, *args: Any) -> None:
    threading.Thread(target=fn, args=args, name=name, daemon=True).start()


def _endpoint_arn(backend: Any, name: str) -> str:
    return smm.FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)


def _get(backend: Any, name: str) -> Any:
    ep = backend.endpoints.get(name)
    if ep is None:
        raise ValidationError(message=f"Could not find endpoint \"{_endpoint_arn(backend, name)}\".")
    return ep


def _bump(ep: Any) -> int:
    ep._sim_gen = getattr(ep, "_sim_gen", 0) + 1
    return ep._sim_gen


def _set_status(ep: Any, status: str) -> None:
    ep.endpoint_status = status
    ep.last_modified_time = _now()
    events.endpoint_changed(ep)  # EventBridge "SageMaker Endpoint State Change"


def _serving(ep: Any) -> "Serving":
    st = getattr(ep, "_sim_serving", None)
    if st is None:
        st = ep._sim_serving = Serving()
        _live[ep.arn] = ep
    return st


# --------------------------------------------------------------------------------------------
# serving fleets
# --------------------------------------------------------------------------------------------
class FleetError(Exception):
    """Why a fleet could not come up (the endpoint's FailureReason)."""


class Serving:
    """An endpoint's serving state: blue serves, green is an update's new fleet; `share` of the
    requests go to green (deterministic counter)."""

    def __init__(self) -> None:
        self.blue: Fleet | None = None
        self.green: Fleet | None = None
        self.share = 0.0
        self.counter = 0
        self.stage = ""

    def set_share(self, share: float) -> None:
        self.share, self.counter = share, 0

    def pick_fleet(self) -> "Fleet | None":
        if self.green is not None and self.share > 0:
            n = self.counter
            self.counter += 1
            if self.share >= 1 or math.floor((n + 1) * self.share + 1e-9) > math.floor(n * self.share + 1e-9):
                return self.green
        return self.blue

    def stop_all(self) -> None:
        for f in (self.blue, self.green):
            if f is not None:
                f.stop()
        self.blue = self.green = None
        self.share = 0.0


class Container:
    """One serving process (a container of one instance)."""

    def __init__(self, hostname: str, image: str, entry: dict[str, Any] | None) -> None:
        self.hostname, self.image, self.entry = hostname, image, entry
        self.port = 0
        self.proc: Any = None
        self.writer: Any = None
        self.healthy = entry is None  # a container without a registered image passes the body on

    def describe(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "image": self.image, "port": self.port,
                "pid": self.proc.pid if self.proc else None,
                "alive": bool(self.proc and self.proc.alive()), "healthy": self.healthy}


class Instance:
    def __init__(self, variant: str) -> None:
        self.id = "i-" + uuid.uuid4().hex[:17]
        self.variant = variant
        self.containers: list[Container] = []

    def alive(self) -> bool:
        return all(c.proc is None or c.proc.alive() for c in self.containers)


class VariantFleet:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.name = plan["name"]
        self.weight = float(plan["weight"])
        self.mode = plan["mode"]
        self.served = any(c["entry"] is not None for c in plan["containers"])
        self.instances: list[Instance] = []
        self.rr = 0

    def pick_instance(self) -> Instance | None:
        if not self.instances:
            return None
        n = len(self.instances)
        for k in range(n):
            inst = self.instances[(self.rr + k) % n]
            if inst.alive():
                self.rr = (self.rr + k + 1) % n
                return inst
        inst = self.instances[self.rr % n]
        self.rr = (self.rr + 1) % n
        return inst


class Fleet:
    """The processes serving one endpoint config."""

    def __init__(self, endpoint: str, config_name: str, plan: list[dict[str, Any]], region: str,
                 account: str) -> None:
        self.endpoint, self.config_name, self.region, self.account = endpoint, config_name, region, account
        self.variants = [VariantFleet(p) for p in plan]
        self.dir = os.path.join(_ctx.state_dir, "endpoints", f"{endpoint}-{uuid.uuid4().hex[:8]}")
        self._lock = threading.Lock()
        self.stopped = False
        self._cw = {v.name: [0, 0] for v in self.variants}  # smooth weighted round robin state
        self.healthy_instances: dict[str, int] = {v.name: 0 for v in self.variants}

    @property
    def served(self) -> bool:
        return any(v.served for v in self.variants)

    def capacity(self) -> int:
        return sum(int(v.plan["count"]) for v in self.variants) or 1

    # --- start ---------------------------------------------------------------------------
    def start(self, ping_timeout: float, deadline: float | None, cancelled: Any) -> None:
        """Start every process and wait for /ping; FleetError on failure (self not stopped)."""
        os.makedirs(self.dir, exist_ok=True)
        for v in self.variants:
            if not v.served:
                continue
            model_dirs = [self._model_dir(v, i, c) for i, c in enumerate(v.plan["containers"])]
            multi = len(v.plan["containers"]) > 1
            for _ in range(int(v.plan["count"])):
                inst = Instance(v.name)
                v.instances.append(inst)
                for i, c in enumerate(v.plan["containers"]):
                    cont = Container(c["hostname"], c["image"], c["entry"])
                    inst.containers.append(cont)
                    if c["entry"] is not None:
                        stream = f"{v.name}/{inst.id}" + (f"/{c['hostname']}" if multi else "")
                        self._launch(v, inst, cont, c, model_dirs[i], stream)
        end = time.monotonic() + ping_timeout
        if deadline is not None:
            end = min(end, deadline)
        while True:
            if cancelled():
                raise FleetError("cancelled")
            pending = 0
            for v in self.variants:
                for inst in v.instances:
                    for c in inst.containers:
                        if c.healthy:
                            continue
                        if not c.proc.alive() or time.monotonic() > end:
                            raise FleetError(_ping_reason(v, c))
                        if _ping(c.port):
                            c.healthy = True
                        else:
                            pending += 1
                    self.healthy_instances[v.name] = sum(
                        1 for i in v.instances if all(c.healthy for c in i.containers))
            if not pending:
                return
            time.sleep(PING_INTERVAL)

    def _model_dir(self, v: VariantFleet, i: int, c: dict[str, Any]) -> str | None:
        if c["entry"] is None:
            return None
        d = os.path.join(self.dir, "models", f"{v.name}-{i}")
        os.makedirs(d, exist_ok=True)
        url, source = c.get("model_data_url"), c.get("model_data_source") or {}
        s3src = source.get("S3DataSource") or {}
        try:
            if url:
                data = s3util.get_bytes(url, account_id=self.account)
                fd, tmp = tempfile.mkstemp(suffix=".tar.gz", dir=self.dir)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                try:
                    with tarfile.open(tmp, "r:*") as tf:
                        tf.extractall(d, filter="data")
                except (tarfile.TarError, OSError) as e:
                    raise FleetError(
                        f"Failed to extract model data archive from URL \"{url}\". Please ensure that the object "
                        f"located at the URL is a valid tar.gz archive. ({e})") from None
                finally:
                    os.unlink(tmp)
            elif s3src.get("S3Uri"):
                uri = s3src["S3Uri"]
                if (s3src.get("CompressionType") or "None") == "Gzip":
                    data = s3util.get_bytes(uri, account_id=self.account)
                    fd, tmp = tempfile.mkstemp(suffix=".tar.gz", dir=self.dir)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    try:
                        with tarfile.open(tmp, "r:*") as tf:
                            tf.extractall(d, filter="data")
                    finally:
                        os.unlink(tmp)
                elif s3util.download_prefix(uri, d, account_id=self.account) == 0:
                    raise s3util.S3Error(f"no objects under {uri}")
        except s3util.S3Error as e:
            where = url or s3src.get("S3Uri")
            raise FleetError(
                f"Failed to download model data for container \"{c['hostname']}\" from URL: \"{where}\". "
                "Please ensure that there is an object located at the URL and that the role passed to "
                f"CreateModel has permissions to download the object. ({e})") from None
        return d

    def _launch(self, v: VariantFleet, inst: Instance, cont: Container, c: dict[str, Any],
                model_dir: str | None, stream: str) -> None:
        entry = c["entry"]
        ml = os.path.join(self.dir, "instances", inst.id, cont.hostname, "ml")
        os.makedirs(ml, exist_ok=True)
        mounts = {"/opt/ml": ml}
        if model_dir:
            mounts["/opt/ml/model"] = model_dir
        cont.port = _free_port()
        home = os.environ.get("HOME", "/root")
        if entry.get("user"):
            home = images.resolve_user(entry["user"])[2]
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": home,
               "LANG": os.environ.get("LANG", "C.UTF-8")}
        env.update(entry.get("env") or {})
        env.update({"AWS_ENDPOINT_URL": _ctx.endpoint_url, "AWS_REGION": self.region,
                    "AWS_DEFAULT_REGION": self.region, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing"})
        env.update({str(k): str(val) for k, val in (c.get("env") or {}).items()})
        env["SAGEMAKER_BIND_TO_PORT"] = str(cont.port)
        argv = images.user_prefix(entry.get("user")) + images.docker_argv(entry, ["serve"])
        with self._lock:
            if self.stopped:
                raise FleetError("cancelled")
            cont.writer = _ctx.cwlogs.writer(LOG_GROUP + self.endpoint, stream, region=self.region,
                                             account_id=self.account)
            try:
                cont.proc = _ctx.runtime.launch(argv, env, name=f"{self.endpoint}/{stream}", mounts=mounts,
                                                hide=_ctx.hide_paths, on_line=cont.writer.write, kind="endpoint")
            except (OSError, RuntimeError) as e:
                raise FleetError(f"could not start the container for production variant {v.name}: {e}") from None

    # --- routing -------------------------------------------------------------------------
    def pick_variant(self, target: str | None) -> VariantFleet | None:
        if target:
            return next((v for v in self.variants if v.name == target), None)
        vs = [v for v in self.variants if v.weight > 0] or self.variants
        if len(vs) == 1:
            return vs[0]
        total = sum(v.weight for v in vs)
        best = None
        for v in vs:  # smooth weighted round robin (deterministic)
            st = self._cw[v.name]
            st[0] += v.weight
            if best is None or st[0] > self._cw[best.name][0]:
                best = v
        self._cw[best.name][0] -= total
        return best

    # --- stop ----------------------------------------------------------------------------
    def stop(self) -> None:
        """SIGTERM every process now, SIGKILL after --stop-grace; files go once they are gone."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
        conts = [c for v in self.variants for i in v.instances for c in i.containers if c.proc is not None]
        for c in conts:
            c.proc.terminate(_ctx.stop_grace)

        def reap() -> None:
            for c in conts:
                try:
                    c.proc.wait_leader()
                    c.proc.kill()  # nothing the container started outlives it
                    c.proc.output_done(2.0)
                except Exception:
                    pass
                if c.writer is not None:
                    c.writer.close()
            if not os.environ.get("SIM_KEEP_STATE"):
                shutil.rmtree(self.dir, ignore_errors=True)

        _thread(f"reap-{self.endpoint}", reap)

    def describe(self) -> dict[str, Any]:
        return {"config": self.config_name, "stopped": self.stopped, "variants": [
            {"name": v.name, "served": v.served, "weight": v.weight, "mode": v.mode,
             "instances": [{"id": i.id, "containers": [c.describe() for c in i.containers]} for i in v.instances]}
            for v in self.variants]}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/ping")
        r = conn.getresponse()
        r.read()
        return r.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _ping_reason(v: VariantFleet, c: Container) -> str:
    who = "primary container" if len(v.plan["containers"]) == 1 else f"container {c.hostname}"
    return (f"The {who} for production variant {v.name} did not pass the ping health check. "
            "Please check CloudWatch logs for this endpoint.")


def _plan(b: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """What each production variant of an endpoint config runs (read from moto; call under the lock)."""
    from .registry import package_containers

    out = []
    for pv in cfg.get("ProductionVariants") or []:
        model = b._models.get(pv.get("ModelName"))
        if model is None:
            raise FleetError(f"Could not find model \"{pv.get('ModelName')}\".")
        raw = [model.primary_container] if model.primary_container else list(model.containers or [])
        containers = []
        for c in raw:
            if c.get("ModelPackageName"):
                try:
                    for pc in package_containers(b, c["ModelPackageName"]):
                        pc["Environment"] = {**(pc.get("Environment") or {}), **(c.get("Environment") or {})}
                        containers.append(pc)
                except ValidationError as e:
                    raise FleetError(f"Could not find model package \"{c['ModelPackageName']}\". ({e.message})") from None
            else:
                containers.append(dict(c))
        multi = len(containers) > 1
        planned = []
        for i, c in enumerate(containers):
            planned.append({"hostname": c.get("ContainerHostname") or (f"container-{i + 1}" if multi else "primary"),
                            "image": c.get("Image") or "", "entry": images.lookup(c.get("Image")),
                            "model_data_url": c.get("ModelDataUrl"), "model_data_source": c.get("ModelDataSource"),
                            "env": c.get("Environment") or {}})
        mode = (getattr(model, "_sim_inference_execution_config", None) or {}).get("Mode") or "Serial"
        out.append({"name": pv["VariantName"], "weight": pv.get("InitialVariantWeight", 1.0) or 0.0,
                    "count": pv.get("InitialInstanceCount") or 1, "mode": mode, "containers": planned,
                    "ping_timeout": pv.get("ContainerStartupHealthCheckTimeoutInSeconds")})
    return out


def _ping_timeout(o: dict[str, Any], plan: list[dict[str, Any]]) -> float:
    if o.get("ping_timeout_seconds") is not None:
        return float(o["ping_timeout_seconds"])
    given = [float(p["ping_timeout"]) for p in plan if p.get("ping_timeout")]
    return min([DEFAULT_PING_TIMEOUT, *given])


def _served(plan: list[dict[str, Any]]) -> bool:
    return any(c["entry"] is not None for p in plan for c in p["containers"])


def _alarm_firing(region: str, account: str, names: list[str]) -> str | None:
    if not names:
        return None
    from moto.cloudwatch.models import cloudwatch_backends

    try:
        alarms = cloudwatch_backends[account][region].alarms
    except Exception:
        return None
    for n in names:
        a = alarms.get(n)
        if a is not None and a.state_value == "ALARM":
            return n
    return None


def _wait_min(until: float, stale: Any) -> bool:
    """Sleep until the monotonic time `until`; False when the operation went stale meanwhile."""
    while time.monotonic() < until:
        if stale():
            return False
        time.sleep(min(0.05, max(0.0, until - time.monotonic())))
    return not stale()


# --------------------------------------------------------------------------------------------
# control plane
# --------------------------------------------------------------------------------------------
def _create_endpoint(self: Any) -> ActionResult:
    b = self.sagemaker_backend
    name = self._get_param("EndpointName")
    with _ctx.lock:
        if name in b.endpoints:
            raise ValidationError(message=f"Cannot create already existing endpoint \"{_endpoint_arn(b, name)}\".")
        cfg_name = self._get_param("EndpointConfigName")
        ep = b.create_endpoint(endpoint_name=name, endpoint_config_name=cfg_name, tags=self._get_param("Tags"))
        o = _ctx.outcomes.take("endpoint", name)
        ep._sim_delete_seconds = float(o.get("delete_seconds", DEFAULT_DELETE_SECONDS))
        _set_status(ep, "Creating")
        gen = _bump(ep)
        plan: list[dict[str, Any]] | None = None
        if not o.get("fail"):
            try:
                plan = _plan(b, b.describe_endpoint_config(cfg_name))
            except FleetError as e:
                o = dict(o, fail=str(e))
        if plan is not None and _served(plan):
            _serving(ep)
            _thread(f"create-{name}", _create_worker, b, ep, gen, cfg_name, plan, o)
            return ActionResult({"EndpointArn": ep.arn})

        def done() -> None:
            if getattr(ep, "_sim_gen", 0) != gen or b.endpoints.get(name) is not ep:
                return
            if o.get("fail"):
                ep.failure_reason = str(o["fail"])
                _set_status(ep, "Failed")
            else:
                _set_status(ep, "InService")

        _after(float(o.get("create_seconds", DEFAULT_CREATE_SECONDS)), done)
    return ActionResult({"EndpointArn": ep.arn})


def _create_worker(b: Any, ep: Any, gen: int, cfg_name: str, plan: list[dict[str, Any]], o: dict[str, Any]) -> None:
    name = ep.endpoint_name
    t0 = time.monotonic()

    def stale() -> bool:
        return getattr(ep, "_sim_gen", 0) != gen or b.endpoints.get(name) is not ep

    fleet = Fleet(name, cfg_name, plan, b.region_name, b.account_id)
    with _ctx.lock:
        if stale():
            return
        st = _serving(ep)
        st.green, st.stage = fleet, "Creating"  # so DeleteEndpoint stops it while it starts
    reason = None
    try:
        fleet.start(_ping_timeout(o, plan), None, stale)
    except FleetError as e:
        reason = str(e)
    except Exception as e:  # never leave an endpoint Creating forever
        traceback.print_exc()
        reason = f"InternalFailure: simulator error: {e!r}"
    if reason is None:
        _wait_min(t0 + float(o.get("create_seconds", DEFAULT_CREATE_SECONDS)), stale)
    with _ctx.lock:
        if stale():
            fleet.stop()
            return
        st.green = None
        if reason is not None:
            fleet.stop()
            st.stage = "Failed"
            ep.failure_reason = reason
            _set_status(ep, "Failed")
        else:
            st.blue, st.stage = fleet, "InService"
            _deployed_images(ep, fleet)
            _set_status(ep, "InService")


_orig_create_model = smr.SageMakerResponse.create_model
_orig_create_endpoint_config = smr.SageMakerResponse.create_endpoint_config


def _create_model(self: Any) -> Any:
    b = self.sagemaker_backend
    name = self._get_param("ModelName")
    with _ctx.lock:
        if name in b._models:
            arn = f"arn:aws:sagemaker:{b.region_name}:{b.account_id}:model/{name.lower()}"
            raise ValidationError(message=f"Cannot create already existing model \"{arn}\".")
        res = _orig_create_model(self)
        model = b._models.get(name)
        if model is not None:
            model._sim_inference_execution_config = self._get_param("InferenceExecutionConfig")
        return res


def _create_endpoint_config(self: Any) -> Any:
    b = self.sagemaker_backend
    name = self._get_param("EndpointConfigName")
    with _ctx.lock:
        if name in b.endpoint_configs:
            arn = f"arn:aws:sagemaker:{b.region_name}:{b.account_id}:endpoint-config/{name.lower()}"
            raise ValidationError(message=f"Cannot create already existing endpoint configuration \"{arn}\".")
        return _orig_create_endpoint_config(self)


def _variant_summaries(ep: Any, config: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for pv in config.get("ProductionVariants") or []:
        v = {"VariantName": pv["VariantName"], "DesiredWeight": pv.get("InitialVariantWeight", 1.0),
             "DesiredInstanceCount": pv.get("InitialInstanceCount"), "InstanceType": pv.get("InstanceType"),
             "DesiredServerlessConfig": pv.get("ServerlessConfig"),
             "VariantStatus": [{"Status": "Creating", "StartTime": _now()}]}
        out.append({k: val for k, val in v.items() if val is not None})
    return out


def _pending_status(ep: Any, status: str, message: str, fleet: "Fleet | None" = None, share: float | None = None) -> None:
    """Set the VariantStatus (and current counts/weights) of PendingDeploymentSummary's variants."""
    pds = getattr(ep, "pending_deployment_summary", None)
    if not pds:
        return
    for v in pds.get("ProductionVariants") or []:
        v["VariantStatus"] = [{"Status": status, "StatusMessage": message, "StartTime": _now()}]
        if fleet is not None:
            v["CurrentInstanceCount"] = fleet.healthy_instances.get(v["VariantName"], 0)
        if share is not None:
            v["CurrentWeight"] = round(float(v.get("DesiredWeight", 1.0)) * share, 4)


def _traffic_steps(routing: dict[str, Any], capacity: int) -> list[float]:
    kind = (routing or {}).get("Type") or "ALL_AT_ONCE"

    def size(spec: dict[str, Any] | None, what: str) -> float:
        spec = spec or {}
        t, val = spec.get("Type"), float(spec.get("Value") or 0)
        if t == "INSTANCE_COUNT":
            share = val / capacity
        elif t == "CAPACITY_PERCENT":
            share = val / 100.0
        else:
            raise ValidationError(message=f"{what}.Type must be INSTANCE_COUNT or CAPACITY_PERCENT")
        if not 0 < share <= 1:
            raise ValidationError(message=f"Invalid {what}: {spec}")
        return share

    if kind == "ALL_AT_ONCE":
        return [1.0]
    if kind == "CANARY":
        c = size(routing.get("CanarySize"), "CanarySize")
        return [c, 1.0] if c < 1 else [1.0]
    if kind == "LINEAR":
        step = size(routing.get("LinearStepSize"), "LinearStepSize")
        n = int(math.ceil(1 / step - 1e-9))
        return [round(min(1.0, step * (i + 1)), 6) for i in range(n - 1)] + [1.0]
    raise ValidationError(message=f"Invalid TrafficRoutingConfiguration Type {kind!r}: ALL_AT_ONCE, CANARY or LINEAR")


def _update_endpoint(self: Any) -> ActionResult:
    b = self.sagemaker_backend
    name = self._get_param("EndpointName")
    cfg_name = self._get_param("EndpointConfigName")
    with _ctx.lock:
        ep = _get(b, name)
        if ep.endpoint_status != "InService":
            raise ValidationError(message=f"Cannot update in-progress endpoint \"{ep.arn}\".")
        cfg = b.describe_endpoint_config(cfg_name)  # ValidationException when missing
        deployment_config = self._get_param("DeploymentConfig")
        if deployment_config is None and self._get_param("RetainDeploymentConfig"):
            deployment_config = getattr(ep, "last_deployment_config", None)
        policy = (deployment_config or {}).get("BlueGreenUpdatePolicy") or {}
        plan_error = None
        try:
            plan = _plan(b, cfg)
        except FleetError as e:
            plan, plan_error = None, str(e)
        steps = None
        if plan is not None and _served(plan):
            capacity = sum(int(p["count"]) for p in plan) or 1
            steps = _traffic_steps(policy.get("TrafficRoutingConfiguration") or {}, capacity)  # may raise
        o = _ctx.outcomes.take("endpoint", name)
        if plan_error and not o.get("rollback_failed"):
            o = dict(o, rollback=plan_error)
        ep.last_deployment_config = deployment_config
        ep.failure_reason = None
        ep.pending_deployment_summary = {"EndpointConfigName": cfg_name, "StartTime": _now(),
                                         "ProductionVariants": _variant_summaries(ep, cfg)}
        if "delete_seconds" in o:
            ep._sim_delete_seconds = float(o["delete_seconds"])
        _set_status(ep, "Updating")
        gen = _bump(ep)
        if steps is not None and not o.get("rollback") and not o.get("rollback_failed"):
            _serving(ep)
            _thread(f"update-{name}", _update_worker, b, ep, gen, cfg_name, cfg, plan, steps, deployment_config, o)
            return ActionResult({"EndpointArn": ep.arn})

        def done() -> None:
            if getattr(ep, "_sim_gen", 0) != gen or b.endpoints.get(name) is not ep:
                return
            ep.pending_deployment_summary = None
            if o.get("rollback_failed"):
                ep.failure_reason = str(o["rollback_failed"])
                _set_status(ep, "UpdateRollbackFailed")
            elif o.get("rollback"):
                ep.failure_reason = str(o["rollback"])
                _set_status(ep, "InService")
            else:
                _switch_config(ep, cfg_name, cfg)
                st = getattr(ep, "_sim_serving", None)
                if st is not None and st.blue is not None:  # the old config was served: it goes
                    st.blue.stop()
                    st.blue = None
                _set_status(ep, "InService")

        _after(float(o.get("update_seconds", DEFAULT_UPDATE_SECONDS)), done)
    return ActionResult({"EndpointArn": ep.arn})


def _switch_config(ep: Any, cfg_name: str, cfg: dict[str, Any], fleet: "Fleet | None" = None) -> None:
    ep.endpoint_config_name = cfg_name
    ep.production_variants = ep._process_production_variants(cfg["ProductionVariants"])
    ep.data_capture_config = cfg.get("DataCaptureConfig")
    if fleet is not None:
        _deployed_images(ep, fleet)


def _deployed_images(ep: Any, fleet: "Fleet") -> None:
    """ProductionVariants[].DeployedImages of a served fleet (a digest made up from the reference)."""
    import hashlib

    now = _now()
    for pv in ep.production_variants:
        v = next((x for x in fleet.variants if x.name == pv["VariantName"] and x.served), None)
        if v is None:
            continue
        out = []
        for c in v.plan["containers"]:
            ref = c["image"]
            if not ref:
                continue
            if "@" in ref:
                resolved = ref
            else:
                head, _, last = ref.rpartition("/")
                repo = (head + "/" if head else "") + last.split(":", 1)[0]
                resolved = f"{repo}@sha256:{hashlib.sha256(ref.encode()).hexdigest()}"
            out.append({"SpecifiedImage": ref, "ResolvedImage": resolved, "ResolutionTime": now})
        pv["DeployedImages"] = out


def _update_worker(b: Any, ep: Any, gen: int, cfg_name: str, cfg: dict[str, Any], plan: list[dict[str, Any]],
                   steps: list[float], dc: dict[str, Any] | None, o: dict[str, Any]) -> None:
    name = ep.endpoint_name
    t0 = time.monotonic()
    policy = (dc or {}).get("BlueGreenUpdatePolicy") or {}
    routing = policy.get("TrafficRoutingConfiguration") or {}
    wait = float(routing.get("WaitIntervalInSeconds") or 0)
    term_wait = float(policy.get("TerminationWaitInSeconds") or 0)
    max_exec = policy.get("MaximumExecutionTimeoutInSeconds")
    deadline = t0 + float(max_exec) if max_exec else None
    alarms = [a.get("AlarmName") for a in ((dc or {}).get("AutoRollbackConfiguration") or {}).get("Alarms") or []
              if a.get("AlarmName")]

    def stale() -> bool:
        return getattr(ep, "_sim_gen", 0) != gen or b.endpoints.get(name) is not ep

    fleet = Fleet(name, cfg_name, plan, b.region_name, b.account_id)
    with _ctx.lock:
        if stale():
            return
        st = _serving(ep)
        st.green, st.stage = fleet, "Creating"
        st.set_share(0.0)
        _pending_status(ep, "Creating", "Launching the new fleet", fleet, 0.0)

    def rollback(reason: str) -> None:
        with _ctx.lock:
            if stale():
                fleet.stop()
                return
            st.set_share(0.0)
            st.green, st.stage = None, "RolledBack"
            ep.pending_deployment_summary = None
            ep.failure_reason = reason
            _set_status(ep, "InService")
        fleet.stop()

    try:
        fleet.start(_ping_timeout(o, plan), deadline, stale)
    except FleetError as e:
        return rollback(str(e)) if str(e) != "cancelled" else fleet.stop()
    except Exception as e:
        traceback.print_exc()
        return rollback(f"InternalFailure: simulator error: {e!r}")
    if not _wait_min(t0 + float(o.get("update_seconds", DEFAULT_UPDATE_SECONDS)), stale):
        return fleet.stop()

    def bake(seconds: float, message: str, share: float) -> str | None:
        """Watch alarms and the execution deadline for `seconds`; the rollback reason, or None."""
        end = time.monotonic() + seconds
        with _ctx.lock:
            _pending_status(ep, "Baking", message, fleet, share)
        while True:
            if stale():
                return "cancelled"
            fired = _alarm_firing(b.region_name, b.account_id, alarms)
            if fired:
                return (f"Endpoint update was rolled back because CloudWatch alarm {fired} (AutoRollbackConfiguration) "
                        "went into ALARM state during the deployment.")
            if deadline is not None and time.monotonic() > deadline:
                return (f"Endpoint update was rolled back because it did not finish within "
                        f"MaximumExecutionTimeoutInSeconds ({max_exec} seconds).")
            if time.monotonic() >= end:
                return None
            time.sleep(0.05)

    for i, share in enumerate(steps):
        with _ctx.lock:
            if stale():
                return fleet.stop()
            st.set_share(share)
            st.stage = f"Baking step {i + 1}/{len(steps)} ({share:.0%} of traffic on the new fleet)"
            _pending_status(ep, "ActivatingTraffic", f"Shifting {share:.0%} of traffic to the new fleet", fleet, share)
        reason = bake(wait, f"Baking for {wait:g} seconds with {share:.0%} of traffic on the new fleet "
                            f"(step {i + 1} of {len(steps)})", share)
        if reason == "cancelled":
            return fleet.stop()
        if reason:
            return rollback(reason)
    if term_wait > 0:
        with _ctx.lock:
            st.stage = "TerminationWait"
            _pending_status(ep, "Baking", f"Waiting TerminationWaitInSeconds ({term_wait:g} seconds) before "
                                          "terminating the old fleet", fleet, 1.0)
        if not _wait_min(time.monotonic() + term_wait, stale):
            return fleet.stop()
    with _ctx.lock:
        if stale():
            return fleet.stop()
        old = st.blue
        st.blue, st.green, st.stage = fleet, None, "InService"
        st.set_share(0.0)
        ep.pending_deployment_summary = None
        _switch_config(ep, cfg_name, cfg, fleet)
        _set_status(ep, "InService")
    if old is not None:
        old.stop()


def _delete_endpoint(self: Any) -> EmptyResult:
    b = self.sagemaker_backend
    name = self._get_param("EndpointName")
    with _ctx.lock:
        ep = _get(b, name)
        if ep.endpoint_status == "Deleting":
            return EmptyResult()
        _set_status(ep, "Deleting")
        ep.pending_deployment_summary = None
        gen = _bump(ep)
        st = getattr(ep, "_sim_serving", None)
        if st is not None:
            st.stop_all()
            st.stage = "Deleting"

        def gone() -> None:
            if getattr(ep, "_sim_gen", 0) == gen and b.endpoints.get(name) is ep:
                del b.endpoints[name]
                _live.pop(ep.arn, None)

        _after(getattr(ep, "_sim_delete_seconds", DEFAULT_DELETE_SECONDS), gone)
    return EmptyResult()


def _describe_endpoint(self: Any) -> ActionResult:
    b = self.sagemaker_backend
    with _ctx.lock:
        ep = _get(b, self._get_param("EndpointName"))
        resp = {k: v for k, v in ep.response_object.items() if not k.startswith("Sim")}
    return ActionResult(resp)


# --------------------------------------------------------------------------------------------
# data plane
# --------------------------------------------------------------------------------------------
def _runtime_error(status: int, code: str, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    # moto takes the HTTP status from the "status" header of a (status, headers, body) answer
    return status, {"status": str(status), "Content-Type": "application/json", "x-amzn-ErrorType": code}, json.dumps(body)


def _endpoint_log(backend: Any, name: str, variant: str, lines: list[str]) -> str:
    group, stream = LOG_GROUP + name, f"{variant}/i-{uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:17]}"
    try:
        w = _ctx.cwlogs.writer(group, stream, region=backend.region_name, account_id=backend.account_id)
        for line in lines:
            w.write(line)
        w.close()
    except Exception:
        pass
    return f"arn:aws:logs:{backend.region_name}:{backend.account_id}:log-group:{group}"


def _model_error(region: str, account: str, name: str, who: str, code: int, msg: str) -> tuple[int, dict[str, str], str]:
    log = f"arn:aws:logs:{region}:{account}:log-group:{LOG_GROUP}{name}"
    kind = "client" if 400 <= code < 500 else "server"
    return _runtime_error(424, "ModelError", {
        "message": f"Received {kind} error ({code}) from {who} with message \"{msg}\". See {log} in account "
                   f"{account} for more information.",
        "OriginalStatusCode": code, "OriginalMessage": msg, "LogStreamArn": log})


def _post_invocations(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=INVOKE_TIMEOUT)
    try:
        conn.request("POST", "/invocations", body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def _invoke_served(self: Any, name: str, variant: VariantFleet, inst: Instance | None, body: bytes) -> Any:
    region, account = self.region, self.current_account
    req_type = self.headers.get("Content-Type") or "application/json"
    accept = self.headers.get("Accept")
    attrs = self.headers.get("X-Amzn-SageMaker-Custom-Attributes")
    if inst is None:
        return _runtime_error(400, "ValidationError", {"message": f"Endpoint {name} has no instance serving variant {variant.name}."})
    chain = inst.containers
    if variant.mode == "Direct":
        target = self.headers.get("X-Amzn-SageMaker-Target-Container-Hostname")
        chain = [c for c in inst.containers if c.hostname == target]
        if not chain:
            return _runtime_error(400, "ValidationError", {
                "message": f"TargetContainerHostname {target!r} is not a container of endpoint {name} (InferenceExecutionConfig Mode Direct)."})
    out_type, out_attrs, data = req_type, None, body
    for i, c in enumerate(chain):
        if c.entry is None:
            continue  # no registered image: passes the body on
        h = {"Content-Type": out_type}
        if accept and i == len(chain) - 1:
            h["Accept"] = accept
        if attrs:
            h["X-Amzn-SageMaker-Custom-Attributes"] = attrs
        who = "primary" if len(inst.containers) == 1 else c.hostname
        try:
            status, rh, data = _post_invocations(c.port, data, h)
        except TimeoutError:
            return _model_error(region, account, name, who, 0,
                                f"Your invocation timed out while waiting for a response from container {who}.")
        except (OSError, http.client.HTTPException) as e:
            return _model_error(region, account, name, who, 0, f"Your invocation could not reach container {who}: {e}")
        if not 200 <= status < 300:
            return _model_error(region, account, name, who, status, data.decode("utf-8", errors="replace").strip())
        out_type = rh.get("content-type") or out_type
        out_attrs = rh.get("x-amzn-sagemaker-custom-attributes") or out_attrs
    headers = {"x-Amzn-Invoked-Production-Variant": variant.name, "Content-Type": out_type}
    if out_attrs:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = out_attrs
    return 200, headers, data


_orig_invoke = rtr.SageMakerRuntimeResponse.invoke_endpoint


def _invoke_endpoint(self: Any) -> Any:
    from urllib.parse import unquote

    from moto.sagemaker.models import sagemaker_backends

    name = unquote(self.path.split("/endpoints/", 1)[-1].split("/", 1)[0])
    b = sagemaker_backends[self.current_account][self.region]
    body = self.body if isinstance(self.body, bytes) else (self.body or "").encode()
    target_variant = self.headers.get("X-Amzn-SageMaker-Target-Variant")
    served = None
    with _ctx.lock:
        ep = b.endpoints.get(name)
        status = ep.endpoint_status if ep is not None else None
        variant = (ep.production_variants[0]["VariantName"] if ep is not None and ep.production_variants else "AllTraffic")
        config_name = ep.endpoint_config_name if ep is not None else ""
        st = getattr(ep, "_sim_serving", None) if ep is not None and status in SERVING else None
        fleet = st.pick_fleet() if st is not None else None
        if fleet is not None:
            v = fleet.pick_variant(target_variant)
            if v is None:
                return _runtime_error(400, "ValidationError", {
                    "message": f"Endpoint {name} does not have a production variant named {target_variant}."})
            if v.served:
                served = (v, v.pick_instance())
            else:
                variant, config_name = v.name, fleet.config_name
    if ep is None:
        return _runtime_error(400, "ValidationError", {"message": f"Endpoint {name} of account {self.current_account} not found."})
    if status not in SERVING:
        return _runtime_error(400, "ValidationError", {
            "message": f"Endpoint {name} of account {self.current_account} is not in service (status: {status})."})
    if served is not None:
        return _invoke_served(self, name, served[0], served[1], body)
    with _handlers_lock:
        handler = _handlers.get(name)
    req_type = self.headers.get("Content-Type") or "application/json"
    headers = {"x-Amzn-Invoked-Production-Variant": variant}
    if handler is None:
        if self.sagemakerruntime_backend.results_queue:
            return _orig_invoke(self)  # moto's static results API still works
        headers["Content-Type"] = req_type
        return 200, headers, body
    env = dict(os.environ)
    env.update({
        "SM_ENDPOINT_NAME": name, "SM_ENDPOINT_CONFIG_NAME": config_name, "SM_VARIANT_NAME": variant,
        "SM_CONTENT_TYPE": req_type, "SM_ACCEPT": self.headers.get("Accept") or "",
        "SM_CUSTOM_ATTRIBUTES": self.headers.get("X-Amzn-SageMaker-Custom-Attributes") or "",
        "AWS_ENDPOINT_URL": _ctx.endpoint_url, "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    })
    env.update(handler.get("env") or {})
    timeout = float(handler.get("timeout_seconds", 60))
    try:
        proc = subprocess.run(handler["argv"], input=body, capture_output=True, env=env, timeout=timeout,
                              cwd=handler.get("cwd") or "/")
    except subprocess.TimeoutExpired:
        log = _endpoint_log(b, name, variant, ["invocation timed out"])
        return _runtime_error(424, "ModelError", {
            "message": f"Received server error (0) from {variant} with message \"Your invocation timed out while "
                       f"waiting for a response from container {variant}.\". See {log} in account "
                       f"{self.current_account} for more information.",
            "OriginalStatusCode": 0, "OriginalMessage": "invocation timed out", "LogStreamArn": log})
    err = proc.stderr.decode("utf-8", errors="replace")
    if err:
        _endpoint_log(b, name, variant, err.splitlines())
    if proc.returncode != 0:
        code = int(handler.get("error_status", 500))
        msg = err.strip() or f"handler exited with status {proc.returncode}"
        return _model_error(self.region, self.current_account, name, "primary", code, msg)
    headers["Content-Type"] = handler.get("content_type") or "application/json"
    return 200, headers, proc.stdout


def _handlers_control(method: str, body: Any) -> tuple[int, Any]:
    """POST {"endpoint","argv",["content_type","env","timeout_seconds","error_status","cwd"]};
    DELETE {"endpoint"}; GET lists the registered handlers."""
    body = body or {}
    with _handlers_lock:
        if method == "POST":
            if not body.get("endpoint") or not isinstance(body.get("argv"), list) or not body["argv"]:
                return 400, {"error": "need endpoint and a non-empty argv list"}
            _handlers[body["endpoint"]] = dict(body)
        elif method == "DELETE":
            if body.get("endpoint"):
                _handlers.pop(body["endpoint"], None)
            else:
                _handlers.clear()
        return 200, {"handlers": {k: v["argv"] for k, v in _handlers.items()}}


def _endpoints_control(method: str, body: Any) -> tuple[int, Any]:
    """GET: the serving state of every endpoint that has (or had) processes."""
    if method != "GET":
        return 405, {"error": "use GET"}
    out = {}
    with _ctx.lock:
        for ep in list(_live.values()):
            st = ep._sim_serving
            out[ep.endpoint_name] = {
                "arn": ep.arn, "status": ep.endpoint_status, "stage": st.stage, "green_share": st.share,
                "blue": st.blue.describe() if st.blue else None, "green": st.green.describe() if st.green else None}
    return 200, {"endpoints": out}


def install(ctx: Any) -> None:
    global _ctx
    if _ctx is not None:  # already installed in this process
        _ctx = ctx
        return
    R = smr.SageMakerResponse
    _check_moto(((R, "create_endpoint"), (R, "describe_endpoint"), (R, "delete_endpoint"), (R, "create_model"),
                 (R, "create_endpoint_config"), (rtr.SageMakerRuntimeResponse, "invoke_endpoint"),
                 (smm.FakeEndpoint, "_process_production_variants"), (smm.SageMakerModelBackend, "describe_endpoint_config")),
                ((R, "update_endpoint"),), module=__name__)
    _ctx = ctx
    smr.SageMakerResponse.create_model = _create_model
    smr.SageMakerResponse.create_endpoint_config = _create_endpoint_config
    smr.SageMakerResponse.create_endpoint = _create_endpoint
    smr.SageMakerResponse.update_endpoint = _update_endpoint
    smr.SageMakerResponse.delete_endpoint = _delete_endpoint
    smr.SageMakerResponse.describe_endpoint = _describe_endpoint
    rtr.SageMakerRuntimeResponse.invoke_endpoint = _invoke_endpoint
    ctx.register_control("endpoint-handlers", _handlers_control)
    ctx.register_control("endpoints", _endpoints_control)
    if hasattr(ctx, "on_reset"):
        ctx.on_reset(_clear_handlers)


def _clear_handlers() -> None:
    with _handlers_lock:
        _handlers.clear()
