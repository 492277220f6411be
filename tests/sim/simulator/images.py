"""A local image registry: what an image would run, since the simulator never pulls images.

    POST   /_sim/images {"images": {"<image ref>": {"entrypoint": [...], "cmd": [...],
                                                  "user": "<name>|<uid>|<uid>:<gid>",   (optional)
                                                  "env": {"K": "V"}}}}                  (optional)
           adds or replaces entries; answers the whole registry
    GET    /_sim/images                    lists them
    DELETE /_sim/images [{"images": [ref, ...]}]   drops those, or everything
POST /_sim/reset clears it too.

Other modules use:
    lookup(image)  -> {"entrypoint", "cmd", "user", "env"} (a copy) or None
    docker_argv(entry, args)  -> the argv `docker run <image> args...` would run
    resolve_user(spec) -> (uid, gid, home) ;  user_prefix(spec) -> argv prefix dropping to it
Lookup tries the exact reference, then the same reference with ":latest" added or removed.
"""

from __future__ import annotations

import copy
import pwd
import shutil
import threading
from typing import Any

_lock = threading.Lock()
_images: dict[str, dict[str, Any]] = {}
_SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


def _str_list(v: Any, what: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        raise ValueError(f"{what} must be a list of strings (exec form), not a string")
    if not isinstance(v, list) or not all(isinstance(x, (str, int, float)) for x in v):
        raise ValueError(f"{what} must be a list of strings")
    return [str(x) for x in v]


def _validate(ref: str, spec: Any) -> dict[str, Any]:
    if not isinstance(ref, str) or not ref:
        raise ValueError("image references must be non-empty strings")
    if not isinstance(spec, dict):
        raise ValueError(f"image {ref!r}: the entry must be an object")
    unknown = set(spec) - {"entrypoint", "cmd", "user", "env"}
    if unknown:
        raise ValueError(f"image {ref!r}: unknown keys {sorted(unknown)}")
    out: dict[str, Any] = {"entrypoint": _str_list(spec.get("entrypoint"), f"image {ref!r}: entrypoint"),
                           "cmd": _str_list(spec.get("cmd"), f"image {ref!r}: cmd")}
    if not out["entrypoint"] and not out["cmd"]:
        raise ValueError(f"image {ref!r}: needs an entrypoint or a cmd")
    user = spec.get("user")
    if user is not None and user != "":
        user = str(user)
        resolve_user(user)  # ValueError when it names nobody
        out["user"] = user
    env = spec.get("env") or {}
    if not isinstance(env, dict):
        raise ValueError(f"image {ref!r}: env must be an object")
    out["env"] = {str(k): str(v) for k, v in env.items()}
    return out


def register(images: dict[str, Any]) -> None:
    checked = {ref: _validate(ref, spec) for ref, spec in images.items()}
    with _lock:
        _images.update(checked)


def lookup(image: str | None) -> dict[str, Any] | None:
    """The registered entry for an image reference (a copy), or None."""
    if not image:
        return None
    with _lock:
        for ref in _candidates(image):
            if ref in _images:
                return copy.deepcopy(_images[ref])
    return None


def _candidates(image: str) -> list[str]:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return [image]
    if ":" in last:
        return [image, image[:-len(":latest")]] if image.endswith(":latest") else [image]
    return [image, image + ":latest"]


def snapshot() -> dict[str, dict[str, Any]]:
    with _lock:
        return copy.deepcopy(_images)


def clear() -> None:
    with _lock:
        _images.clear()


def docker_argv(entry: dict[str, Any], args: list[str] | None = None) -> list[str]:
    """What `docker run <image> [args...]` runs: ENTRYPOINT + args, where args (when given)
    replace CMD."""
    return list(entry.get("entrypoint") or []) + (list(args) if args else list(entry.get("cmd") or []))


def resolve_user(spec: str) -> tuple[int, int, str]:
    """(uid, gid, home) for "name", "uid", "name:group" or "uid:gid" (docker's --user forms).
    A uid without an /etc/passwd entry gets gid 0 and home "/", as docker does."""
    import grp

    user, _, group = str(spec).partition(":")
    home = "/"
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid, home = pw.pw_uid, pw.pw_gid, pw.pw_dir or "/"
    except KeyError:
        if not user.isdigit():
            raise ValueError(f"user {user!r} does not exist on this host") from None
        uid, gid = int(user), 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ValueError(f"group {group!r} does not exist on this host") from None
    return uid, gid, home


def user_prefix(spec: str | None) -> list[str]:
    """An argv prefix that runs the rest as that user (setpriv, after the namespace setup);
    [] for no user or root."""
    if not spec:
        return []
    uid, gid, _ = resolve_user(spec)
    if uid == 0 and gid == 0:
        return []
    return [_SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def _control(method: str, body: Any) -> tuple[int, Any]:
    body = body or {}
    if method == "POST" or method == "PUT":
        images = body.get("images")
        if not isinstance(images, dict):
            return 400, {"error": 'need {"images": {"<image ref>": {"entrypoint": [...], "cmd": [...]}}}'}
        register(images)
    elif method == "DELETE":
        refs = body.get("images")
        with _lock:
            if refs:
                for r in refs:
                    _images.pop(r, None)
            else:
                _images.clear()
    return 200, {"images": snapshot()}


def install(ctx: Any) -> None:
    ctx.register_control("images", _control)
    if hasattr(ctx, "on_reset"):
        ctx.on_reset(clear)


__all__ = ["lookup", "register", "snapshot", "clear", "docker_argv", "resolve_user", "user_prefix"]
