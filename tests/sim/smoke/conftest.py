"""Fixtures for the simulator smoke tests (and for anyone else testing against the simulator).

  sim            a running simulator (shared by the whole test session, started with
                 --exit-on-stdin-eof --stop-grace 2 --hide <tmpdir>), reset (outcomes, faults,
                 call log) before each test. A SimHandle: .endpoint, .hidden_dir, .client(...),
                 .post/.get/.delete (control API), .calls(), .processes(), .wait_for(...)
  start_sim      factory for a private simulator: start_sim("--stop-grace", "5") -> SimHandle
                 (stopped at the end of the test)
  sim_endpoint   just the shared simulator's URL
  aws            boto3 client factory on `sim`: aws("sagemaker"), aws("s3", retries=False)

Run:  <repo>/.venv/bin/python -m pytest tests/sim/smoke -q
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_PY = os.path.join(os.path.dirname(HERE), "run.py")
READY_TIMEOUT = 30.0


class SimHandle:
    def __init__(self, proc: subprocess.Popen, endpoint: str, hidden_dir: str | None):
        self.proc = proc
        self.endpoint = endpoint
        self.hidden_dir = hidden_dir
        self.region = "us-east-1"

    # --- control API ---------------------------------------------------------------------
    def _req(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.endpoint}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def post(self, path: str, body=None) -> dict:
        status, obj = self._req("POST", path, body if body is not None else {})
        assert status == 200, f"POST {path} -> {status} {obj}"
        return obj

    def get(self, path: str) -> dict:
        status, obj = self._req("GET", path)
        assert status == 200, f"GET {path} -> {status} {obj}"
        return obj

    def delete(self, path: str, body=None) -> dict:
        status, obj = self._req("DELETE", path, body if body is not None else {})
        assert status == 200, f"DELETE {path} -> {status} {obj}"
        return obj

    def reset(self) -> None:
        self.post("/_sim/reset")

    def outcomes(self, **by_kind) -> dict:
        return self.post("/_sim/outcomes", by_kind)

    def faults(self, *rules: dict) -> dict:
        return self.post("/_sim/faults", {"rules": list(rules)})

    def calls(self, match: str | None = None, since: float | None = None) -> list[dict]:
        q = []
        if match:
            q.append(f"match={urllib.request.quote(match)}")
        if since is not None:
            q.append(f"since={since!r}")
        return self.get("/_sim/calls" + ("?" + "&".join(q) if q else ""))["calls"]

    def processes(self) -> list[dict]:
        return self.get("/_sim/processes")["processes"]

    # --- AWS clients ---------------------------------------------------------------------
    def client(self, service: str, retries: bool | int = True, region: str | None = None,
               **config):
        import boto3
        from botocore.config import Config

        # retries=False: one attempt only; retries=N: N attempts in all (standard mode)
        if retries is False:
            config["retries"] = {"total_max_attempts": 1, "mode": "standard"}
        elif isinstance(retries, int) and retries is not True:
            config["retries"] = {"total_max_attempts": retries, "mode": "standard"}
        config.setdefault("connect_timeout", 5)
        config.setdefault("read_timeout", 30)
        return boto3.client(service, endpoint_url=self.endpoint,
                            region_name=region or self.region,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(**config))

    # --- polling -------------------------------------------------------------------------
    @staticmethod
    def wait_for(fn, timeout: float = 20.0, what: str = "condition", interval: float = 0.05):
        """Poll fn() until it returns something truthy; fail with `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = fn()
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"last value: {last!r}")
            time.sleep(interval)

    def stop(self) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def _python() -> str:
    return sys.executable


def launch_sim(*args: str, hidden_dir: str | None = None) -> SimHandle:
    cmd = [_python(), RUN_PY, "--port", "0", "--exit-on-stdin-eof", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"simulator did not print SIM_READY (exit {proc.poll()}, "
                               f"stdout so far {buf!r})")
        r, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                continue
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    assert line.startswith("SIM_READY http://127.0.0.1:"), line
    return SimHandle(proc, line.split(" ", 1)[1], hidden_dir)


@pytest.fixture(scope="session")
def _shared_sim(tmp_path_factory):
    hidden = tmp_path_factory.mktemp("runner-builds")
    (hidden / "secret-checkout.txt").write_text("the runner host's builds dir\n")
    (hidden / "project").mkdir()
    (hidden / "project" / "main.py").write_text("print('hi')\n")
    handle = launch_sim("--stop-grace", "2", "--hide", str(hidden), hidden_dir=str(hidden))
    yield handle
    rc = handle.stop()
    assert rc == 0, f"simulator exited with {rc}"


@pytest.fixture
def sim(_shared_sim) -> SimHandle:
    assert _shared_sim.proc.poll() is None, "the shared simulator died"
    _shared_sim.reset()
    return _shared_sim


@pytest.fixture
def sim_endpoint(sim) -> str:
    """The shared simulator's endpoint URL (http://127.0.0.1:<port>)."""
    return sim.endpoint


@pytest.fixture
def start_sim():
    started: list[SimHandle] = []

    def start(*args: str) -> SimHandle:
        h = launch_sim(*args)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


@pytest.fixture
def aws(sim):
    return sim.client


@pytest.fixture
def unique():
    """unique("job") -> "job-1a2b3c4d" (names must be unique across the shared simulator)."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"
