"""ECS tasks that really run: every container of a RunTask is a local process.

moto only records a task (first container only, stuck RUNNING/PENDING, no exit codes). This
plugin adopts each task created by RunTask and drives it from a background thread:

    PROVISIONING -> PENDING -> RUNNING -> STOPPING -> DEPROVISIONING -> STOPPED

Each container runs its `entryPoint` + `command` (RunTask `overrides.containerOverrides` apply)
through `ctx.runtime.launch` in a private mount namespace; the image is recorded, never pulled.
It runs as the container definition's `user`, else the image's `user` registered with
`/_sim/images`, else root, with that image's `env` under the definition's `environment`. Task volumes are per-task temp dirs shared by the containers that
mount them, root's with mode 0755 as on Fargate. `dependsOn`
(START, HEALTHY treated like START, COMPLETE, SUCCESS), `essential`, `stopTimeout`, awslogs
(stream `<prefix>/<container>/<task-id>`) and `secrets` (Secrets Manager / SSM) are honoured.
As on AWS, an awslogs container whose `awslogs-group` does not exist stops the task before any
container runs (stopCode TaskFailedToStart, stoppedReason LOG_GROUP_MISSING_REASON) unless its
options say `"awslogs-create-group": "true"`, which creates the group.

Scripted outcomes, kind "ecs_task", matched on the task-definition family:
    {"oom": "<container>", "after_seconds": 0.5}   SIGKILL that container once running: 137 + OutOfMemoryError
    {"fail_to_start": "<reason>"}                 stopCode TaskFailedToStart, no container runs
    {"capacity": true | "<reason>"}              RunTask answers with a failure, no task
    {"spot_interruption": true, "after_seconds": 0.5}  stopCode SpotInterruption once running

Also: RunTask honours `clientToken` (a repeated token answers with the tasks it started, as on
AWS: an idempotent retry of a call whose answer was lost), accepts task-level cpu/memory
without per-container memory, a missing
`securityGroups` falls back to the VPC's default group (as AWS does), DescribeTasks reports
MISSING failures, StopTask really stops, ListTasks defaults to desiredStatus RUNNING,
ListTaskDefinitions sorts and pages, DescribeTaskDefinition by family returns the latest ACTIVE
revision, and `GET /_sim/default-network` returns the default VPC's subnets and security group.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import traceback
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidSubnetIdError
from moto.ec2.models import ec2_backends
from moto.ecs import models as ecsm
from moto.ecs import responses as ecsr
from moto.ecs.exceptions import InvalidParameterException, TaskDefinitionNotFoundException

from . import events, images
from .common import _check_moto, _now

# Time spent in each bookkeeping phase (provisioning, image "pull", deprovisioning).
PHASE_SECONDS = 0.25
TICK_SECONDS = 0.05
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"
CAPACITY_REASON = (
    "Capacity is unavailable at this time. Please try again later or in a different availability zone"
)
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
SPOT_REASON = "Your Spot Task was interrupted."
ESSENTIAL_REASON = "Essential container in task exited"
# What Fargate (platform 1.4.0) reports when the awslogs driver cannot find its log group.
LOG_GROUP_MISSING_REASON = (
    "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: "
    "failed to create Cloudwatch log stream: ResourceNotFoundException: The specified log group does not exist. "
    ": exit status 1"
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ctx: Any = None
_runners: dict[str, "TaskRunner"] = {}
_runners_lock = threading.Lock()
# (account, region, cluster, clientToken) -> the task ARNs that RunTask call started
_tokens: dict[tuple[str, str, str, str], list[str]] = {}


def _lock():
    return _ctx.lock if _ctx is not None else threading.RLock()


# --------------------------------------------------------------------------------------------
# network helpers
# --------------------------------------------------------------------------------------------
def default_network(account_id: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION) -> dict[str, Any]:
    """Subnets and the default security group of moto's default VPC."""
    ec2 = ec2_backends[account_id][region]
    vpc = ec2.get_default_vpc()
    if vpc is None:
        return {"vpc": None, "subnets": [], "security_groups": []}
    subnets = sorted(s.id for s in ec2.describe_subnets(filters={"vpc-id": [vpc.id]}))
    sg = ec2.get_default_security_group(vpc.id)
    return {"vpc": vpc.id, "subnets": subnets, "security_groups": [sg.id] if sg else []}


def _check_network(account_id: str, region: str, netconf: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate subnets / security groups like ECS does; default the security group like AWS."""
    if not netconf:
        return netconf
    vpc_conf = netconf.get("awsvpcConfiguration") or {}
    subnets = vpc_conf.get("subnets") or []
    if not subnets:
        raise InvalidParameterException("subnets can not be empty.")
    ec2 = ec2_backends[account_id][region]
    try:
        found = ec2.describe_subnets(subnet_ids=subnets)
    except InvalidSubnetIdError as exc:
        raise InvalidParameterException(
            f"Error retrieving subnet information for [{subnets}]: {exc.message} (ErrorCode: {exc.code})"
        )
    groups = vpc_conf.get("securityGroups")
    if not groups:
        sg = ec2.get_default_security_group(found[0].vpc_id)
        vpc_conf = dict(vpc_conf, securityGroups=[sg.id] if sg else [])
        netconf = dict(netconf, awsvpcConfiguration=vpc_conf)
    else:
        known = {g.id for g in ec2.describe_security_groups()}
        for g in groups:
            if g not in known:
                raise InvalidParameterException(
                    f"Error retrieving security group information for [{g}]: The security group '{g}' "
                    "does not exist (ErrorCode: InvalidGroup.NotFound)"
                )
    return netconf


def _subnet_az(account_id: str, region: str, netconf: dict[str, Any] | None) -> str | None:
    try:
        sid = netconf["awsvpcConfiguration"]["subnets"][0]  # type: ignore[index]
        return ec2_backends[account_id][region].describe_subnets(subnet_ids=[sid])[0].availability_zone
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------------
def _resolve_secret(account_id: str, region: str, value_from: str) -> str:
    """Resolve a container `secrets[].valueFrom` against moto's Secrets Manager or SSM."""
    if ":secretsmanager:" not in value_from:  # an SSM parameter: full ARN, or the name in this region
        from moto.ssm.models import ssm_backends

        param = ssm_backends[account_id][region].get_parameter(value_from)  # moto strips the ARN prefix
        if param is None:
            raise KeyError(f"parameter {value_from} not found")
        return param.decrypt(param.value) or ""  # SecureString values are stored "kms:<key>:<value>"
    from moto.secretsmanager.models import secretsmanager_backends

    json_key = stage = version = None
    secret_id = value_from
    if value_from.startswith("arn:"):
        parts = value_from.split(":")
        # arn:aws:secretsmanager:region:acct:secret:name[:json-key:version-stage:version-id]
        secret_id = ":".join(parts[:7])
        extra = parts[7:] + ["", "", ""]
        json_key, stage, version = extra[0] or None, extra[1] or None, extra[2] or None
    sm = secretsmanager_backends[account_id][region]
    res = sm.get_secret_value(secret_id=secret_id, version_id=version, version_stage=stage)
    value = res.get("SecretString")
    if value is None:
        raise KeyError(f"secret {secret_id} has no string value")
    if json_key:
        import json

        value = str(json.loads(value)[json_key])
    return value


# --------------------------------------------------------------------------------------------
# logs
# --------------------------------------------------------------------------------------------
def _awslogs(cd: dict[str, Any], default_region: str) -> tuple[str, str, dict[str, Any]] | None:
    """(group, region, options) of a container that logs with awslogs, else None."""
    lc = cd.get("logConfiguration") or {}
    if lc.get("logDriver") != "awslogs":
        return None
    opts = lc.get("options") or {}
    group = opts.get("awslogs-group")
    if not group:
        return None
    return group, opts.get("awslogs-region") or default_region, opts


def _prepare_log_group(account_id: str, region: str, group: str, create: bool) -> bool:
    """True when the group exists, or was created because `create` (awslogs-create-group)."""
    from moto.logs.models import logs_backends

    backend = logs_backends[account_id][region]
    with _lock():
        if group in backend.groups:
            return True
        if not create:
            return False
        backend.create_log_group(group, {})
        return True


class _NullWriter:
    def write(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass


def _close_when_drained(proc: Any, writer: Any) -> threading.Thread:
    """Close a log writer once the process's output reader has delivered its last line."""
    def run() -> None:
        done = getattr(proc, "output_done", None)
        if done is not None:
            done(2.0)
        writer.close()
    t = threading.Thread(target=run, name="ecs-log-drain", daemon=True)
    t.start()
    return t


# --------------------------------------------------------------------------------------------
# the per-task runner
# --------------------------------------------------------------------------------------------
class _Container:
    """Runtime state of one container; `view` is the dict moto serializes in `containers[]`."""

    def __init__(self, definition: dict[str, Any], view: dict[str, Any]):
        self.d = definition
        self.view = view
        self.name: str = definition["name"]
        self.essential: bool = definition.get("essential", True) is not False
        self.proc: Any = None
        self.started_mono: float | None = None
        self.state = "PENDING"  # PENDING, RUNNING, STOPPED, BLOCKED (never starts)
        self.exit_code: int | None = None
        self.signalled = False
        self.writer: Any = None
        self.forced_exit: int | None = None
        self.forced_reason: str | None = None


class TaskRunner(threading.Thread):
    def __init__(self, backend: Any, task: Any, taskdef: Any, outcome: dict[str, Any]):
        super().__init__(name=f"ecs-task-{task.id}", daemon=True)
        self.backend = backend
        self.task = task
        self.td = taskdef
        self.outcome = outcome
        self.account = backend.account_id
        self.region = backend.region_name
        self.containers = [_Container(d, v) for d, v in zip(taskdef.container_definitions, task.containers)]
        self.by_name = {c.name: c for c in self.containers}
        self.stop_request: tuple[str, str] | None = None
        self.stopping = False
        self.running_since: float | None = None
        self.workdir = os.path.join(_ctx.state_dir, "ecs-tasks", task.id)
        self.drains: list[threading.Thread] = []

    # -- state helpers ----------------------------------------------------------------------
    def _set(self, **attrs: Any) -> None:
        with _lock():
            for k, v in attrs.items():
                setattr(self.task, k, v)
            self.task.version = (getattr(self.task, "version", 1) or 1) + 1

    def _status(self, status: str, **attrs: Any) -> None:
        before = (self.task.status, self.task.desired_status)
        self._set(**attrs)
        with _lock():
            self.task.status = status
            if (status, self.task.desired_status) != before:
                events.ecs_task_changed(self.task)  # EventBridge "ECS Task State Change"

    def _cview(self, c: _Container, **fields: Any) -> None:
        with _lock():
            for k, v in fields.items():
                if v is None:
                    c.view.pop(k, None)
                else:
                    c.view[k] = v

    def request_stop(self, code: str, reason: str) -> None:
        """Ask the task to stop (StopTask, spot interruption). The first request wins."""
        with _lock():
            if self.stop_request is None and self.task.status != "STOPPED":
                self.stop_request = (code, reason)
                self.task.desired_status = "STOPPED"
                events.ecs_task_changed(self.task)

    # -- main -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:  # keep the simulator alive; report the bug on the task
            traceback.print_exc()
            for c in self.containers:
                if c.proc is not None and c.proc.alive():
                    c.proc.kill()
            self._finish("TaskFailedToStart", "InternalError: simulator failure (see simulator log)")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _sleep_phase(self) -> bool:
        """Sleep one phase; True when a stop was requested meanwhile."""
        end = time.monotonic() + PHASE_SECONDS
        while time.monotonic() < end:
            if self.stop_request:
                return True
            time.sleep(TICK_SECONDS)
        return bool(self.stop_request)

    def _run(self) -> None:
        o = self.outcome
        if self._sleep_phase():
            return self._finish(*self.stop_request)  # type: ignore[misc]
        self._status("PENDING", pull_started_at=_now())
        if o.get("fail_to_start"):
            reason = str(o["fail_to_start"])
            self._sleep_phase()
            for c in self.containers:
                self._cview(c, lastStatus="STOPPED", reason=reason)
            return self._finish("TaskFailedToStart", reason)
        try:
            envs = {c.name: self._environment(c) for c in self.containers}
        except Exception as exc:
            reason = f"ResourceInitializationError: unable to pull secrets or registry auth: {exc}"
            return self._finish("TaskFailedToStart", reason)
        if not self._log_groups_ready():
            return self._finish("TaskFailedToStart", LOG_GROUP_MISSING_REASON)
        mounts = self._mounts()
        if self._sleep_phase():
            return self._finish(*self.stop_request)  # type: ignore[misc]
        now = _now()
        self._status("RUNNING", pull_stopped_at=now, started_at=now, connectivity="CONNECTED", connectivity_at=now)
        self.running_since = time.monotonic()
        self._loop(envs, mounts)

    def _loop(self, envs: dict[str, dict[str, str]], mounts: dict[str, dict[str, str]]) -> None:
        o = self.outcome
        after = float(o.get("after_seconds", 0.5))
        while True:
            # 1. reap exited containers
            for c in self.containers:
                if c.state == "RUNNING" and c.proc is not None:
                    code = c.proc.poll()
                    if code is not None:
                        self._exited(c, code)
            # 2. scripted faults
            if not self.stopping:
                oom = o.get("oom")
                if oom and oom in self.by_name:
                    c = self.by_name[oom]
                    if c.state == "RUNNING" and c.forced_exit is None and time.monotonic() - c.started_mono >= after:
                        c.forced_exit, c.forced_reason = 137, OOM_REASON
                        c.proc.kill()
                if o.get("spot_interruption") and time.monotonic() - self.running_since >= after:
                    self.request_stop("SpotInterruption", SPOT_REASON)
            # 3. stop handling
            if self.stop_request and not self.stopping:
                self._begin_stop()
            # 4. start what may start
            if not self.stopping:
                for c in self.containers:
                    if c.state == "PENDING":
                        verdict = self._deps(c)
                        if verdict == "go":
                            self._launch(c, envs[c.name], mounts[c.name])
                        elif verdict != "wait":
                            c.state = "BLOCKED"
                            self._cview(c, lastStatus="STOPPED", reason=verdict)
                            if c.essential:
                                self.request_stop("EssentialContainerExited", ESSENTIAL_REASON)
            # 5. done?
            running = [c for c in self.containers if c.state == "RUNNING"]
            if self.stopping:
                for c in running:
                    if not c.signalled:
                        c.signalled = True
                        grace = c.d.get("stopTimeout")
                        c.proc.terminate(float(grace) if grace is not None else float(_ctx.stop_grace))
                if not running:
                    break
            elif not running and not any(c.state == "PENDING" and self._deps(c) in ("go", "wait") for c in self.containers):
                # nothing runs and nothing can start any more
                self.request_stop("EssentialContainerExited", ESSENTIAL_REASON)
                continue
            time.sleep(TICK_SECONDS)
        for c in self.containers:
            if c.state == "PENDING":
                c.state = "STOPPED"
                self._cview(c, lastStatus="STOPPED")
        self._finish(*self.stop_request)  # type: ignore[misc]

    def _begin_stop(self) -> None:
        self.stopping = True
        code, reason = self.stop_request  # type: ignore[misc]
        self._status("STOPPING" if self.task.status == "RUNNING" else self.task.status,
                     desired_status="STOPPED", stopping_at=_now(), stop_code=code, stopped_reason=reason)

    def _finish(self, code: str, reason: str) -> None:
        with _lock():
            if self.task.status == "STOPPED":
                return
            if getattr(self.task, "stop_code", None) is None:
                self.task.stop_code = code
                self.task.stopped_reason = reason
            self.task.desired_status = "STOPPED"
            if getattr(self.task, "stopping_at", None) is None:
                self.task.stopping_at = _now()
        for c in self.containers:
            if c.view.get("lastStatus") != "STOPPED":
                self._cview(c, lastStatus="STOPPED")
        self._status("DEPROVISIONING", execution_stopped_at=_now())
        time.sleep(PHASE_SECONDS)
        for t in self.drains:  # every log line is in CloudWatch before the task reads STOPPED
            t.join(3.0)
        self._status("STOPPED", stopped_at=_now(), connectivity=None)

    # -- containers -------------------------------------------------------------------------
    def _deps(self, c: _Container) -> str:
        """'go', 'wait', or a reason why the container can never start."""
        for dep in c.d.get("dependsOn") or []:
            other = self.by_name.get(dep.get("containerName"))
            cond = (dep.get("condition") or "START").upper()
            if other is None:
                return f"CannotStartContainerError: dependency {dep.get('containerName')} does not exist"
            if other.state == "BLOCKED" or (other.state == "STOPPED" and other.exit_code is None):
                return (f"CannotStartContainerError: dependency graph: failed to resolve the container ordering "
                        f"dependency [{other.name}] for target [{c.name}] as dependency did not start")
            if cond in ("START", "HEALTHY"):
                if other.state == "PENDING":
                    return "wait"
            elif cond == "COMPLETE":
                if other.state != "STOPPED":
                    return "wait"
            elif cond == "SUCCESS":
                if other.state != "STOPPED":
                    return "wait"
                if other.exit_code != 0:
                    return (f"CannotStartContainerError: dependency graph: failed to resolve the container ordering "
                            f"dependency [{other.name}] for target [{c.name}] as dependency did not exit successfully "
                            f"(exit code {other.exit_code})")
            else:
                return f"CannotStartContainerError: unknown dependency condition {cond}"
        return "go"

    def _override(self, c: _Container) -> dict[str, Any]:
        for co in (self.task.overrides or {}).get("containerOverrides") or []:
            if co.get("name") == c.name:
                return co
        return {}

    def _environment(self, c: _Container) -> dict[str, str]:
        env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": f"ip-10-0-0-{(hash(self.task.id) % 250) + 2}"}
        env["HOME"] = "/root"
        # The image's ENV (registered with /_sim/images) under the task definition's, as a
        # container runtime merges them.
        env.update((images.lookup(c.d.get("image")) or {}).get("env") or {})
        for e in c.d.get("environment") or []:
            env[e["name"]] = str(e.get("value", ""))
        for s in c.d.get("secrets") or []:
            env[s["name"]] = _resolve_secret(self.account, self.region, s["valueFrom"])
        for e in self._override(c).get("environment") or []:
            env[e["name"]] = str(e.get("value", ""))
        env.update({
            "AWS_ENDPOINT_URL": _ctx.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
        })
        return env

    def _mounts(self) -> dict[str, dict[str, str]]:
        vol_dirs: dict[str, str] = {}
        for v in self.td.volumes or []:
            path = os.path.join(self.workdir, "volumes", v["name"])
            os.makedirs(path, exist_ok=True)
            # Fargate's task volumes start empty, root's and mode 0755 (whatever our umask is):
            # a container whose image runs as another user cannot write into it unless one that
            # runs as root opens it.
            if os.geteuid() == 0:
                os.chown(path, 0, 0)
            os.chmod(path, 0o755)
            vol_dirs[v["name"]] = path

        def own(cd: dict[str, Any]) -> dict[str, str]:
            m = {}
            for mp in cd.get("mountPoints") or []:
                src = mp.get("sourceVolume")
                if src in vol_dirs and mp.get("containerPath"):
                    m[mp["containerPath"]] = vol_dirs[src]
            return m

        out = {}
        defs = {cd["name"]: cd for cd in self.td.container_definitions}
        for c in self.containers:
            m: dict[str, str] = {}
            for vf in c.d.get("volumesFrom") or []:
                src = defs.get(vf.get("sourceContainer"))
                if src:
                    m.update(own(src))
            m.update(own(c.d))
            out[c.name] = m
        return out

    def _argv(self, c: _Container) -> list[str]:
        ov = self._override(c)
        command = ov["command"] if ov.get("command") is not None else (c.d.get("command") or [])
        return list(c.d.get("entryPoint") or []) + list(command)

    def _log_groups_ready(self) -> bool:
        """Every awslogs container's group exists (or is created with awslogs-create-group), as
        the Fargate agent checks before it starts any container."""
        for c in self.containers:
            awslogs = _awslogs(c.d, self.region)
            if awslogs is None:
                continue
            group, region, opts = awslogs
            create = str(opts.get("awslogs-create-group", "")).lower() == "true"
            if not _prepare_log_group(self.account, region, group, create):
                return False
        return True

    def _log_writer(self, c: _Container) -> Any:
        awslogs = _awslogs(c.d, self.region)
        if awslogs is None:
            return _NullWriter()
        group, region, opts = awslogs
        prefix = opts.get("awslogs-stream-prefix")
        stream = f"{prefix}/{c.name}/{self.task.id}" if prefix else self.task.id
        return _ctx.cwlogs.writer(group, stream, region=region, account_id=self.account)

    def _launch(self, c: _Container, env: dict[str, str], mounts: dict[str, str]) -> None:
        argv = self._argv(c)
        if not argv:
            c.state = "BLOCKED"
            self._cview(c, lastStatus="STOPPED", reason=(
                "CannotStartContainerError: the simulator does not pull images; the container needs "
                "an entryPoint or command"))
            if c.essential:
                self.request_stop("EssentialContainerExited", ESSENTIAL_REASON)
            return
        c.writer = self._log_writer(c)
        writer = c.writer
        try:
            # As a container runtime does: the definition's `user`, else the image's USER
            # (registered with /_sim/images), else root.
            image = images.lookup(c.d.get("image")) or {}
            user = c.d.get("user") or image.get("user")
            if user:
                argv = images.user_prefix(user) + argv
                # HOME is the user's unless the image or the definition sets it.
                if "HOME" not in (image.get("env") or {}) and \
                        not any(e.get("name") == "HOME" for e in c.d.get("environment") or []):
                    env = dict(env, HOME=images.resolve_user(user)[2])
            c.proc = _ctx.runtime.launch(
                argv, env, name=f"ecs:{self.task.id}:{c.name}", mounts=mounts,
                hide=list(_ctx.hide_paths), on_line=writer.write, cwd=c.d.get("workingDirectory") or "/",
                kind="ecs-container",
            )
        except Exception as exc:
            writer.close()
            c.state = "BLOCKED"
            self._cview(c, lastStatus="STOPPED", reason=f"CannotStartContainerError: {exc}")
            if c.essential:
                self.request_stop("EssentialContainerExited", ESSENTIAL_REASON)
            return
        try:
            _ctx.track(c.proc)
        except Exception:
            pass
        c.state = "RUNNING"
        c.started_mono = time.monotonic()
        self._cview(c, lastStatus="RUNNING", runtimeId=f"{self.task.id}-{c.proc.pid}")

    def _exited(self, c: _Container, code: int) -> None:
        if c.forced_exit is not None:
            code = c.forced_exit
        c.exit_code = code
        c.state = "STOPPED"
        if c.writer is not None:
            self.drains.append(_close_when_drained(c.proc, c.writer))
        self._cview(c, lastStatus="STOPPED", exitCode=code, reason=c.forced_reason)
        if c.essential and not self.stopping:
            self.request_stop("EssentialContainerExited", ESSENTIAL_REASON)


# --------------------------------------------------------------------------------------------
# moto patches
# --------------------------------------------------------------------------------------------
def _calculate_task_resource_requirements(task_definition: Any) -> dict[str, Any]:
    """moto sums per-container memory and crashes when only the task sets it (Fargate)."""
    req: dict[str, Any] = {"CPU": 0, "MEMORY": 0, "PORTS": [], "PORTS_UDP": []}
    for cd in task_definition.container_definitions:
        req["CPU"] += int(cd.get("cpu", cd.get("Cpu", 0)) or 0)
        mem = cd.get("memory", cd.get("Memory", cd.get("memoryReservation", cd.get("MemoryReservation"))))
        req["MEMORY"] += int(mem or 0)
        for pm in cd.get("portMappings", cd.get("PortMappings", [])) or []:
            port = pm.get("hostPort", pm.get("HostPort"))
            if port is not None:
                req["PORTS"].append(port)
    if req["MEMORY"] == 0 and getattr(task_definition, "memory", None):
        req["MEMORY"] = int(task_definition.memory)
    return req


def _container_view(task: Any, cd: dict[str, Any]) -> dict[str, Any]:
    arn = task.task_arn.replace(":task/", ":container/", 1)
    view: dict[str, Any] = {
        "containerArn": f"{arn}/{ecsm.mock_random.uuid4()}",
        "taskArn": task.task_arn,
        "name": cd["name"],
        "image": cd.get("image"),
        "lastStatus": "PENDING",
        "healthStatus": "UNKNOWN",
        "cpu": str(cd.get("cpu", 0)),
        "networkInterfaces": [],
    }
    if cd.get("memory") is not None:
        view["memory"] = str(cd["memory"])
    if cd.get("memoryReservation") is not None:
        view["memoryReservation"] = str(cd["memoryReservation"])
    for att in task.attachments or []:
        details = {d["name"]: d["value"] for d in att.get("details", [])}
        if "privateIPv4Address" in details:
            view["networkInterfaces"].append({"attachmentId": att["id"], "privateIpv4Address": details["privateIPv4Address"]})
    return view


def _adopt(backend: Any, task: Any, td: Any, outcome: dict[str, Any]) -> None:
    """Turn a freshly created moto Task into one this plugin drives."""
    task._transitions = []  # freeze moto's state manager for this task
    task.status = "PROVISIONING"
    task.desired_status = "RUNNING"
    task.created_at = _now()
    ov = task.overrides or {}
    task.cpu = ov.get("cpu") or td.cpu
    task.memory = ov.get("memory") or td.memory
    if not task.launch_type:
        task.launch_type = None
    fargate = task.launch_type == "FARGATE" or (task.capacity_provider_name or "").startswith("FARGATE")
    if fargate:
        task.platform_version = task.platform_version or "1.4.0"
        task.platform_family = "Linux"
    task.availability_zone = _subnet_az(backend.account_id, backend.region_name, getattr(task, "network_configuration", None))
    task.health_status = "UNKNOWN"
    task.version = 1
    task.stop_code = None
    task.stopped_reason = None
    task.enable_execute_command = False
    task.ephemeral_storage = td.ephemeral_storage or ({"sizeInGiB": 20} if fargate else None)
    task.containers = [_container_view(task, cd) for cd in td.container_definitions]
    events.ecs_task_changed(task)  # PROVISIONING
    runner = TaskRunner(backend, task, td, outcome)
    with _runners_lock:
        _runners[task.task_arn] = runner
    runner.start()


def _find_task(backend: Any, cluster_str: str, task_str: str) -> Any:
    cluster = backend._get_cluster(cluster_str)
    tid = task_str.split("/")[-1]
    for arn, task in backend.tasks.get(cluster.name, {}).items():
        if arn == task_str or arn.split("/")[-1] == tid:
            return task
    return None


def _run_task(self: Any) -> ActionResult:
    b = self.ecs_backend
    cluster_str = self._get_param("cluster", "default")
    td_str = self._get_param("taskDefinition")
    count = self._get_int_param("count", 1)
    if count < 1 or count > 10:
        raise InvalidParameterException("count must be between 1 and 10.")
    td = b.describe_task_definition(td_str)
    launch_type = self._get_param("launchType")
    cps = self._get_param("capacityProviderStrategy")
    netconf = self._get_param("networkConfiguration")
    b._get_cluster(cluster_str)
    if td.network_mode == "awsvpc":
        if not netconf:
            raise InvalidParameterException(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.")
        netconf = _check_network(b.account_id, b.region_name, netconf)
    outcome = _ctx.outcomes.take("ecs_task", td.family)
    if outcome.get("capacity"):
        reason = outcome["capacity"] if isinstance(outcome["capacity"], str) else CAPACITY_REASON
        b._get_cluster(cluster_str)
        return ActionResult({"tasks": [], "failures": [{"arn": td.arn, "reason": reason, "detail": "RESOURCE:FARGATE"}]})
    token = self._get_param("clientToken")
    cluster_name = b._get_cluster(cluster_str).name
    key = (b.account_id, b.region_name, cluster_name, token or "")
    with _lock():
        earlier = [_find_task(b, cluster_name, arn) for arn in _tokens.get(key, [])] if token else []
        if earlier and all(t is not None for t in earlier):
            # As on AWS: a repeated clientToken answers with the tasks it started, none new.
            return ActionResult({"tasks": earlier, "failures": []})
        tasks = b.run_task(
            cluster_str, td_str, count, self._get_param("overrides"), self._get_param("startedBy"),
            self._get_param("tags"), launch_type, netconf, self._get_param("group"),
            self._get_param("platformVersion"), cps,
        )
        for t in tasks:
            _adopt(b, t, td, outcome)
        if token:
            _tokens[key] = [t.task_arn for t in tasks]
    return ActionResult({"tasks": tasks, "failures": []})


def _describe_tasks(self: Any) -> ActionResult:
    b = self.ecs_backend
    cluster_str = self._get_param("cluster", "default")
    wanted = self._get_param("tasks", [])
    if not wanted:
        raise InvalidParameterException("Tasks cannot be empty.")
    cluster = b._get_cluster(cluster_str)
    tasks, failures = [], []
    for w in wanted:
        t = _find_task(b, cluster.name, w)
        if t is None:
            arn = w if w.startswith("arn:") else f"arn:aws:ecs:{b.region_name}:{b.account_id}:task/{cluster.name}/{w}"
            failures.append({"arn": arn, "reason": "MISSING"})
        elif t not in tasks:
            tasks.append(t)
    if "TAGS" in (self._get_param("include", []) or []):
        self._include_in_response(ecsr.DESCRIBE_TASKS_TAGS)
    else:
        self._exclude_from_response(ecsr.DESCRIBE_TASKS_TAGS)
    return ActionResult({"tasks": tasks, "failures": failures})


def _stop_task(self: Any) -> ActionResult:
    b = self.ecs_backend
    cluster_str = self._get_param("cluster", "default")
    task_str = self._get_param("task")
    reason = self._get_param("reason") or "Task stopped by user"
    task = _find_task(b, cluster_str, task_str)
    if task is None:
        raise InvalidParameterException("The referenced task was not found.")
    with _runners_lock:
        runner = _runners.get(task.task_arn)
    if runner is None:  # not one of ours (e.g. StartTask on EC2): moto's behaviour
        task = b.stop_task(cluster_str, task_str, reason)
        return ActionResult({"task": task})
    runner.request_stop("UserInitiated", reason)
    return ActionResult({"task": task})


def _list_tasks(self: Any) -> ActionResult:
    b = self.ecs_backend
    desired = self._get_param("desiredStatus") or "RUNNING"
    tasks = b.list_tasks(
        self._get_param("cluster", "default"), self._get_param("containerInstance"), self._get_param("family"),
        self._get_param("startedBy"), self._get_param("serviceName"), desired,
    )
    return _paged(self, "taskArns", [t.task_arn for t in tasks], 100)


def _paged(self: Any, key: str, items: list[Any], default_max: int) -> ActionResult:
    max_results = self._get_int_param("maxResults") or default_max
    token = self._get_param("nextToken")
    start = int(token) if token and str(token).isdigit() else 0
    page = items[start:start + max_results]
    out: dict[str, Any] = {key: page}
    if start + max_results < len(items):
        out["nextToken"] = str(start + max_results)
    return ActionResult(out)


def _list_task_definitions(self: Any) -> ActionResult:
    b = self.ecs_backend
    family = self._get_param("familyPrefix")
    status = self._get_param("status", "ACTIVE") or "ACTIVE"
    tds = [td for fam in b.task_definitions.values() for td in fam.values()
           if (family is None or td.family == family) and td.status == status]
    tds.sort(key=lambda td: (td.family, td.revision), reverse=(self._get_param("sort") == "DESC"))
    return _paged(self, "taskDefinitionArns", [td.arn for td in tds], 100)


_orig_describe_td = ecsm.EC2ContainerServiceBackend.describe_task_definition


def _describe_task_definition(self: Any, task_definition_str: str) -> Any:
    name = task_definition_str.split("/")[-1]
    if ":" not in name:
        active = [r for r, td in self.task_definitions.get(name, {}).items() if td.status == "ACTIVE"]
        if not active:
            raise TaskDefinitionNotFoundException()
        return self.task_definitions[name][max(active)]
    return _orig_describe_td(self, task_definition_str)


def _default_network_control(method: str, body: Any) -> tuple[int, Any]:
    body = body or {}
    return 200, default_network(body.get("account_id") or getattr(_ctx, "default_account", DEFAULT_ACCOUNT),
                                body.get("region") or getattr(_ctx, "default_region", DEFAULT_REGION))


def _tasks_control(method: str, body: Any) -> tuple[int, Any]:
    """GET /_sim/ecs-tasks: the simulator's view of every task it runs (debugging aid)."""
    with _runners_lock:
        runners = list(_runners.values())
    out = []
    for r in runners:
        out.append({
            "taskArn": r.task.task_arn, "family": r.td.family, "lastStatus": r.task.status,
            "containers": [{"name": c.name, "state": c.state, "pid": getattr(c.proc, "pid", None),
                            "exitCode": c.exit_code} for c in r.containers],
        })
    return 200, {"tasks": out}


def install(ctx: Any) -> None:
    global _ctx
    if _ctx is not None:  # already installed in this process
        _ctx = ctx
        return
    B, R = ecsm.EC2ContainerServiceBackend, ecsr.EC2ContainerServiceResponse
    _check_moto(((B, "_calculate_task_resource_requirements"), (B, "run_task"), (B, "_get_cluster"),
                 (B, "list_tasks"), (B, "stop_task"), (R, "run_task"), (R, "describe_tasks"), (R, "stop_task"),
                 (R, "list_tasks"), (R, "list_task_definitions"), (ecsm, "mock_random")), module=__name__)
    _ctx = ctx
    ecsm.EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(
        _calculate_task_resource_requirements)
    ecsm.EC2ContainerServiceBackend.describe_task_definition = _describe_task_definition
    ecsr.EC2ContainerServiceResponse.run_task = _run_task
    ecsr.EC2ContainerServiceResponse.describe_tasks = _describe_tasks
    ecsr.EC2ContainerServiceResponse.stop_task = _stop_task
    ecsr.EC2ContainerServiceResponse.list_tasks = _list_tasks
    ecsr.EC2ContainerServiceResponse.list_task_definitions = _list_task_definitions
    ctx.register_control("default-network", _default_network_control)
    ctx.register_control("ecs-tasks", _tasks_control)
