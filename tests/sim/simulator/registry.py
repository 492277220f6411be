"""SageMaker Model Registry gaps in moto 5.2.5.

* DeleteModelPackage (moto: missing) by name or ARN; versions are never reused afterwards (moto
  numbers a new version len(group)+1, which would overwrite a live version after a delete).
* DeleteModelPackageGroup (moto: missing); refused while the group still has versions, as AWS does.
* ListTags / AddTags / DeleteTags on `model-package/<group>/<n>` ARNs (moto: 500, the ARN parse fails).
* CreateModelPackageGroup with an existing name: ValidationException (moto: silently replaced).
* CreateModelPackage with a ClientToken already used for that group returns the version it
  created then, as AWS's idempotency token does (moto: ignored, a second version is created).
* UpdateModelPackage changes only what the request names: CustomerMetadataProperties are merged
  into the existing ones, and a missing approval status or description is left as it was (moto:
  replaces the whole metadata map with the request's, dropping it when the request has none).
"""

from __future__ import annotations

import threading
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.sagemaker import models as smm
from moto.sagemaker import responses as smr
from moto.sagemaker.exceptions import ValidationError

from .common import _check_moto

_ctx: Any = None
_forced = threading.local()
_next_version: dict[tuple[str, str, str], int] = {}  # (account, region, group) -> highest version ever
_tokens: dict[tuple[str, str, str, str], str] = {}  # (account, region, group, ClientToken) -> ARN


def _group_arn(b: Any, name: str) -> str:
    return f"arn:aws:sagemaker:{b.region_name}:{b.account_id}:model-package-group/{name}"


def _group_name(name_or_arn: str) -> str:
    return name_or_arn.split("model-package-group/", 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn


# --------------------------------------------------------------------------------------------
# version numbering
# --------------------------------------------------------------------------------------------
_orig_mp_init = smm.ModelPackage.__init__


def _mp_init(self: Any, *args: Any, **kwargs: Any) -> None:
    forced = getattr(_forced, "version", None)
    if forced is not None and kwargs.get("model_package_version") is not None:
        kwargs["model_package_version"] = forced
    _orig_mp_init(self, *args, **kwargs)
    if self.tags is None:
        self.tags = []


_orig_create_mp = smr.SageMakerResponse.create_model_package


def _create_model_package(self: Any) -> Any:
    b = self.sagemaker_backend
    group = self._get_param("ModelPackageGroupName")
    with _ctx.lock:
        if not group or self._get_param("ModelPackageName"):
            return _orig_create_mp(self)
        group = _group_name(group)
        key = (b.account_id, b.region_name, group)
        token = self._get_param("ClientToken")
        earlier = _tokens.get((*key, token)) if token else None
        if earlier is not None and earlier in b.model_packages:
            return ActionResult({"ModelPackageArn": earlier})
        live = [p.model_package_version or 0 for p in b.model_packages.values() if p.model_package_group_name == group]
        version = max([_next_version.get(key, 0), *live]) + 1
        _forced.version = version
        try:
            res = _orig_create_mp(self)
        finally:
            _forced.version = None
        _next_version[key] = version
        if token:
            arn = next((p.arn for p in b.model_packages.values()
                        if p.model_package_group_name == group and p.model_package_version == version), None)
            if arn is not None:
                _tokens[(*key, token)] = arn
        return res


# --------------------------------------------------------------------------------------------
# deletes
# --------------------------------------------------------------------------------------------
def _resolve_package(b: Any, name: str) -> Any:
    arn = b.model_package_name_mapping.get(name, name)
    pkg = b.model_packages.get(arn)
    if pkg is None and name.startswith("arn:"):
        pkg = next((p for p in b.model_packages.values() if p.arn.lower() == name.lower()), None)
    if pkg is None:
        raise ValidationError(message=f"Model Package {name} does not exist.")
    return pkg


def package_containers(b: Any, name: str) -> list[dict[str, Any]]:
    """The InferenceSpecification containers of a model package (name, versioned name or ARN);
    ValidationError when it does not exist. Used by endpoints.py to serve a ModelPackageName."""
    pkg = _resolve_package(b, name)
    return [dict(c) for c in ((pkg.inference_specification or {}).get("Containers") or [])]


def _delete_model_package(self: Any) -> EmptyResult:
    b = self.sagemaker_backend
    name = self._get_param("ModelPackageName")
    with _ctx.lock:
        pkg = _resolve_package(b, name)
        del b.model_packages[pkg.arn]
        for k in [k for k, v in b.model_package_name_mapping.items() if v == pkg.arn]:
            del b.model_package_name_mapping[k]
        group = pkg.model_package_group_name
        if group:  # the bare group name resolves to the latest remaining version
            rest = [p for p in b.model_packages.values() if p.model_package_group_name == group]
            if rest:
                latest = max(rest, key=lambda p: p.model_package_version or 0)
                b.model_package_name_mapping[latest.model_package_name] = latest.arn
    return EmptyResult()


def _delete_model_package_group(self: Any) -> EmptyResult:
    b = self.sagemaker_backend
    name = _group_name(self._get_param("ModelPackageGroupName"))
    with _ctx.lock:
        if name not in b.model_package_groups:
            raise ValidationError(message=f"ModelPackageGroup {_group_arn(b, name)} does not exist.")
        if any(p.model_package_group_name == name for p in b.model_packages.values()):
            raise ValidationError(message=(
                f"Model Package Group {_group_arn(b, name)} contains model packages; delete them first."))
        del b.model_package_groups[name]
    return EmptyResult()


_orig_create_group = smr.SageMakerResponse.create_model_package_group


def _create_model_package_group(self: Any) -> Any:
    b = self.sagemaker_backend
    name = self._get_param("ModelPackageGroupName")
    with _ctx.lock:
        if name in b.model_package_groups:
            raise ValidationError(message=f"Model Package Group already exists: {_group_arn(b, name)}")
        return _orig_create_group(self)


_orig_describe_group = smm.SageMakerModelBackend.describe_model_package_group


def _describe_model_package_group(self: Any, model_package_group_name: str) -> Any:
    return _orig_describe_group(self, _group_name(model_package_group_name))


# --------------------------------------------------------------------------------------------
# tags on model-package/<group>/<n>
# --------------------------------------------------------------------------------------------
_orig_resource_from_arn = smm.SageMakerModelBackend._get_resource_from_arn


def _get_resource_from_arn(self: Any, arn: str) -> Any:
    resource = arn.split(":")[-1]
    if resource.startswith("model-package/"):
        pkg = next((p for p in self.model_packages.values() if p.arn.lower() == arn.lower()), None)
        if pkg is None:
            raise ValidationError(message=f"Could not find model-package with name {resource.split('/', 1)[1]}")
        if pkg.tags is None:
            pkg.tags = []
        return pkg
    return _orig_resource_from_arn(self, arn)


_orig_update_mp = smm.SageMakerModelBackend.update_model_package


def _update_model_package(self: Any, model_package_arn: str, model_approval_status: Any,
                          approval_description: Any, customer_metadata_properties: Any,
                          customer_metadata_properties_to_remove: Any,
                          additional_inference_specifications_to_add: Any) -> str:
    pkg = _resolve_package(self, model_package_arn)
    merged = dict(pkg.customer_metadata_properties or {})
    merged.update(customer_metadata_properties or {})
    status = model_approval_status or pkg.model_approval_status
    description = approval_description if approval_description is not None else pkg.approval_description
    return _orig_update_mp(self, model_package_arn, status, description, merged or None,
                           customer_metadata_properties_to_remove or [],
                           additional_inference_specifications_to_add)


def install(ctx: Any) -> None:
    global _ctx
    if _ctx is not None:  # already installed in this process
        _ctx = ctx
        return
    R = smr.SageMakerResponse
    _check_moto(((R, "create_model_package"), (R, "create_model_package_group"),
                 (smm.SageMakerModelBackend, "_get_resource_from_arn"),
                 (smm.SageMakerModelBackend, "describe_model_package_group"),
                 (smm.SageMakerModelBackend, "update_model_package")),
                ((R, "delete_model_package"), (R, "delete_model_package_group")), module=__name__)
    _ctx = ctx
    smm.ModelPackage.__init__ = _mp_init
    smm.SageMakerModelBackend._get_resource_from_arn = _get_resource_from_arn
    smm.SageMakerModelBackend.describe_model_package_group = _describe_model_package_group
    smm.SageMakerModelBackend.update_model_package = _update_model_package
    R = smr.SageMakerResponse
    R.create_model_package = _create_model_package
    R.delete_model_package = _delete_model_package
    R.delete_model_package_group = _delete_model_package_group
    R.create_model_package_group = _create_model_package_group
