"""Fault injection rules, matched against operation signatures (see calls.py).

Rule (all keys but "match" optional):
  {"match": "SageMaker.DescribeTrainingJob",   substring of the signature ("" matches every call)
   "kind": "throttle" | "error" | "latency" | "drop" | "drop_response",
                                                           default "throttle" (or "error" if
                                                           "status"/"code" are given)
   "status": 400, "code": "ThrottlingException", "message": "...",   for throttle/error
   "latency_ms": 1500,                                      for latency (then passes through)
   "count": 2,        how many matching calls it applies to; default 1; -1 = unlimited
   "skip": 0}         let this many matching calls through first
"drop" closes the connection before the request is served; "drop_response" serves it (whatever
it creates exists) and then closes the connection without the response.
Rules are tried in the order they were added; the first one that applies wins.
"""
from __future__ import annotations

import json
import threading
from xml.sax.saxutils import escape

KINDS = ("throttle", "error", "latency", "drop", "drop_response")

_DEFAULTS = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "error": (500, "InternalFailure", "We encountered an internal error. Please try again."),
}


class FaultError(ValueError):
    pass


def normalise(rule: dict) -> dict:
    if not isinstance(rule, dict):
        raise FaultError(f"a fault rule must be an object, got {rule!r}")
    unknown = set(rule) - {"match", "kind", "status", "code", "message", "latency_ms", "count",
                           "skip"}
    if unknown:
        raise FaultError(f"unknown fault rule keys: {sorted(unknown)}")
    r = dict(rule)
    r.setdefault("match", "")
    if "kind" not in r:
        r["kind"] = "error" if ("status" in r or "code" in r) and \
            r.get("code") != "ThrottlingException" else "throttle"
    if r["kind"] not in KINDS:
        raise FaultError(f"fault kind must be one of {KINDS}, got {r['kind']!r}")
    if r["kind"] in _DEFAULTS:
        st, code, msg = _DEFAULTS[r["kind"]]
        r.setdefault("status", st)
        r.setdefault("code", code)
        r.setdefault("message", msg)
        r["status"] = int(r["status"])
    if r["kind"] == "latency":
        r["latency_ms"] = float(r.get("latency_ms", 1000))
    r["count"] = int(r.get("count", 1))
    r["skip"] = int(r.get("skip", 0))
    r["hits"] = 0
    return r


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self._rules: list[dict] = []

    def add(self, rules: list[dict]) -> None:
        normalised = [normalise(r) for r in rules]
        with self._lock:
            self._rules.extend(normalised)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._rules]

    def active(self) -> bool:
        return bool(self._rules)

    def take(self, sig: str) -> dict | None:
        """The rule that applies to this call (consuming one use of it), or None."""
        with self._lock:
            for r in self._rules:
                if r["match"] not in sig:
                    continue
                if r["skip"] > 0:
                    r["skip"] -= 1
                    continue
                if r["count"] == 0:
                    continue
                if r["count"] > 0:
                    r["count"] -= 1
                r["hits"] += 1
                hit = dict(r)
                self._rules[:] = [x for x in self._rules if x["count"] != 0]
                return hit
        return None


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([(major << 5) | n])
    if n < 256:
        return bytes([(major << 5) | 24, n])
    if n < 65536:
        return bytes([(major << 5) | 25]) + n.to_bytes(2, "big")
    return bytes([(major << 5) | 26]) + n.to_bytes(4, "big")


def _cbor_text_map(d: dict) -> bytes:
    """CBOR for a map of text strings (all an rpc-v2-cbor error body needs)."""
    out = _cbor_head(5, len(d))
    for k, v in d.items():
        for t in (k, v):
            b = str(t).encode()
            out += _cbor_head(3, len(b)) + b
    return out


def error_response(rule: dict, protocol: str, method: str):
    """(status line, headers, body bytes) in the shape the SDKs expect for that protocol."""
    status, code, msg = rule["status"], rule["code"], rule["message"]
    reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
              500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
              504: "Gateway Timeout"}.get(status, "Error")
    rid = "sim-fault-00000000-0000-0000-0000-000000000000"
    if protocol == "json":
        body = json.dumps({"__type": code, "message": msg}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code),
                   ("x-amzn-RequestId", rid)]
    elif protocol == "cbor":
        body = _cbor_text_map({"__type": code, "message": msg})
        headers = [("Content-Type", "application/cbor"), ("Smithy-Protocol", "rpc-v2-cbor"),
                   ("x-amzn-RequestId", rid)]
    elif protocol == "rest-json":
        body = json.dumps({"message": msg}).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code),
                   ("x-amzn-RequestId", rid)]
    elif protocol == "query":
        body = (f'<ErrorResponse><Error><Type>{"Receiver" if status >= 500 else "Sender"}</Type>'
                f"<Code>{escape(code)}</Code><Message>{escape(msg)}</Message></Error>"
                f"<RequestId>{rid}</RequestId></ErrorResponse>").encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)]
    else:  # s3
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
                f"<Message>{escape(msg)}</Message><RequestId>{rid}</RequestId></Error>").encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid)]
        if method == "HEAD":
            body = b""
    headers.append(("Content-Length", str(len(body))))
    return f"{status} {reason}", headers, body
