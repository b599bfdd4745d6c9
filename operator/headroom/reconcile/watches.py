"""What the ScalingProfile controller is for, owns, reads and watches, and
which profile an event queues: the one declaration of it (controller-runtime's
``For/Owns/Watches``).

- **For**: :data:`PROFILE`, every ScalingProfile in scope.
- **Owns**: :data:`BUILTIN_OWNED` and the kinds of each composed engine in
  :data:`ENGINES` (KEDA, CloudNativePG, prometheus-operator, COSI), each with
  the stage it is applied in and whether a leftover goes before the apply.
  Children are watched with :data:`OWNED_SELECTOR` and indexed by
  :func:`owner_index` (owner uids, and the retained key of a retained child).
- **Reads** (never written): :data:`INPUTS`, the objects a profile references
  by name, each watched alone while referenced (the app's Deployment, its
  Secrets, a CNPG Cluster, its namespace), and :data:`LOOKUPS`, asked of the
  API server's cache only when a pass needs them (PVCs, StorageClasses).
- **Watches**: the engines' CRDs (:func:`crd_names`), which say whether an
  engine is installed, and the :data:`PROMETHEUS` objects while
  prometheus-operator is (what they select labels the alerts).
- **Which key**: :func:`profiles_of` (a child's event queues its owner, or the
  profile a retained child is kept for).

The runtime sets its caches up from this module; the pass reads the stage of
each kind and the engines' facts from it. Pure data plus pure functions.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headroom.api import v1alpha1
from headroom.kube import kinds
from headroom.planning import names, object_storage

Obj = dict[str, Any]

PROFILE = kinds.Resource(v1alpha1.API_VERSION, v1alpha1.KIND, v1alpha1.PLURAL)
# Only objects carrying both labels reach the operator's child caches.
OWNED_SELECTOR = f"app.kubernetes.io/managed-by={names.MANAGED_BY},{names.PROFILE_LABEL}"


class Stage(enum.IntEnum):
    """Apply order; objects of one stage are applied concurrently."""

    # what pods mount or run as (ConfigMaps, Secrets, ServiceAccounts, Roles) and
    # what protects them (NetworkPolicies): in place before any pod starts
    CONFIG = 0
    # workloads, and RoleBindings: the API server checks a binding against its
    # Role as its RBAC cache holds it, so a binding sent beside its new Role is
    # refused ("404 NotFound" of the binding) until that cache has the Role
    # (every new profile's first pass failed so at N=500)
    WORKLOAD = 1
    AUTOSCALER = 2  # what scales a workload that must exist first
    # what no other object of the pass waits for (Services, PDBs, Ingresses,
    # monitors): applied beside the stages, from the pass's start. A Service's
    # create waits for its cluster IP, seconds when many are created at once
    ALONGSIDE = 3


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
    """An optional engine Headroom composes when its CRDs are served."""

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
    # what a pod's agent is allowed: before the pods that use it
    OwnedKind(kinds.SERVICE_ACCOUNT, Stage.CONFIG),
    OwnedKind(kinds.ROLE, Stage.CONFIG),
    OwnedKind(kinds.ROLE_BINDING, Stage.WORKLOAD),  # after its Role (Stage)
    OwnedKind(kinds.STATEFUL_SET, Stage.WORKLOAD),
    OwnedKind(kinds.DEPLOYMENT, Stage.WORKLOAD),
    OwnedKind(kinds.NETWORK_POLICY, Stage.CONFIG),
    OwnedKind(kinds.SERVICE, Stage.ALONGSIDE),
    OwnedKind(kinds.PDB, Stage.ALONGSIDE),
    OwnedKind(kinds.INGRESS, Stage.ALONGSIDE),
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
        OwnedKind(kinds.Resource("monitoring.coreos.com/v1", kind, plural), Stage.ALONGSIDE)
        for kind, plural in (
            ("PrometheusRule", "prometheusrules"),
            ("PodMonitor", "podmonitors"),
            ("ServiceMonitor", "servicemonitors"),
        )
    ),
)


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

# -- read, never written ---------------------------------------------------------

# the database of readReplicas mode cnpg
CNPG_CLUSTER = kinds.Resource("postgresql.cnpg.io/v1", "Cluster", "clusters")
# referenced by name, each watched alone while a profile references it: the
# app's Deployment, the credentials and CA Secrets, the CNPG Cluster, and the
# profile's namespace (whose labels a Prometheus' namespace selector may look at)
INPUTS: tuple[kinds.Resource, ...] = (kinds.DEPLOYMENT, kinds.SECRET, CNPG_CLUSTER, kinds.NAMESPACE)
# asked of the API server's cache only while a Redis with persistence is not
# ready, to say why
LOOKUPS: tuple[kinds.Resource, ...] = (kinds.PVC, kinds.STORAGE_CLASS)
# watched cluster-wide while prometheus-operator is installed: what they select
# decides the alerts' and monitors' labels
PROMETHEUS = kinds.Resource("monitoring.coreos.com/v1", "Prometheus", "prometheuses")
PROMETHEUS_CRD = PROMETHEUS.crd_name

# The resource of each kind a pass names (a composed kind: its first engine's
# version; the runtime picks the installed one).
RESOURCES: dict[str, kinds.Resource] = {
    **{r.kind: r for r in (*INPUTS, *LOOKUPS)},
    **{k.kind: k.resource for k in ALL_OWNED},
}


def engine_of(kind: str) -> ComposedEngine | None:
    found = engines_of(kind)
    return found[0] if found else None


def engines_of(kind: str) -> tuple[ComposedEngine, ...]:
    """Every engine (one per version) that owns ``kind``."""
    return tuple(e for e in ENGINES if any(k.kind == kind for k in e.kinds))


def crd_names() -> tuple[str, ...]:
    """The CRDs to watch, once each (versions of an engine share them)."""
    return tuple(dict.fromkeys(n for e in ENGINES for n in e.crd_names))


def crd_served(crd: Obj | None, version: str) -> bool:
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


def installed(engine: ComposedEngine, crd: Callable[[str], Obj | None]) -> bool:
    """Every kind of ``engine`` is served, judged from its CRDs (and the
    version it gives way to is not)."""
    if engine.unless is not None and installed(engine.unless, crd):
        return False
    return all(
        crd_served(crd(k.resource.crd_name), k.resource.api_version.rpartition("/")[2])
        for k in engine.kinds
    )


def prometheuses_watched(crd: Callable[[str], Obj | None]) -> bool:
    """Whether the Prometheus objects are to be watched now."""
    return installed(PROMETHEUS_OPERATOR, crd) and crd_served(crd(PROMETHEUS_CRD), "v1")


# -- which profile an event queues -------------------------------------------------


def owner_index(obj: Obj) -> tuple[str, ...]:
    """The keys a child is found under: the uid of each owner, and for a
    retained child (no owner reference) the retained key of the profile whose
    label it carries (:func:`headroom.planning.object_storage.retained_key`)."""
    meta = obj.get("metadata") or {}
    keys = tuple(str(r.get("uid")) for r in meta.get("ownerReferences") or [])
    profile = retained_for(obj)
    if profile:
        keys += (object_storage.retained_key(str(meta.get("namespace") or ""), profile),)
    return keys


def retained_for(obj: Obj) -> str:
    """The profile a retained child is kept for ("" for any other object)."""
    meta = obj.get("metadata") or {}
    if ((meta.get("annotations") or {}).get(object_storage.RETAIN_ANNOTATION)) != "true":
        return ""
    return str((meta.get("labels") or {}).get(names.PROFILE_LABEL) or "")


def profiles_of(
    *, namespace: str, owners: tuple[tuple[str, str, str], ...], index: tuple[str, ...]
) -> list[str]:
    """The profile keys (namespace/name) a child's event queues: its owning
    profile, and the profile a retained child is kept for."""
    found = [f"{namespace}/{name}" for kind, name, _ in owners if kind == v1alpha1.KIND]
    prefix = object_storage.retained_key(namespace, "")
    found += [f"{namespace}/{key[len(prefix) :]}" for key in index if key.startswith(prefix)]
    return found
