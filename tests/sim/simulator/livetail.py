"""CloudWatch Logs StartLiveTail served as AWS serves it: a long-lived event stream.

moto answers StartLiveTail with one JSON document holding every event ever stored. AWS answers
(JSON 1.1, `X-Amz-Target: Logs_20140328.StartLiveTail`) with HTTP 200 and an
`application/vnd.amazon.eventstream` body that stays open: binary event-stream messages
(prelude = total length, headers length, CRC32; string headers; payload; CRC32 of the message),
an `initial-response` event (`{}`), one `sessionStart` event, then a `sessionUpdate` event about every second holding the events
*ingested since the previous update* (never older ones): at most 500, else a sample of 500 with
`sessionMetadata.sampled = true`; an empty update when nothing arrived (a heartbeat). After 3 hours
the stream ends with a `SessionTimeoutException` exception message.

This module serves the operation itself (server.OPERATIONS, so /_sim/faults rules still apply to
the HTTP call): a WSGI generator, one message per yielded chunk, on the server's per-request
thread (the server is threaded, so a stream blocks nothing else). The Host header is not looked
at: SDKs send this operation to `stream-<endpoint host>` (hostPrefix `stream-`).

Request: logGroupIdentifiers (1..10, names or ARNs; an ARN ending in `*` is refused),
logStreamNames | logStreamNamePrefixes (one log group only, not both), logEventFilterPattern
(none, or terms: `ERROR`, `"a phrase"`, `-excluded`, `?either ?or`; JSON and space-delimited
patterns are refused, not silently mis-matched). Unknown groups: ResourceNotFoundException.

Control:
  POST /_sim/livetail {"session_seconds": S, "update_interval_ms": N, "max_events_per_update": M}
      change the defaults (10800, 1000, 500) for sessions started afterwards; DELETE restores
      them; GET shows them and the live sessions.
  POST /_sim/livetail-faults {"rules": [rule, ...]}; GET lists; DELETE drops. A rule applies to
  the next `count` sessions (default 1, -1 = every) whose log group identifiers contain `match`
  (default ""), after `skip` sessions:
    {"kind": "drop_session", "after_updates": N}   the connection closes after N updates, with no
                                                   exception message (as a broken connection)
    {"kind": "streaming_exception", "after_updates": N}  a SessionStreamingException after N updates
    {"kind": "sample", "keep_every": K}            updates are marked sampled and keep every K-th
                                                   event only (default K = 2)
    {"kind": "duplicate"}                          an update's events come again in the next update
    {"kind": "reorder"}                            an update's events are held back and delivered
                                                   after the events of the next update that has
                                                   any (at most 10 updates later)
  sample/duplicate/reorder affect `updates` non-empty updates (default 1, -1 = all) from the
  first non-empty update after `after_updates` (default 0).
Both are restored by POST /_sim/reset.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
import zlib

from . import calls as calls_mod
from . import faults as faults_mod

DEFAULTS = {"session_seconds": 3 * 3600.0, "update_interval_ms": 1000.0,
            "max_events_per_update": 500}
MAX_GROUPS = 10
HOLD_UPDATES = 10  # a reorder fault holds events at most this many empty updates
FAULT_KINDS = ("drop_session", "streaming_exception", "sample", "duplicate", "reorder")

_lock = threading.Lock()
_config = dict(DEFAULTS)
_rules: list[dict] = []
_sessions: dict[str, dict] = {}
CTX = None


# ---------------------------------------------------------------------------------------------
# event-stream encoding (application/vnd.amazon.eventstream)
# ---------------------------------------------------------------------------------------------
def _string_header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + b"\x07" + len(v).to_bytes(2, "big") + v  # 7 = string


def encode_message(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32 of those 8
    bytes), headers, payload, CRC32 of everything before it."""
    hb = b"".join(_string_header(k, v) for k, v in headers)
    total = 12 + len(hb) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(hb).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    msg = prelude + hb + payload
    return msg + zlib.crc32(msg).to_bytes(4, "big")


def event_message(event_type: str, body: dict) -> bytes:
    return encode_message([(":message-type", "event"), (":event-type", event_type),
                           (":content-type", "application/json")],
                          json.dumps(body, separators=(",", ":")).encode())


def exception_message(exception_type: str, message: str) -> bytes:
    return encode_message([(":message-type", "exception"), (":exception-type", exception_type),
                           (":content-type", "application/json")],
                          json.dumps({"message": message}).encode())


# ---------------------------------------------------------------------------------------------
# filter patterns (the term subset)
# ---------------------------------------------------------------------------------------------
class PatternError(ValueError):
    pass


def compile_pattern(pattern: str | None):
    """message -> bool for the term syntax: all plain terms/phrases, none of the -terms, and at
    least one ?term when there are any. Case-sensitive, as CloudWatch is."""
    pattern = (pattern or "").strip()
    if not pattern:
        return lambda _m: True
    if pattern[0] in "{[" or pattern.startswith("%"):
        raise PatternError("the simulator supports only term filter patterns (terms, \"phrases\", "
                           "-term, ?term), not JSON, space-delimited or regex patterns")
    must, must_not, any_of = [], [], []
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i].isspace():
            i += 1
            continue
        kind = "must"
        if pattern[i] in "-?" and i + 1 < n and not pattern[i + 1].isspace():
            kind = "must_not" if pattern[i] == "-" else "any"
            i += 1
        if pattern[i] == '"':
            j = pattern.find('"', i + 1)
            if j < 0:
                raise PatternError("Invalid character(s) in term '\"'")
            term, i = pattern[i + 1:j], j + 1
        else:
            j = i
            while j < n and not pattern[j].isspace():
                j += 1
            term, i = pattern[i:j], j
        {"must": must, "must_not": must_not, "any": any_of}[kind].append(term)

    def matches(message: str) -> bool:
        return (all(t in message for t in must) and not any(t in message for t in must_not)
                and (not any_of or any(t in message for t in any_of)))
    return matches


# ---------------------------------------------------------------------------------------------
# faults and config (control API)
# ---------------------------------------------------------------------------------------------
def _normalise_rule(rule: dict) -> dict:
    if not isinstance(rule, dict):
        raise ValueError(f"a live tail fault rule must be an object, got {rule!r}")
    unknown = set(rule) - {"match", "kind", "count", "skip", "after_updates", "updates",
                           "keep_every"}
    if unknown:
        raise ValueError(f"unknown live tail fault rule keys: {sorted(unknown)}")
    if rule.get("kind") not in FAULT_KINDS:
        raise ValueError(f"live tail fault kind must be one of {FAULT_KINDS}, got "
                         f"{rule.get('kind')!r}")
    r = {"match": str(rule.get("match", "")), "kind": rule["kind"],
         "count": int(rule.get("count", 1)), "skip": int(rule.get("skip", 0)),
         "after_updates": int(rule.get("after_updates", 0)),
         "updates": int(rule.get("updates", 1)), "keep_every": int(rule.get("keep_every", 2)),
         "hits": 0}
    if r["keep_every"] < 2:
        raise ValueError("keep_every must be at least 2 (1 would omit nothing)")
    return r


def _take_rules(groups_key: str) -> list[dict]:
    """The rules that apply to a new session (each consumes one of its `count`)."""
    taken = []
    with _lock:
        for r in _rules:
            if r["match"] not in groups_key or r["count"] == 0:
                continue
            if r["skip"] > 0:
                r["skip"] -= 1
                continue
            if r["count"] > 0:
                r["count"] -= 1
            r["hits"] += 1
            taken.append(dict(r))
        _rules[:] = [r for r in _rules if r["count"] != 0]
    return taken


def _config_control(method, body):
    with _lock:
        if method == "POST":
            unknown = set(body) - set(DEFAULTS)
            if unknown:
                raise ValueError(f"unknown live tail settings: {sorted(unknown)}")
            for k, v in body.items():
                if float(v) <= 0:
                    raise ValueError(f"{k} must be positive")
                _config[k] = int(v) if k == "max_events_per_update" else float(v)
        elif method == "DELETE":
            _config.clear()
            _config.update(DEFAULTS)
        return 200, {"config": dict(_config),
                     "sessions": [dict(s) for s in _sessions.values()]}


def _faults_control(method, body):
    if method == "POST":
        rules = body.get("rules", []) if isinstance(body, dict) else body
        if not isinstance(rules, list):
            raise ValueError('live tail faults body must be {"rules": [...]}')
        new = [_normalise_rule(r) for r in rules]
        with _lock:
            _rules.extend(new)
    elif method == "DELETE":
        with _lock:
            _rules.clear()
    with _lock:
        return 200, {"rules": [dict(r) for r in _rules]}


def _reset() -> None:
    with _lock:
        _rules.clear()
        _config.clear()
        _config.update(DEFAULTS)


# ---------------------------------------------------------------------------------------------
# the operation
# ---------------------------------------------------------------------------------------------
def _logs_backend(account: str, region: str):
    from moto.logs.models import logs_backends
    return logs_backends[account][region]


def _account_of(environ) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    key_id = auth.partition("Credential=")[2].partition("/")[0]
    if key_id:
        try:
            from moto.iam.models import get_account_id_from
            return get_account_id_from(key_id)
        except Exception:  # noqa: BLE001 - unknown key: the default account, as moto does
            pass
    return CTX.default_account if CTX else "123456789012"


def _error(start_response, code: str, message: str, status: int = 400):
    st, headers, body = faults_mod.error_response(
        {"status": status, "code": code, "message": message}, "json", "POST")
    start_response(st, headers)
    return [body]


def _resolve_groups(idents: list[str], account: str, region: str):
    """[(identifier as given, moto LogGroup, ARN)] or raise LookupError/ValueError."""
    out = []
    for ident in idents:
        if not isinstance(ident, str) or not ident:
            raise ValueError("logGroupIdentifiers must be non-empty strings")
        if ident.startswith("arn:"):
            if ident.endswith("*"):
                raise ValueError(f"Log group ARN {ident} must not end with an asterisk (*)")
            parts = ident.split(":", 6)
            if len(parts) < 7 or parts[2] != "logs" or parts[5] != "log-group":
                raise ValueError(f"Invalid log group ARN: {ident}")
            g_region, g_account, name = parts[3], parts[4], parts[6]
        else:
            g_region, g_account, name = region, account, ident
        group = _logs_backend(g_account, g_region).groups.get(name)
        if group is None:
            raise LookupError(f"The specified log group does not exist: {ident}")
        out.append((ident, group, f"arn:aws:logs:{g_region}:{g_account}:log-group:{name}"))
    return out


def serve(environ, start_response):
    """WSGI app for Logs.StartLiveTail."""
    try:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        req = json.loads(environ["wsgi.input"].read(n) or b"{}") if n else {}
    except ValueError:
        return _error(start_response, "SerializationException", "Malformed JSON request body")
    region = calls_mod.signing_scope(environ)[0] or "us-east-1"
    account = _account_of(environ)
    idents = req.get("logGroupIdentifiers")
    names, prefixes = req.get("logStreamNames"), req.get("logStreamNamePrefixes")
    if not isinstance(idents, list) or not idents:
        return _error(start_response, "InvalidParameterException",
                      "1 validation error detected: Value null at 'logGroupIdentifiers' failed "
                      "to satisfy constraint: Member must not be null")
    if len(idents) > MAX_GROUPS:
        return _error(start_response, "InvalidParameterException",
                      "1 validation error detected: Value at 'logGroupIdentifiers' failed to "
                      "satisfy constraint: Member must have length less than or equal to 10")
    if names is not None and prefixes is not None:
        return _error(start_response, "InvalidParameterException",
                      "Only one of logStreamNames or logStreamNamePrefixes can be provided.")
    if (names is not None or prefixes is not None) and len(idents) != 1:
        return _error(start_response, "InvalidParameterException",
                      "logStreamNames and logStreamNamePrefixes can only be used with a single "
                      "log group.")
    try:
        match = compile_pattern(req.get("logEventFilterPattern"))
        groups = _resolve_groups(idents, account, region)
    except LookupError as e:
        return _error(start_response, "ResourceNotFoundException", str(e))
    except ValueError as e:
        return _error(start_response, "InvalidParameterException", str(e))

    with _lock:
        cfg = dict(_config)
    session = {"sessionId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
               "logGroupIdentifiers": list(idents), "started": time.time(), "updates": 0,
               "events_sent": 0, "faults": [], "ended": None}
    rules = _take_rules(",".join(idents))
    session["faults"] = [r["kind"] for r in rules]
    start = {"requestId": session["requestId"], "sessionId": session["sessionId"],
             "logGroupIdentifiers": list(idents), "logStreamNames": list(names or []),
             "logStreamNamePrefixes": list(prefixes or []),
             "logEventFilterPattern": req.get("logEventFilterPattern") or ""}

    def stream_wanted(stream_name: str) -> bool:
        if names is not None:
            return stream_name in names
        if prefixes is not None:
            return any(stream_name.startswith(p) for p in prefixes)
        return True

    # Cursor per (group ARN, stream): events already stored when the session starts are not
    # sent (Live Tail shows only what is ingested from now on); a stream created later starts
    # at 0.
    cursors: dict[tuple[str, str], int] = {}
    for _ident, group, arn in groups:
        for sname, stream in list(group.streams.items()):
            cursors[(arn, sname)] = len(stream.events)

    def collect() -> list[dict]:
        found = []
        for _ident, group, arn in groups:
            for sname, stream in list(group.streams.items()):
                if not stream_wanted(sname):
                    continue
                key = (arn, sname)
                events = stream.events
                end = len(events)
                begin = cursors.get(key, 0)
                cursors[key] = end
                for ev in events[begin:end]:
                    if match(ev.message):
                        found.append({"logStreamName": sname, "logGroupIdentifier": arn,
                                      "message": ev.message, "timestamp": ev.timestamp,
                                      "ingestionTime": ev.ingestion_time})
        found.sort(key=lambda e: (e["ingestionTime"], e["timestamp"]))
        return found

    def generate():
        with _lock:
            _sessions[session["sessionId"]] = session
        try:
            # awsJson event streams open with an `initial-response` event carrying the output's
            # non-stream members (none here): botocore refuses a stream without it, and the Rust
            # SDK's send() waits for the first message to see whether it is one.
            yield event_message("initial-response", {})
            yield event_message("sessionStart", start)
            interval = cfg["update_interval_ms"] / 1000.0
            deadline = session["started"] + cfg["session_seconds"]
            max_events = int(cfg["max_events_per_update"])
            redeliver: list[dict] = []  # a duplicate fault's events, sent again first
            held: list[dict] = []  # a reorder fault's events, sent after the next update's
            held_for = 0
            next_tick = time.monotonic() + interval
            while True:
                now_wall = time.time()
                if now_wall >= deadline:
                    session["ended"] = "timeout"
                    yield exception_message(
                        "SessionTimeoutException",
                        f"Session timed out after {cfg['session_seconds']:g} seconds")
                    return
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(min(delay, max(0.0, deadline - now_wall)))
                    if time.time() >= deadline:
                        continue
                next_tick += interval
                for r in rules:
                    if r["kind"] in ("drop_session", "streaming_exception") and \
                            session["updates"] >= r["after_updates"]:
                        if r["kind"] == "streaming_exception":
                            session["ended"] = "streaming_exception"
                            yield exception_message("SessionStreamingException",
                                                    "Internal error while streaming")
                            return
                        session["ended"] = "dropped"
                        _drop_connection(environ)
                fresh = collect()
                sampled = len(fresh) > max_events
                if sampled:
                    # AWS samples down to 500; keep an even spread, in order.
                    step = len(fresh) / max_events
                    fresh = [fresh[int(i * step)] for i in range(max_events)]
                if held and not fresh and held_for < HOLD_UPDATES:
                    out = redeliver  # held events wait for an update with events of its own
                    held_for += 1
                else:
                    out = redeliver + fresh + held
                    held, held_for = [], 0
                redeliver = []
                if fresh:
                    for r in rules:
                        if r["kind"] not in ("sample", "duplicate", "reorder") or \
                                session["updates"] < r["after_updates"] or r["updates"] == 0:
                            continue
                        if r["updates"] > 0:
                            r["updates"] -= 1
                        if r["kind"] == "sample":
                            sampled = True
                            out = out[::r["keep_every"]]
                        elif r["kind"] == "duplicate":
                            redeliver = list(fresh)
                        else:
                            ids = {id(e) for e in fresh}
                            out = [e for e in out if id(e) not in ids]
                            held, held_for = list(fresh), 0
                session["updates"] += 1
                session["events_sent"] += len(out)
                yield event_message("sessionUpdate", {"sessionMetadata": {"sampled": sampled},
                                                      "sessionResults": out})
        finally:
            if session["ended"] is None:
                session["ended"] = "client"
            with _lock:
                _sessions.pop(session["sessionId"], None)

    start_response("200 OK", [("Content-Type", "application/vnd.amazon.eventstream"),
                              ("x-amzn-RequestId", session["requestId"])])
    return generate()


def _drop_connection(environ) -> None:
    """Close the connection at once (RST, no exception message, no end of body)."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    raise ConnectionResetError("sim fault: live tail session dropped")


def install(ctx) -> None:
    global CTX
    CTX = ctx
    ctx.serve_operation("Logs.StartLiveTail", serve)
    ctx.register_control("livetail", _config_control)
    ctx.register_control("livetail-faults", _faults_control)
    ctx.on_reset(_reset)
