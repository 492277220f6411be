"""SageMaker training jobs that really run.

moto stores a training job and answers Completed at once. This module keeps moto's
FakeTrainingJob as the record (so tags, Search and the like keep working) and drives it from a
background thread per job:

  InProgress/Starting -> Downloading (S3 channels, config files, checkpoints)
      -> Training (ContainerEntrypoint + ContainerArguments as one local process per instance,
         in a private mount namespace with a private /opt/ml; lines to CloudWatch live)
      -> Uploading (model.tar.gz, output.tar.gz, checkpoints) -> Completed
  any non-zero exit -> Failed, FailureReason "AlgorithmError: <content of /opt/ml/output/failure>"
  an execution role with policies in moto's IAM that may not list/read an input channel or write
      the output -> Failed, "ClientError: Data download failed:..." / "ClientError: Artifact
      upload failed:... (AccessDenied: Access Denied)" (iam_access.py)
  StopTrainingJob / MaxRuntimeInSeconds / MaxWaitTimeInSeconds -> Stopping -> Stopped
      (SIGTERM to every process group, SIGKILL after --stop-grace)

Scripted outcomes (kind "training", matched on the job name by "name_contains"):
  {"fail": "capacity"}       Failed before anything runs: "CapacityError: Unable to provision ..."
  {"fail": "internal"}       Failed: "InternalServerError: We encountered an internal error. ..."
      (optional "failure_reason" replaces the text, "after_s" the delay, default 0.2 s)
  {"start_delay_s": N}       stays InProgress/Starting for N seconds

The container environment is PATH, HOME, LANG, AWS_* (the simulator's endpoint, dummy keys), the
job's Environment, TRAINING_JOB_NAME and TRAINING_JOB_ARN, and no SM_* variables: as on SageMaker,
where those come from the training toolkit inside framework images, not from the platform.

Also: StopTrainingJob (moto lacks it), a duplicate name gives ResourceInUse (as on AWS), bad
names give ValidationException,
Environment/RetryStrategy/MetricDefinitions are kept, FinalMetricDataList comes from the
MetricDefinitions applied to the log lines, real TrainingStartTime/EndTime/TimeInSeconds and
BillableTimeInSeconds (ceil(0.3 x training) with managed spot), ListTrainingJobs filters before
paging and sorts.
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import os
import re
import shutil
import threading
import time
import traceback
import uuid

from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow
from moto.sagemaker import models as smm
from moto.sagemaker import responses as smr
from moto.sagemaker.exceptions import ResourceInUseException, ValidationError

from . import events as events_mod
from . import iam_access, s3util
from .common import _check_moto

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TERMINAL = ("Completed", "Failed", "Stopped")
FAILURE_CAP = 1024
CAPACITY_REASON = ("CapacityError: Unable to provision requested ML compute capacity. "
                   "Please retry using a different ML instance type.")
INTERNAL_REASON = "InternalServerError: We encountered an internal error. Please try again."

MESSAGES = {
    "Starting": "Launching requested ML instances",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job stopped: MaxRuntimeInSeconds exceeded",
    "MaxWaitTimeExceeded": "Training job stopped: MaxWaitTimeInSeconds exceeded",
}

CTX = None
RUNS: dict[str, "JobRun"] = {}  # by job ARN


def _arn_parts(arn: str) -> tuple[str, str]:
    """(region, account) of an ARN."""
    parts = arn.split(":")
    return parts[3], parts[4]


# ---------------------------------------------------------------------------------------------
# The per-job runner
# ---------------------------------------------------------------------------------------------
class JobRun:
    def __init__(self, ctx, job):
        self.ctx = ctx
        self.job = job
        self.name = job.training_job_name
        self.arn = job.arn
        self.region, self.account = _arn_parts(job.arn)
        self.created = time.time()
        self.stop_event = threading.Event()
        self.stop_kind = None  # "Stopped" | "MaxRuntimeExceeded" | "MaxWaitTimeExceeded"
        self.procs = []
        self.writers = []
        self.train_started = None  # unix time of TrainingStartTime
        self.metrics = {}  # name -> (value, datetime)
        self.metric_res = []
        for md in (job.algorithm_specification or {}).get("MetricDefinitions") or []:
            self.metric_res.append((md["Name"], re.compile(md["Regex"])))
        self.job_dir = os.path.join(ctx.state_dir, "training",
                                    f"{self.name}-{uuid.uuid4().hex[:8]}")
        self.thread = threading.Thread(target=self._main, name=f"training-{self.name}",
                                       daemon=True)

    # --- status bookkeeping ------------------------------------------------------------
    def transition(self, status: str, secondary: str, message: str | None = None,
                   **fields) -> bool:
        """Record a status change; False (nothing done) for an InProgress step once a stop
        was requested."""
        with self.ctx.lock:
            job = self.job
            if status == "InProgress" and self.stop_kind is not None:
                return False  # a stop was requested meanwhile: stay Stopping
            now = utcnow()
            trans = [dict(t) for t in (job.secondary_status_transitions or [])]
            if trans and "EndTime" not in trans[-1]:
                trans[-1]["EndTime"] = now
            entry = {"Status": secondary, "StartTime": now,
                     "StatusMessage": message or MESSAGES.get(secondary, secondary)}
            if status in TERMINAL:
                entry["EndTime"] = now
            trans.append(entry)
            job.secondary_status_transitions = trans
            job.training_job_status = status
            job.secondary_status = secondary
            job.last_modified_time = now
            for k, v in fields.items():
                setattr(job, k, v)
            events_mod.training_job_changed(job)  # EventBridge "Training Job State Change"
            return True

    def status(self) -> str:
        return self.job.training_job_status

    def _finish(self, status: str, secondary: str, failure_reason: str | None = None,
                message: str | None = None) -> None:
        fields = {}
        end = time.time()
        if failure_reason is not None:
            fields["failure_reason"] = failure_reason
        if self.train_started is not None:
            secs = max(1, int(math.ceil(end - self.train_started)))
            fields["training_end_time"] = utcnow()
            fields["training_time_in_seconds"] = secs
            if self.job.enable_managed_spot_training:
                fields["billable_time_in_seconds"] = max(1, int(math.ceil(0.3 * secs)))
            else:
                fields["billable_time_in_seconds"] = secs
        else:
            fields["training_end_time"] = utcnow()
        keep_alive = int((self.job.resource_config or {}).get("KeepAlivePeriodInSeconds") or 0)
        if keep_alive > 0 and self.train_started is not None:
            fields["warm_pool_status"] = {"Status": "Available"}
            t = threading.Timer(keep_alive, self._warm_pool_ends, args=(keep_alive,))
            t.daemon = True
            t.start()
        self.transition(status, secondary, message, **fields)

    def _warm_pool_ends(self, keep_alive: int) -> None:
        with self.ctx.lock:
            self.job.warm_pool_status = {"Status": "Terminated",
                                         "ResourceRetainedBillableTimeInSeconds": keep_alive}

    # --- stop requests (StopTrainingJob, deadlines) --------------------------------------
    def request_stop(self, kind: str = "Stopped") -> None:
        with self.ctx.lock:
            if self.stop_kind is None:
                self.stop_kind = kind
                if self.job.training_job_status == "InProgress":
                    msg = {"Stopped": MESSAGES["Stopping"]}.get(kind, MESSAGES.get(kind))
                    self.transition("Stopping", "Stopping", msg)
        self.stop_event.set()

    def _deadline_check(self) -> None:
        sc = self.job.stopping_condition or {}
        now = time.time()
        max_wait = sc.get("MaxWaitTimeInSeconds")
        if self.job.enable_managed_spot_training and max_wait and now - self.created > max_wait:
            self.request_stop("MaxWaitTimeExceeded")
            return
        max_rt = sc.get("MaxRuntimeInSeconds")
        if max_rt and self.train_started is not None and now - self.train_started > max_rt:
            self.request_stop("MaxRuntimeExceeded")

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking for stop requests and deadlines. True if stopping."""
        end = time.time() + seconds
        while True:
            self._deadline_check()
            left = end - time.time()
            if self.stop_event.is_set() or left <= 0:
                return self.stop_event.is_set()
            self.stop_event.wait(min(left, 0.1))

    # --- main ----------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._run()
        except Exception as e:  # never leave a job InProgress forever
            traceback.print_exc()
            self.ctx.log(f"training job {self.name}: simulator error {e!r}")
            for p in self.procs:
                p.kill()
            if self.status() not in TERMINAL:
                self._finish("Failed", "Failed", f"InternalServerError: simulator error: {e!r}")
        finally:
            for w in self.writers:
                try:
                    w.close()
                except Exception:
                    pass
            if not os.environ.get("SIM_KEEP_STATE"):
                shutil.rmtree(self.job_dir, ignore_errors=True)

    def _run(self) -> None:
        job = self.job
        outcome = self.ctx.outcomes.take("training", self.name)
        fail = outcome.get("fail")
        if fail:
            if self._wait(float(outcome.get("after_s", 0.2))):
                return self._stopped_without_run()
            reason = outcome.get("failure_reason") or {
                "capacity": CAPACITY_REASON, "internal": INTERNAL_REASON,
            }.get(fail, f"ClientError: {fail}")
            return self._finish("Failed", "Failed", reason)
        if self._wait(float(outcome.get("start_delay_s", 0))):
            return self._stopped_without_run()

        spec = job.algorithm_specification or {}
        entry = spec.get("ContainerEntrypoint") or []
        args = spec.get("ContainerArguments") or []
        if not entry:
            return self._finish(
                "Failed", "Failed",
                "ClientError: the simulator runs AlgorithmSpecification.ContainerEntrypoint "
                "(+ ContainerArguments) as a local process and this job has no "
                f"ContainerEntrypoint (image {spec.get('TrainingImage')!r} is never run)")

        # --- Downloading -------------------------------------------------------------------
        started = time.time()
        if not self.transition("InProgress", "Downloading", training_start_time=utcnow()):
            return self._stopped_without_run()
        self.train_started = started
        n = int((job.resource_config or {}).get("InstanceCount") or 1)
        hosts = [f"algo-{i + 1}" for i in range(n)]
        ckpt = job.checkpoint_config or {}
        ckpt_local = ckpt.get("LocalPath") or "/opt/ml/checkpoints"
        channels = job.input_data_config or []
        layouts = []
        try:
            # Only when the execution role has policies in moto's IAM (see iam_access).
            iam_access.check_training_input(
                self.account, job.role_arn, channels,
                lambda uri: s3util.list_keys(uri, account_id=self.account),
                lambda uri: s3util.manifest_uris(uri, account_id=self.account))
        except iam_access.AccessDenied as e:
            return self._finish("Failed", "Failed", str(e))
        try:
            for i, host in enumerate(hosts):
                layouts.append(self._prepare_host(i, host, hosts, channels, ckpt, ckpt_local))
                if self.stop_event.is_set():
                    break
        except s3util.S3Error as e:
            return self._finish("Failed", "Failed", f"ClientError: {e}")
        if self._wait(0):
            return self._stopped_without_run()

        # --- Training ----------------------------------------------------------------------
        self.transition("InProgress", "Training")
        if self.stop_event.is_set():
            return self._stopped_without_run()
        argv = [str(a) for a in list(entry) + list(args)]
        epoch = int(time.time())
        for i, host in enumerate(hosts):
            ml_dir, ckpt_dir = layouts[i]
            mounts = {"/opt/ml": ml_dir}
            if ckpt_dir:
                mounts[ckpt_local] = ckpt_dir
            w = self.ctx.cwlogs.writer(LOG_GROUP, f"{self.name}/{host}-{epoch}",
                                       region=self.region, account_id=self.account)
            self.writers.append(w)
            env = self._env()
            p = self.ctx.runtime.launch(argv, env, name=f"{self.name}/{host}", mounts=mounts,
                                        hide=self.ctx.hide_paths,
                                        on_line=self._on_line_fn(w, i), kind="training")
            self.procs.append(p)

        codes: list = [None] * len(self.procs)
        failed_host = None
        while True:
            for i, p in enumerate(self.procs):
                if codes[i] is None:
                    codes[i] = p.poll()
                    if codes[i] not in (None, 0) and failed_host is None:
                        failed_host = i
            if all(c is not None for c in codes):
                break
            self._deadline_check()
            if self.stop_event.is_set() or failed_host is not None:
                break
            time.sleep(0.05)

        if self.stop_event.is_set() or failed_host is not None:
            for p in self.procs:
                if p.alive():
                    p.terminate(self.ctx.stop_grace)
        for i, p in enumerate(self.procs):
            codes[i] = p.wait_leader()
            # The "instance" goes away with the job: nothing it started may outlive it.
            p.kill()
            p.output_done(2.0)
        for w in self.writers:
            w.flush()

        ml1 = layouts[0][0]
        if self.stop_event.is_set():
            self._upload_best_effort(layouts, ml1)
            return self._finish("Stopped", self.stop_kind or "Stopped")
        if failed_host is not None or any(c != 0 for c in codes):
            if failed_host is None:
                failed_host = next(i for i, c in enumerate(codes) if c != 0)
            reason = self._failure_reason(layouts, failed_host, codes[failed_host])
            self._upload_best_effort(layouts, ml1)
            return self._finish("Failed", "Failed", reason)

        # --- Uploading -----------------------------------------------------------------------
        self.transition("InProgress", "Uploading")
        try:
            self._upload_outputs(layouts, ml1, always=True)
        except iam_access.AccessDenied as e:
            return self._finish("Failed", "Failed", str(e))
        except Exception as e:
            return self._finish("Failed", "Failed",
                                f"ClientError: could not upload the training output: {e}")
        if self.stop_event.is_set():
            return self._finish("Stopped", self.stop_kind or "Stopped")
        with self.ctx.lock:
            job.model_artifacts = {"S3ModelArtifacts": self._out_uri("model.tar.gz")}
        self._finish("Completed", "Completed")

    def _stopped_without_run(self) -> None:
        self._finish("Stopped", self.stop_kind or "Stopped")

    # --- helpers -------------------------------------------------------------------------
    def _prepare_host(self, i, host, hosts, channels, ckpt, ckpt_local):
        base = os.path.join(self.job_dir, host)
        ml = os.path.join(base, "ml")
        for d in ("input/config", "input/data", "model", "output/data", "code"):
            os.makedirs(os.path.join(ml, d), exist_ok=True)
        inputcfg = {}
        for ch in channels:
            cname = ch["ChannelName"]
            src = (ch.get("DataSource") or {}).get("S3DataSource") or {}
            dest = os.path.join(ml, "input", "data", cname)
            os.makedirs(dest, exist_ok=True)
            dist = src.get("S3DataDistributionType", "FullyReplicated")
            inputcfg[cname] = {
                "TrainingInputMode": ch.get("InputMode") or
                (self.job.algorithm_specification or {}).get("TrainingInputMode", "File"),
                "S3DistributionType": dist,
                "RecordWrapperType": ch.get("RecordWrapperType", "None"),
            }
            if ch.get("ContentType"):
                inputcfg[cname]["ContentType"] = ch["ContentType"]
            uri = src.get("S3Uri")
            if uri:
                shard = (i, len(hosts)) if dist == "ShardedByS3Key" else None
                if src.get("S3DataType") == "ManifestFile":
                    count = s3util.download_manifest(uri, dest, account_id=self.account,
                                                     shard=shard)
                else:
                    count = s3util.download_prefix(uri, dest, account_id=self.account,
                                                   shard=shard)
                if count == 0 and shard is None:
                    raise s3util.S3Error(f"No S3 objects found under S3 URL \"{uri}\" given "
                                         f"in input data source. Please ensure that the bucket "
                                         f"exists in the selected region ({self.region}), that "
                                         f"objects exist under that S3 prefix, and that the role "
                                         f"\"{self.job.role_arn}\" has \"s3:ListBucket\" "
                                         f"permissions on bucket \"{uri[5:].split('/')[0]}\".")
        cfg = os.path.join(ml, "input", "config")
        with open(os.path.join(cfg, "hyperparameters.json"), "w") as f:
            json.dump(self.job.hyper_parameters or {}, f)
        itype = (self.job.resource_config or {}).get("InstanceType", "ml.m5.large")
        with open(os.path.join(cfg, "resourceconfig.json"), "w") as f:
            # The shape SageMaker writes, instance_groups (with its own "hosts") included.
            json.dump({"current_host": host, "current_instance_type": itype,
                       "current_group_name": "homogeneousCluster", "hosts": hosts,
                       "instance_groups": [{"instance_group_name": "homogeneousCluster",
                                            "instance_type": itype, "hosts": hosts}],
                       "network_interface_name": "eth0"}, f)
        with open(os.path.join(cfg, "inputdataconfig.json"), "w") as f:
            json.dump(inputcfg, f)

        ckpt_dir = None
        if ckpt_local == "/opt/ml" or ckpt_local.startswith("/opt/ml/"):
            local = os.path.join(ml, ckpt_local[len("/opt/ml/"):]) if ckpt_local != "/opt/ml" \
                else ml
        else:
            ckpt_dir = local = os.path.join(base, "checkpoints")
        os.makedirs(local, exist_ok=True)
        if ckpt.get("S3Uri"):
            try:
                s3util.download_prefix(ckpt["S3Uri"], local, account_id=self.account)
            except s3util.S3Error as e:
                if "NoSuchBucket" in str(e):
                    raise
        return ml, ckpt_dir

    def _ckpt_host_dir(self, layout) -> str:
        ml, ckpt_dir = layout
        if ckpt_dir:
            return ckpt_dir
        local = (self.job.checkpoint_config or {}).get("LocalPath") or "/opt/ml/checkpoints"
        return ml if local == "/opt/ml" else os.path.join(ml, local[len("/opt/ml/"):])

    def _env(self) -> dict:
        """The container's environment. Like SageMaker: no SM_* variables (those come from the
        training toolkit inside framework images, which the executor's bootstrap replaces)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "AWS_ENDPOINT_URL": self.ctx.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        env.update({str(k): str(v) for k, v in (self.job.environment or {}).items()})
        env.update({
            "TRAINING_JOB_NAME": self.name,
            "TRAINING_JOB_ARN": self.arn,
        })
        return env

    def _on_line_fn(self, writer, host_index):
        def on_line(line: str) -> None:
            writer.write(line)
            if self.metric_res:
                self._match_metrics(line)
        return on_line

    def _match_metrics(self, line: str) -> None:
        changed = False
        for name, rx in self.metric_res:
            m = rx.search(line)
            if not m:
                continue
            try:
                raw = m.group(1) if rx.groups >= 1 else m.group(0)
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if math.isnan(value) or math.isinf(value):
                continue
            self.metrics[name] = (value, utcnow())
            changed = True
        if changed:
            with self.ctx.lock:
                self.job.final_metric_data_list = [
                    {"MetricName": n, "Value": v, "Timestamp": ts}
                    for n, (v, ts) in self.metrics.items()]

    def _failure_reason(self, layouts, failed_host, code) -> str:
        order = [failed_host] + [i for i in range(len(layouts)) if i != failed_host]
        for i in order:
            path = os.path.join(layouts[i][0], "output", "failure")
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    text = f.read(64 * 1024).decode("utf-8", "replace").strip()
                if text:
                    return "AlgorithmError: " + text[:FAILURE_CAP]
        return f"AlgorithmError: process exited with code {code}"

    def _out_uri(self, leaf: str) -> str:
        out = (self.job.output_data_config or {}).get("S3OutputPath", "")
        return s3util.join(out, self.name, "output", leaf)

    def _upload_outputs(self, layouts, ml1, always: bool) -> None:
        tmp = self.job_dir
        model = os.path.join(ml1, "model")
        data = os.path.join(ml1, "output", "data")
        uploads = [(d, self._out_uri(leaf)) for d, leaf in
                   ((model, "model.tar.gz"), (data, "output.tar.gz")) if always or _non_empty(d)]
        # Only when the execution role has policies in moto's IAM (see iam_access); a denial
        # uploads nothing.
        iam_access.check_training_output(self.account, self.job.role_arn,
                                         [uri for _, uri in uploads])
        # SageMaker encrypts what it writes with OutputDataConfig.KmsKeyId when one is given.
        kms = (self.job.output_data_config or {}).get("KmsKeyId") or None
        for d, uri in uploads:
            s3util.upload_dir_tar(d, uri, account_id=self.account, tmp_dir=tmp, kms_key_id=kms)
        ck_uri = (self.job.checkpoint_config or {}).get("S3Uri")
        if ck_uri:
            for layout in layouts:
                d = self._ckpt_host_dir(layout)
                if os.path.isdir(d):
                    s3util.upload_dir(d, ck_uri, account_id=self.account)

    def _upload_best_effort(self, layouts, ml1) -> None:
        try:
            self._upload_outputs(layouts, ml1, always=False)
        except Exception as e:
            self.ctx.log(f"training job {self.name}: best-effort upload failed: {e}")


def _non_empty(d: str) -> bool:
    try:
        return bool(os.listdir(d))
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# moto patches
# ---------------------------------------------------------------------------------------------
def _validation(msg: str):
    return ValidationError(message=msg)


def _create_training_job(self):
    backend = self.sagemaker_backend
    name = self._get_param("TrainingJobName") or ""
    if not NAME_RE.match(name):
        raise _validation(
            f"1 validation error detected: Value '{name}' at 'trainingJobName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: "
            "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
    if name in backend.training_jobs:
        # AWS answers a duplicate name with ResourceInUse, not ValidationException.
        raise ResourceInUseException(
            "Training job names must be unique within an AWS account and region, and a training "
            f"job with this name already exists ({backend.training_jobs[name].arn})")
    spec = self._get_param("AlgorithmSpecification") or {}
    metric_defs = copy.deepcopy(spec.get("MetricDefinitions"))
    for md in metric_defs or []:
        try:
            re.compile(md.get("Regex", ""))
        except re.error as e:
            raise _validation(f"Invalid regex {md.get('Regex')!r} for metric "
                              f"{md.get('Name')!r}: {e}")
    stopping = self._get_param("StoppingCondition") or {}
    spot = bool(self._get_param("EnableManagedSpotTraining", False))
    if spot:
        mw, mr = stopping.get("MaxWaitTimeInSeconds"), stopping.get("MaxRuntimeInSeconds")
        if not mw or (mr and mw < mr):
            raise _validation("Invalid MaxWaitTimeInSeconds. It must be present and be greater "
                              "than or equal to MaxRuntimeInSeconds")
    elif stopping.get("MaxWaitTimeInSeconds"):
        raise _validation("MaxWaitTimeInSeconds is only valid with EnableManagedSpotTraining")

    result = _orig["create"](self)
    job = backend.training_jobs[name]
    with CTX.lock:
        if metric_defs:
            job.algorithm_specification["MetricDefinitions"] = metric_defs
        else:
            job.algorithm_specification.pop("MetricDefinitions", None)
        job.environment = self._get_param("Environment")
        job.retry_strategy = self._get_param("RetryStrategy")
        job.training_job_status = "InProgress"
        job.secondary_status = "Starting"
        job.training_start_time = None
        job.training_end_time = None
        job.final_metric_data_list = None
        job.failure_reason = None
        job.training_time_in_seconds = None
        job.billable_time_in_seconds = None
        job.model_artifacts = None
        job.warm_pool_status = None
        job.secondary_status_transitions = [
            {"Status": "Starting", "StartTime": job.creation_time,
             "StatusMessage": MESSAGES["Starting"]}]
        run = JobRun(CTX, job)
        RUNS[job.arn] = run
        events_mod.training_job_changed(job)
    run.thread.start()
    return result


def _describe_training_job(self):
    with CTX.lock:
        return _orig["describe"](self)


def _stop_training_job(self):
    backend = self.sagemaker_backend
    name = self._get_param("TrainingJobName")
    job = backend.training_jobs.get(name)
    if job is None:
        raise _validation("Requested resource not found.")
    run = RUNS.get(job.arn)
    with CTX.lock:
        status = job.training_job_status
        if status != "InProgress" or run is None:
            raise _validation("The request was rejected because the training job is in status "
                              f"{status}.")
        run.request_stop("Stopped")
    return EmptyResult()


def _response_object(self):
    with CTX.lock:
        r = _orig["response_object"](self)
        if self.training_job_status != "Completed":
            r.pop("ModelArtifacts", None)
        return r


def _naive_utc(v):
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return datetime.datetime.utcfromtimestamp(v)
    if isinstance(v, str):
        try:
            return datetime.datetime.utcfromtimestamp(float(v))
        except ValueError:
            v = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
    if v.tzinfo is not None:
        v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return v


def _list_training_jobs(self):
    """Filters, then sorts, then pages (moto pages first and ignores the sort)."""
    p = self._get_param
    sort_by = p("SortBy", "CreationTime")
    sort_order = p("SortOrder", "Ascending")
    if sort_by not in ("Name", "CreationTime", "Status"):
        raise _validation(f"Value '{sort_by}' at 'sortBy' failed to satisfy constraint: Member "
                          "must satisfy enum value set: [Name, CreationTime, Status]")
    if sort_order not in ("Ascending", "Descending"):
        raise _validation(f"Value '{sort_order}' at 'sortOrder' failed to satisfy constraint: "
                          "Member must satisfy enum value set: [Ascending, Descending]")
    max_results = self._get_int_param("MaxResults") or 10
    if not 1 <= max_results <= 100:
        raise _validation(f"Value '{max_results}' at 'maxResults' failed to satisfy constraint: "
                          "Member must have value less than or equal to 100")
    name_contains = p("NameContains")
    status = p("StatusEquals")
    ca, cb = _naive_utc(p("CreationTimeAfter")), _naive_utc(p("CreationTimeBefore"))
    la, lb = _naive_utc(p("LastModifiedTimeAfter")), _naive_utc(p("LastModifiedTimeBefore"))
    with CTX.lock:
        jobs = list(self.sagemaker_backend.training_jobs.values())
        out = []
        for j in jobs:
            if name_contains and name_contains not in j.training_job_name:
                continue
            if status and j.training_job_status != status:
                continue
            if ca and not j.creation_time > ca:
                continue
            if cb and not j.creation_time < cb:
                continue
            if la and not j.last_modified_time > la:
                continue
            if lb and not j.last_modified_time < lb:
                continue
            out.append(j)
        key = {"Name": lambda j: j.training_job_name,
               "CreationTime": lambda j: j.creation_time,
               "Status": lambda j: j.training_job_status}[sort_by]
        out.sort(key=key, reverse=(sort_order == "Descending"))
        token = p("NextToken")
        start = 0
        if token:
            try:
                start = int(token)
                if start < 0 or start > len(out):
                    raise ValueError
            except ValueError:
                raise _validation(f'Invalid pagination token because "{token}".')
        page = out[start:start + max_results]
        summaries = []
        for j in page:
            s = {"TrainingJobName": j.training_job_name, "TrainingJobArn": j.arn,
                 "CreationTime": j.creation_time, "LastModifiedTime": j.last_modified_time,
                 "TrainingJobStatus": j.training_job_status,
                 "SecondaryStatus": j.secondary_status}
            if j.training_end_time is not None:
                s["TrainingEndTime"] = j.training_end_time
            summaries.append(s)
    resp = {"TrainingJobSummaries": summaries}
    if start + max_results < len(out):
        resp["NextToken"] = str(start + max_results)
    return ActionResult(resp)


_orig: dict = {}


def install(ctx) -> None:
    global CTX
    CTX = ctx
    if _orig:
        return  # already patched (install called twice in one process)
    # Fail loudly if moto moved: these are the patch points this module relies on.
    _check_moto(((smr.SageMakerResponse, "create_training_job"),
                 (smr.SageMakerResponse, "describe_training_job"),
                 (smr.SageMakerResponse, "list_training_jobs"),
                 (smm.FakeTrainingJob, "response_object")),
                ((smr.SageMakerResponse, "stop_training_job"),), module=__name__)
    _orig["create"] = smr.SageMakerResponse.create_training_job
    _orig["describe"] = smr.SageMakerResponse.describe_training_job
    _orig["response_object"] = smm.FakeTrainingJob.response_object.fget
    smr.SageMakerResponse.create_training_job = _create_training_job
    smr.SageMakerResponse.describe_training_job = _describe_training_job
    smr.SageMakerResponse.stop_training_job = _stop_training_job
    smr.SageMakerResponse.list_training_jobs = _list_training_jobs
    smm.FakeTrainingJob.response_object = property(_response_object)
