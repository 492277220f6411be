"""Operation signatures and the log of every AWS call the simulator received.

Signatures (also what fault rules match against, by substring):
  JSON protocol (X-Amz-Target):  SageMaker.X, ECS.X (AmazonEC2ContainerServiceV20141113.X),
                                 Logs.X (Logs_20140328.X), SecretsManager.X, STS.X (json), ...
  query protocol (Action=...):   <Service>.<Action>, e.g. STS.AssumeRoleWithWebIdentity, EC2.DescribeSubnets
  smithy-rpc-v2-cbor:            /service/<Svc>/operation/X -> same names as JSON (CloudWatch.X)
  S3 (REST-XML):                 S3.<METHOD> /<path>, e.g. S3.PUT /bucket/key
  sagemaker-runtime:             SageMakerRuntime.InvokeEndpoint / InvokeEndpointAsync /
                                 InvokeEndpointWithResponseStream
  other REST services:           <Service>.<METHOD> /<path>

Each record: {"op", "t", "status"} plus "principal" (the signing key's IAM user or
assumed-role ARN) and "session_tags" when known (principal()), "fault" when injected.
"""
from __future__ import annotations

import re
import threading
import time
from urllib.parse import parse_qs, unquote

MAX_CALLS = 200_000

_TARGET_PREFIXES = {
    "AmazonEC2ContainerServiceV20141113": "ECS",
    "Logs_20140328": "Logs",
    "SageMaker": "SageMaker",
    "secretsmanager": "SecretsManager",
    "AWSSecurityTokenServiceV20110615": "STS",
    "AmazonSSM": "SSM",
    "AWSCertificateManager": "ACM",
    "DynamoDB_20120810": "DynamoDB",
    "AmazonEC2ContainerRegistry_V20150921": "ECR",
    "Kinesis_20131202": "Kinesis",
    "TrentService": "KMS",
    "GraniteServiceVersion20100801": "CloudWatch",
    "AmazonSQS": "SQS",
    "AWSEvents": "Events",
    "AnyScaleFrontendService": "ApplicationAutoScaling",
}

_SERVICE_NAMES = {
    "sts": "STS", "iam": "IAM", "ec2": "EC2", "sqs": "SQS", "sns": "SNS", "s3": "S3",
    "ecs": "ECS", "logs": "Logs", "sagemaker": "SageMaker", "monitoring": "CloudWatch",
    "cloudformation": "CloudFormation", "elasticloadbalancing": "ELB", "autoscaling": "AutoScaling",
    "secretsmanager": "SecretsManager", "ecr": "ECR", "kms": "KMS", "ssm": "SSM",
    "events": "Events", "application-autoscaling": "ApplicationAutoScaling", "lambda": "Lambda",
}

_STS_ACTIONS = {"AssumeRole", "AssumeRoleWithWebIdentity", "AssumeRoleWithSAML",
                "GetCallerIdentity", "GetSessionToken", "GetFederationToken",
                "DecodeAuthorizationMessage", "GetAccessKeyInfo"}

_RPCV2_RE = re.compile(r"^/service/([^/]+)/operation/([^/]+)$")  # smithy-rpc-v2-cbor
_SCOPE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_QS_SCOPE_RE = re.compile(r"^[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request$")


def signing_scope(environ) -> tuple[str | None, str | None]:
    """(region, service) from the SigV4 Authorization header or presigned query string."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = _SCOPE_RE.search(auth)
    if m:
        return m.group(1), m.group(2)
    qs = environ.get("QUERY_STRING", "")
    if "X-Amz-Credential" in qs:
        cred = parse_qs(qs).get("X-Amz-Credential", [""])[0]
        m = _QS_SCOPE_RE.match(cred)
        if m:
            return m.group(1), m.group(2)
    return None, None


def _pretty_service(svc: str | None) -> str:
    if not svc:
        return "Unknown"
    return _SERVICE_NAMES.get(svc, svc[:1].upper() + svc[1:])


def query_action(environ, form_body: bytes | None) -> str | None:
    qs = environ.get("QUERY_STRING", "")
    if "Action=" in qs:
        v = parse_qs(qs).get("Action")
        if v:
            return v[0]
    if form_body and b"Action=" in form_body:
        v = parse_qs(form_body.decode("utf-8", "replace")).get("Action")
        if v:
            return v[0]
    return None


def signature(environ, form_body: bytes | None) -> tuple[str, str]:
    """(operation signature, protocol) where protocol is json | query | s3 | rest-json."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        prefix, _, op = target.rpartition(".")
        svc = _TARGET_PREFIXES.get(prefix)
        if svc is None:
            svc = prefix.split("_")[0] or "Unknown"
        return f"{svc}.{op}", "json"
    region, svc = signing_scope(environ)
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "") or "/"
    m = _RPCV2_RE.match(path)
    if m and environ.get("HTTP_SMITHY_PROTOCOL", "").startswith("rpc-v2"):
        prefix, op = m.group(1), m.group(2)
        svc_name = _TARGET_PREFIXES.get(prefix) or _pretty_service(svc)
        return f"{svc_name}.{op}", "cbor"
    action = query_action(environ, form_body)
    if action and svc != "s3":
        if svc is None:
            svc_name = "STS" if action in _STS_ACTIONS else "Query"
        else:
            svc_name = _pretty_service(svc)
        return f"{svc_name}.{action}", "query"
    if svc == "sagemaker" or path.startswith("/endpoints/"):
        m = re.match(r"^/endpoints/[^/]+/(invocations|async-invocations|invocations-response-stream)$",
                     path)
        if m:
            op = {"invocations": "InvokeEndpoint", "async-invocations": "InvokeEndpointAsync",
                  "invocations-response-stream": "InvokeEndpointWithResponseStream"}[m.group(1)]
            return f"SageMakerRuntime.{op}", "rest-json"
    if svc in (None, "s3"):
        return f"S3.{method} {unquote(path)}", "s3"
    return f"{_pretty_service(svc)}.{method} {unquote(path)}", "rest-json"


def principal(environ) -> dict:
    """{"principal": ARN} of the access key that signed the request, plus "session_tags" for an
    STS session that has tags; {} for an unsigned request or a key moto does not know (the
    dummy credentials most tests use). iam_access.caller decides who the caller is, so the log
    and the IAM checks agree."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" not in auth:
        return {}
    try:
        from types import SimpleNamespace

        from moto.iam.models import get_account_id_from
        from moto.utilities.utils import get_partition
        from werkzeug.datastructures import EnvironHeaders

        from . import iam_access, oidc  # late: they load moto's IAM and STS

        key_id = auth.partition("Credential=")[2].partition("/")[0]
        region = signing_scope(environ)[0] or "us-east-1"
        account = get_account_id_from(key_id)
        who = iam_access.caller(SimpleNamespace(headers=EnvironHeaders(environ), region=region,
                                                current_account=account))
        if who is None:
            return {}
        tags = oidc.session_tags(account, get_partition(region), key_id)
    except Exception:  # noqa: BLE001 - the log must never fail a request
        return {}
    return {"principal": who[0], **({"session_tags": tags} if tags else {})}


class CallLog:
    def __init__(self):
        self._lock = threading.Lock()
        self._calls: list[dict] = []

    def add(self, op: str, **extra) -> dict:
        rec = {"op": op, "t": time.time(), **extra}
        with self._lock:
            self._calls.append(rec)
            if len(self._calls) > MAX_CALLS:
                del self._calls[: len(self._calls) - MAX_CALLS]
        return rec

    def snapshot(self, match: str | None = None, since: float | None = None) -> list[dict]:
        with self._lock:
            calls = list(self._calls)
        if match:
            calls = [c for c in calls if match in c["op"]]
        if since is not None:
            calls = [c for c in calls if c["t"] >= since]
        return calls

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
