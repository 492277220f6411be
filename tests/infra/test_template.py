"""Deploys runner-setup/cloudformation/sagemaker-executor.yaml into the AWS simulator (moto's
CloudFormation) and checks that what the stack says it creates really exists, with the settings
the template asks for.

moto 5.2.5 cannot create every resource type, and silently skips the ones it cannot (the stack
still reaches CREATE_COMPLETE). So the test is explicit about both gaps:

  MOTO_MISSING_TYPES      resource types moto's CloudFormation has no model for. The test deploys
                          the template with exactly these resources stripped (strip_unsupported),
                          and fails when the list goes stale in either direction: the template
                          gains/loses such a type, or the simulator learns one (found by deploying
                          the unmodified template and looking for the logical ids it skipped).
  MOTO_IGNORED_PROPERTIES properties of supported types that moto accepts but does not apply. Each
                          has a probe; a probe that starts passing fails the test, so the
                          assertion gets promoted from "known gap" to a hard check.

Everything else is a hard assertion. Run: <repo>/.venv/bin/python -m pytest tests/infra -q
(tests/infra.sh does, after cfn-lint and checkov).
"""
from __future__ import annotations

import ast
import copy
import json
import os
import sys

import pytest
import yaml
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TEMPLATE = os.path.join(REPO, "runner-setup", "cloudformation", "sagemaker-executor.yaml")
sys.path.insert(0, os.path.join(REPO, "tests", "sim", "smoke"))
from conftest import launch_sim  # noqa: E402  (the simulator's own launcher; conftest is not edited)

# Resource types of the template that moto 5.2.5's CloudFormation cannot create (no
# CloudFormationModel in moto/*/models.py). Extending the simulator with these removes them here.
MOTO_MISSING_TYPES = sorted([
    "AWS::IAM::OIDCProvider",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
])

# (resource type, property) pairs moto accepts in a template but does not apply (a dotted
# property is a nested one). The ECR ones are passed on in CloudFormation's casing
# (ScanOnPush, EncryptionType) where moto's backend expects the API's (scanOnPush, ...).
MOTO_IGNORED_PROPERTIES = sorted([
    ("AWS::EC2::SecurityGroup", "SecurityGroupEgress"),
    ("AWS::ECR::Repository", "EncryptionConfiguration"),
    ("AWS::ECR::Repository", "ImageScanningConfiguration"),
    ("AWS::ECR::Repository", "LifecyclePolicy"),
    ("AWS::ECS::Cluster", "CapacityProviders"),
    ("AWS::ECS::Cluster", "ClusterSettings"),
    ("AWS::ECS::Cluster", "DefaultCapacityProviderStrategy"),
    ("AWS::Logs::LogGroup", "KmsKeyId"),
    ("AWS::S3::Bucket", "BucketEncryption.BucketKeyEnabled"),
    ("AWS::S3::Bucket", "LifecycleConfiguration"),
    ("AWS::S3::Bucket", "OwnershipControls"),
    ("AWS::S3::Bucket", "PublicAccessBlockConfiguration"),
])

MANAGED_BY = {"Key": "managed-by", "Value": "sagemaker-executor"}
GITLAB_HOST = "gitlab.example.com"


# --- template loading and the one transformation ------------------------------------------------

class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !Sub, !GetAtt, ...)."""


def _intrinsic(loader: yaml.Loader, suffix: str, node: yaml.Node):
    name = node.tag[1:]
    key = "Ref" if name == "Ref" else f"Fn::{name}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {key: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template() -> dict:
    with open(TEMPLATE) as f:
        return yaml.load(f, _CfnLoader)


def _references(node, logical_id: str) -> bool:
    """Whether node refers to logical_id through Ref, GetAtt or a ${...} in Sub."""
    if isinstance(node, dict):
        if node.get("Ref") == logical_id:
            return True
        att = node.get("Fn::GetAtt")
        if isinstance(att, list) and att and att[0] == logical_id:
            return True
        sub = node.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) else sub
        if isinstance(text, str) and ("${" + logical_id + "}" in text
                                      or "${" + logical_id + "." in text):
            return True
        return any(_references(v, logical_id) for v in node.values())
    if isinstance(node, list):
        return any(_references(v, logical_id) for v in node)
    return False


def strip_unsupported(template: dict, types: list[str]) -> tuple[dict, list[str]]:
    """The template without the resources of `types`, and the sorted types it removed.

    Removes those resources and their names from other resources' DependsOn, nothing else;
    refuses (AssertionError) if anything still refers to a removed resource, so the stripped
    template can never quietly lose more than the listed resources."""
    out = copy.deepcopy(template)
    resources = out["Resources"]
    gone = {lid for lid, r in resources.items() if r["Type"] in types}
    for lid in gone:
        del resources[lid]
    for r in resources.values():
        dep = r.get("DependsOn")
        if isinstance(dep, str) and dep in gone:
            del r["DependsOn"]
        elif isinstance(dep, list):
            r["DependsOn"] = [d for d in dep if d not in gone] or None
            if r["DependsOn"] is None:
                del r["DependsOn"]
    for lid in gone:
        assert not _references({"r": resources, "o": out.get("Outputs", {})}, lid), \
            f"{lid} is still referenced after stripping"
    return out, sorted({template["Resources"][lid]["Type"] for lid in gone})


# --- the deployment ---------------------------------------------------------------------------

def _params(**kv) -> list[dict]:
    return [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in kv.items()]


def _deploy(cf, name: str, template: dict, params: list[dict]) -> dict:
    cf.create_stack(StackName=name, TemplateBody=json.dumps(template), Parameters=params,
                    Capabilities=["CAPABILITY_NAMED_IAM"])
    stack = cf.describe_stacks(StackName=name)["Stacks"][0]
    stack["resources"] = cf.list_stack_resources(StackName=name)["StackResourceSummaries"]
    stack["outputs"] = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return stack


class Env:
    def __init__(self, sim):
        self.sim = sim
        self.template = load_template()
        ec2 = sim.client("ec2")
        self.vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        self.subnets = [
            ec2.create_subnet(VpcId=self.vpc, CidrBlock=f"10.42.{i}.0/24")["Subnet"]["SubnetId"]
            for i in (1, 2)
        ]
        self.kms_key = sim.client("kms").create_key(Description="staging")["KeyMetadata"]["Arn"]
        cf = sim.client("cloudformation")
        net = {"VpcId": self.vpc, "SubnetIds": ",".join(self.subnets), "GitLabHost": GITLAB_HOST}

        # 1. The unmodified template: which of its resources does the simulator skip?
        self.probe = _deploy(cf, "sme-probe", self.template,
                             _params(NamePrefix="sme-probe", **net))
        created = {r["LogicalResourceId"] for r in self.probe["resources"]}
        self.skipped_types = sorted({
            r["Type"] for lid, r in self.template["Resources"].items()
            if lid not in created and "Condition" not in r
        })

        # 2. The template minus exactly the known-missing types, with default options ...
        self.stripped, self.stripped_types = strip_unsupported(self.template, MOTO_MISSING_TYPES)
        self.default = _deploy(cf, "sme-default", self.stripped, _params(
            NamePrefix="sme-default", ProjectPathPattern="ml-team/*", LogRetentionDays=14,
            StagedObjectExpiryDays=3, **net))
        # 3. ... and with every optional parameter set (KMS, input buckets, ecs-deploy targets).
        self.deploy_service = "arn:aws:ecs:us-east-1:123456789012:service/prod-api/churn-api"
        self.deploy_role = "arn:aws:iam::123456789012:role/churn-api-task"
        self.options = _deploy(cf, "sme-options", self.stripped, _params(
            NamePrefix="sme-options", KmsKeyArn=self.kms_key, GitLabAudience="sts.amazonaws.com",
            ExtraReadBucketArns="arn:aws:s3:::acme-ml-datasets,arn:aws:s3:::acme-ml-features",
            DeployServiceArns=self.deploy_service, DeployPassRoleArns=self.deploy_role,
            OidcRefPattern="ref_type:branch:ref:main", **net))

    def client(self, service: str):
        return self.sim.client(service)


@pytest.fixture(scope="module")
def env():
    sim = launch_sim("--stop-grace", "2")
    try:
        yield Env(sim)
    finally:
        assert sim.stop() == 0


# --- the gaps are exactly the known ones -------------------------------------------------------

def test_stripped_types_are_exactly_the_known_missing_ones(env):
    assert env.stripped_types == MOTO_MISSING_TYPES, (
        "the template's resource types moto lacks changed: update MOTO_MISSING_TYPES")


def test_the_simulator_really_lacks_the_stripped_types(env):
    assert env.probe["StackStatus"] == "CREATE_COMPLETE"
    assert env.skipped_types == MOTO_MISSING_TYPES, (
        "the simulator now creates (or newly skips) a resource type: update MOTO_MISSING_TYPES "
        "and drop it from the stripping")


def test_the_transformation_removes_only_those_resources(env):
    kept = set(env.stripped["Resources"])
    removed = set(env.template["Resources"]) - kept
    assert sorted(env.template["Resources"][lid]["Type"] for lid in removed) == MOTO_MISSING_TYPES
    for lid in kept:
        original = env.template["Resources"][lid]
        stripped = env.stripped["Resources"][lid]
        assert {k: v for k, v in original.items() if k != "DependsOn"} == \
               {k: v for k, v in stripped.items() if k != "DependsOn"}, lid
    assert env.stripped["Outputs"] == env.template["Outputs"]
    assert env.stripped["Parameters"] == env.template["Parameters"]


# --- the stacks -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["default", "options"])
def test_stack_is_complete_with_every_resource_and_output(env, which):
    stack = getattr(env, which)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    by_id = {r["LogicalResourceId"]: r for r in stack["resources"] if r["LogicalResourceId"]}
    conditional = {"StagingKmsPolicy", "InputBucketsPolicy", "EcsDeployPolicy",
                   "EcsDeployPassRolePolicy"}
    expected = {lid for lid, r in env.stripped["Resources"].items()
                if which == "options" or lid not in conditional}
    assert set(by_id) == expected
    for lid, r in by_id.items():
        assert r["ResourceStatus"] == "CREATE_COMPLETE", lid
        assert r["PhysicalResourceId"], lid
    assert set(stack["outputs"]) == set(env.template["Outputs"])
    assert all(stack["outputs"].values())


def test_staging_bucket(env):
    s3 = env.client("s3")
    out = env.default["outputs"]
    bucket = out["StagingBucketName"]
    assert bucket == "sme-default-staging-123456789012-us-east-1"
    s3.head_bucket(Bucket=bucket)
    rule = s3.get_bucket_encryption(Bucket=bucket)[
        "ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert rule == {"SSEAlgorithm": "AES256"}
    tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert MANAGED_BY in tags
    assert out["StagingPrefix"] == "sagemaker-executor"
    assert out["TrainingOutputPath"] == f"s3://{bucket}/sagemaker-executor/output"

    kms = env.options["outputs"]["StagingBucketName"]
    rule = s3.get_bucket_encryption(Bucket=kms)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": env.kms_key}


def _role(env, arn: str) -> dict:
    return env.client("iam").get_role(RoleName=arn.rsplit("/", 1)[1])["Role"]


def _attached(env, role_arn: str) -> list[str]:
    iam = env.client("iam")
    name = role_arn.rsplit("/", 1)[1]
    return sorted(p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=name)[
        "AttachedPolicies"])


def _policy_doc(env, policy_arn: str) -> dict:
    iam = env.client("iam")
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]["Document"]
    return json.loads(doc) if isinstance(doc, str) else doc


def _statements(doc: dict) -> dict:
    return {s["Sid"]: s for s in doc["Statement"]}


def test_roles_and_their_trust(env):
    out = env.default["outputs"]
    services = {
        "RunnerHostRoleArn": "ec2.amazonaws.com",
        "SageMakerExecutionRoleArn": "sagemaker.amazonaws.com",
        "TaskExecutionRoleArn": "ecs-tasks.amazonaws.com",
        "JobTaskRoleArn": "ecs-tasks.amazonaws.com",
    }
    for key, service in services.items():
        role = _role(env, out[key])
        assert role["Arn"] == out[key]
        trust = role["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"][0]["Principal"] == {"Service": service}, key
    iam = env.client("iam")
    bucket = f"arn:aws:s3:::{out['StagingBucketName']}"

    def inline(role_key: str, name: str) -> dict:
        doc = iam.get_role_policy(RoleName=out[role_key].rsplit("/", 1)[1], PolicyName=name)[
            "PolicyDocument"]
        if isinstance(doc, str):
            # moto quirk: a role's inline Policies created by CloudFormation come back as the
            # Python repr of the document, not JSON.
            doc = ast.literal_eval(doc) if doc.startswith("{'") else json.loads(doc)
        return _statements(doc)

    sm = inline("SageMakerExecutionRoleArn", "sagemaker-execution")
    assert sm["WriteOutputAndCheckpoints"]["Resource"] == [
        f"{bucket}/sagemaker-executor/output/*", f"{bucket}/sagemaker-executor/checkpoints/*"]
    assert sm["ReadStagedWorkspacesAndModels"]["Resource"] == f"{bucket}/sagemaker-executor/*"
    task = inline("JobTaskRoleArn", "job-task")
    assert task["StagedWorkspaces"]["Resource"] == f"{bucket}/sagemaker-executor/*"
    execution = inline("TaskExecutionRoleArn", "task-execution")
    assert execution["WriteTaskLogs"]["Resource"] == \
        "arn:aws:logs:us-east-1:123456789012:log-group:/sme-default/fargate:*"
    profile = env.client("iam").get_instance_profile(
        InstanceProfileName=out["RunnerInstanceProfileName"])["InstanceProfile"]
    assert [r["Arn"] for r in profile["Roles"]] == [out["RunnerHostRoleArn"]]


def test_oidc_role_trusts_only_matching_gitlab_jobs(env):
    for stack, aud, sub in [
        (env.default, f"https://{GITLAB_HOST}", "project_path:ml-team/*:ref_type:branch:ref:*"),
        (env.options, "sts.amazonaws.com", "project_path:group/*:ref_type:branch:ref:main"),
    ]:
        role = _role(env, stack["outputs"]["GitLabOidcRoleArn"])
        trust = role["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        st, chained = trust["Statement"]
        # The second statement: the role itself (tagged job sessions) and the runner host (gc),
        # both in this account, named by ARN in a condition (a principal ARN must exist when
        # the trust policy is written, and the role does not exist yet).
        assert chained["Action"] == ["sts:AssumeRole", "sts:TagSession"]
        assert chained["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
        assert sorted(chained["Condition"]["ArnEquals"]["aws:PrincipalArn"]) == sorted([
            stack["outputs"]["GitLabOidcRoleArn"], stack["outputs"]["RunnerHostRoleArn"]])
        assert st["Effect"] == "Allow"
        assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert st["Principal"] == {
            "Federated": f"arn:aws:iam::123456789012:oidc-provider/{GITLAB_HOST}"}
        assert st["Condition"] == {"StringEquals": {f"{GITLAB_HOST}:aud": aud},
                                   "StringLike": {f"{GITLAB_HOST}:sub": sub}}


def test_executor_policy_is_attached_and_least_privilege(env):
    out = env.default["outputs"]
    name = "sme-default-executor"
    assert _attached(env, out["RunnerHostRoleArn"]) == [name]
    assert _attached(env, out["GitLabOidcRoleArn"]) == [name]
    st = _statements(_policy_doc(env, out["ExecutorPolicyArn"]))
    # PassRole: exactly the three roles, each to its own service.
    assert st["PassTheSageMakerExecutionRole"]["Resource"] == out["SageMakerExecutionRoleArn"]
    assert st["PassTheSageMakerExecutionRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert sorted(st["PassTheTaskRoles"]["Resource"]) == sorted(
        [out["TaskExecutionRoleArn"], out["JobTaskRoleArn"]])
    assert st["PassTheTaskRoles"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    passes = [s for s in st.values() if "iam:PassRole" in str(s["Action"])]
    assert len(passes) == 2
    # Creates carry the managed-by tag; stops/deletes need it on the resource.
    tag = {"aws:RequestTag/managed-by": "sagemaker-executor"}
    for sid in ["CreateTrainingJobsTagged", "CreateModelResourcesTagged",
                "RegisterTaskDefinitionsTagged"]:
        assert st[sid]["Condition"] == {"StringEquals": tag}, sid
    assert st["RunExecutorTasksInTheCluster"]["Condition"] == {
        "ArnEquals": {"ecs:cluster": out["ClusterArn"]}, "StringEquals": tag}
    for sid in ["StopManagedTrainingJobs", "DeleteManagedModelResources", "StopManagedTasks"]:
        assert st[sid]["Condition"] == {
            "StringEquals": {"aws:ResourceTag/managed-by": "sagemaker-executor"}}, sid
    assert st["StopManagedTasks"]["Resource"] == \
        "arn:aws:ecs:us-east-1:123456789012:task/sme-default/*"
    # Tagging only as part of a create.
    assert set(st["TagSageMakerOnCreateOnly"]["Condition"]["StringEquals"]) == {
        "sagemaker:TaggingAction"}
    assert st["TagEcsOnCreateOnly"]["Condition"] == {
        "StringEquals": {"ecs:CreateAction": ["RunTask", "RegisterTaskDefinition"]}}
    # SageMaker resources by name prefix.
    assert st["CreateTrainingJobsTagged"]["Resource"] == \
        "arn:aws:sagemaker:us-east-1:123456789012:training-job/gl-*"
    assert all(r.rsplit(":", 1)[1].split("/", 1)[1] == "gl-*"
               for r in st["CreateModelResourcesTagged"]["Resource"])
    # S3: the staging prefix of the staging bucket only.
    bucket = f"arn:aws:s3:::{out['StagingBucketName']}"
    assert st["StagedObjects"]["Resource"] == f"{bucket}/sagemaker-executor/*"
    assert st["ListStagingPrefix"]["Resource"] == bucket
    assert st["ListStagingPrefix"]["Condition"] == {
        "StringLike": {"s3:prefix": "sagemaker-executor/*"}}
    # Logs: the two groups the executor tails.
    assert st["ReadJobLogs"]["Resource"] == [
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/TrainingJobs:*",
        "arn:aws:logs:us-east-1:123456789012:log-group:/sme-default/fargate:*",
    ]
    # Nothing but these services, and no wildcard actions.
    actions = [a for s in st.values() for a in ([s["Action"]] if isinstance(s["Action"], str)
                                                 else s["Action"])]
    assert {a.split(":")[0] for a in actions} == {"sagemaker", "ecs", "iam", "logs", "s3", "sqs"}
    assert not [a for a in actions if "*" in a]
    assert all(s["Effect"] == "Allow" for s in st.values())


def test_optional_policies_exist_only_when_asked_for(env):
    out = env.options["outputs"]
    assert _attached(env, out["RunnerHostRoleArn"]) == [
        "sme-options-ecs-deploy", "sme-options-ecs-deploy-pass-role", "sme-options-executor",
        "sme-options-staging-kms"]
    assert _attached(env, out["SageMakerExecutionRoleArn"]) == [
        "sme-options-staging-kms", "sme-options-training-inputs"]
    assert _attached(env, out["JobTaskRoleArn"]) == ["sme-options-staging-kms"]
    assert _attached(env, env.default["outputs"]["SageMakerExecutionRoleArn"]) == []
    policy = "arn:aws:iam::123456789012:policy/sme-options-"
    kms = _statements(_policy_doc(env, policy + "staging-kms"))["StagingKmsViaS3"]
    assert kms["Resource"] == env.kms_key
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    inputs = _statements(_policy_doc(env, policy + "training-inputs"))
    assert inputs["ReadInputBuckets"]["Resource"] == [
        "arn:aws:s3:::acme-ml-datasets/*", "arn:aws:s3:::acme-ml-features/*"]
    assert inputs["ListInputBuckets"]["Resource"] == [
        "arn:aws:s3:::acme-ml-datasets", "arn:aws:s3:::acme-ml-features"]
    deploy = _statements(_policy_doc(env, policy + "ecs-deploy"))["DeployListedServices"]
    assert deploy["Resource"] == [env.deploy_service]
    passrole = _statements(_policy_doc(env, policy + "ecs-deploy-pass-role"))
    assert passrole["PassTheDeployedServicesRoles"]["Resource"] == [env.deploy_role]


def test_log_group_cluster_repository_security_group(env):
    out = env.default["outputs"]
    [group] = env.client("logs").describe_log_groups(
        logGroupNamePrefix=out["FargateLogGroupName"])["logGroups"]
    assert group["logGroupName"] == "/sme-default/fargate"
    assert group["retentionInDays"] == 14

    [cluster] = env.client("ecs").describe_clusters(clusters=[out["ClusterName"]])["clusters"]
    assert cluster["status"] == "ACTIVE"
    assert cluster["clusterArn"] == out["ClusterArn"]

    [repo] = env.client("ecr").describe_repositories(
        repositoryNames=["sme-default-helper"])["repositories"]
    assert repo["repositoryUri"] == out["HelperRepositoryUri"]
    assert repo["imageTagMutability"] == "IMMUTABLE"

    [sg] = env.client("ec2").describe_security_groups(
        GroupIds=[out["SecurityGroupId"]])["SecurityGroups"]
    assert sg["VpcId"] == env.vpc
    assert sg["IpPermissions"] == []          # nothing inbound
    assert out["SubnetIds"] == ",".join(env.subnets)


def test_event_rule_feeds_the_queue(env):
    out = env.default["outputs"]
    sqs = env.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=out["EventQueueUrl"], AttributeNames=["All"])[
        "Attributes"]
    assert attrs["QueueArn"] == out["EventQueueArn"]
    assert attrs["SqsManagedSseEnabled"] == "true"
    assert attrs["MessageRetentionPeriod"] == "86400"
    events = env.client("events")
    rule = events.describe_rule(Name="sme-default-state-changes")
    assert rule["Arn"] == out["StateChangeRuleArn"]
    assert rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.sagemaker", "aws.ecs"],
        "detail-type": ["SageMaker Training Job State Change", "SageMaker Endpoint State Change",
                        "ECS Task State Change", "ECS Deployment State Change"],
    }
    [target] = events.list_targets_by_rule(Rule="sme-default-state-changes")["Targets"]
    assert target["Arn"] == out["EventQueueArn"]


def test_config_snippet_maps_outputs_onto_executor_config(env):
    import tomllib

    out = env.default["outputs"]
    cfg = tomllib.loads(out["ConfigSnippet"])
    assert cfg["region"] == "us-east-1"
    assert cfg["staging"] == {"bucket": out["StagingBucketName"], "prefix": out["StagingPrefix"]}
    assert cfg["train"] == {"role_arn": out["SageMakerExecutionRoleArn"],
                            "output_path": out["TrainingOutputPath"]}
    assert cfg["fargate"] == {
        "cluster": out["ClusterName"], "subnets": env.subnets,
        "security_groups": [out["SecurityGroupId"]], "assign_public_ip": False,
        "execution_role_arn": out["TaskExecutionRoleArn"], "task_role_arn": out["JobTaskRoleArn"],
        "log_group": out["FargateLogGroupName"],
        "helper_image": out["HelperRepositoryUri"] + ":0.1.0",
    }


# --- properties moto ignores: each probe must still fail, or the gap list is stale -------------

def _applied(env) -> dict[tuple[str, str], bool]:
    out = env.default["outputs"]
    s3, ecs, ecr = env.client("s3"), env.client("ecs"), env.client("ecr")
    bucket = out["StagingBucketName"]

    def s3_has(call):
        try:
            call(Bucket=bucket)
            return True
        except ClientError:
            return False

    [cluster] = ecs.describe_clusters(clusters=[out["ClusterName"]], include=["SETTINGS"])[
        "clusters"]
    try:
        ecr.get_lifecycle_policy(repositoryName="sme-default-helper")
        ecr_lifecycle = True
    except ClientError:
        ecr_lifecycle = False
    [sg] = env.client("ec2").describe_security_groups(
        GroupIds=[out["SecurityGroupId"]])["SecurityGroups"]
    [kms_group] = env.client("logs").describe_log_groups(
        logGroupNamePrefix="/sme-options/fargate")["logGroups"]
    [repo] = ecr.describe_repositories(repositoryNames=["sme-default-helper"])["repositories"]
    [kms_repo] = ecr.describe_repositories(repositoryNames=["sme-options-helper"])["repositories"]
    [kms_rule] = s3.get_bucket_encryption(Bucket=env.options["outputs"]["StagingBucketName"])[
        "ServerSideEncryptionConfiguration"]["Rules"]
    return {
        ("AWS::S3::Bucket", "LifecycleConfiguration"): s3_has(s3.get_bucket_lifecycle_configuration),
        ("AWS::S3::Bucket", "PublicAccessBlockConfiguration"): s3_has(s3.get_public_access_block),
        ("AWS::S3::Bucket", "OwnershipControls"): s3_has(s3.get_bucket_ownership_controls),
        ("AWS::ECS::Cluster", "CapacityProviders"):
            sorted(cluster.get("capacityProviders", [])) == ["FARGATE", "FARGATE_SPOT"],
        ("AWS::ECS::Cluster", "DefaultCapacityProviderStrategy"):
            bool(cluster.get("defaultCapacityProviderStrategy")),
        ("AWS::ECS::Cluster", "ClusterSettings"):
            {"name": "containerInsights", "value": "enabled"} in cluster.get("settings", []),
        ("AWS::ECR::Repository", "LifecyclePolicy"): ecr_lifecycle,
        ("AWS::EC2::SecurityGroup", "SecurityGroupEgress"): [
            (p["IpProtocol"], p.get("FromPort"), p.get("ToPort")) for p in sg["IpPermissionsEgress"]
        ] == [("tcp", 443, 443)],
        ("AWS::Logs::LogGroup", "KmsKeyId"): kms_group.get("kmsKeyId") == env.kms_key,
        ("AWS::ECR::Repository", "ImageScanningConfiguration"):
            repo.get("imageScanningConfiguration") == {"scanOnPush": True},
        ("AWS::ECR::Repository", "EncryptionConfiguration"):
            repo.get("encryptionConfiguration", {}).get("encryptionType") == "AES256"
            and kms_repo.get("encryptionConfiguration") == {"encryptionType": "KMS",
                                                            "kmsKey": env.kms_key},
        ("AWS::S3::Bucket", "BucketEncryption.BucketKeyEnabled"):
            kms_rule.get("BucketKeyEnabled") is True,
    }


def test_properties_moto_ignores_are_exactly_the_known_ones(env):
    applied = _applied(env)
    assert sorted(applied) == MOTO_IGNORED_PROPERTIES
    now_applied = [k for k in MOTO_IGNORED_PROPERTIES if applied[k]]
    assert not now_applied, (
        f"the simulator now applies {now_applied}: drop them from MOTO_IGNORED_PROPERTIES "
        "(the probe becomes a hard check)")
    for rtype, prop in MOTO_IGNORED_PROPERTIES:
        top = prop.split(".", 1)[0]
        assert any(r["Type"] == rtype and top in r.get("Properties", {})
                   for r in env.template["Resources"].values()), (rtype, prop)
