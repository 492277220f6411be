"""GitLab-like OIDC issuer, and STS web identity and role chaining checked as AWS checks them.

Owns:
  * an OIDC issuer standing in for a GitLab instance: one RSA key generated at start-up,
        GET  /_sim/oidc/.well-known/openid-configuration   discovery document
        GET  /_sim/oidc/jwks                               {"keys": [<RSA JWK, kid, RS256>]}
        POST /_sim/oidc/token  {<claim>: value, ..., "expires_in": S}  -> {"token": "<JWT>",
                                                            "claims": {...}, "kid": "..."}
    The issuer URL (`iss`) is `<simulator endpoint>/_sim/oidc`; its IAM provider URL is that
    without the scheme. Claims default to what a GitLab CI job's `id_tokens` carries (ids and
    booleans as strings, as GitLab sends them); any claim can be overridden, `null` drops it.
  * STS AssumeRoleWithWebIdentity (moto accepts any token for any role): token parsed,
    `iss` registered as an IAM OIDC provider in the role's account, RS256 signature checked
    against this issuer's key (other issuers cannot be verified here and are refused), `exp`,
    `aud` among the provider's client ids, the role's trust policy (Federated provider,
    sts:AssumeRoleWithWebIdentity, conditions on `<provider>:sub` / `:aud`), RoleSessionName
    and DurationSeconds (900 .. the role's MaxSessionDuration). Errors carry AWS's codes.
  * STS AssumeRole from a principal the simulator knows (an IAM user with keys, or an STS
    session; iam_access.caller decides): the role's trust policy must allow sts:AssumeRole for
    it, and sts:TagSession when the new session gets tags (passed, or transitive ones
    inherited in a role chain); a chained session is capped at one hour. Callers with the
    dummy credentials most tests use are unknown: for them only the parameters are checked,
    as before (moto's behaviour).
  * Session records: tags, transitive keys, how the session was made, kept on moto's
    AssumedRole (so moto's reset clears them); GET /_sim/oidc/sessions lists them, and the
    call log (calls.py) shows a session's tags with its principal.

  * Expiry of issued sessions, as AWS enforces it: a request signed with the access key of an
    STS session past its Expiration is refused with 400 ExpiredToken (server.py asks
    `expired`). Real sessions last at least 900 s; so that a test can watch a renewal without
    waiting that long, POST /_sim/oidc/session-lifetime {"seconds": N} caps the lifetime of the
    sessions issued from then on (the Expiration STS returns says so); {"seconds": null} or a
    reset lifts the cap.

Not modelled (see tests/README.md, Fidelity): TLS thumbprints and fetching a remote JWKS
(only this issuer's key verifies), JWKS caching and key rotation, `nbf`/`iat` checks, session
tags from the token's `https://aws.amazon.com/tags` claim, session policies, SourceIdentity.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import time
import uuid
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from moto.core.exceptions import ServiceException, _RESTError
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.iam.models import iam_backends
from moto.sts import responses as stsr
from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition

from . import iam_access
from .common import _check_moto

WEB_IDENTITY = "sts:AssumeRoleWithWebIdentity"
# Java's \w (what the STS model's pattern means), not Python's Unicode one.
SESSION_NAME_RE = re.compile(r"[A-Za-z0-9_+=,.@-]*")
CHAIN_LIMIT = 3600
MAX_TAGS = 50


# --------------------------------------------------------------------------------------------
# Errors, with STS's codes and HTTP statuses
# --------------------------------------------------------------------------------------------
class StsError(ServiceException):
    """A modelled STS error (400): InvalidIdentityToken, ExpiredTokenException, ValidationError."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)


class StsAccessDenied(_RESTError):
    """AccessDenied is not in STS's error model, so moto's serializer would answer 400; AWS
    answers 403."""
    code = 403

    def __init__(self, message: str):
        super().__init__("AccessDenied", message)
        # STS's query-protocol shape, <ErrorResponse><Error>, which SDKs parse; moto's default
        # nests an <Errors> list (EC2's shape), whose code and message SDKs other than boto3
        # cannot find.
        from xml.sax.saxutils import escape
        self.description = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            f"<Type>Sender</Type><Code>AccessDenied</Code><Message>{escape(message)}</Message>"
            "</Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        )


def _validation(errors: list[str]) -> None:
    if errors:
        n = len(errors)
        raise StsError("ValidationError", f"{n} validation error{'s' if n > 1 else ''} detected: "
                                          + "; ".join(errors))


def _check_session_name(name: Any) -> list[str]:
    name = "" if name is None else str(name)
    errors = []
    if not 2 <= len(name) <= 64:
        bound = "greater than or equal to 2" if len(name) < 2 else "less than or equal to 64"
        errors.append(f"Value '{name}' at 'roleSessionName' failed to satisfy constraint: "
                      f"Member must have length {bound}")
    if not SESSION_NAME_RE.fullmatch(name):
        errors.append(f"Value '{name}' at 'roleSessionName' failed to satisfy constraint: "
                      r"Member must satisfy regular expression pattern: [\w+=,.@-]*")
    return errors


def _check_duration(duration: int) -> list[str]:
    if duration < 900:
        return [f"Value '{duration}' at 'durationSeconds' failed to satisfy constraint: "
                "Member must have value greater than or equal to 900"]
    if duration > 43200:
        return [f"Value '{duration}' at 'durationSeconds' failed to satisfy constraint: "
                "Member must have value less than or equal to 43200"]
    return []


# --------------------------------------------------------------------------------------------
# The issuer
# --------------------------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64(n: int) -> str:
    return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Issuer:
    def __init__(self, url: str):
        self.url = url
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self._key.public_key()
        nums = self.public_key.public_numbers()
        jwk = {"e": _int_b64(nums.e), "kty": "RSA", "n": _int_b64(nums.n)}
        # kid = the key's RFC 7638 thumbprint, as GitLab's keys have.
        thumb = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
        self.kid = _b64url(hashlib.sha256(thumb).digest())
        self.jwk = {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    @property
    def provider_url(self) -> str:
        return _provider_url(self.url)

    def discovery(self) -> dict:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": sorted(set(self.default_claims("group/project", 0)) | {
                "environment", "environment_protected", "deployment_tier"}),
        }

    def default_claims(self, project_path: str, now: int) -> dict:
        """What GitLab puts in a CI job's ID token (ids and booleans as strings, as GitLab
        sends them; runner_id is a number there too). sub, ref_path and ci_config_ref_uri
        are derived from the other claims in claims()."""
        namespace = project_path.rpartition("/")[0] or project_path
        return {
            "namespace_id": "10", "namespace_path": namespace,
            "project_id": "42", "project_path": project_path, "project_visibility": "private",
            "user_id": "1", "user_login": "root", "user_email": "root@example.com",
            "user_access_level": "maintainer",
            "pipeline_id": "1000", "pipeline_source": "push", "job_id": "5000",
            "ref": "main", "ref_type": "branch", "ref_protected": "true",
            "runner_id": 1, "runner_environment": "self-hosted",
            "sha": "0123456789abcdef0123456789abcdef01234567",
            "ci_config_sha": "0123456789abcdef0123456789abcdef01234567",
            "jti": str(uuid.uuid4()), "iss": self.url, "aud": self.url,
            "iat": now, "nbf": now - 5, "exp": now + 3600,
        }

    def claims(self, body: dict) -> dict:
        body = dict(body or {})
        now = int(time.time())
        expires_in = body.pop("expires_in", None)
        project_path = body.get("project_path") or "group/project"
        claims = self.default_claims(str(project_path), now)
        if "environment" in body:  # GitLab adds these only for a job with an environment
            claims["environment_protected"] = "false"
        claims.update(body)
        if expires_in is not None and "exp" not in body:
            claims["exp"] = int(claims.get("iat", now)) + int(expires_in)
        ref, ref_type = claims.get("ref"), claims.get("ref_type")
        kind = "tags" if ref_type == "tag" else "heads"
        host = self.provider_url.split("/", 1)[0]
        derived = {
            "sub": f"project_path:{claims.get('project_path')}:ref_type:{ref_type}:ref:{ref}",
            "ref_path": f"refs/{kind}/{ref}",
            "ci_config_ref_uri": f"{host}/{claims.get('project_path')}//.gitlab-ci.yml"
                                 f"@refs/{kind}/{ref}",
        }
        for k, v in derived.items():
            if k not in body:
                claims[k] = v
        return {k: v for k, v in claims.items() if v is not None}  # null drops a claim

    def sign(self, claims: dict) -> str:
        header = {"kid": self.kid, "typ": "JWT", "alg": "RS256"}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(sig)

    def verifies(self, header: dict, signing_input: bytes, signature: bytes) -> bool:
        algs = {"RS256": hashes.SHA256(), "RS384": hashes.SHA384(), "RS512": hashes.SHA512()}
        if header.get("kid") not in (None, self.kid) or header.get("alg") not in algs:
            return False
        try:
            self.public_key.verify(signature, signing_input, padding.PKCS1v15(),
                                   algs[header["alg"]])
        except InvalidSignature:
            return False
        return True


def _provider_url(issuer: str) -> str:
    """An issuer URL as IAM keys its provider: without the scheme (and a trailing slash)."""
    return re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", issuer).rstrip("/")


_issuer: Issuer | None = None


# --------------------------------------------------------------------------------------------
# Trust policies
# --------------------------------------------------------------------------------------------
def _listed(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def _conditions_hold(condition: dict, context: dict[str, Any], effect: str) -> bool:
    """iam_access's condition evaluation, plus the set operators ForAnyValue/ForAllValues and
    multi-valued keys (a token's aud list, aws:TagKeys) that a trust policy needs."""
    for op, keys in condition.items():
        qualifier, _, base = op.rpartition(":")
        for key, wanted in keys.items():
            got = next((v for k, v in context.items() if k.lower() == key.lower()), None)
            values = [] if got is None else [str(v) for v in _listed(got)]

            def one(value):
                return iam_access._condition_holds({base: {key: wanted}}, {key: value}, effect)

            if qualifier == "ForAnyValue":
                ok = any(one(v) for v in values)
            elif qualifier == "ForAllValues":
                ok = all(one(v) for v in values)
            elif not values:
                ok = iam_access._condition_holds({base: {key: wanted}}, {}, effect)
            else:
                ok = any(one(v) for v in values)
            if not ok:
                return False
    return True


def _principal_matches(principal: Any, candidates: dict[str, list[str]]) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    for kind, names in principal.items():
        for name in _listed(names):
            if name == "*" and kind == "AWS":
                return True
            if name in candidates.get(kind, []):
                return True
    return False


def trust_allows(role, action: str, candidates: dict[str, list[str]],
                 context: dict[str, Any]) -> bool:
    """Whether the role's trust policy allows `action` for a principal known by any of
    `candidates` ({"AWS": [...], "Federated": [...]}): an Allow statement matches (action,
    principal, conditions) and no Deny does. NotPrincipal statements are ignored (a
    NotPrincipal Allow grants nothing here: only ever stricter than AWS)."""
    doc = role.assume_role_policy_document
    doc = json.loads(doc) if isinstance(doc, str) else (doc or {})
    statements = doc.get("Statement") or []
    allowed = False
    for st in _listed(statements):
        effect = st.get("Effect")
        if "Action" in st:
            acts = [a.lower() for a in _listed(st["Action"])]
            hit = any(re.fullmatch(re.escape(a).replace(r"\*", ".*"), action.lower())
                      for a in acts)
        else:
            acts = [a.lower() for a in _listed(st.get("NotAction", []))]
            hit = not any(re.fullmatch(re.escape(a).replace(r"\*", ".*"), action.lower())
                          for a in acts)
        if not hit or "Principal" not in st:
            continue
        if not _principal_matches(st["Principal"], candidates):
            continue
        if not _conditions_hold(st.get("Condition") or {}, context, effect or ""):
            continue
        if effect == "Deny":
            return False
        if effect == "Allow":
            allowed = True
    return allowed


def _account_of(arn: str) -> str | None:
    m = re.match(r"^arn:[^:]+:(?:iam|sts)::(\d{12}):", arn or "")
    return m.group(1) if m else None


def _role(role_arn: str, partition: str = "aws"):
    acct = _account_of(role_arn)
    if acct is None:
        return None
    try:
        return iam_backends[acct][partition].get_role_by_arn(role_arn)
    except Exception:  # moto's NotFoundException
        return None


def _session_of(account: str, partition: str, access_key_id: str | None):
    """moto's AssumedRole for an access key (any account), or None."""
    if not access_key_id:
        return None
    for acct in [account] + [a for a in list(sts_backends.keys()) if a != account]:
        try:
            found = sts_backends[acct][partition].get_assumed_role_from_access_key(access_key_id)
        except Exception:
            found = None
        if found is not None:
            return found
    return None


def session_tags(account: str, partition: str, access_key_id: str | None) -> dict | None:
    """The session tags of an STS session's access key (None when it has none); calls.py
    shows them in the call log."""
    s = _session_of(account, partition, access_key_id)
    return (getattr(s, "session_tags", None) or None) if s is not None else None


# --------------------------------------------------------------------------------------------
# AssumeRoleWithWebIdentity
# --------------------------------------------------------------------------------------------
def _invalid_token(message: str) -> StsError:
    return StsError("InvalidIdentityToken", message)


def _parse_jwt(token: str) -> tuple[dict, dict, bytes, bytes]:
    parts = (token or "").split(".")
    if len(parts) != 3:
        raise _invalid_token("The ID Token provided is not a valid JWT. (You may see this error "
                             "if you sent an Access Token)")
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise _invalid_token("The ID Token provided is not a valid JWT. (You may see this error "
                             "if you sent an Access Token)") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _invalid_token("The ID Token provided is not a valid JWT. (You may see this error "
                             "if you sent an Access Token)")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def _find_provider(account: str, partition: str, iss: str):
    backend = iam_backends[account][partition]
    want = _provider_url(iss)
    for provider in list(backend.open_id_providers.values()):
        if provider.url.rstrip("/") == want:
            return provider
    return None


def _assume_role_with_web_identity(self):
    role_arn = self._get_param("RoleArn")
    session_name = self._get_param("RoleSessionName")
    token = self._get_param("WebIdentityToken")
    duration = self._get_int_param("DurationSeconds", 3600)
    _validation(_check_session_name(session_name) + _check_duration(duration))

    header, claims, signing_input, signature = _parse_jwt(token)
    iss = claims.get("iss")
    if not isinstance(iss, str) or not iss:
        raise _invalid_token("The ID Token provided is missing the iss claim")
    partition = get_partition(self.region)
    account = _account_of(role_arn) or self.current_account
    provider = _find_provider(account, partition, iss)
    if provider is None:
        raise _invalid_token(f"No OpenIDConnect provider found in your account for {iss}")
    if _issuer is None or _provider_url(iss) != _issuer.provider_url:
        # AWS would fetch <iss>/.well-known/openid-configuration and its JWKS; the simulator
        # reaches no other issuer, and accepting an unverified token would be kinder than AWS.
        raise _invalid_token("Couldn't retrieve verification key from your identity provider, "
                             "please reference AssumeRoleWithWebIdentity documentation for "
                             "requirements")
    if not _issuer.verifies(header, signing_input, signature):
        raise _invalid_token("The web identity token signature could not be verified")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise _invalid_token("The ID Token provided is missing the exp claim")
    now = int(time.time())
    if exp <= now:
        raise StsError("ExpiredTokenException", f"Token expired: current date/time {now} must "
                                                f"be before the expiration date/time {int(exp)}")
    auds = [str(a) for a in _listed(claims.get("aud"))] if claims.get("aud") is not None else []
    matched = [a for a in auds if a in provider.client_id_list]
    if not matched:
        raise _invalid_token("Incorrect token audience")

    role = _role(role_arn, partition)
    sub = str(claims.get("sub", ""))
    context = {f"{provider.url}:sub": sub, f"{provider.url}:aud": matched,
               "sts:RoleSessionName": session_name, "aws:FederatedProvider": provider.arn}
    if role is None or not trust_allows(role, WEB_IDENTITY, {"Federated": [provider.arn]},
                                        context):
        raise StsAccessDenied("Not authorized to perform sts:AssumeRoleWithWebIdentity")
    if duration > int(role.max_session_duration or 3600):
        raise StsError("ValidationError", "The requested DurationSeconds exceeds the "
                                          "MaxSessionDuration set for this role.")

    session = self.backend.assume_role(
        region_name=self.region, role_session_name=session_name, role_arn=role_arn,
        policy=self._get_param("Policy"), duration=duration, external_id=None)
    _cap_lifetime(session)
    session.sim_record = {"source": "AssumeRoleWithWebIdentity", "provider": provider.arn,
                          "sub": sub, "aud": matched[0]}
    session.session_tags, session.transitive_tag_keys = {}, []
    result = {
        "Credentials": session,
        "SubjectFromWebIdentityToken": sub,
        "AssumedRoleUser": {"AssumedRoleId": session.user_id, "Arn": session.arn},
        "Provider": iss,
        "Audience": matched[0],
    }
    if self._get_param("Policy"):
        result["PackedPolicySize"] = 6
    return ActionResult(result)


# --------------------------------------------------------------------------------------------
# AssumeRole: trust, session tags, role chaining
# --------------------------------------------------------------------------------------------
def _tags_param(self) -> list[dict]:
    tags = self._get_param("Tags") or []
    if isinstance(tags, dict):  # defensive: a parser that gives {"member": [...]}
        tags = tags.get("member", [])
    return [t for t in tags if isinstance(t, dict)]


def _assume_role(self):
    role_arn = self._get_param("RoleArn")
    session_name = self._get_param("RoleSessionName")
    duration = self._get_int_param("DurationSeconds", 3600)
    tags = _tags_param(self)
    transitive = [str(k) for k in (self._get_param("TransitiveTagKeys") or [])]
    errors = _check_session_name(session_name) + _check_duration(duration)
    if len(tags) > MAX_TAGS:
        errors.append(f"Value at 'tags' failed to satisfy constraint: Member must have length "
                      f"less than or equal to {MAX_TAGS}")
    for t in tags:
        if not 1 <= len(str(t.get("Key", ""))) <= 128 or len(str(t.get("Value", ""))) > 256:
            errors.append(f"Value '{t.get('Key')}' at 'tags' failed to satisfy constraint: keys "
                          "must be 1 to 128 characters and values at most 256")
    _validation(errors)
    new_tags = {str(t["Key"]): str(t.get("Value", "")) for t in tags}
    if len({k.lower() for k in new_tags}) != len(new_tags):
        raise StsError("InvalidParameterValue", "Duplicate tag keys found. Please note that "
                                                "Tag keys are case insensitive.")
    if any(k.lower() not in {t.lower() for t in new_tags} for k in transitive):
        raise StsError("InvalidParameterValue", "The specified transitive tag key must be "
                                                "included in the requested tags.")

    partition = get_partition(self.region)
    who = iam_access.caller(self)
    parent = _session_of(self.current_account, partition, self.get_access_key()) \
        if who is not None and ":assumed-role/" in who[0] else None
    inherited = {}
    if parent is not None:
        # Role chaining: AWS caps the session at one hour whatever the role allows.
        if duration > CHAIN_LIMIT:
            raise StsError("ValidationError", "The requested DurationSeconds exceeds the 1 hour "
                                              "session limit for roles assumed by role chaining.")
        ptags = getattr(parent, "session_tags", None) or {}
        for k in getattr(parent, "transitive_tag_keys", None) or []:
            if k in ptags:
                inherited[k] = ptags[k]
        clash = [k for k in new_tags if k.lower() in {i.lower() for i in inherited}]
        if clash:
            raise StsError("InvalidParameterValue",
                           f"Session tag key {clash[0]} conflicts with an inherited transitive "
                           "session tag of the calling session.")

    role = _role(role_arn, partition)
    if who is None and role is None and _account_of(role_arn) == self.current_account:
        # A role that does not exist cannot trust anyone: AWS refuses every caller, known or not.
        raise StsAccessDenied(f"User: arn:{partition}:iam::{self.current_account}:user/unknown "
                              f"is not authorized to perform: sts:AssumeRole on resource: {role_arn}")
    if who is not None:
        arn, policies = who
        denied = f"User: {arn} is not authorized to perform: {{}} on resource: {role_arn}"
        if role is None:
            raise StsAccessDenied(denied.format("sts:AssumeRole"))
        acct = _account_of(arn)
        candidates = {"AWS": [arn, f"arn:{partition}:iam::{acct}:root", acct]}
        if parent is not None:
            candidates["AWS"].append(parent.role_arn)
        ptags = getattr(parent, "session_tags", None) or {}
        all_tags = {**inherited, **new_tags}
        context: dict[str, Any] = {
            "sts:RoleSessionName": session_name,
            "aws:PrincipalArn": parent.role_arn if parent is not None else arn,
            "aws:TagKeys": list(new_tags),
            "sts:TransitiveTagKeys": transitive,
            **{f"aws:PrincipalTag/{k}": v for k, v in ptags.items()},
            **{f"aws:RequestTag/{k}": v for k, v in new_tags.items()},
            **{f"sts:TransitiveTag/{k}": v for k, v in inherited.items()},
        }
        if self._get_param("ExternalId") is not None:
            context["sts:ExternalId"] = self._get_param("ExternalId")
        actions = ["sts:AssumeRole"] + (["sts:TagSession"] if all_tags else [])
        for action in actions:
            if not trust_allows(role, action, candidates, context):
                raise StsAccessDenied(denied.format(action))
            # A trust policy naming only the account leaves the decision to the caller's own
            # policies; as in iam_access, only a caller with policies is evaluated.
            if policies and not trust_allows(role, action, {"AWS": [arn] + (
                    [parent.role_arn] if parent is not None else [])}, context):
                if iam_access.decide(policies, action, role_arn, context) != iam_access.ALLOWED:
                    raise StsAccessDenied(denied.format(action))
    if role is not None and duration > int(role.max_session_duration or 3600):
        raise StsError("ValidationError", "The requested DurationSeconds exceeds the "
                                          "MaxSessionDuration set for this role.")

    result = _orig["assume_role"](self)
    session = result.result["Credentials"]  # moto's AssumedRole
    session.session_tags = {**inherited, **new_tags}
    session.transitive_tag_keys = sorted(set(inherited) | set(transitive))
    _cap_lifetime(session)
    session.sim_record = {"source": "AssumeRole", "caller": who[0] if who else None}
    return result


# --------------------------------------------------------------------------------------------
# Session expiry
# --------------------------------------------------------------------------------------------
_lifetime_cap: float | None = None


def _cap_lifetime(session) -> None:
    """Shortens a new session to the test's cap (see the module doc)."""
    if _lifetime_cap is not None:
        session.expiration = min(session.expiration,
                                 utcnow() + datetime.timedelta(seconds=_lifetime_cap))


def expired(environ) -> bool:
    """Whether the request is signed with the access key of an STS session that has expired."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" not in auth:
        return False
    key_id = auth.partition("Credential=")[2].partition("/")[0]
    if not key_id.startswith("ASIA"):
        return False
    for acct in list(sts_backends.keys()):
        for backend in list(sts_backends[acct].values()):
            for s in list(backend.assumed_roles):
                if s.access_key_id == key_id:
                    return s.expiration <= utcnow()
    return False


def _session_lifetime_control(method, body):
    global _lifetime_cap
    if method != "POST" or not isinstance(body, dict) or "seconds" not in body:
        return 400, {"error": 'POST {"seconds": N} (or null to lift the cap)'}
    seconds = body["seconds"]
    if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
                                or seconds <= 0):
        raise ValueError("seconds must be a positive number or null")
    _lifetime_cap = None if seconds is None else float(seconds)
    return 200, {"seconds": _lifetime_cap}


def _reset() -> None:
    global _lifetime_cap
    _lifetime_cap = None


# --------------------------------------------------------------------------------------------
# Control endpoints
# --------------------------------------------------------------------------------------------
def _sessions() -> list[dict]:
    out = []
    for acct in list(sts_backends.keys()):
        for backend in list(sts_backends[acct].values()):
            for s in list(backend.assumed_roles):
                rec = getattr(s, "sim_record", None)
                if rec is None:
                    continue
                out.append({"arn": s.arn, "access_key_id": s.access_key_id,
                            "role_arn": s.role_arn, "session_name": s.session_name,
                            "expiration": s.expiration.isoformat(),
                            "tags": dict(getattr(s, "session_tags", {}) or {}),
                            "transitive_tag_keys": list(getattr(s, "transitive_tag_keys", [])),
                            **rec})
    return out


def _control_token(method, body):
    if method != "POST":
        return 405, {"error": "use POST with a JSON object of claims"}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object of claims")
    if "expires_in" in body and not isinstance(body["expires_in"], (int, float)):
        raise ValueError("expires_in must be a number of seconds")
    claims = _issuer.claims(body)
    return 200, {"token": _issuer.sign(claims), "claims": claims, "kid": _issuer.kid}


_orig: dict = {}


def install(ctx) -> None:
    global _issuer
    if _orig:
        return
    _check_moto(((stsr.TokenResponse, "assume_role_with_web_identity"),
                 (stsr.TokenResponse, "assume_role"), (stsr.TokenResponse, "get_access_key"),
                 (iam_access, "caller"), (iam_access, "_condition_holds"),
                 (iam_access, "decide")), module=__name__)
    _issuer = Issuer(f"{ctx.endpoint_url}/_sim/oidc")
    ctx.register_control("oidc/.well-known/openid-configuration",
                         lambda m, b: (200, _issuer.discovery()))
    ctx.register_control("oidc/jwks", lambda m, b: (200, {"keys": [_issuer.jwk]}))
    ctx.register_control("oidc/token", _control_token)
    ctx.register_control("oidc/sessions", lambda m, b: (200, {"sessions": _sessions()}))
    ctx.register_control("oidc/session-lifetime", _session_lifetime_control)
    ctx.on_reset(_reset)
    _orig["assume_role"] = stsr.TokenResponse.assume_role
    _orig["assume_role_with_web_identity"] = stsr.TokenResponse.assume_role_with_web_identity
    stsr.TokenResponse.assume_role = _assume_role
    stsr.TokenResponse.assume_role_with_web_identity = _assume_role_with_web_identity
