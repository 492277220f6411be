"""The simulator's GitLab-like OIDC issuer, and STS web identity / role chaining as AWS does it
(tests/sim/simulator/oidc.py)."""
from __future__ import annotations

import base64
import datetime
import json
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ACCOUNT = "123456789012"
AUD = "https://sagemaker-executor.test"


# ------------------------------------------------------------------------------------ helpers
def b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def doc(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def token(sim, **claims) -> str:
    return sim.post("/_sim/oidc/token", claims)["token"]


def client_as(sim, service: str, creds: dict):
    return boto3.client(service, endpoint_url=sim.endpoint, region_name=sim.region,
                        aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds.get("SessionToken"),
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                      parameter_validation=False))


def error(e) -> tuple[str, str, int]:
    r = e.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def oidc(sim, aws):
    """(issuer URL, provider URL, provider ARN) with AUD registered as a client id."""
    iss = sim.get("/_sim/oidc/.well-known/openid-configuration")["issuer"]
    iam = aws("iam")
    host = iss.split("://", 1)[1]
    arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"
    if arn not in [p["Arn"] for p in iam.list_open_id_connect_providers()
                   ["OpenIDConnectProviderList"]]:
        iam.create_open_id_connect_provider(Url=iss, ClientIDList=[AUD],
                                           ThumbprintList=["a" * 40])
    return iss, host, arn


def web_role(iam, unique, provider_arn: str, host: str, sub: str = "project_path:group/project:*",
             max_session: int = 3600, condition: dict | None = None) -> str:
    cond = condition if condition is not None else {
        "StringEquals": {f"{host}:aud": AUD}, "StringLike": {f"{host}:sub": sub}}
    trust = doc({"Effect": "Allow", "Principal": {"Federated": provider_arn},
                 "Action": "sts:AssumeRoleWithWebIdentity", "Condition": cond})
    return iam.create_role(RoleName=unique("gitlab-ci"), AssumeRolePolicyDocument=trust,
                           MaxSessionDuration=max_session)["Role"]["Arn"]


def sts(sim):
    return sim.client("sts", retries=False, parameter_validation=False)


def assume(sim, role: str, tok: str, **kw) -> dict:
    return sts(sim).assume_role_with_web_identity(
        RoleArn=role, RoleSessionName=kw.pop("session", "gitlab-job-5000"), WebIdentityToken=tok,
        **kw)


# ------------------------------------------------------------------------------------- issuer
def test_issuer_serves_discovery_jwks_and_gitlab_shaped_tokens(sim):
    conf = sim.get("/_sim/oidc/.well-known/openid-configuration")
    assert conf["issuer"] == f"{sim.endpoint}/_sim/oidc"
    assert conf["jwks_uri"] == f"{sim.endpoint}/_sim/oidc/jwks"
    assert conf["id_token_signing_alg_values_supported"] == ["RS256"]
    (jwk,) = sim.get("/_sim/oidc/jwks")["keys"]
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig"

    tok = token(sim)
    head, body, sig = tok.split(".")
    header, claims = json.loads(b64d(head)), json.loads(b64d(body))
    assert header == {"kid": jwk["kid"], "typ": "JWT", "alg": "RS256"}
    pub = rsa.RSAPublicNumbers(int.from_bytes(b64d(jwk["e"]), "big"),
                               int.from_bytes(b64d(jwk["n"]), "big")).public_key()
    pub.verify(b64d(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())

    assert claims["iss"] == conf["issuer"]
    assert claims["sub"] == "project_path:group/project:ref_type:branch:ref:main"
    # GitLab sends ids and booleans as strings
    for k in ("project_id", "namespace_id", "job_id", "pipeline_id", "user_id"):
        assert isinstance(claims[k], str) and claims[k].isdigit(), k
    assert claims["ref_protected"] == "true" and claims["ref_path"] == "refs/heads/main"
    assert claims["project_path"] == "group/project" and claims["namespace_path"] == "group"
    assert "environment" not in claims and "environment_protected" not in claims
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] <= claims["iat"]
    assert abs(claims["iat"] - time.time()) < 60

    got = sim.post("/_sim/oidc/token", {"project_path": "acme/ml/train", "ref": "v1.2",
                                        "ref_type": "tag", "ref_protected": "false",
                                        "environment": "production", "aud": ["a", "b"],
                                        "job_id": "77", "user_email": None, "expires_in": 60})
    c = got["claims"]
    assert json.loads(b64d(got["token"].split(".")[1])) == c
    assert c["sub"] == "project_path:acme/ml/train:ref_type:tag:ref:v1.2"
    assert c["ref_path"] == "refs/tags/v1.2" and c["namespace_path"] == "acme/ml"
    assert c["environment"] == "production" and c["environment_protected"] == "false"
    assert c["aud"] == ["a", "b"] and c["job_id"] == "77" and "user_email" not in c
    assert c["exp"] - c["iat"] == 60


def test_token_requests_are_validated(sim):
    status, obj = sim._req("POST", "/_sim/oidc/token", ["not", "claims"])
    assert status == 400, obj
    status, obj = sim._req("POST", "/_sim/oidc/token", {"expires_in": "soon"})
    assert status == 400 and "expires_in" in obj["error"]


# ------------------------------------------------------------------------ web identity: allowed
def test_web_identity_session_is_the_role_and_expires_after_the_duration(sim, aws, unique, oidc):
    iss, host, provider = oidc
    role = web_role(aws("iam"), unique, provider, host)
    role_id = aws("iam").get_role(RoleName=role.split("/")[-1])["Role"]["RoleId"]
    before = datetime.datetime.now(datetime.timezone.utc)
    r = assume(sim, role, token(sim, aud=AUD), DurationSeconds=1800)
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role.split('/')[-1]}/gitlab-job-5000"
    assert r["AssumedRoleUser"] == {"Arn": session, "AssumedRoleId": f"{role_id}:gitlab-job-5000"}
    assert r["SubjectFromWebIdentityToken"] == "project_path:group/project:ref_type:branch:ref:main"
    assert r["Audience"] == AUD and r["Provider"] == iss
    left = (r["Credentials"]["Expiration"] - before).total_seconds()
    assert 1790 <= left <= 1810, left

    creds = r["Credentials"]
    assert client_as(sim, "sts", creds).get_caller_identity()["Arn"] == session
    bucket = unique("made-by-job")
    client_as(sim, "s3", creds).create_bucket(Bucket=bucket)
    sim.client("s3").head_bucket(Bucket=bucket)  # the dummy keys: no principal
    (made,) = sim.calls(f"S3.PUT /{bucket}")
    assert made["principal"] == session and "session_tags" not in made
    (head,) = sim.calls(f"S3.HEAD /{bucket}")
    assert "principal" not in head
    (call,) = sim.calls("STS.AssumeRoleWithWebIdentity")
    assert call["status"] == 200 and "principal" not in call  # unsigned, as in AWS

    (rec,) = [s for s in sim.get("/_sim/oidc/sessions")["sessions"] if s["arn"] == session
              and s["access_key_id"] == creds["AccessKeyId"]]
    assert rec["source"] == "AssumeRoleWithWebIdentity" and rec["provider"] == provider
    assert rec["tags"] == {} and rec["aud"] == AUD


def test_a_session_past_its_expiration_is_refused_with_expired_token(sim, aws, unique, oidc):
    iss, host, provider = oidc
    role = web_role(aws("iam"), unique, provider, host)
    sim.post("/_sim/oidc/session-lifetime", {"seconds": 2})
    try:
        before = datetime.datetime.now(datetime.timezone.utc)
        creds = assume(sim, role, token(sim, aud=AUD), DurationSeconds=900)["Credentials"]
    finally:
        sim.post("/_sim/oidc/session-lifetime", {"seconds": None})
    assert (creds["Expiration"] - before).total_seconds() <= 3, "STS says when it ends"
    s3 = client_as(sim, "s3", creds)
    s3.list_buckets()  # still valid
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.list_buckets()
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ExpiredToken", e.response
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            break
        assert time.monotonic() < deadline, "the session never expired"
        time.sleep(0.2)
    refused = [c for c in sim.calls("S3.GET /") if c.get("error") == "ExpiredToken"]
    assert refused and refused[-1]["status"] == 400
    # Sessions issued after the cap is lifted last what was asked for.
    r = assume(sim, role, token(sim, aud=AUD), DurationSeconds=900)
    left = (r["Credentials"]["Expiration"] - datetime.datetime.now(datetime.timezone.utc))
    assert left.total_seconds() > 800
    client_as(sim, "s3", r["Credentials"]).list_buckets()


def test_session_lifetime_control_is_validated(sim):
    for body in ({}, {"seconds": 0}, {"seconds": "10"}, {"seconds": True}):
        with pytest.raises(AssertionError, match="-> 400"):
            sim.post("/_sim/oidc/session-lifetime", body)


def test_audience_may_be_a_list_and_set_operators_apply(sim, aws, unique, oidc):
    _iss, host, provider = oidc
    role = web_role(aws("iam"), unique, provider, host, condition={
        "ForAnyValue:StringLike": {f"{host}:sub": ["project_path:acme/*:ref_type:branch:ref:main"]},
        "StringEquals": {f"{host}:aud": AUD}})
    ok = token(sim, aud=["someone-else", AUD], project_path="acme/tool")
    assert assume(sim, role, ok)["Audience"] == AUD
    with pytest.raises(ClientError) as e:
        assume(sim, role, token(sim, aud=AUD, project_path="other/tool"))
    assert error(e)[0] == "AccessDenied"


# ------------------------------------------------------------------------- web identity: refused
def test_issuer_must_be_a_registered_provider(sim, aws, unique, oidc):
    iss, host, provider = oidc
    role = web_role(aws("iam"), unique, provider, host)
    aws("iam").delete_open_id_connect_provider(OpenIDConnectProviderArn=provider)
    with pytest.raises(ClientError) as e:
        assume(sim, role, token(sim, aud=AUD))
    assert error(e)[:2] == ("InvalidIdentityToken",
                            f"No OpenIDConnect provider found in your account for {iss}")
    assert error(e)[2] == 400


def test_tokens_of_other_issuers_cannot_be_verified_and_are_refused(sim, aws, unique, oidc):
    _iss, host, provider = oidc
    iam = aws("iam")
    other = "https://gitlab.example.com"
    other_arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/gitlab.example.com"
    if other_arn not in [p["Arn"] for p in iam.list_open_id_connect_providers()
                         ["OpenIDConnectProviderList"]]:
        iam.create_open_id_connect_provider(Url=other, ClientIDList=[AUD],
                                           ThumbprintList=["b" * 40])
    role = web_role(iam, unique, other_arn, "gitlab.example.com")
    with pytest.raises(ClientError) as e:
        assume(sim, role, token(sim, aud=AUD, iss=other))
    code, msg, _ = error(e)
    assert code == "InvalidIdentityToken" and "verification key" in msg


def test_signature_is_verified_and_malformed_tokens_are_refused(sim, aws, unique, oidc):
    _iss, host, provider = oidc
    role = web_role(aws("iam"), unique, provider, host, sub="project_path:group/project:*")
    good = token(sim, aud=AUD)
    assert assume(sim, role, good)["Credentials"]["AccessKeyId"]

    head, body, sig = good.split(".")
    claims = json.loads(b64d(body))
    claims["project_path"], claims["sub"] = "evil/project", "project_path:group/project:x"
    tampered = f"{head}.{b64e(json.dumps(claims).encode())}.{sig}"
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input = f"{head}.{body}".encode()
    forged = f"{head}.{body}." + b64e(forged_key.sign(signing_input, padding.PKCS1v15(),
                                                      hashes.SHA256()))
    none_alg = b64e(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + f".{body}."
    for bad in (tampered, forged, none_alg, "not-a-jwt", "a.b.c", f"{head}.{body}"):
        with pytest.raises(ClientError) as e:
            assume(sim, role, bad)
        assert error(e)[0] == "InvalidIdentityToken", bad


def test_expired_token(sim, aws, unique, oidc):
    _iss, host, provider = oidc
    role = web_role(aws("iam"), unique, provider, host)
    with pytest.raises(ClientError) as e:
        assume(sim, role, token(sim, aud=AUD, expires_in=-5))
    code, msg, _ = error(e)
    assert code == "ExpiredTokenException" and msg.startswith("Token expired")


def test_audience_must_be_a_client_id_of_the_provider(sim, aws, unique, oidc):
    _iss, host, provider = oidc
    role = web_role(aws("iam"), unique, provider, host,
                    condition={"StringLike": {f"{host}:sub": "*"}})
    for aud in ("https://gitlab.com", ["x", "y"], None):
        with pytest.raises(ClientError) as e:
            assume(sim, role, token(sim, aud=aud))
        assert error(e)[:2] == ("InvalidIdentityToken", "Incorrect token audience"), aud


def test_trust_policy_decides_who_may_assume_the_role(sim, aws, unique, oidc):
    _iss, host, provider = oidc
    iam = aws("iam")
    role = web_role(iam, unique, provider, host, sub="project_path:group/project:ref_type:branch:*")
    denied = "Not authorized to perform sts:AssumeRoleWithWebIdentity"

    def refused(role_arn, tok):
        with pytest.raises(ClientError) as e:
            assume(sim, role_arn, tok)
        assert error(e) == ("AccessDenied", denied, 403)

    assert assume(sim, role, token(sim, aud=AUD))
    refused(role, token(sim, aud=AUD, project_path="group/other"))
    refused(role, token(sim, aud=AUD, ref_type="tag", ref="v1"))
    # a role trusting another provider, a role trusting no web identity, a missing role
    refused(web_role(iam, unique, f"arn:aws:iam::{ACCOUNT}:oidc-provider/gitlab.com",
                     "gitlab.com"), token(sim, aud=AUD))
    plain = iam.create_role(RoleName=unique("plain"), AssumeRolePolicyDocument=doc(
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
         "Action": "sts:AssumeRole"}))["Role"]["Arn"]
    refused(plain, token(sim, aud=AUD))
    refused(f"arn:aws:iam::{ACCOUNT}:role/{unique('missing')}", token(sim, aud=AUD))
    # only sub and aud are condition keys of an OIDC provider: other GitLab claims are not
    refused(web_role(iam, unique, provider, host, condition={
        "StringEquals": {f"{host}:ref_protected": "true"}}), token(sim, aud=AUD))
    # an explicit Deny wins
    deny = iam.create_role(RoleName=unique("deny"), AssumeRolePolicyDocument=doc(
        {"Effect": "Allow", "Principal": {"Federated": provider},
         "Action": "sts:AssumeRoleWithWebIdentity"},
        {"Effect": "Deny", "Principal": {"Federated": provider},
         "Action": "sts:AssumeRoleWithWebIdentity",
         "Condition": {"StringLike": {f"{host}:sub": "*:ref:main"}}}))["Role"]["Arn"]
    refused(deny, token(sim, aud=AUD))
    assert assume(sim, deny, token(sim, aud=AUD, ref="feature"))


def test_duration_and_session_name_are_validated(sim, aws, unique, oidc):
    _iss, host, provider = oidc
    iam = aws("iam")
    role = web_role(iam, unique, provider, host)
    long_role = web_role(iam, unique, provider, host, max_session=7200)

    def invalid(role_arn, **kw):
        with pytest.raises(ClientError) as e:
            assume(sim, role_arn, token(sim, aud=AUD), **kw)
        code, msg, status = error(e)
        assert (code, status) == ("ValidationError", 400), (kw, code, msg)
        return msg

    assert "greater than or equal to 900" in invalid(role, DurationSeconds=899)
    assert "MaxSessionDuration" in invalid(role, DurationSeconds=3601)
    assert assume(sim, long_role, token(sim, aud=AUD), DurationSeconds=7200)
    assert "MaxSessionDuration" in invalid(long_role, DurationSeconds=7201)
    assert "length greater than or equal to 2" in invalid(role, session="a")
    assert "regular expression" in invalid(role, session="job 5000")
    assert "regular expression" in invalid(role, session="job/5000")
    assert "less than or equal to 64" in invalid(role, session="j" * 65)
    assert assume(sim, role, token(sim, aud=AUD), session="a+=,.@-_Z9")


# ---------------------------------------------------------------- role chaining and session tags
def chain_world(sim, aws, unique, oidc, tag_session: bool, max_session: int = 43200):
    """A web identity session of role A, and role B trusting A (with sts:TagSession or not)."""
    _iss, host, provider = oidc
    iam = aws("iam")
    first = web_role(iam, unique, provider, host)
    creds = assume(sim, first, token(sim, aud=AUD))["Credentials"]
    actions = ["sts:AssumeRole"] + (["sts:TagSession"] if tag_session else [])
    second = iam.create_role(RoleName=unique("deploy"), MaxSessionDuration=max_session,
                             AssumeRolePolicyDocument=doc(
                                 {"Effect": "Allow", "Principal": {"AWS": first},
                                  "Action": actions}))["Role"]["Arn"]
    return first, second, client_as(sim, "sts", creds)


TAGS = [{"Key": "project", "Value": "group/project"}, {"Key": "job", "Value": "5000"}]


def test_chained_session_with_tags_needs_tag_session_in_the_trust_policy(sim, aws, unique, oidc):
    first, second, sts_a = chain_world(sim, aws, unique, oidc, tag_session=False)
    with pytest.raises(ClientError) as e:
        sts_a.assume_role(RoleArn=second, RoleSessionName="job-5000", Tags=TAGS)
    code, msg, status = error(e)
    assert (code, status) == ("AccessDenied", 403)
    assert msg == (f"User: arn:aws:sts::{ACCOUNT}:assumed-role/{first.split('/')[-1]}/"
                   f"gitlab-job-5000 is not authorized to perform: sts:TagSession on resource: "
                   f"{second}")
    # without tags the same trust policy is enough
    assert sts_a.assume_role(RoleArn=second, RoleSessionName="job-5000")["Credentials"]


def test_chained_session_records_its_tags(sim, aws, unique, oidc):
    first, second, sts_a = chain_world(sim, aws, unique, oidc, tag_session=True)
    r = sts_a.assume_role(RoleArn=second, RoleSessionName="job-5000", Tags=TAGS,
                          TransitiveTagKeys=["project"])
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/{second.split('/')[-1]}/job-5000"
    assert r["AssumedRoleUser"]["Arn"] == arn
    creds = r["Credentials"]
    assert client_as(sim, "sts", creds).get_caller_identity()["Arn"] == arn
    (rec,) = [s for s in sim.get("/_sim/oidc/sessions")["sessions"]
              if s["access_key_id"] == creds["AccessKeyId"]]
    assert rec["tags"] == {"project": "group/project", "job": "5000"}
    assert rec["transitive_tag_keys"] == ["project"] and rec["source"] == "AssumeRole"
    assert rec["caller"].endswith(f":assumed-role/{first.split('/')[-1]}/gitlab-job-5000")

    bucket = unique("tagged")
    client_as(sim, "s3", creds).create_bucket(Bucket=bucket)
    (made,) = sim.calls(f"S3.PUT /{bucket}")
    assert made["principal"] == arn
    assert made["session_tags"] == {"project": "group/project", "job": "5000"}

    # a further hop inherits the transitive tag, and may not pass it again
    third = aws("iam").create_role(RoleName=unique("third"), AssumeRolePolicyDocument=doc(
        {"Effect": "Allow", "Principal": {"AWS": second},
         "Action": ["sts:AssumeRole", "sts:TagSession"]}))["Role"]["Arn"]
    sts_b = client_as(sim, "sts", creds)
    c3 = sts_b.assume_role(RoleArn=third, RoleSessionName="hop")["Credentials"]
    (rec3,) = [s for s in sim.get("/_sim/oidc/sessions")["sessions"]
               if s["access_key_id"] == c3["AccessKeyId"]]
    assert rec3["tags"] == {"project": "group/project"}
    with pytest.raises(ClientError) as e:
        sts_b.assume_role(RoleArn=third, RoleSessionName="hop",
                          Tags=[{"Key": "Project", "Value": "x"}])
    assert error(e)[0] == "InvalidParameterValue"


def test_trust_conditions_see_the_request_tags(sim, aws, unique, oidc):
    first, _second, sts_a = chain_world(sim, aws, unique, oidc, tag_session=True)
    picky = aws("iam").create_role(RoleName=unique("picky"), AssumeRolePolicyDocument=doc(
        {"Effect": "Allow", "Principal": {"AWS": first}, "Action": "sts:AssumeRole"},
        {"Effect": "Allow", "Principal": {"AWS": first}, "Action": "sts:TagSession",
         "Condition": {"StringLike": {"aws:RequestTag/project": "group/*"}}}))["Role"]["Arn"]
    assert sts_a.assume_role(RoleArn=picky, RoleSessionName="ok", Tags=TAGS)
    with pytest.raises(ClientError) as e:
        sts_a.assume_role(RoleArn=picky, RoleSessionName="no",
                          Tags=[{"Key": "project", "Value": "other/project"}])
    assert error(e)[0] == "AccessDenied" and "sts:TagSession" in error(e)[1]


def test_chained_session_is_capped_at_one_hour(sim, aws, unique, oidc):
    _first, second, sts_a = chain_world(sim, aws, unique, oidc, tag_session=True)
    with pytest.raises(ClientError) as e:
        sts_a.assume_role(RoleArn=second, RoleSessionName="job", DurationSeconds=3601)
    code, msg, _ = error(e)
    assert code == "ValidationError" and "1 hour session limit" in msg and "chaining" in msg
    r = sts_a.assume_role(RoleArn=second, RoleSessionName="job", DurationSeconds=3600)
    left = (r["Credentials"]["Expiration"] - datetime.datetime.now(datetime.timezone.utc))
    assert 3500 <= left.total_seconds() <= 3610


def test_a_session_the_trust_policy_does_not_name_is_refused(sim, aws, unique, oidc):
    first, _second, sts_a = chain_world(sim, aws, unique, oidc, tag_session=True)
    stranger = aws("iam").create_role(RoleName=unique("stranger"), AssumeRolePolicyDocument=doc(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/someone-else"},
         "Action": "sts:AssumeRole"}))["Role"]["Arn"]
    with pytest.raises(ClientError) as e:
        sts_a.assume_role(RoleArn=stranger, RoleSessionName="job")
    assert error(e)[0] == "AccessDenied" and "sts:AssumeRole on resource" in error(e)[1]


def test_a_role_assuming_itself_needs_its_own_trust(sim, aws, unique, oidc):
    """The executor's second hop (session tags) assumes the same role again: as on AWS since
    2022, a role does not implicitly trust itself."""
    _iss, host, provider = oidc
    iam = aws("iam")
    role = web_role(iam, unique, provider, host)
    name = role.split("/")[-1]
    sts_a = client_as(sim, "sts", assume(sim, role, token(sim, aud=AUD))["Credentials"])
    with pytest.raises(ClientError) as e:
        sts_a.assume_role(RoleArn=role, RoleSessionName="gitlab-42-5000", Tags=TAGS,
                          DurationSeconds=3600)
    assert error(e)[0] == "AccessDenied" and "sts:AssumeRole on resource" in error(e)[1]
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=doc(
        {"Effect": "Allow", "Principal": {"Federated": provider},
         "Action": "sts:AssumeRoleWithWebIdentity",
         "Condition": {"StringEquals": {f"{host}:aud": AUD}}},
        {"Effect": "Allow", "Principal": {"AWS": role},
         "Action": ["sts:AssumeRole", "sts:TagSession"]}))
    r = sts_a.assume_role(RoleArn=role, RoleSessionName="gitlab-42-5000", Tags=TAGS,
                          DurationSeconds=3600)
    assert r["AssumedRoleUser"]["Arn"].endswith(f":assumed-role/{name}/gitlab-42-5000")
