"""Names of the children whose names carry a user-chosen part, and their limits.

The builders name Redis and worker objects with these functions; the planner
checks the same names against Kubernetes' limits, so a profile whose children
could not be created is rejected at admission (naming the field) instead of
failing at apply time. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

# A Service name is a DNS label; so is any label value.
DNS_LABEL_MAX = 63
# A StatefulSet's pods carry controller-revision-hash=<name>-<10-char hash>, a
# label value, so the StatefulSet name itself must stay within 52 characters.
STATEFULSET_NAME_MAX = 52


def redis_base(profile: str, instance: str) -> str:
    """The Redis StatefulSet, its client Service, PDB and NetworkPolicy."""
    return f"{profile}-redis-{instance}"


def redis_headless(profile: str, instance: str) -> str:
    return f"{redis_base(profile, instance)}-headless"


def redis_sentinel(profile: str, instance: str) -> str:
    return f"{redis_base(profile, instance)}-sentinel"


def sentinel_headless(profile: str, instance: str) -> str:
    return f"{redis_sentinel(profile, instance)}-headless"


def worker(profile: str, queue: str) -> str:
    """The worker Deployment, its HPA or ScaledObject (KEDA puts this name in a label)."""
    return f"{profile}-worker-{queue}"


@dataclass(frozen=True)
class LongName:
    name: str
    what: str  # e.g. "Service", for the message
    limit: int

    @property
    def too_long(self) -> bool:
        return len(self.name) > self.limit


def redis_names(profile: str, instance: str, *, sentinel: bool) -> list[LongName]:
    names = [
        LongName(redis_base(profile, instance), "StatefulSet", STATEFULSET_NAME_MAX),
        LongName(redis_headless(profile, instance), "Service", DNS_LABEL_MAX),
    ]
    if sentinel:
        names += [
            LongName(redis_sentinel(profile, instance), "StatefulSet", STATEFULSET_NAME_MAX),
            LongName(sentinel_headless(profile, instance), "Service", DNS_LABEL_MAX),
        ]
    return names


def worker_names(profile: str, queue: str) -> list[LongName]:
    return [LongName(worker(profile, queue), "ScaledObject", DNS_LABEL_MAX)]
