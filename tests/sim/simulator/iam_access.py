"""IAM where it matters to the executor, evaluated only for principals whose policies are loaded.

moto serves IAM (roles, users, inline and managed policies) but never checks a request against
it unless its global authentication mode is on, which would refuse the dummy credentials every
test uses. This module checks two things, and only when the principal has at least one policy
in moto's IAM (inline, attached managed, or through a group for a user), so a principal that is
unknown or has no policies behaves exactly as before:

  * iam:PassRole of the caller: CreateTrainingJob (RoleArn), CreateModel (ExecutionRoleArn) and
    RunTask (the task definition's taskRoleArn and executionRoleArn, or their overrides) are
    refused with AccessDeniedException, as AWS does, when the caller's policies do not allow
    iam:PassRole on the role ARN (context key iam:PassedToService = sagemaker.amazonaws.com or
    ecs-tasks.amazonaws.com). The caller is the IAM user owning the request's access key, or
    the role of an STS session (AssumeRole / AssumeRoleWithWebIdentity credentials); moto's own
    `create_access_key` finds it from the Authorization header.
  * S3 access of a training job's execution role (training.py asks): s3:ListBucket on each
    S3Prefix input channel's bucket (context key s3:prefix), s3:GetObject on each object under
    it (a ManifestFile channel: s3:GetObject on the manifest and on each object it names, no
    listing), and s3:PutObject on model.tar.gz and output.tar.gz under S3OutputPath. A denial fails
    the job with SageMaker's FailureReason shapes, "ClientError: Data download failed:..." or
    "ClientError: Artifact upload failed:... (AccessDenied: Access Denied)".

Evaluation reuses moto's IAMPolicy (Action/NotAction and Resource wildcards; an explicit Deny
wins over any Allow; nothing allowed is an implicit deny). Two of its gaps are closed here
rather than by a second evaluator: Condition blocks (moto ignores a missing context key and
turns an unmet condition of an Allow into a Deny) are decided by this module, and NotResource
(which moto ignores) is applied before moto sees the statement. Actions compare
case-insensitively, as in IAM.

Not evaluated: permissions boundaries, SCPs, session policies, resource policies (bucket, KMS
key), policy variables, the `?` wildcard, and condition operators other than the String*/Arn*
ones below (an Allow with another operator never applies, a Deny with one always does, so an
unknown condition can only make the simulator stricter than AWS).
"""
from __future__ import annotations

import copy
import fnmatch
import json
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.iam import access_control as ac
from moto.iam.models import iam_backends
from moto.utilities.utils import get_partition

from .common import _check_moto

SAGEMAKER = "sagemaker.amazonaws.com"
ECS_TASKS = "ecs-tasks.amazonaws.com"
S3_DENIED = "(AccessDenied: Access Denied)"

ALLOWED, DENIED, IMPLICIT = "allowed", "explicitly denied", "implicitly denied"


class AccessDenied(Exception):
    """A training job's execution role may not do what the job needs; str() is the job's
    FailureReason."""


# --------------------------------------------------------------------------------------------
# Policies of a principal
# --------------------------------------------------------------------------------------------
def _document(policy: Any) -> dict:
    """The JSON of an inline policy (text) or of a managed policy's default version."""
    if isinstance(policy, str):
        return json.loads(policy)
    version = next(v for v in policy.versions if v.is_default)
    return json.loads(version.document)


def role_policies(account: str, role_arn: str | None, partition: str = "aws") -> list[dict]:
    """Every policy document of the role (inline and attached); [] when the role is unknown."""
    if not role_arn:
        return []
    backend = iam_backends[account][partition]
    try:
        role = backend.get_role_by_arn(role_arn)
    except Exception:  # moto's NotFoundException: a role the test never created
        return []
    return [_document(d) for d in role.policies.values()] + \
        [_document(p) for p in role.managed_policies.values()]


def caller(response: Any) -> tuple[str, list[dict]] | None:
    """(ARN, policy documents) of the principal that signed this request, or None when moto does
    not know its access key (the dummy credentials of most tests)."""
    auth = response.headers.get("Authorization", "")
    if "Credential=" not in auth:
        return None
    key_id = auth.partition("Credential=")[2].partition("/")[0]
    try:
        key = ac.create_access_key(account_id=response.current_account,
                                   partition=get_partition(response.region),
                                   access_key_id=key_id, headers=response.headers)
    except ac.CreateAccessKeyFailure:
        return None
    try:
        found = key.collect_policies()
    except Exception:  # moto's NotFoundException: a session of a role IAM does not hold
        return None
    return key.arn, [_document(p if isinstance(p, str) or hasattr(p, "versions")
                               else p["policy_document"]) for p in found]


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def _values(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


_OPERATORS = {
    "StringEquals": lambda want, got: got == want,
    "StringNotEquals": lambda want, got: got != want,
    "StringEqualsIgnoreCase": lambda want, got: got.lower() == want.lower(),
    "StringNotEqualsIgnoreCase": lambda want, got: got.lower() != want.lower(),
    "StringLike": lambda want, got: fnmatch.fnmatchcase(got, want),
    "StringNotLike": lambda want, got: not fnmatch.fnmatchcase(got, want),
    "ArnEquals": lambda want, got: got == want,
    "ArnNotEquals": lambda want, got: got != want,
    "ArnLike": lambda want, got: fnmatch.fnmatchcase(got, want),
    "ArnNotLike": lambda want, got: not fnmatch.fnmatchcase(got, want),
}


def _condition_holds(condition: dict, context: dict[str, str], effect: str) -> bool:
    """Whether a statement's Condition block holds for the request's context keys (every
    operator and key must hold). A key the request lacks fails the condition, except with
    ...IfExists or a negated operator (StringNotEquals, ...), where it holds, as in IAM."""
    for op, keys in condition.items():
        base = op[:-len("IfExists")] if op.endswith("IfExists") else op
        test = _OPERATORS.get(base)
        if test is None:
            return effect == "Deny"  # unknown operator: only ever stricter than AWS
        negated = "Not" in base
        for key, wanted in keys.items():
            got = next((v for k, v in context.items() if k.lower() == key.lower()), None)
            if got is None:
                if op.endswith("IfExists") or negated:
                    continue
                return False
            hits = [test(w, got) for w in _values(wanted)]
            if not (all(hits) if negated else any(hits)):
                return False
    return True


def _applicable(statement: dict, resource: str, context: dict[str, str]) -> dict | None:
    """The statement as moto's IAMPolicyStatement can judge it (conditions decided, NotResource
    applied, actions lower-cased), or None when it does not apply to this request."""
    st = copy.deepcopy(statement)
    if "Condition" in st:
        if not _condition_holds(st.pop("Condition"), context, st.get("Effect", "")):
            return None
    if "NotResource" in st:
        if ac.IAMPolicyStatement(st)._check_element_matches("NotResource", resource):
            return None
        del st["NotResource"]
        st["Resource"] = "*"
    if not st.get("Resource"):
        # moto reads a statement without Resource as a trust policy's, which always applies;
        # an identity policy must name its resources, so such a statement grants nothing.
        return None
    for k in ("Action", "NotAction"):
        if k in st:
            st[k] = [a.lower() for a in _values(st[k])]
    return st


def decide(policies: list[dict], action: str, resource: str,
           context: dict[str, str] | None = None) -> str:
    """ALLOWED, DENIED (an explicit Deny) or IMPLICIT (nothing allows it)."""
    result = IMPLICIT
    for doc in policies:
        statements = doc.get("Statement") or []
        if isinstance(statements, dict):
            statements = [statements]
        kept = [s for s in (_applicable(s, resource, context or {}) for s in statements) if s]
        verdict = ac.IAMPolicy(json.dumps({"Statement": kept})).is_action_permitted(
            action.lower(), resource)
        if verdict == ac.PermissionResult.DENIED:
            return DENIED
        if verdict == ac.PermissionResult.PERMITTED:
            result = ALLOWED
    return result


# --------------------------------------------------------------------------------------------
# iam:PassRole of the caller
# --------------------------------------------------------------------------------------------
def check_pass_role(response: Any, role_arns: list[str | None], service: str) -> None:
    """Raise AccessDeniedException unless the request's caller may pass every role to
    `service`; nothing when the caller is unknown or has no policies."""
    who = caller(response)
    if who is None or not who[1]:
        return
    arn, policies = who
    for role in role_arns:
        if not role:
            continue
        verdict = decide(policies, "iam:PassRole", role, {"iam:PassedToService": service})
        if verdict == ALLOWED:
            continue
        why = ("with an explicit deny in an identity-based policy" if verdict == DENIED
               else "because no identity-based policy allows the iam:PassRole action")
        raise JsonRESTError("AccessDeniedException",
                            f"User: {arn} is not authorized to perform: iam:PassRole on resource: "
                            f"{role} {why}")


def _create_training_job(self):
    check_pass_role(self, [self._get_param("RoleArn")], SAGEMAKER)
    return _orig["create_training_job"](self)


def _create_model(self):
    check_pass_role(self, [self._get_param("ExecutionRoleArn")], SAGEMAKER)
    return _orig["create_model"](self)


def _run_task(self):
    overrides = self._get_param("overrides") or {}
    try:
        td = self.ecs_backend.describe_task_definition(self._get_param("taskDefinition"))
    except Exception:
        td = None  # the original handler reports the missing task definition
    roles = [overrides.get("taskRoleArn") or getattr(td, "task_role_arn", None),
             overrides.get("executionRoleArn") or getattr(td, "execution_role_arn", None)]
    check_pass_role(self, roles, ECS_TASKS)
    return _orig["run_task"](self)


# --------------------------------------------------------------------------------------------
# S3 access of a training job's execution role
# --------------------------------------------------------------------------------------------
def _s3_allowed(policies: list[dict], action: str, bucket: str, key: str | None = None,
                context: dict[str, str] | None = None) -> bool:
    resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")
    return decide(policies, action, resource, context) == ALLOWED


def _require_object_read(policies, bucket: str, key: str) -> None:
    """Raise AccessDenied, as SageMaker's download does, when the role may not read the object."""
    if not _s3_allowed(policies, "s3:GetObject", bucket, key):
        raise AccessDenied(f"ClientError: Data download failed:Unable to download object "
                           f"s3://{bucket}/{key} {S3_DENIED}")


def check_manifest_input(policies, uri: str, manifest_entries) -> None:
    """Raise AccessDenied when the role may not read a ManifestFile channel's manifest or an
    object it names."""
    bucket, _, key = uri[5:].partition("/")
    if not _s3_allowed(policies, "s3:GetObject", bucket, key):
        raise AccessDenied(f"ClientError: Data download failed:Unable to download manifest "
                           f"{uri} {S3_DENIED}")
    try:
        entries = manifest_entries(uri)
    except Exception:
        return  # an unreadable manifest fails the download itself, with its own reason
    for _rel, obj in entries:
        b, _, k = obj[5:].partition("/")
        _require_object_read(policies, b, k)


def check_training_input(account: str, role_arn: str | None, channels: list[dict],
                         list_keys, manifest_entries=None) -> None:
    """Raise AccessDenied when the role may not list an S3Prefix channel's prefix or read an
    object under it, or read a ManifestFile channel's manifest or an object it names.
    list_keys(uri) lists the keys (s3util.list_keys); manifest_entries(uri) reads a manifest
    (s3util.manifest_uris)."""
    policies = role_policies(account, role_arn)
    if not policies:
        return
    for ch in channels:
        src = (ch.get("DataSource") or {}).get("S3DataSource") or {}
        uri = src.get("S3Uri")
        if uri and src.get("S3DataType") == "ManifestFile":
            # The manifest and each object it names are read; nothing is listed.
            check_manifest_input(policies, uri, manifest_entries)
            continue
        if not uri or src.get("S3DataType", "S3Prefix") != "S3Prefix":
            continue
        bucket, _, prefix = uri[5:].partition("/")
        if not _s3_allowed(policies, "s3:ListBucket", bucket, context={"s3:prefix": prefix}):
            raise AccessDenied(f"ClientError: Data download failed:Unable to list objects under "
                               f"{uri} {S3_DENIED}")
        try:
            keys = list_keys(uri)
        except Exception:
            continue  # a missing bucket fails the download itself, with its own reason
        for key in keys:
            if not key.endswith("/"):
                _require_object_read(policies, bucket, key)


def check_training_output(account: str, role_arn: str | None, uris: list[str]) -> None:
    """Raise AccessDenied when the role may not put one of the output objects."""
    policies = role_policies(account, role_arn)
    if not policies:
        return
    for uri in uris:
        bucket, _, key = uri[5:].partition("/")
        if not _s3_allowed(policies, "s3:PutObject", bucket, key):
            raise AccessDenied(f"ClientError: Artifact upload failed:Unable to upload object "
                               f"{uri} {S3_DENIED}")


_orig: dict = {}


def install(ctx) -> None:
    """Wraps whatever CreateTrainingJob, CreateModel and RunTask handlers the modules before
    this one installed (it runs last), so the PassRole check comes before anything is made."""
    if _orig:
        return
    from moto.ecs import responses as ecsr
    from moto.sagemaker import responses as smr

    _check_moto(((ac, "create_access_key"), (ac, "CreateAccessKeyFailure"), (ac, "IAMPolicy"),
                 (ac, "IAMPolicyStatement"), (ac.IAMPolicyStatement, "_check_element_matches"),
                 (ac.PermissionResult, "DENIED"), (smr.SageMakerResponse, "create_training_job"),
                 (smr.SageMakerResponse, "create_model"),
                 (ecsr.EC2ContainerServiceResponse, "run_task")), module=__name__)
    _orig["create_training_job"] = smr.SageMakerResponse.create_training_job
    _orig["create_model"] = smr.SageMakerResponse.create_model
    _orig["run_task"] = ecsr.EC2ContainerServiceResponse.run_task
    smr.SageMakerResponse.create_training_job = _create_training_job
    smr.SageMakerResponse.create_model = _create_model
    ecsr.EC2ContainerServiceResponse.run_task = _run_task
