"""CloudWatch Logs writer working directly on moto's in-process logs backend (no HTTP).

    w = writer("/aws/sagemaker/TrainingJobs", "job/algo-1-1700000000", region=..., account_id=...)
    w.write("a line")    # timestamped now (ms, non-decreasing per stream), flushed <= ~100 ms later
    w.close()            # flushes what is pending

A single flusher thread batches pending events of every open writer every FLUSH_INTERVAL.
"""
from __future__ import annotations

import sys
import threading
import time

FLUSH_INTERVAL = 0.1
DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
MAX_BATCH = 5000  # PutLogEvents' own limit: 10,000 events

_lock = threading.Lock()
_writers: set["LogWriter"] = set()
_flusher: threading.Thread | None = None
_backend_lock: threading.RLock | None = None  # set by server.install (ctx.lock)


def _backend(account_id: str, region: str):
    from moto.logs.models import logs_backends
    return logs_backends[account_id][region]


def ensure_stream(group: str, stream: str, *, region: str = DEFAULT_REGION,
                  account_id: str = DEFAULT_ACCOUNT) -> None:
    b = _backend(account_id, region)
    if group not in b.groups:
        try:
            b.create_log_group(group, {})
        except Exception as e:  # lost a race with a concurrent creator
            if group not in b.groups:
                raise e
    if stream not in b.groups[group].streams:
        try:
            b.create_log_stream(group, stream)
        except Exception as e:
            if stream not in b.groups[group].streams:
                raise e


class LogWriter:
    def __init__(self, group: str, stream: str, region: str, account_id: str):
        self.group, self.stream, self.region, self.account_id = group, stream, region, account_id
        self._pending: list[dict] = []
        self._last_ts = 0
        self._plock = threading.Lock()
        self._closed = False
        with _backend_lock or threading.RLock():
            ensure_stream(group, stream, region=region, account_id=account_id)

    def write(self, line: str) -> None:
        if line == "":
            line = " "  # CloudWatch rejects empty messages
        with self._plock:
            ts = max(int(time.time() * 1000), self._last_ts)
            self._last_ts = ts
            self._pending.append({"timestamp": ts, "message": line})
        _start_flusher()

    def flush(self) -> None:
        with self._plock:
            batch, self._pending = self._pending, []
        while batch:
            chunk, batch = batch[:MAX_BATCH], batch[MAX_BATCH:]
            try:
                with _backend_lock or threading.RLock():
                    ensure_stream(self.group, self.stream, region=self.region,
                                  account_id=self.account_id)
                    _backend(self.account_id, self.region).put_log_events(
                        self.group, self.stream, chunk)
            except Exception as e:
                print(f"sim cwlogs: put_log_events {self.group}/{self.stream} failed: {e!r}",
                      file=sys.stderr, flush=True)

    def close(self) -> None:
        self._closed = True
        with _lock:
            _writers.discard(self)
        self.flush()


def writer(group: str, stream: str, *, region: str = DEFAULT_REGION,
           account_id: str = DEFAULT_ACCOUNT) -> LogWriter:
    w = LogWriter(group, stream, region, account_id)
    with _lock:
        _writers.add(w)
    return w


def _flush_loop() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        with _lock:
            ws = list(_writers)
        for w in ws:
            if w._pending:
                w.flush()


def _start_flusher() -> None:
    global _flusher
    if _flusher is None:
        with _lock:
            if _flusher is None:
                _flusher = threading.Thread(target=_flush_loop, name="cwlogs-flusher", daemon=True)
                _flusher.start()


def flush_all() -> None:
    with _lock:
        ws = list(_writers)
    for w in ws:
        w.flush()
