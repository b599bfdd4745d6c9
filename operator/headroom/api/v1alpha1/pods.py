"""What the pods Headroom runs are given from a profile: container resources
(checked as the API server checks a Pod's) and the PVCs of its StatefulSets.
Used by the read-replica, cache, queue and storage sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict, JsonValue

from headroom.api import quantity, resources
from headroom.api.v1alpha1.schema import (
    DNS_SUBDOMAIN,
    Model,
    Quantity,
    ResourceName,
    cel,
    is_quantity,
)

# A StatefulSet's volumeClaimTemplates never change once it exists.
SAME_CLAIM = (
    "self.size == oldSelf.size && has(self.storageClassName) == "
    "has(oldSelf.storageClassName) && (!has(self.storageClassName) || "
    "self.storageClassName == oldSelf.storageClassName)"
)


class Volume(Model):
    """A StatefulSet's PVC: a StorageClass, and a positive ``size`` the subclass declares."""

    storage_class_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] | None = Field(
        default=None, description="StorageClass; the cluster default when unset."
    )

    @field_validator("size", check_fields=False)
    @classmethod
    def _positive(cls, size: str) -> str:
        if quantity.parse(size) <= 0:
            raise ValueError("must be > 0")
        return size


class Claim(Volume):
    """A PVC per pod of a StatefulSet, retained unless the profile says otherwise."""

    delete_with_profile: bool = Field(
        default=False,
        description="Delete the PVCs when the profile is deleted. By default they are "
        "retained: data outlives the profile unless this says otherwise.",
    )


def _request_within_limit(name: str) -> JsonDict:
    """CEL: requests.<name> <= limits.<name>, for a resource that may be
    overcommitted (the others must be equal, which the webhook checks)."""
    request, limit = f"self.requests['{name}']", f"self.limits['{name}']"
    return {
        "rule": f"!has(self.requests) || !has(self.limits) || !('{name}' in self.requests) || "
        f"!('{name}' in self.limits) || !{is_quantity(f'string({request})')} || "
        f"!{is_quantity(f'string({limit})')} || "
        f"quantity(string({request})).compareTo(quantity(string({limit}))) <= 0",
        "messageExpression": f"'{resources.over_limit(name, '%s', '%s')}'"
        f".format([{request}, {limit}])",
    }


_RESOURCE_MAP_RULES: list[JsonValue] = [
    cel(
        "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-')"
        " || k.contains('/'))",
        resources.NAME_MESSAGE,
    ),
    cel(
        f"self.all(k, !{is_quantity('string(self[k])')} || "
        "quantity(string(self[k])).compareTo(quantity('0')) >= 0)",
        "resource quantities must not be negative",
    ),
]


class Resources(Model):
    """Container resources, checked as the API server checks a Pod's."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_request_within_limit(name) for name in resources.STANDARD]
        }
    )

    requests: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Resources the workers' container requests (cpu, memory, ...).",
        json_schema_extra={"x-kubernetes-validations": _RESOURCE_MAP_RULES},
    )
    limits: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Limits of the workers' container; each request must be <= its limit.",
        json_schema_extra={"x-kubernetes-validations": _RESOURCE_MAP_RULES},
    )

    @model_validator(mode="after")
    def _within_limits(self) -> Resources:
        problems = resources.problems(self.requests, self.limits)
        if problems:
            raise ValueError("; ".join(problems))
        return self
