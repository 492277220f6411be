"""The /_sim/ control API (JSON over HTTP on the simulator's own port).

  POST /_sim/outcomes  {"training": [{...}], "ecs_task": [...], ...}   append scripted outcomes
  GET  /_sim/outcomes                                                  pending outcomes by kind
  POST /_sim/faults    {"rules": [{...}]}                              append fault rules
  GET  /_sim/faults                                                    active rules
  POST /_sim/reset                                                     clear outcomes, faults, calls
  GET  /_sim/calls[?match=SUBSTR&since=UNIX]                           {"calls": [{"op", "t", ...}]}
  GET  /_sim/processes                                                 {"processes": [{"pid","kind","name"}]}
  GET  /_sim/health                                                    {"ok": true}
Modules add more with ctx.register_control("name", handler): handler(method, body) ->
(status, obj), where body is the parsed JSON body (POST/PUT/DELETE) or the query parameters
(GET, single values).
"""
from __future__ import annotations

import json
import threading
from urllib.parse import parse_qs

from . import faults as faults_mod
from . import runtime


class Outcomes:
    def __init__(self):
        self._lock = threading.Lock()
        self._by_kind: dict[str, list[dict]] = {}

    def add(self, by_kind: dict) -> None:
        if not isinstance(by_kind, dict):
            raise ValueError("outcomes body must be an object {kind: [outcome, ...]}")
        for kind, items in by_kind.items():
            if isinstance(items, dict):
                items = [items]
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ValueError(f"outcomes for {kind!r} must be a list of objects")
        with self._lock:
            for kind, items in by_kind.items():
                if isinstance(items, dict):
                    items = [items]
                self._by_kind.setdefault(kind, []).extend(dict(i) for i in items)

    def take(self, kind: str, name: str) -> dict:
        """Pop the first outcome of this kind whose name_contains is a substring of name."""
        with self._lock:
            items = self._by_kind.get(kind, [])
            for i, o in enumerate(items):
                if str(o.get("name_contains", "")) in (name or ""):
                    return items.pop(i)
        return {}

    def snapshot(self) -> dict:
        with self._lock:
            return {k: [dict(o) for o in v] for k, v in self._by_kind.items() if v}

    def clear(self) -> None:
        with self._lock:
            self._by_kind.clear()


class Control:
    def __init__(self, outcomes: Outcomes, faults: faults_mod.Faults, calls):
        self.outcomes, self.faults, self.calls = outcomes, faults, calls
        self.handlers = {
            "outcomes": self._outcomes,
            "faults": self._faults,
            "reset": self._reset,
            "calls": self._calls,
            "processes": self._processes,
            "health": lambda m, b: (200, {"ok": True}),
        }
        self.reset_hooks = []

    def register(self, path: str, handler) -> None:
        path = path.strip("/")
        if path in self.handlers:
            raise ValueError(f"control path /_sim/{path} is already registered")
        self.handlers[path] = handler

    def _outcomes(self, method, body):
        if method == "POST":
            self.outcomes.add(body)
        elif method == "DELETE":
            self.outcomes.clear()
        return 200, {"outcomes": self.outcomes.snapshot()}

    def _faults(self, method, body):
        if method == "POST":
            rules = body.get("rules", []) if isinstance(body, dict) else body
            if not isinstance(rules, list):
                raise ValueError('faults body must be {"rules": [...]}')
            self.faults.add(rules)
        elif method == "DELETE":
            self.faults.clear()
        return 200, {"rules": self.faults.snapshot()}

    def _reset(self, method, body):
        if method not in ("POST", "DELETE"):
            return 405, {"error": "use POST"}
        self.outcomes.clear()
        self.faults.clear()
        self.calls.clear()
        for hook in self.reset_hooks:
            hook()
        return 200, {"ok": True}

    def _calls(self, method, body):
        since = body.get("since")
        return 200, {"calls": self.calls.snapshot(match=body.get("match"),
                                                  since=float(since) if since else None)}

    def _processes(self, method, body):
        return 200, {"processes": [p.describe() for p in runtime.live_processes()]}

    # --- WSGI ----------------------------------------------------------------------------
    def handle(self, environ, start_response):
        path = environ.get("PATH_INFO", "")[len("/_sim/"):].strip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if method == "GET":
                body = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            else:
                n = int(environ.get("CONTENT_LENGTH") or 0)
                raw = environ["wsgi.input"].read(n) if n else b""
                body = json.loads(raw) if raw.strip() else {}
            handler = self.handlers.get(path)
            if handler is None:
                status, obj = 404, {"error": f"no control endpoint /_sim/{path}",
                                    "known": sorted(self.handlers)}
            else:
                status, obj = handler(method, body)
        except (ValueError, TypeError, KeyError) as e:
            status, obj = 400, {"error": str(e)}
        except Exception as e:  # noqa: BLE001 - report, never kill the server
            status, obj = 500, {"error": repr(e)}
        payload = json.dumps(obj, default=str).encode()
        start_response(f"{status} {'OK' if status < 400 else 'Error'}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(payload)))])
        return [payload]
