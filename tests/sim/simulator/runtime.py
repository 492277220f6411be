"""Local "container runtime": runs argv as a local process in a private mount namespace.

No image is ever pulled: the image name is only recorded by the callers; argv runs on the
host's filesystem. Each process gets:
  * a new mount namespace (``unshare --mount --propagation private``), in which
  * every hide path is covered by an empty private tmpfs (the runner host's builds dir must be
    invisible to "containers"), then
  * every bind mount ``host_dir -> container_path`` is made (mount points are created as
    needed; one under a hide path lands inside its tmpfs, so a task volume mounted at the
    workspace's absolute path stays visible),
  * its own session and process group (so terminate/kill reach every descendant),
  * stdout and stderr merged and handed to ``on_line`` line by line as they arrive.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

# In-namespace setup, run by sh before exec'ing the real argv. Arguments come as a small
# command list terminated by "--":  bind SRC DST | hide PATH | cwd DIR  ...  -- argv...
_SETUP_SH = r'''
set -e
_sim_had_path=; if [ -n "${PATH+x}" ]; then _sim_had_path=1; _sim_old_path=$PATH; fi
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    bind)
      if [ -d "$2" ]; then mkdir -p "$3"; else mkdir -p "$(dirname "$3")"; [ -e "$3" ] || : > "$3"; fi
      mount --bind "$2" "$3"
      shift 3 ;;
    hide)
      if [ -d "$2" ]; then
        mount -t tmpfs -o mode=0755 sim-hidden "$2"
      elif [ -e "$2" ]; then
        mount --bind /dev/null "$2"
      fi
      shift 2 ;;
    cwd)
      mkdir -p "$2"; cd "$2"; shift 2 ;;
    *)
      echo "sim runtime: bad setup word: $1" >&2; exit 125 ;;
  esac
done
shift
if [ -n "$_sim_had_path" ]; then PATH=$_sim_old_path; else unset PATH; fi
unset _sim_had_path _sim_old_path
exec "$@"
'''

_UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"

_lock = threading.Lock()
_tracked: list["LocalProcess"] = []
_closed = False  # set at shutdown: no new launches


def _status_of(rc: int) -> int:
    return 128 + (-rc) if rc < 0 else rc


class LocalProcess:
    """A launched local process (the leader of its own process group)."""

    def __init__(self, popen: subprocess.Popen, name: str, kind: str, on_line):
        self._p = popen
        self.pid = popen.pid
        self.name = name
        self.kind = kind
        self.started = time.time()
        self._on_line = on_line
        self._reader_done = threading.Event()
        self._kill_timer: threading.Timer | None = None
        self._reader = threading.Thread(target=self._read, name=f"out-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        out = self._p.stdout
        try:
            while True:
                raw = out.readline(262144)
                if not raw:
                    break
                line = raw.decode("utf-8", errors="replace")
                if line.endswith("\n"):
                    line = line[:-1]
                    if line.endswith("\r"):
                        line = line[:-1]
                try:
                    self._on_line(line)
                except Exception as e:  # a broken sink must not kill the reader
                    print(f"sim runtime: on_line failed for {self.name}: {e!r}", flush=True,
                          file=sys.stderr)
        finally:
            try:
                out.close()
            except OSError:
                pass
            self._reader_done.set()

    # --- status -------------------------------------------------------------------------
    def poll(self) -> int | None:
        rc = self._p.poll()
        return None if rc is None else _status_of(rc)

    def alive(self) -> bool:
        return self._p.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Exit status (128+signal when killed). Also waits (briefly) until the output reader
        has delivered every line, so callers see all output once wait() returns."""
        rc = self._p.wait(timeout)
        # Descendants may still hold the pipe open; don't wait for them forever.
        self._reader_done.wait(2.0)
        return _status_of(rc)

    def wait_leader(self, timeout: float | None = None) -> int:
        """Exit status of the launched process itself, without waiting for its output."""
        return _status_of(self._p.wait(timeout))

    def output_done(self, timeout: float | None = None) -> bool:
        return self._reader_done.wait(timeout)

    # --- signals ------------------------------------------------------------------------
    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self, grace: float) -> None:
        """SIGTERM to the process group now, SIGKILL to the group after `grace` seconds
        (non-blocking)."""
        self._signal_group(signal.SIGTERM)
        if self._kill_timer is None:
            t = threading.Timer(max(0.0, grace), self._kill_after_grace)
            t.daemon = True
            self._kill_timer = t
            t.start()

    def _kill_after_grace(self) -> None:
        # The leader may be gone but descendants in its group may not: kill the group anyway
        # unless the leader was reaped long enough ago that the pgid could be reused (it cannot
        # be reused while any member is alive, and we only get here a few seconds later).
        self._signal_group(signal.SIGKILL)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def describe(self) -> dict:
        return {"pid": self.pid, "kind": self.kind, "name": self.name}


def track(p: LocalProcess) -> LocalProcess:
    with _lock:
        if p not in _tracked:
            _tracked.append(p)
    return p


def live_processes() -> list[LocalProcess]:
    with _lock:
        _tracked[:] = [p for p in _tracked if p.alive()]
        return list(_tracked)


def kill_all(grace: float = 1.0) -> None:
    """SIGTERM every tracked process group, then SIGKILL what is left after `grace`."""
    global _closed
    _closed = True
    procs = live_processes()
    for p in procs:
        p._signal_group(signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and any(p.alive() for p in procs):
        time.sleep(0.05)
    for p in procs:
        p._signal_group(signal.SIGKILL)
    for p in procs:
        try:
            p._p.wait(2.0)
        except subprocess.TimeoutExpired:
            pass


def launch(argv: list[str], env: dict[str, str], *, name: str,
           mounts: dict[str, str] | None = None, hide: list[str] | None = None,
           on_line: Callable[[str], None] | None = None, cwd: str = "/",
           kind: str = "process") -> LocalProcess:
    """Run argv in a new private mount namespace. See module doc."""
    if not argv:
        raise ValueError("launch: empty argv")
    if _closed:
        raise RuntimeError("launch: the simulator is shutting down")
    words: list[str] = []
    # Hides first: a bind made afterwards under a hidden path stays visible inside the tmpfs.
    for h in hide or []:
        words += ["hide", os.path.abspath(h)]
    for container_path, host_dir in (mounts or {}).items():
        words += ["bind", os.path.abspath(host_dir), container_path]
    words += ["cwd", cwd or "/", "--"]
    cmd = [_UNSHARE, "--mount", "--propagation", "private", "/bin/sh", "-c", _SETUP_SH,
           "sim-setup", *words, *argv]
    popen = subprocess.Popen(
        cmd,
        env={k: str(v) for k, v in env.items()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd="/",
        start_new_session=True,
        close_fds=True,
    )
    p = LocalProcess(popen, name, kind, on_line or (lambda _l: None))
    track(p)
    return p
