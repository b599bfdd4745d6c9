"""What the pods Headroom runs are given from a profile: container resources
(checked as the API server checks a Pod's) and the PVCs of its StatefulSets.
Used by the read-replica, cache, queue and storage sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from headroom.api import quantity, resources
from headroom.api.v1alpha1.schema import (
    DNS_SUBDOMAIN,
    RESOURCE_NAME_RULE,
    Broken,
    Model,
    ResourceName,
    Rule,
    bounded_quantity,
    is_quantity,
)

# A StatefulSet's volumeClaimTemplates never change once it exists.
SAME_CLAIM = (
    "self.size == oldSelf.size && has(self.storageClassName) == "
    "has(oldSelf.storageClassName) && (!has(self.storageClassName) || "
    "self.storageClassName == oldSelf.storageClassName)"
)


def same_claim(message: str) -> Rule:
    """The transition rule of a StatefulSet's PVC: size and class never change
    (they are its volumeClaimTemplates, which Kubernetes never updates)."""

    def check(new: Volume, old: Volume) -> Broken | None:
        size_new, size_old = getattr(new, "size", None), getattr(old, "size", None)
        if size_new == size_old and new.storage_class_name == old.storage_class_name:
            return None
        # the CRD's message without its path: "size and storageClassName cannot change..."
        return Broken("", lambda _: "size " + message.split(" ", 1)[1])

    return Rule(SAME_CLAIM, message, check, transition=True)


class Volume(Model):
    """A StatefulSet's PVC: a StorageClass, and a positive ``size`` the subclass declares."""

    storage_class_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] | None = Field(
        default=None, description="StorageClass; the cluster default when unset."
    )


class Claim(Volume):
    """A PVC per pod of a StatefulSet, retained unless the profile says otherwise."""

    delete_with_profile: bool = Field(
        default=False,
        description="Delete the PVCs when the profile is deleted. By default they are "
        "retained: data outlives the profile unless this says otherwise.",
    )


def _request_within_limit(name: str) -> Rule:
    """requests.<name> <= limits.<name>, for a resource that may be overcommitted
    (the others must be equal, which the planner checks)."""
    request, limit = f"self.requests['{name}']", f"self.limits['{name}']"

    def check(res: Resources) -> Broken | None:
        if name not in res.requests or name not in res.limits:
            return None
        asked, most = res.requests[name], res.limits[name]
        if quantity.parse(asked) <= quantity.parse(most):
            return None
        return Broken(f"requests.{name}", lambda _: resources.over_limit(name, asked, most))

    return Rule(
        f"!has(self.requests) || !has(self.limits) || !('{name}' in self.requests) || "
        f"!('{name}' in self.limits) || !{is_quantity(f'string({request})')} || "
        f"!{is_quantity(f'string({limit})')} || "
        f"quantity(string({request})).compareTo(quantity(string({limit}))) <= 0",
        f"'{resources.over_limit(name, '%s', '%s')}'.format([{request}, {limit}])",
        check,
        expression=True,
    )


ResourceQuantity = Annotated[
    str, bounded_quantity(">= 0", "resource quantities must not be negative")
]


class Resources(Model):
    """Container resources. The API server's rules for a Pod's that a CRD can
    state are here; the rest (whole numbers, huge pages, extended resources that
    cannot be overcommitted) the planner checks (headroom.api.resources)."""

    RULES = tuple(_request_within_limit(name) for name in resources.STANDARD)

    requests: dict[ResourceName, ResourceQuantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Resources the workers' container requests (cpu, memory, ...).",
        json_schema_extra={"x-kubernetes-validations": [RESOURCE_NAME_RULE]},
    )
    limits: dict[ResourceName, ResourceQuantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Limits of the workers' container; each request must be <= its limit.",
        json_schema_extra={"x-kubernetes-validations": [RESOURCE_NAME_RULE]},
    )
