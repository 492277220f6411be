"""SageMaker endpoints with a lifecycle, UpdateEndpoint, and InvokeEndpoint through local handlers.

moto's endpoints are InService at once, duplicate models/endpoint configs are silently replaced, UpdateEndpoint is missing and InvokeEndpoint answers for
endpoints that do not exist. Here:

    CreateEndpoint   Creating -> InService (after create_seconds, default 2) | Failed (FailureReason)
    UpdateEndpoint   needs InService (else ValidationException); Updating (PendingDeploymentSummary
                     shows the new config) -> InService with the new EndpointConfigName and variants,
                     LastDeploymentConfig = the request's DeploymentConfig; or, scripted, a rollback:
                     InService on the OLD config with FailureReason set, or UpdateRollbackFailed
    CreateModel / CreateEndpointConfig with an existing name: ValidationException, as AWS
    DeleteEndpoint   Deleting -> gone (DescribeEndpoint: ValidationException "Could not find endpoint")
    InvokeEndpoint   ValidationError unless the endpoint exists and serves traffic (InService, or
                     Updating/SystemUpdating, which keep serving the old variants as AWS does).
                     With a handler registered (POST /_sim/endpoint-handlers) argv runs per request
                     with the body on stdin; stdout is the answer; a non-zero exit is a ModelError
                     (424, OriginalStatusCode, OriginalMessage = stderr). Without one the body is
                     echoed back. stderr lines also go to /aws/sagemaker/Endpoints/<name>.

Scripted outcomes, kind "endpoint", matched on the endpoint name (CreateEndpoint and UpdateEndpoint
each take one):
    {"create_seconds": N}  {"fail": "<FailureReason>"}                   for CreateEndpoint
    {"update_seconds": N}  {"rollback": "<FailureReason>"}  {"rollback_failed": "<FailureReason>"}
                                                                         for UpdateEndpoint
    {"delete_seconds": N}                                                 taken by UpdateEndpoint/Create too
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import threading
import uuid
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.sagemaker import models as smm
from moto.sagemaker import responses as smr
from moto.sagemaker.exceptions import ValidationError
from moto.sagemakerruntime import responses as rtr

DEFAULT_CREATE_SECONDS = 2.0
DEFAULT_UPDATE_SECONDS = 2.0
DEFAULT_DELETE_SECONDS = 1.0
SERVING = ("InService", "Updating", "SystemUpdating", "UpdateRollbackFailed")

_ctx: Any = None
_handlers: dict[str, dict[str, Any]] = {}
_handlers_lock = threading.Lock()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _after(seconds: float, fn: Any) -> None:
    def run() -> None:
        try:
            with _ctx.lock:
                fn()
        except Exception:
            import traceback

            traceback.print_exc()

    t = threading.Timer(max(0.0, seconds), run)
    t.daemon = True
    t.start()


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


# --------------------------------------------------------------------------------------------
# control plane
# --------------------------------------------------------------------------------------------
def _create_endpoint(self: Any) -> ActionResult:
    b = self.sagemaker_backend
    name = self._get_param("EndpointName")
    with _ctx.lock:
        if name in b.endpoints:
            raise ValidationError(message=f"Cannot create already existing endpoint \"{_endpoint_arn(b, name)}\".")
        ep = b.create_endpoint(endpoint_name=name, endpoint_config_name=self._get_param("EndpointConfigName"),
                               tags=self._get_param("Tags"))
        o = _ctx.outcomes.take("endpoint", name)
        ep._sim_delete_seconds = float(o.get("delete_seconds", DEFAULT_DELETE_SECONDS))
        _set_status(ep, "Creating")
        gen = _bump(ep)

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


_orig_create_model = smr.SageMakerResponse.create_model
_orig_create_endpoint_config = smr.SageMakerResponse.create_endpoint_config


def _create_model(self: Any) -> Any:
    b = self.sagemaker_backend
    name = self._get_param("ModelName")
    with _ctx.lock:
        if name in b._models:
            arn = f"arn:aws:sagemaker:{b.region_name}:{b.account_id}:model/{name.lower()}"
            raise ValidationError(message=f"Cannot create already existing model \"{arn}\".")
        return _orig_create_model(self)


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


def _update_endpoint(self: Any) -> ActionResult:
    b = self.sagemaker_backend
    name = self._get_param("EndpointName")
    cfg_name = self._get_param("EndpointConfigName")
    with _ctx.lock:
        ep = _get(b, name)
        if ep.endpoint_status != "InService":
            raise ValidationError(message=f"Cannot update in-progress endpoint \"{ep.arn}\".")
        cfg = b.describe_endpoint_config(cfg_name)  # ValidationException when missing
        o = _ctx.outcomes.take("endpoint", name)
        deployment_config = self._get_param("DeploymentConfig")
        if deployment_config is None and self._get_param("RetainDeploymentConfig"):
            deployment_config = getattr(ep, "last_deployment_config", None)
        ep.last_deployment_config = deployment_config
        ep.failure_reason = None
        ep.pending_deployment_summary = {"EndpointConfigName": cfg_name, "StartTime": _now(),
                                         "ProductionVariants": _variant_summaries(ep, cfg)}
        if "delete_seconds" in o:
            ep._sim_delete_seconds = float(o["delete_seconds"])
        _set_status(ep, "Updating")
        gen = _bump(ep)

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
                ep.endpoint_config_name = cfg_name
                ep.production_variants = ep._process_production_variants(cfg["ProductionVariants"])
                ep.data_capture_config = cfg.get("DataCaptureConfig")
                _set_status(ep, "InService")

        _after(float(o.get("update_seconds", DEFAULT_UPDATE_SECONDS)), done)
    return ActionResult({"EndpointArn": ep.arn})


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

        def gone() -> None:
            if getattr(ep, "_sim_gen", 0) == gen and b.endpoints.get(name) is ep:
                del b.endpoints[name]

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
    group, stream = f"/aws/sagemaker/Endpoints/{name}", f"{variant}/i-{uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:17]}"
    try:
        w = _ctx.cwlogs.writer(group, stream, region=backend.region_name, account_id=backend.account_id)
        for line in lines:
            w.write(line)
        w.close()
    except Exception:
        pass
    return f"arn:aws:logs:{backend.region_name}:{backend.account_id}:log-group:{group}"


_orig_invoke = rtr.SageMakerRuntimeResponse.invoke_endpoint


def _invoke_endpoint(self: Any) -> Any:
    from moto.sagemaker.models import sagemaker_backends

    name = self.path.split("/endpoints/", 1)[-1].split("/", 1)[0]
    from urllib.parse import unquote

    name = unquote(name)
    b = sagemaker_backends[self.current_account][self.region]
    with _ctx.lock:
        ep = b.endpoints.get(name)
        status = ep.endpoint_status if ep is not None else None
        variant = (ep.production_variants[0]["VariantName"] if ep is not None and ep.production_variants else "AllTraffic")
        config_name = ep.endpoint_config_name if ep is not None else ""
    if ep is None:
        return _runtime_error(400, "ValidationError", {"message": f"Endpoint {name} of account {self.current_account} not found."})
    if status not in SERVING:
        return _runtime_error(400, "ValidationError", {
            "message": f"Endpoint {name} of account {self.current_account} is not in service (status: {status})."})
    with _handlers_lock:
        handler = _handlers.get(name)
    body = self.body if isinstance(self.body, bytes) else (self.body or "").encode()
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
        log = f"arn:aws:logs:{self.region}:{self.current_account}:log-group:/aws/sagemaker/Endpoints/{name}"
        kind = "client" if 400 <= code < 500 else "server"
        return _runtime_error(424, "ModelError", {
            "message": f"Received {kind} error ({code}) from primary with message \"{msg}\". See {log} in account "
                       f"{self.current_account} for more information.",
            "OriginalStatusCode": code, "OriginalMessage": msg, "LogStreamArn": log})
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


def _check_moto(present: tuple, absent: tuple = ()) -> None:
    """Fail loudly if moto moved: the patch points this module relies on (pinned to moto 5.2.5)."""
    for owner, attr in present:
        if not hasattr(owner, attr):
            raise RuntimeError(f"moto changed: {owner.__name__}.{attr} is gone (the simulator is pinned to moto 5.2.5)")
    for owner, attr in absent:
        if attr in vars(owner):
            raise RuntimeError(f"moto changed: it now has {owner.__name__}.{attr}; review {__name__}")


def install(ctx: Any) -> None:
    global _ctx
    if _ctx is not None:  # already installed in this process
        _ctx = ctx
        return
    R = smr.SageMakerResponse
    _check_moto(((R, "create_endpoint"), (R, "describe_endpoint"), (R, "delete_endpoint"), (R, "create_model"),
                 (R, "create_endpoint_config"), (rtr.SageMakerRuntimeResponse, "invoke_endpoint"),
                 (smm.FakeEndpoint, "_process_production_variants")),
                ((R, "update_endpoint"),))
    _ctx = ctx
    smr.SageMakerResponse.create_model = _create_model
    smr.SageMakerResponse.create_endpoint_config = _create_endpoint_config
    smr.SageMakerResponse.create_endpoint = _create_endpoint
    smr.SageMakerResponse.update_endpoint = _update_endpoint
    smr.SageMakerResponse.delete_endpoint = _delete_endpoint
    smr.SageMakerResponse.describe_endpoint = _describe_endpoint
    rtr.SageMakerRuntimeResponse.invoke_endpoint = _invoke_endpoint
    ctx.register_control("endpoint-handlers", _handlers_control)
    if hasattr(ctx, "on_reset"):
        ctx.on_reset(_clear_handlers)


def _clear_handlers() -> None:
    with _handlers_lock:
        _handlers.clear()
