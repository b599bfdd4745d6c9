"""The kinds a profile may own, and the optional engines Headroom composes.

One :class:`ComposedEngine` entry per engine: its kinds (with the stage each is
applied in and whether a leftover is pruned before the apply), the CRDs whose
presence says it is installed, and the planning fact it sets. KEDA is the first;
CloudNativePG, COSI and prometheus-operator are one entry each. Pure data plus
pure functions of CRD objects; read by the engine and the runtime.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headroom.kube import kinds


class Stage(enum.IntEnum):
    """Apply order; objects of one stage are applied concurrently."""

    CONFIG = 0  # what pods mount: ConfigMaps, Secrets
    WORKLOAD = 1  # workloads and what routes to or protects them
    AUTOSCALER = 2  # what scales a workload that must exist first


@dataclass(frozen=True)
class OwnedKind:
    resource: kinds.Resource
    stage: Stage
    # Two autoscalers on one Deployment fight, and KEDA's admission webhook
    # refuses a ScaledObject while another HPA targets its workload: a leftover
    # autoscaler goes before the apply, everything else after it.
    prune_first: bool = False

    @property
    def kind(self) -> str:
        return self.resource.kind


@dataclass(frozen=True)
class ComposedEngine:
    name: str
    fact: str  # the planning Facts field it sets
    kinds: tuple[OwnedKind, ...]
    # another version of the same kinds, preferred when both are served: this
    # one then counts as not installed (its kinds are not watched twice)
    unless: ComposedEngine | None = None

    @property
    def crd_names(self) -> tuple[str, ...]:
        return tuple(k.resource.crd_name for k in self.kinds)


BUILTIN_OWNED: tuple[OwnedKind, ...] = (
    OwnedKind(kinds.CONFIG_MAP, Stage.CONFIG),
    OwnedKind(kinds.SECRET, Stage.CONFIG),
    OwnedKind(kinds.STATEFUL_SET, Stage.WORKLOAD),
    OwnedKind(kinds.DEPLOYMENT, Stage.WORKLOAD),
    OwnedKind(kinds.SERVICE, Stage.WORKLOAD),
    OwnedKind(kinds.PDB, Stage.WORKLOAD),
    OwnedKind(kinds.NETWORK_POLICY, Stage.WORKLOAD),
    OwnedKind(kinds.INGRESS, Stage.WORKLOAD),
    OwnedKind(kinds.HPA, Stage.AUTOSCALER, prune_first=True),
)

KEDA = ComposedEngine(
    name="keda",
    fact="keda",
    kinds=(
        OwnedKind(
            kinds.Resource("keda.sh/v1alpha1", "TriggerAuthentication", "triggerauthentications"),
            Stage.WORKLOAD,
        ),
        OwnedKind(
            kinds.Resource("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
            Stage.AUTOSCALER,
            prune_first=True,
        ),
    ),
)

# CloudNativePG: with spec.database.readReplicas mode cnpg, the poolers are
# CNPG Pooler objects carrying Headroom's sizes (CNPG runs PgBouncer itself).
CNPG = ComposedEngine(
    name="cloudnative-pg",
    fact="cnpg",
    kinds=(
        OwnedKind(kinds.Resource("postgresql.cnpg.io/v1", "Pooler", "poolers"), Stage.WORKLOAD),
    ),
)

# prometheus-operator: the alert rules as a PrometheusRule and the exporters'
# and app's scrape targets as monitors (without it: a rule-file ConfigMap).
PROMETHEUS_OPERATOR = ComposedEngine(
    name="prometheus-operator",
    fact="prometheus_operator",
    kinds=tuple(
        OwnedKind(kinds.Resource("monitoring.coreos.com/v1", kind, plural), Stage.WORKLOAD)
        for kind, plural in (
            ("PrometheusRule", "prometheusrules"),
            ("PodMonitor", "podmonitors"),
            ("ServiceMonitor", "servicemonitors"),
        )
    ),
)
# Read, never owned: the Prometheus objects whose selectors the rules and
# monitors are labelled for (watched while prometheus-operator is installed).
PROMETHEUS_CRD = kinds.PROMETHEUS.crd_name


# COSI (objectstorage.k8s.io): spec.storage.buckets with provider cosi. v1alpha1
# (release-0.2) is what drivers implement; v1alpha2 is used only without it.
def _cosi(version: str, *, unless: ComposedEngine | None = None) -> ComposedEngine:
    group = f"objectstorage.k8s.io/{version}"
    return ComposedEngine(
        name=f"cosi {version}",
        fact=f"cosi_{version}",
        kinds=(
            OwnedKind(kinds.Resource(group, "BucketClaim", "bucketclaims"), Stage.WORKLOAD),
            OwnedKind(kinds.Resource(group, "BucketAccess", "bucketaccesses"), Stage.WORKLOAD),
        ),
        unless=unless,
    )


COSI_V1ALPHA1 = _cosi("v1alpha1")
COSI_V1ALPHA2 = _cosi("v1alpha2", unless=COSI_V1ALPHA1)

ENGINES: tuple[ComposedEngine, ...] = (
    KEDA,
    CNPG,
    PROMETHEUS_OPERATOR,
    COSI_V1ALPHA1,
    COSI_V1ALPHA2,
)

ALL_OWNED: tuple[OwnedKind, ...] = BUILTIN_OWNED + tuple(k for e in ENGINES for k in e.kinds)
BY_KIND: dict[str, OwnedKind] = {k.kind: k for k in ALL_OWNED}


def engine_of(kind: str) -> ComposedEngine | None:
    found = engines_of(kind)
    return found[0] if found else None


def engines_of(kind: str) -> tuple[ComposedEngine, ...]:
    """Every engine (one per version) that owns ``kind``."""
    return tuple(e for e in ENGINES if any(k.kind == kind for k in e.kinds))


def crd_names() -> tuple[str, ...]:
    """The CRDs to watch, once each (versions of an engine share them)."""
    return tuple(dict.fromkeys(n for e in ENGINES for n in e.crd_names))


def crd_served(crd: dict[str, Any] | None, version: str) -> bool:
    """The CRD exists, is Established, is not being deleted (then the API server
    refuses new objects) and serves ``version``."""
    if not crd or crd.get("metadata", {}).get("deletionTimestamp"):
        return False
    established = any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or []
    )
    versions = {
        v.get("name") for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served")
    }
    return established and version in versions


def installed(engine: ComposedEngine, crd: Callable[[str], dict[str, Any] | None]) -> bool:
    """Every kind of ``engine`` is served, judged from its CRDs (and the
    version it gives way to is not)."""
    if engine.unless is not None and installed(engine.unless, crd):
        return False
    return all(
        crd_served(crd(k.resource.crd_name), k.resource.api_version.rpartition("/")[2])
        for k in engine.kinds
    )


def facts(crd: Callable[[str], dict[str, Any] | None]) -> dict[str, bool]:
    """Planning facts (``keda=True``, ...) from the CRDs in the cache."""
    return {engine.fact: installed(engine, crd) for engine in ENGINES}
