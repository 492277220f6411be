"""State-change events on EventBridge's default bus, delivered to SQS through moto's rules.

AWS services put these on the default bus of the resource's account and region, where rules
(`events put-rule --event-pattern ...` + `put-targets` with an SQS queue ARN) deliver each
matching event to the queue: the message body is the event JSON
  {"version": "0", "id", "detail-type", "source", "account", "time": "YYYY-MM-DDTHH:MM:SSZ",
   "region", "resources": [ARN], "detail": {...}}
The simulator's lifecycles call one hook per transition (training.py, endpoints.py,
ecs_tasks.py, ecs_services.py):
  "SageMaker Training Job State Change"  aws.sagemaker  detail = DescribeTrainingJob (times as
                                         epoch milliseconds, Tags {}); on every status or
                                         secondary-status change
  "SageMaker Endpoint State Change"      aws.sagemaker  detail EndpointName, EndpointArn,
                                         EndpointConfigName, ProductionVariants, EndpointStatus
                                         in AWS's event spelling (IN_SERVICE, CREATING, UPDATING,
                                         FAILED, DELETING, ...; DescribeEndpoint says InService),
                                         FailureReason, CreationTime/LastModifiedTime (ms), Tags {}
  "ECS Task State Change"                aws.ecs  detail = the DescribeTasks task (taskArn,
                                         lastStatus, desiredStatus, clusterArn, group, stopCode,
                                         stoppedReason, containers[] with exitCode/reason, ...,
                                         ISO times, updatedAt, version); on every lastStatus or
                                         desiredStatus change
  "ECS Deployment State Change"          aws.ecs  detail eventType INFO|ERROR, eventName
                                         SERVICE_DEPLOYMENT_IN_PROGRESS|_COMPLETED|_FAILED,
                                         deploymentId, updatedAt, reason; resources [service ARN]
Delivery is asynchronous (a dispatcher thread, normally within milliseconds). moto's rule
matching (EventPattern) is used as is; what it lacks is patched here for events from any source
(PutEvents too): a DISABLED rule or a schedule-only rule delivers nothing, moto's extra
"ingestion-time" key is dropped, and, as on AWS, an SQS target receives only when the queue's
policy allows `sqs:SendMessage` to `events.amazonaws.com` (or `*`), its conditions on
`aws:SourceArn` (the rule ARN) / `aws:SourceAccount` holding (other condition keys make the
statement not apply). A refused delivery is recorded in the event log, as AWS only counts it in
the rule's FailedInvocations metric.

Control:
  GET /_sim/events[?match=SUBSTR]   {"events": [{"id", "detail-type", "resources", "time",
                                    "detail", "deliveries": [{"rule", "target", "t"}],
                                    "failures": [...], "fault"}]} (newest last); DELETE clears
  POST /_sim/event-faults {"rules": [rule, ...]}; GET lists; DELETE drops them and releases
  stalled events. A rule applies to the next `count` events (default 1; -1 = every) whose
  detail-type contains `match` and whose resources + detail JSON contain `resource`, after
  `skip`:
    {"kind": "duplicate", "copies": 2}     delivered `copies` times (same id), as EventBridge's
                                           at-least-once delivery may
    {"kind": "delay", "delay_ms": 3000}    delivered that much later (later events overtake it)
    {"kind": "reorder"}                    held until the next event has been delivered, then
                                           delivered (at most `hold_ms`, default 10000, later)
    {"kind": "stall"}                      deliveries stop: every event (count is ignored) is held
                                           while the rule exists; DELETE /_sim/event-faults
                                           delivers them late, in order, as EventBridge's retries
                                           would once the target recovers
POST /_sim/reset drops the rules, the held events and the log.
"""
from __future__ import annotations

import copy
import datetime
import fnmatch
import heapq
import itertools
import json
import threading
import time
import uuid

from moto.events import models as evm

from .common import _check_moto

MAX_LOG = 2000  # events kept for GET /_sim/events (a training job's detail is a few KiB)
FAULT_KINDS = ("duplicate", "delay", "reorder", "stall")

CTX = None
_lock = threading.Condition()
_log: list[dict] = []
_rules: list[dict] = []
_queue: list = []  # heap of (due monotonic, seq, entry)
_stalled: list[dict] = []
_waiting_next: list[dict] = []  # reorder: entries delivered right after the next delivery
_seq = itertools.count()
_dispatcher: threading.Thread | None = None
_orig: dict = {}


# ---------------------------------------------------------------------------------------------
# value conversion
# ---------------------------------------------------------------------------------------------
def _utc(v: datetime.datetime) -> datetime.datetime:
    if v.tzinfo is None:
        return v.replace(tzinfo=datetime.timezone.utc)
    return v.astimezone(datetime.timezone.utc)


def _ms(v):
    """SageMaker event detail: datetimes as epoch milliseconds."""
    if isinstance(v, datetime.datetime):
        return int(_utc(v).timestamp() * 1000)
    if isinstance(v, dict):
        return {k: _ms(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_ms(x) for x in v]
    return v


def _iso(v):
    """ECS event detail: datetimes as ISO 8601 with milliseconds."""
    if isinstance(v, datetime.datetime):
        return _utc(v).strftime("%Y-%m-%dT%H:%M:%S.") + f"{_utc(v).microsecond // 1000:03d}Z"
    if isinstance(v, dict):
        return {k: _iso(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_iso(x) for x in v]
    return v


def _tags(items) -> dict:
    out = {}
    for t in items or []:
        if isinstance(t, dict) and "Key" in t:
            out[t["Key"]] = t.get("Value", "")
    return out


def _arn_region_account(arn: str) -> tuple[str, str]:
    parts = arn.split(":")
    return parts[3], parts[4]


# ---------------------------------------------------------------------------------------------
# hooks called by the lifecycle modules (no-ops until install)
# ---------------------------------------------------------------------------------------------
def training_job_changed(job) -> None:
    if CTX is None:
        return
    try:
        detail = _ms(copy.deepcopy(job.response_object))
        detail["Tags"] = _tags(getattr(job, "tags", None))
    except Exception as e:  # noqa: BLE001 - an event must never break the lifecycle
        CTX.log(f"events: training job event not built: {e!r}")
        return
    region, account = _arn_region_account(job.arn)
    emit("SageMaker Training Job State Change", "aws.sagemaker", detail, [job.arn], region, account)


ENDPOINT_STATUS = {"OutOfService": "OUT_OF_SERVICE", "Creating": "CREATING",
                   "Updating": "UPDATING", "SystemUpdating": "SYSTEM_UPDATING",
                   "RollingBack": "ROLLING_BACK", "InService": "IN_SERVICE",
                   "Deleting": "DELETING", "Failed": "FAILED",
                   "UpdateRollbackFailed": "UPDATE_ROLLBACK_FAILED"}


def endpoint_changed(ep) -> None:
    if CTX is None:
        return
    try:
        status = ep.endpoint_status
        detail = {"EndpointName": ep.endpoint_name, "EndpointArn": ep.arn,
                  "EndpointConfigName": ep.endpoint_config_name,
                  "ProductionVariants": _ms(copy.deepcopy(ep.production_variants or [])),
                  "EndpointStatus": ENDPOINT_STATUS.get(status, status),
                  "CreationTime": _ms(ep.creation_time),
                  "LastModifiedTime": _ms(ep.last_modified_time),
                  "Tags": _tags(getattr(ep, "tags", None))}
        if status == "Failed" or getattr(ep, "failure_reason", None):
            detail["FailureReason"] = ep.failure_reason
    except Exception as e:  # noqa: BLE001
        CTX.log(f"events: endpoint event not built: {e!r}")
        return
    region, account = _arn_region_account(ep.arn)
    emit("SageMaker Endpoint State Change", "aws.sagemaker", detail, [ep.arn], region, account)


_TASK_MEMBERS: list[str] = []


def ecs_task_changed(task) -> None:
    if CTX is None:
        return
    try:
        from moto.core.utils import camelcase_to_underscores
        detail = {}
        for member in _TASK_MEMBERS:
            if member == "tags":
                continue  # not part of the event
            v = getattr(task, camelcase_to_underscores(member), None)
            if v is None or v == "" and member in ("stoppedReason", "startedBy"):
                continue
            detail[member] = copy.deepcopy(v)
        detail["lastStatus"] = task.status
        detail["updatedAt"] = datetime.datetime.now(datetime.timezone.utc)
        detail = _iso(detail)
    except Exception as e:  # noqa: BLE001
        CTX.log(f"events: ECS task event not built: {e!r}")
        return
    region, account = _arn_region_account(task.task_arn)
    emit("ECS Task State Change", "aws.ecs", detail, [task.task_arn], region, account)


def ecs_deployment_changed(service_arn: str, deployment_id: str, event_name: str,
                           reason: str) -> None:
    """event_name: SERVICE_DEPLOYMENT_IN_PROGRESS | _COMPLETED | _FAILED."""
    if CTX is None:
        return
    detail = {"eventType": "ERROR" if event_name.endswith("FAILED") else "INFO",
              "eventName": event_name, "deploymentId": deployment_id,
              "updatedAt": _iso(datetime.datetime.now(datetime.timezone.utc)), "reason": reason}
    region, account = _arn_region_account(service_arn)
    emit("ECS Deployment State Change", "aws.ecs", detail, [service_arn], region, account)


# ---------------------------------------------------------------------------------------------
# emission, faults and the dispatcher
# ---------------------------------------------------------------------------------------------
def emit(detail_type: str, source: str, detail: dict, resources: list[str], region: str,
         account: str) -> dict:
    event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type,
             "source": source, "account": account,
             "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "region": region, "resources": list(resources), "detail": detail}
    entry = {"event": event, "deliveries": [], "failures": [], "fault": None}
    text = json.dumps(resources) + json.dumps(detail, default=str)
    with _lock:
        _log.append(entry)
        del _log[:-MAX_LOG]
        rule = _take_rule(detail_type, text)
        now = time.monotonic()
        if rule is None:
            _schedule(now, entry)
        else:
            entry["fault"] = rule["kind"]
            if rule["kind"] == "stall":
                _stalled.append(entry)
            elif rule["kind"] == "delay":
                _schedule(now + rule["delay_ms"] / 1000.0, entry)
            elif rule["kind"] == "duplicate":
                for _ in range(rule["copies"]):
                    _schedule(now, entry)
            else:  # reorder
                entry["_hold_seq"] = next(_seq)
                _waiting_next.append(entry)
                _schedule(now + rule["hold_ms"] / 1000.0, entry, late=True)
        _lock.notify_all()
    return event


def _schedule(due: float, entry: dict, late: bool = False) -> None:
    heapq.heappush(_queue, (due, next(_seq), entry, late))


def _take_rule(detail_type: str, text: str) -> dict | None:
    for r in _rules:
        if r["match"] not in detail_type or r["resource"] not in text:
            continue
        if r["kind"] == "stall":
            r["hits"] += 1
            return dict(r)
        if r["skip"] > 0:
            r["skip"] -= 1
            continue
        if r["count"] == 0:
            continue
        if r["count"] > 0:
            r["count"] -= 1
        r["hits"] += 1
        hit = dict(r)
        _rules[:] = [x for x in _rules if x["count"] != 0]
        return hit
    return None


def _dispatch_loop() -> None:
    while True:
        with _lock:
            while not _queue or _queue[0][0] > time.monotonic():
                _lock.wait(None if not _queue else max(0.0, _queue[0][0] - time.monotonic()))
            _due, seq, entry, late = heapq.heappop(_queue)
            if late:
                if entry not in _waiting_next:
                    continue  # already delivered after a later event
                _waiting_next.remove(entry)
                after = []
            else:
                # reorder: what was held for "the next event" goes right after this one
                after = [e for e in _waiting_next if e["_hold_seq"] < seq]
                for e in after:
                    _waiting_next.remove(e)
        for e in [entry] + after:
            try:
                _deliver(e)
            except Exception as exc:  # noqa: BLE001 - keep the dispatcher alive
                e["failures"].append({"error": repr(exc), "t": time.time()})


def _deliver(entry: dict) -> None:
    event = entry["event"]
    backend = evm.events_backends[event["account"]][event["region"]]
    bus = backend.event_buses.get("default")
    if bus is None:
        return
    for rule in list(bus.rules.values()):
        delivered = rule.send_to_targets(copy.deepcopy(event))
        for target, ok, why in delivered or []:
            rec = {"rule": rule.name, "target": target, "t": time.time()}
            if ok:
                entry["deliveries"].append(rec)
            else:
                entry["failures"].append(dict(rec, error=why))


# ---------------------------------------------------------------------------------------------
# moto patch: what rule delivery lacks
# ---------------------------------------------------------------------------------------------
def _principal_is_events(principal) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        for key in ("Service", "AWS"):
            vals = principal.get(key)
            vals = vals if isinstance(vals, list) else [vals]
            if "events.amazonaws.com" in vals or (key == "AWS" and "*" in vals):
                return True
    return False


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def _conditions_hold(cond: dict, context: dict) -> bool:
    for op, block in (cond or {}).items():
        if not isinstance(block, dict):
            return False
        for key, wanted in block.items():
            have = context.get(key.lower())
            if have is None:
                return False  # a condition key the simulator does not know: not applicable
            wanted = [str(w) for w in _as_list(wanted)]
            if op in ("ArnEquals", "StringEquals"):
                ok = have in wanted
            elif op in ("ArnLike", "StringLike"):
                ok = any(fnmatch.fnmatchcase(have, w) for w in wanted)
            else:
                return False
            if not ok:
                return False
    return True


def _queue_allows(queue, queue_arn: str, rule_arn: str, rule_account: str) -> str | None:
    """None if the queue policy lets EventBridge send this rule's events, else why not."""
    if not queue.policy:
        return "the queue has no policy allowing events.amazonaws.com to sqs:SendMessage"
    try:
        doc = json.loads(queue.policy)
    except ValueError:
        return "the queue policy is not JSON"
    context = {"aws:sourcearn": rule_arn, "aws:sourceaccount": rule_account}
    allowed = False
    for st in _as_list(doc.get("Statement", [])):
        if not isinstance(st, dict) or not _principal_is_events(st.get("Principal")):
            continue
        actions = [a.lower() for a in _as_list(st.get("Action", []))]
        if not any(fnmatch.fnmatchcase("sqs:sendmessage", a) or a == "*" for a in actions):
            continue
        resources = _as_list(st.get("Resource", "*"))
        if not any(fnmatch.fnmatchcase(queue_arn, r) for r in resources):
            continue
        if not _conditions_hold(st.get("Condition"), context):
            continue
        if st.get("Effect") == "Deny":
            return "an explicit Deny in the queue policy"
        if st.get("Effect") == "Allow":
            allowed = True
    return None if allowed else ("the queue policy allows no sqs:SendMessage by "
                                 "events.amazonaws.com for this rule")


def _send_to_targets(self, original_event, transform_input: bool = True):
    """moto's Rule.send_to_targets, fixed: see the module docstring. Returns [(target ARN,
    delivered, why not)] for the event log."""
    if self.state != "ENABLED":
        return []
    if not self.event_pattern.get_pattern() and getattr(self, "scheduled_expression", None):
        return []  # a schedule rule matches no events (moto's empty pattern matches all)
    original_event = dict(original_event)
    original_event.pop("ingestion-time", None)
    if not self.event_pattern.matches_event(original_event):
        return []
    if isinstance(original_event.get("time"), (int, float)):
        original_event["time"] = datetime.datetime.fromtimestamp(
            original_event["time"], datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    results = []
    others = []
    for target in self.targets:
        arn = target["Arn"]
        if ":sqs:" not in arn:
            others.append(target)
            continue
        try:
            _, _, _, q_region, q_account, q_name = arn.split(":", 5)
            from moto.sqs.models import sqs_backends
            sqs = sqs_backends[q_account][q_region]
            queue = sqs.get_queue(q_name)
            why = _queue_allows(queue, arn, self.arn, self.account_id)
            if why is not None:
                results.append((arn, False, why))
                continue
            tr = target.get("InputTransformer")
            if transform_input and tr:
                # moto's template parser wants its "ingestion-time" key
                event = evm.EventTemplateParser.parse(
                    input_template=tr.get("InputTemplate"),
                    input_paths_map=tr.get("InputPathsMap", {}),
                    event=dict(original_event, **{"ingestion-time": original_event["time"]}))
            else:
                event = dict(original_event)  # no transformer: the event itself, as on AWS
            group_id = target.get("SqsParameters", {}).get("MessageGroupId")
            body = event if isinstance(event, str) else json.dumps(event)
            kwargs = {}
            if q_name.endswith(".fifo"):
                kwargs["deduplication_id"] = original_event.get("id")
            sqs.send_message(queue_name=q_name, message_body=body, group_id=group_id, **kwargs)
            results.append((arn, True, None))
        except Exception as e:  # noqa: BLE001 - a missing queue is a failed invocation on AWS
            results.append((arn, False, repr(e)))
    if others:
        clone = copy.copy(self)
        clone.targets = others
        # moto's own loop for the other target kinds; its time handling wants a number
        ev = dict(original_event)
        ev.pop("time", None)
        _orig["send_to_targets"](clone, ev, transform_input)
        results.extend((t["Arn"], True, None) for t in others)
    return results


# ---------------------------------------------------------------------------------------------
# control API
# ---------------------------------------------------------------------------------------------
def _normalise_rule(rule: dict) -> dict:
    if not isinstance(rule, dict):
        raise ValueError(f"an event fault rule must be an object, got {rule!r}")
    unknown = set(rule) - {"match", "resource", "kind", "count", "skip", "copies", "delay_ms",
                           "hold_ms"}
    if unknown:
        raise ValueError(f"unknown event fault rule keys: {sorted(unknown)}")
    if rule.get("kind") not in FAULT_KINDS:
        raise ValueError(f"event fault kind must be one of {FAULT_KINDS}, got "
                         f"{rule.get('kind')!r}")
    r = {"match": str(rule.get("match", "")), "resource": str(rule.get("resource", "")),
         "kind": rule["kind"], "count": int(rule.get("count", 1)),
         "skip": int(rule.get("skip", 0)), "copies": int(rule.get("copies", 2)),
         "delay_ms": float(rule.get("delay_ms", 3000)),
         "hold_ms": float(rule.get("hold_ms", 10000)), "hits": 0}
    if r["copies"] < 2:
        raise ValueError("copies must be at least 2")
    return r


def _public(entry: dict) -> dict:
    ev = entry["event"]
    return {"id": ev["id"], "detail-type": ev["detail-type"], "source": ev["source"],
            "time": ev["time"], "resources": ev["resources"], "detail": ev["detail"],
            "deliveries": list(entry["deliveries"]), "failures": list(entry["failures"]),
            "fault": entry["fault"]}


def _events_control(method, body):
    with _lock:
        if method == "DELETE":
            _log.clear()
        items = list(_log)
    match = body.get("match") if isinstance(body, dict) else None
    out = [_public(e) for e in items]
    if match:
        out = [e for e in out if match in e["detail-type"] or
               match in json.dumps(e["resources"]) or match in json.dumps(e["detail"])]
    return 200, {"events": out}


def _release_stalled() -> None:
    now = time.monotonic()
    for e in _stalled:
        _schedule(now, e)
    _stalled.clear()
    _lock.notify_all()


def _faults_control(method, body):
    with _lock:
        if method == "POST":
            rules = body.get("rules", []) if isinstance(body, dict) else body
            if not isinstance(rules, list):
                raise ValueError('event faults body must be {"rules": [...]}')
            _rules.extend(_normalise_rule(r) for r in rules)
        elif method == "DELETE":
            _rules.clear()
            _release_stalled()
        return 200, {"rules": [dict(r) for r in _rules], "stalled": len(_stalled)}


def _reset() -> None:
    with _lock:
        _rules.clear()
        _stalled.clear()
        _waiting_next.clear()
        _queue.clear()
        _log.clear()


def install(ctx) -> None:
    global CTX, _dispatcher
    _check_moto(((evm.Rule, "send_to_targets"), (evm.EventPattern, "get_pattern"),
                 (evm.EventsBackend, "put_events"), (evm, "EventTemplateParser"),
                 (evm, "events_backends")), module=__name__)
    if not _orig:
        _orig["send_to_targets"] = evm.Rule.send_to_targets
        evm.Rule.send_to_targets = _send_to_targets
        from botocore.session import get_session
        _TASK_MEMBERS[:] = list(get_session().get_service_model("ecs").shape_for("Task").members)
    CTX = ctx
    ctx.register_control("events", _events_control)
    ctx.register_control("event-faults", _faults_control)
    ctx.on_reset(_reset)
    if _dispatcher is None:
        _dispatcher = threading.Thread(target=_dispatch_loop, name="events-dispatch",
                                       daemon=True)
        _dispatcher.start()
