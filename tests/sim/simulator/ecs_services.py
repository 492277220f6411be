"""ECS service deployments that really move (moto's stay IN_PROGRESS with runningCount 0 forever).

CreateService / UpdateService (new taskDefinition or forceNewDeployment) start a rollout:

    t=0      new PRIMARY deployment (id ecs-svc/<digits>, rolloutState IN_PROGRESS,
             taskDefinition = the new one); the previous deployments become ACTIVE
    t=R/3    the new deployment runs desiredCount tasks  -> event "has started N tasks"
    t=2R/3   the old deployments are drained and removed -> event "has stopped N running tasks"
    t=R      rolloutState COMPLETED -> events "deployment completed", "has reached a steady state."

R is 3 s unless an outcome says otherwise. Scripted outcomes, kind "ecs_service", matched on the
service name (one is taken per deployment):

    {"rollout_seconds": N}    R = N
    {"rollback": true}        at R/2 the tasks "fail to start". With deploymentCircuitBreaker
                              enable+rollback: the deployment becomes ACTIVE, rolloutState FAILED,
                              rolloutStateReason "ECS deployment circuit breaker: tasks failed to start.",
                              and a new PRIMARY deployment with the previous task definition rolls
                              out (rolloutStateReason "ECS deployment circuit breaker: rolling back
                              to deploymentId <old>.") and completes; the service's taskDefinition
                              is the previous one again. Breaker enabled without rollback: FAILED,
                              nothing else. Breaker disabled: stays IN_PROGRESS, failedTasks grows.
    {"vanish": true}          at R/2 the deployment disappears without completing: it is superseded
                              by another deployment (new id, same task definition) that completes.

ListServiceDeployments / DescribeServiceDeployments / DescribeServiceRevisions are implemented from
the same history (status IN_PROGRESS -> SUCCESSFUL | ROLLBACK_IN_PROGRESS -> ROLLBACK_SUCCESSFUL |
ROLLBACK_FAILED | STOPPED). deploymentConfiguration is stored and echoed.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import threading
import time
import uuid
from typing import Any, Callable

from moto.core.responses import ActionResult
from moto.ecs import responses as ecsr
from moto.ecs.exceptions import ServiceNotFoundException

from . import events
from .common import _check_moto, _now

DEFAULT_ROLLOUT_SECONDS = 3.0
BREAKER_REASON = "ECS deployment circuit breaker: tasks failed to start."
DEFAULT_DEPLOYMENT_CONFIGURATION = {
    "deploymentCircuitBreaker": {"enable": False, "rollback": False},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}

_ctx: Any = None
_state: dict[int, "_ServiceState"] = {}  # id(moto Service) -> state
_history: dict[str, dict[str, Any]] = {}  # service deployment ARN -> ServiceDeployment dict
_revisions: dict[str, dict[str, Any]] = {}  # service revision ARN -> ServiceRevision dict


def _lock() -> Any:
    return _ctx.lock


def _short_id() -> str:
    return str(uuid.uuid4().int)[:19]


def _task_ids(n: int) -> str:
    return " ".join(f"(task {uuid.uuid4().hex})" for _ in range(n))


# --------------------------------------------------------------------------------------------
# a tiny timer wheel: one thread runs every scheduled action of every service
# --------------------------------------------------------------------------------------------
class _Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        threading.Thread(target=self._loop, name="ecs-service-rollouts", daemon=True).start()

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), fn))
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = None if not self._heap else self._heap[0][0] - time.monotonic()
                    self._cv.wait(timeout)
                _, _, fn = heapq.heappop(self._heap)
            try:
                with _lock():
                    fn()
            except Exception:  # never let one service break the others
                import traceback

                traceback.print_exc()


_sched: _Scheduler | None = None


# --------------------------------------------------------------------------------------------
# per-service state
# --------------------------------------------------------------------------------------------
class _ServiceState:
    def __init__(self, svc: Any):
        self.svc = svc
        self.generation = 0
        self.current_sd: str | None = None  # ARN of the ServiceDeployment in flight

    # deployments ---------------------------------------------------------------------------
    def new_deployment(self, task_definition: str, reason: str | None = None) -> dict[str, Any]:
        svc = self.svc
        did = f"ecs-svc/{_short_id()}"
        now = _now()
        d = {
            "id": did,
            "status": "PRIMARY",
            "taskDefinition": task_definition,
            "desiredCount": svc.desired_count,
            "pendingCount": svc.desired_count,
            "runningCount": 0,
            "failedTasks": 0,
            "createdAt": now,
            "updatedAt": now,
            "launchType": svc.launch_type,
            "platformVersion": svc.platform_version or ("LATEST" if svc.launch_type == "FARGATE" else None),
            "platformFamily": "Linux" if svc.launch_type == "FARGATE" else None,
            "networkConfiguration": svc.network_configuration or None,
            "capacityProviderStrategy": getattr(svc, "capacity_provider_strategy", None) or None,
            "rolloutState": "IN_PROGRESS",
            "rolloutStateReason": reason or f"ECS deployment {did} in progress.",
        }
        d = {k: v for k, v in d.items() if v is not None}
        for old in svc.deployments:
            if old["status"] == "PRIMARY":
                old["status"] = "ACTIVE"
                old["updatedAt"] = now
        svc.deployments.insert(0, d)
        svc.task_definition = task_definition
        self.recount()
        events.ecs_deployment_changed(svc.arn, did, "SERVICE_DEPLOYMENT_IN_PROGRESS", d["rolloutStateReason"])
        return d

    def recount(self) -> None:
        svc = self.svc
        svc.running_count = sum(d.get("runningCount", 0) for d in svc.deployments)
        svc.pending_count = sum(d.get("pendingCount", 0) for d in svc.deployments)

    def event(self, message: str) -> None:
        self.svc.events.insert(0, {"id": str(uuid.uuid4()), "createdAt": _now(), "message": f"(service {self.svc.name}) {message}"})
        del self.svc.events[100:]

    def breaker(self) -> dict[str, Any]:
        cfg = getattr(self.svc, "deployment_configuration", None) or {}
        return cfg.get("deploymentCircuitBreaker") or {}

    # rollouts -------------------------------------------------------------------------------
    def start(self, task_definition: str, outcome: dict[str, Any], source_revisions: list[dict[str, Any]]) -> dict[str, Any]:
        """Begin a new deployment of `task_definition`; returns the deployment dict."""
        self.generation += 1
        gen = self.generation
        if self.current_sd and _history.get(self.current_sd, {}).get("status") in ("PENDING", "IN_PROGRESS", "ROLLBACK_IN_PROGRESS"):
            sd = _history[self.current_sd]
            sd.update(status="STOPPED", statusReason="Superseded by a newer service deployment.", stoppedAt=_now(), updatedAt=_now())
        d = self.new_deployment(task_definition)
        sd_arn = self.record(d, source_revisions)
        self.current_sd = sd_arn
        r = float(outcome.get("rollout_seconds", DEFAULT_ROLLOUT_SECONDS))
        if outcome.get("rollback"):
            self.plan_failure(gen, d, r, sd_arn)
        elif outcome.get("vanish"):
            self.plan_vanish(gen, d, r, sd_arn)
        else:
            self.plan_success(gen, d, r, sd_arn)
        return d

    def _live(self, gen: int, d: dict[str, Any]) -> bool:
        return self.generation == gen and d in self.svc.deployments and self.svc.status == "ACTIVE"

    def plan_success(self, gen: int, d: dict[str, Any], r: float, sd_arn: str, rollback: bool = False) -> None:
        assert _sched is not None

        def started() -> None:
            if not self._live(gen, d):
                return
            n = d["desiredCount"]
            d.update(runningCount=n, pendingCount=0, updatedAt=_now())
            self.recount()
            if n:
                self.event(f"has started {n} tasks: {_task_ids(n)}.")

        def drained() -> None:
            if not self._live(gen, d):
                return
            olds = [o for o in self.svc.deployments if o is not d]
            stopped = sum(o.get("runningCount", 0) for o in olds)
            self.svc.deployments[:] = [d]
            self.recount()
            if stopped:
                self.event(f"has stopped {stopped} running tasks: {_task_ids(stopped)}.")

        def completed() -> None:
            if not self._live(gen, d):
                return
            d.update(rolloutState="COMPLETED", rolloutStateReason=f"ECS deployment {d['id']} completed.", updatedAt=_now())
            self.event(f"(deployment {d['id']}) deployment completed.")
            events.ecs_deployment_changed(self.svc.arn, d["id"], "SERVICE_DEPLOYMENT_COMPLETED", d["rolloutStateReason"])
            self.event("has reached a steady state.")
            sd = _history.get(sd_arn)
            if sd:
                now = _now()
                sd.update(status="ROLLBACK_SUCCESSFUL" if rollback else "SUCCESSFUL", finishedAt=now, updatedAt=now,
                          statusReason=sd.get("statusReason") if rollback else "Service deployment completed successfully.")
                if not rollback:
                    sd["targetServiceRevision"].update(runningTaskCount=d["runningCount"], pendingTaskCount=0)

        _sched.at(r / 3, started)
        _sched.at(2 * r / 3, drained)
        _sched.at(r, completed)

    def plan_failure(self, gen: int, d: dict[str, Any], r: float, sd_arn: str) -> None:
        assert _sched is not None
        previous = next((o for o in self.svc.deployments if o is not d and o["status"] == "ACTIVE"), None)

        def failed(round_: int = 1) -> None:
            if not self._live(gen, d):
                return
            n = max(1, d["desiredCount"])
            d.update(failedTasks=d.get("failedTasks", 0) + n, updatedAt=_now())
            self.event(f"has started {n} tasks: {_task_ids(n)}.")
            br = self.breaker()
            sd = _history.get(sd_arn)
            if not br.get("enable"):
                # no circuit breaker: ECS keeps trying forever
                self.event(f"(deployment {d['id']}) {n} tasks failed to start.")
                if round_ < 20:
                    _sched.at(r / 2, lambda: failed(round_ + 1))
                return
            if sd:
                sd["deploymentCircuitBreaker"].update(status="TRIGGERED", failureCount=d["failedTasks"])
            d.update(rolloutState="FAILED", rolloutStateReason=BREAKER_REASON)
            events.ecs_deployment_changed(self.svc.arn, d["id"], "SERVICE_DEPLOYMENT_FAILED", BREAKER_REASON)
            self.event(f"(deployment {d['id']}) deployment failed: tasks failed to start.")
            if not br.get("rollback") or previous is None:
                if sd:
                    now = _now()
                    sd.update(status="ROLLBACK_FAILED" if br.get("rollback") else "STOPPED", statusReason=BREAKER_REASON,
                              finishedAt=now, stoppedAt=now, updatedAt=now)
                return
            self.event(f"rolling back to deployment {previous['id']}.")
            rb = self.new_deployment(previous["taskDefinition"],
                                     reason=f"ECS deployment circuit breaker: rolling back to deploymentId {previous['id']}.")
            if sd:
                now = _now()
                sd.update(status="ROLLBACK_IN_PROGRESS", statusReason=BREAKER_REASON, updatedAt=now,
                          rollback={"reason": BREAKER_REASON, "startedAt": now,
                                    "serviceRevisionArn": (sd.get("sourceServiceRevisions") or [{}])[0].get("arn")})
            self.generation += 1
            self.plan_success(self.generation, rb, r, sd_arn, rollback=True)

        _sched.at(r / 2, failed)

    def plan_vanish(self, gen: int, d: dict[str, Any], r: float, sd_arn: str) -> None:
        assert _sched is not None

        def vanish() -> None:
            if not self._live(gen, d):
                return
            self.svc.deployments.remove(d)
            sd = _history.get(sd_arn)
            if sd:
                now = _now()
                sd.update(status="STOPPED", statusReason="Superseded by a newer service deployment.", stoppedAt=now, updatedAt=now)
            src = [self.revision_summary(o) for o in self.svc.deployments]
            self.generation += 1
            nd = self.new_deployment(d["taskDefinition"])
            arn = self.record(nd, src)
            self.current_sd = arn
            self.plan_success(self.generation, nd, r, arn)

        _sched.at(r / 2, vanish)

    # ListServiceDeployments history ----------------------------------------------------------
    def revision_summary(self, d: dict[str, Any]) -> dict[str, Any]:
        arn = d.get("_revisionArn")
        if not arn:
            arn = self.make_revision(d)
        return {"arn": arn, "requestedTaskCount": d.get("desiredCount", 0),
                "runningTaskCount": d.get("runningCount", 0), "pendingTaskCount": d.get("pendingCount", 0)}

    def make_revision(self, d: dict[str, Any]) -> str:
        svc = self.svc
        arn = f"arn:aws:ecs:{svc.region_name}:{svc._account_id}:service-revision/{svc.cluster_name}/{svc.name}/{_short_id()}"
        _revisions[arn] = {k: v for k, v in {
            "serviceRevisionArn": arn, "serviceArn": svc.arn, "clusterArn": svc.cluster_arn,
            "taskDefinition": d["taskDefinition"], "launchType": svc.launch_type,
            "platformVersion": d.get("platformVersion"), "platformFamily": d.get("platformFamily"),
            "networkConfiguration": d.get("networkConfiguration"), "createdAt": d["createdAt"],
        }.items() if v is not None}
        d["_revisionArn"] = arn
        return arn

    def record(self, d: dict[str, Any], source_revisions: list[dict[str, Any]]) -> str:
        svc = self.svc
        arn = f"arn:aws:ecs:{svc.region_name}:{svc._account_id}:service-deployment/{svc.cluster_name}/{svc.name}/{uuid.uuid4().hex[:22]}"
        rev = self.make_revision(d)
        cfg = getattr(svc, "deployment_configuration", None) or DEFAULT_DEPLOYMENT_CONFIGURATION
        now = _now()
        _history[arn] = {
            "serviceDeploymentArn": arn, "serviceArn": svc.arn, "clusterArn": svc.cluster_arn,
            "createdAt": now, "startedAt": now, "updatedAt": now,
            "sourceServiceRevisions": source_revisions,
            "targetServiceRevision": {"arn": rev, "requestedTaskCount": d["desiredCount"], "runningTaskCount": 0,
                                      "pendingTaskCount": d["desiredCount"]},
            "status": "IN_PROGRESS", "deploymentConfiguration": cfg,
            "deploymentCircuitBreaker": {"status": "MONITORING" if (cfg.get("deploymentCircuitBreaker") or {}).get("enable") else "DISABLED",
                                         "failureCount": 0, "threshold": max(3, min(200, (svc.desired_count or 1) // 2))},
            "_deploymentId": d["id"],
        }
        return arn


def _state_of(svc: Any) -> _ServiceState:
    st = _state.get(id(svc))
    if st is None or st.svc is not svc:
        st = _ServiceState(svc)
        _state[id(svc)] = st
    return st


# --------------------------------------------------------------------------------------------
# responses
# --------------------------------------------------------------------------------------------
_orig_create_service = ecsr.EC2ContainerServiceResponse.create_service
_orig_delete_service = ecsr.EC2ContainerServiceResponse.delete_service


def _public(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _create_service(self: Any) -> ActionResult:
    with _lock():
        res = _orig_create_service(self)
        svc = res.result["service"]  # type: ignore[index]
        cfg = self._get_param("deploymentConfiguration")
        svc.deployment_configuration = _merge_cfg(None, cfg)
        svc.created_at = _now()
        svc.capacity_provider_strategy = self._get_param("capacityProviderStrategy")
        if svc.launch_type == "FARGATE" or svc.capacity_provider_strategy:
            svc.platform_family = "Linux"
            svc.platform_version = svc.platform_version or "LATEST"
        if svc.deployment_controller.get("type", "ECS") == "ECS" and svc.task_definition:
            svc.deployments = []
            outcome = _ctx.outcomes.take("ecs_service", svc.name)
            _state_of(svc).start(svc.task_definition, outcome, [])
    return ActionResult({"service": _SerializableService(svc)})


def _merge_cfg(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    cfg = dict(old or DEFAULT_DEPLOYMENT_CONFIGURATION)
    for k, v in (new or {}).items():
        cfg[k] = v
    return cfg


def _update_service(self: Any) -> ActionResult:
    b = self.ecs_backend
    params = self._get_params()
    cluster_str = params.get("cluster", "default")
    name = (params.get("service") or "").split("/")[-1]
    with _lock():
        svc = b._get_service(cluster_str, name)
        if svc.status != "ACTIVE":
            raise ServiceNotFoundException()
        td_str = params.get("taskDefinition")
        new_td = b.describe_task_definition(td_str).arn if td_str else None
        saved = list(svc.deployments)
        old_td = svc.task_definition
        props = {ecsr.camelcase_to_underscores(k): v for k, v in params.items()
                 if k not in ("taskDefinition", "deploymentConfiguration")}
        props["force_new_deployment"] = False
        b.update_service(props)
        svc.deployments = saved
        svc.task_definition = old_td
        if "deploymentConfiguration" in params:
            svc.deployment_configuration = _merge_cfg(getattr(svc, "deployment_configuration", None),
                                                      params["deploymentConfiguration"])
        if params.get("capacityProviderStrategy") is not None:
            svc.capacity_provider_strategy = params["capacityProviderStrategy"]
        st = _state_of(svc)
        if (new_td and new_td != old_td) or params.get("forceNewDeployment"):
            src = [st.revision_summary(d) for d in svc.deployments]
            outcome = _ctx.outcomes.take("ecs_service", svc.name)
            st.start(new_td or old_td, outcome, src)
        elif params.get("desiredCount") is not None:
            for d in svc.deployments:
                if d["status"] == "PRIMARY":
                    d.update(desiredCount=svc.desired_count, runningCount=svc.desired_count
                             if d.get("rolloutState") == "COMPLETED" else d.get("runningCount", 0))
            st.recount()
    return ActionResult({"service": _SerializableService(svc)})


def _delete_service(self: Any) -> ActionResult:
    with _lock():
        res = _orig_delete_service(self)
        svc = self.ecs_backend._get_service(self._get_param("cluster", "default"), self._get_param("service"))
        st = _state_of(svc)
        st.generation += 1
        svc.running_count = 0
        for d in svc.deployments:
            d.update(runningCount=0, pendingCount=0, desiredCount=0)
    return ActionResult({"service": _SerializableService(svc)}) if svc else res


def _describe_services(self: Any) -> ActionResult:
    cluster_str = self._get_param("cluster", "default")
    names = self._get_param("services", [])
    with _lock():
        services, failures = self.ecs_backend.describe_services(cluster_str, names)
        views = [_SerializableService(s) for s in services]
    if "TAGS" in (self._get_param("include", []) or []):
        self._include_in_response(ecsr.DESCRIBE_SERVICES_TAGS)
    else:
        self._exclude_from_response(ecsr.DESCRIBE_SERVICES_TAGS)
    return ActionResult({"services": views, "failures": failures})


class _SerializableService:
    """A snapshot of a moto Service taken under the lock (deployments and events copied)."""

    def __init__(self, svc: Any):
        self._svc = svc
        self.deployments = [_public(d) for d in svc.deployments]
        self.events = [dict(e) for e in svc.events]
        self.deploymentConfiguration = getattr(svc, "deployment_configuration", None) or DEFAULT_DEPLOYMENT_CONFIGURATION
        self.runningCount = svc.running_count
        self.pendingCount = svc.pending_count
        self.taskDefinition = svc.task_definition
        self.serviceArn = svc.arn
        self.serviceName = svc.name
        self.createdAt = getattr(svc, "created_at", None)
        self.platformFamily = getattr(svc, "platform_family", None)
        self.capacityProviderStrategy = getattr(svc, "capacity_provider_strategy", None)
        self.networkConfiguration = svc.network_configuration or None

    def __getattr__(self, item: str) -> Any:
        return getattr(self._svc, item)


def _list_service_deployments(self: Any) -> ActionResult:
    b = self.ecs_backend
    cluster = b._get_cluster(self._get_param("cluster", "default"))
    svc_str = self._get_param("service")
    try:
        svc = b._get_service(cluster.name, svc_str.split("/")[-1])
    except ServiceNotFoundException:
        raise ServiceNotFoundException()
    statuses = self._get_param("status") or []
    created = self._get_param("createdAt") or {}
    with _lock():
        items = [sd for sd in _history.values() if sd["serviceArn"] == svc.arn and (not statuses or sd["status"] in statuses)]
    after, before = created.get("after"), created.get("before")

    def ts(v: Any) -> float:
        return v.timestamp() if isinstance(v, datetime.datetime) else float(v)

    if after is not None:
        items = [sd for sd in items if sd["createdAt"].timestamp() >= ts(after)]
    if before is not None:
        items = [sd for sd in items if sd["createdAt"].timestamp() <= ts(before)]
    items.sort(key=lambda sd: sd["createdAt"], reverse=True)
    briefs = [{k: sd.get(k) for k in ("serviceDeploymentArn", "serviceArn", "clusterArn", "startedAt", "createdAt",
                                      "finishedAt", "status", "statusReason")} for sd in items]
    for brief, sd in zip(briefs, items):
        brief["targetServiceRevisionArn"] = sd["targetServiceRevision"]["arn"]
    max_results = self._get_int_param("maxResults") or 20
    token = self._get_param("nextToken")
    start = int(token) if token and str(token).isdigit() else 0
    out: dict[str, Any] = {"serviceDeployments": [{k: v for k, v in x.items() if v is not None} for x in briefs[start:start + max_results]]}
    if start + max_results < len(briefs):
        out["nextToken"] = str(start + max_results)
    return ActionResult(out)


def _describe_service_deployments(self: Any) -> ActionResult:
    arns = self._get_param("serviceDeploymentArns") or []
    found, failures = [], []
    with _lock():
        for a in arns:
            sd = _history.get(a)
            if sd is None:
                failures.append({"arn": a, "reason": "MISSING"})
            else:
                found.append({k: v for k, v in sd.items() if not k.startswith("_") and v is not None})
    return ActionResult({"serviceDeployments": found, "failures": failures})


def _describe_service_revisions(self: Any) -> ActionResult:
    arns = self._get_param("serviceRevisionArns") or []
    found = [dict(_revisions[a]) for a in arns if a in _revisions]
    failures = [{"arn": a, "reason": "MISSING"} for a in arns if a not in _revisions]
    return ActionResult({"serviceRevisions": found, "failures": failures})


def install(ctx: Any) -> None:
    global _ctx, _sched
    if _ctx is not None:  # already installed in this process
        _ctx = ctx
        return
    R = ecsr.EC2ContainerServiceResponse
    _check_moto(((R, "create_service"), (R, "update_service"), (R, "delete_service"), (R, "describe_services")),
                ((R, "list_service_deployments"), (R, "describe_service_deployments")), module=__name__)
    _ctx = ctx
    if _sched is None:
        _sched = _Scheduler()
    R.create_service = _create_service
    R.update_service = _update_service
    R.delete_service = _delete_service
    R.describe_services = _describe_services
    R.list_service_deployments = _list_service_deployments
    R.describe_service_deployments = _describe_service_deployments
    R.describe_service_revisions = _describe_service_revisions
