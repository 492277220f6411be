"""The simulator server: moto (pinned) in server mode + WSGI middleware + plugin modules.

Start it with tests/sim/run.py (see tests/README.md, "Simulator"). Layout:
  * moto's DomainDispatcherApplication serves every AWS API;
  * the middleware below answers /_sim/* (control.py), logs every AWS call (calls.py) and
    applies fault rules (faults.py) before moto sees the request;
  * plugin modules (MODULES) patch moto to add behaviour; each has install(ctx: SimContext).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from io import BytesIO

from . import calls as calls_mod
from . import control as control_mod
from . import cwlogs, faults as faults_mod, runtime, s3util

# iam_access after the others: it wraps the create handlers they installed. oidc patches only
# STS (and serves /_sim/oidc/*).
MODULES = ["images", "training", "ecs_tasks", "ecs_services", "endpoints", "registry", "iam_access",
           "oidc", "livetail", "events"]

# Operations a module serves itself instead of moto (operation signature -> WSGI app), e.g. the
# StartLiveTail event stream, which moto answers as one JSON document. Consulted after the fault
# rules, so throttles and drops still apply to them.
OPERATIONS: dict = {}


def log(msg: str) -> None:
    print(f"sim: {msg}", file=sys.stderr, flush=True)


class SimContext:
    """What plugin modules get in install(ctx)."""

    def __init__(self, *, endpoint_url: str, hide_paths: list[str], stop_grace: float,
                 state_dir: str, outcomes, control, faults, calls):
        self.endpoint_url = endpoint_url
        self.hide_paths = list(hide_paths)
        self.stop_grace = float(stop_grace)
        self.state_dir = state_dir
        self.lock = threading.RLock()
        self.outcomes = outcomes
        self.control = control
        self.faults = faults
        self.calls = calls
        self.runtime = runtime
        self.cwlogs = cwlogs
        self.s3 = s3util
        self.default_region = "us-east-1"
        self.default_account = "123456789012"
        self.log = log

    def register_control(self, path: str, handler) -> None:
        self.control.register(path, handler)

    def on_reset(self, hook) -> None:
        """hook() runs on POST /_sim/reset (after outcomes/faults/calls are cleared)."""
        self.control.reset_hooks.append(hook)

    def track(self, process):
        return runtime.track(process)

    def serve_operation(self, sig: str, wsgi_app) -> None:
        """Serve the operation named `sig` (calls.py naming, e.g. "Logs.StartLiveTail") with
        wsgi_app(environ, start_response) instead of moto."""
        OPERATIONS[sig] = wsgi_app


class _Dropped(ConnectionResetError):
    """Raised to make werkzeug treat the connection as dropped (no response)."""


def make_middleware(app, control: control_mod.Control, faults: faults_mod.Faults,
                    calls: calls_mod.CallLog):
    from . import oidc as oidc_mod  # late: it loads moto's STS

    def wrapped(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_sim/") or path == "/_sim":
            return control.handle(environ, start_response)
        if path.startswith("/moto-api"):
            return app(environ, start_response)

        form_body = None
        ctype = environ.get("CONTENT_TYPE", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            n = int(environ.get("CONTENT_LENGTH") or 0)
            form_body = environ["wsgi.input"].read(n) if n else b""
            environ["wsgi.input"] = BytesIO(form_body)
            environ["CONTENT_LENGTH"] = str(len(form_body))
        sig, protocol = calls_mod.signature(environ, form_body)
        rule = faults.take(sig) if faults.active() else None
        rec = calls.add(sig, **calls_mod.principal(environ),
                        **({"fault": rule["kind"]} if rule else {}))

        def drop():
            rec["status"] = None
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            raise _Dropped("sim fault: connection dropped")

        if rule is None and oidc_mod.expired(environ):
            # What AWS answers a request signed with a session's credentials after it ended.
            rec["status"], rec["error"] = 400, "ExpiredToken"
            status, headers, body = faults_mod.error_response(
                {"status": 400, "code": "ExpiredToken",
                 "message": "The security token included in the request is expired"},
                protocol, environ.get("REQUEST_METHOD", "GET"))
            start_response(status, headers)
            return [body]

        if rule is not None:
            kind = rule["kind"]
            if kind == "latency":
                time.sleep(rule["latency_ms"] / 1000.0)
            elif kind == "drop":
                drop()
            elif kind == "drop_response":
                # Served in full (whatever it creates exists), then the answer is lost: what a
                # client sees when a connection breaks after the server acted.
                served = {}

                def keep(status, headers, exc_info=None):
                    served["status"] = status
                    return lambda _data: None

                body = app(environ, keep)
                try:
                    for _chunk in body:
                        pass
                finally:
                    close = getattr(body, "close", None)
                    if close is not None:
                        close()
                drop()
            else:
                status, headers, body = faults_mod.error_response(
                    rule, protocol, environ.get("REQUEST_METHOD", "GET"))
                rec["status"] = int(status.split()[0])
                start_response(status, headers)
                return [body]

        def sr(status, headers, exc_info=None):
            try:
                rec["status"] = int(status.split()[0])
            except ValueError:
                pass
            return start_response(status, headers, exc_info)

        return OPERATIONS.get(sig, app)(environ, sr)

    return wrapped


def install_modules(ctx: SimContext, names=MODULES) -> list[str]:
    loaded = []
    for name in names:
        full = f"{__package__}.{name}"
        try:
            mod = importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name == full:
                continue  # module not written (yet): skip quietly
            raise
        if not hasattr(mod, "install"):
            raise RuntimeError(f"simulator module {full} has no install(ctx)")
        mod.install(ctx)
        loaded.append(name)
    return loaded


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="run.py", description="AWS simulator (moto + extensions)")
    p.add_argument("--port", type=int, default=0, help="port to bind (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--hide", action="append", default=[], metavar="PATH",
                   help="host path covered by an empty tmpfs inside every container (repeatable)")
    p.add_argument("--stop-grace", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between SIGTERM and SIGKILL when stopping work (default 10)")
    p.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="exit (killing every local process started) when stdin closes")
    p.add_argument("--state-dir", default=None, metavar="DIR",
                   help="where per-job/task files go (default: a temp dir removed at exit)")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request to stderr")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)

    own_state = args.state_dir is None
    state_dir = tempfile.mkdtemp(prefix="sagemaker-sim-") if own_state else args.state_dir
    os.makedirs(state_dir, exist_ok=True)
    state_dir = os.path.abspath(state_dir)

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.exit_on_stdin_eof:
        def watch_stdin():
            # os.read, not sys.stdin: a thread blocked inside the buffered reader holds its
            # lock, and the interpreter aborts at exit when it cannot take it.
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            stop.set()
        threading.Thread(target=watch_stdin, name="stdin-eof", daemon=True).start()

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    calls = calls_mod.CallLog()
    faults = faults_mod.Faults()
    outcomes = control_mod.Outcomes()
    control = control_mod.Control(outcomes, faults, calls)

    moto_app = DomainDispatcherApplication(create_backend_app)
    moto_app.debug = True  # as moto_server does
    app = make_middleware(moto_app, control, faults, calls)
    server = make_server(args.host, args.port, app, threaded=True,
                         request_handler=MotoRequestHandler)
    server.daemon_threads = True
    port = server.server_port
    host_for_url = args.host if args.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    endpoint_url = f"http://{host_for_url}:{port}"
    os.environ["MOTO_PORT"] = str(port)  # moto uses it to build its own callback URLs

    ctx = SimContext(endpoint_url=endpoint_url,
                     hide_paths=[os.path.abspath(h) for h in args.hide],
                     stop_grace=args.stop_grace, state_dir=state_dir, outcomes=outcomes,
                     control=control, faults=faults, calls=calls)
    cwlogs._backend_lock = ctx.lock
    loaded = install_modules(ctx)

    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                             name="http", daemon=True)
    serve.start()

    # Only announce readiness once the server really answers HTTP.
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint_url}/_sim/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if time.time() > deadline or stop.is_set():
                log("server did not answer /_sim/health")
                return 1
            time.sleep(0.02)
    log(f"modules: {', '.join(loaded) or '(none)'}; state dir {state_dir}; "
        f"started in {time.time() - t0:.2f}s")
    sys.stdout.write(f"SIM_READY {endpoint_url}\n")
    sys.stdout.flush()

    while not stop.is_set():
        stop.wait(0.5)

    log("shutting down")
    runtime.kill_all(grace=1.0)
    server.shutdown()
    try:
        cwlogs.flush_all()
    except Exception:
        pass
    if own_state:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0
