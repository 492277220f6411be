"""Smoke tests: Model Registry gaps filled by the simulator (module registry)."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

INFERENCE = {"Containers": [{"Image": "serve:1", "ModelDataUrl": "s3://bucket/model.tar.gz"}],
             "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}


def _code(e) -> str:
    return e.value.response["Error"]["Code"]


def test_delete_model_package_tags_and_versions(aws, unique):
    sm = aws("sagemaker", retries=False)
    group = unique("group")
    sm.create_model_package_group(ModelPackageGroupName=group)
    with pytest.raises(ClientError) as e:
        sm.create_model_package_group(ModelPackageGroupName=group)
    assert _code(e) == "ValidationException"

    v1 = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=INFERENCE,
                                 ModelApprovalStatus="Approved",
                                 Tags=[{"Key": "gitlab:job-id", "Value": "42"}])["ModelPackageArn"]
    v2 = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=INFERENCE)["ModelPackageArn"]
    assert v1.endswith(f"model-package/{group}/1") and v2.endswith(f"model-package/{group}/2")

    assert sm.list_tags(ResourceArn=v1)["Tags"] == [{"Key": "gitlab:job-id", "Value": "42"}]
    assert sm.list_tags(ResourceArn=v2)["Tags"] == []
    sm.add_tags(ResourceArn=v2, Tags=[{"Key": "stage", "Value": "candidate"}])
    assert sm.list_tags(ResourceArn=v2)["Tags"] == [{"Key": "stage", "Value": "candidate"}]

    sm.delete_model_package(ModelPackageName=v2)
    with pytest.raises(ClientError) as e:
        sm.describe_model_package(ModelPackageName=v2)
    assert _code(e) == "ValidationException"
    listed = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert [p["ModelPackageArn"] for p in listed] == [v1]

    # a version number is never reused
    v3 = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=INFERENCE)["ModelPackageArn"]
    assert v3.endswith(f"model-package/{group}/3")
    assert sm.describe_model_package(ModelPackageName=v1)["ModelApprovalStatus"] == "Approved"

    with pytest.raises(ClientError) as e:
        sm.delete_model_package(ModelPackageName=v2)
    assert _code(e) == "ValidationException"


def test_delete_model_package_group(aws, unique):
    sm = aws("sagemaker", retries=False)
    group = unique("group")
    sm.create_model_package_group(ModelPackageGroupName=group)
    v1 = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=INFERENCE)["ModelPackageArn"]
    with pytest.raises(ClientError) as e:
        sm.delete_model_package_group(ModelPackageGroupName=group)
    assert _code(e) == "ValidationException"
    sm.delete_model_package(ModelPackageName=v1)
    sm.delete_model_package_group(ModelPackageGroupName=group)
    with pytest.raises(ClientError) as e:
        sm.describe_model_package_group(ModelPackageGroupName=group)
    assert _code(e) == "ValidationException"


def test_a_client_token_makes_create_model_package_idempotent(aws, unique):
    sm = aws("sagemaker", retries=False)
    group = unique("group")
    sm.create_model_package_group(ModelPackageGroupName=group)
    first = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=INFERENCE,
                                    ClientToken="gl-1-42")["ModelPackageArn"]
    again = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=INFERENCE,
                                    ClientToken="gl-1-42")["ModelPackageArn"]
    other = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=INFERENCE,
                                    ClientToken="gl-1-43")["ModelPackageArn"]
    assert first == again and first.endswith("/1") and other.endswith("/2")
    listed = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert len(listed) == 2


def test_update_model_package_changes_only_what_it_names(aws, unique):
    sm = aws("sagemaker", retries=False)
    group = unique("group")
    sm.create_model_package_group(ModelPackageGroupName=group)
    arn = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=INFERENCE,
                                  CustomerMetadataProperties={"gitlab:job-id": "42", "gates": "ok"})["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="gates passed")
    d = sm.describe_model_package(ModelPackageName=arn)
    assert d["ModelApprovalStatus"] == "Approved" and d["ApprovalDescription"] == "gates passed"
    assert d["CustomerMetadataProperties"] == {"gitlab:job-id": "42", "gates": "ok"}
    sm.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties={"stage": "stable"},
                            CustomerMetadataPropertiesToRemove=["gates"])
    d = sm.describe_model_package(ModelPackageName=arn)
    assert d["ModelApprovalStatus"] == "Approved" and d["ApprovalDescription"] == "gates passed"
    assert d["CustomerMetadataProperties"] == {"gitlab:job-id": "42", "stage": "stable"}
