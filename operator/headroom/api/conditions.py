"""Every condition type a ScalingProfile's ``status.conditions`` carries, and
the pure functions that shape them (metav1.Condition semantics).

The reconcile pass and its observers build :class:`Cond` values with these
types; :func:`merge` keeps ``lastTransitionTime`` when a condition's status did
not change, so a status rewrite on every pass does not look like a flapping
component; :func:`ready` folds the components into the top-level ``Ready``;
:func:`notable` picks the transitions worth an Event. docs/api.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headroom.api import status

# True only when every component below is True, the informational ones excepted.
READY = "Ready"

# -- how GitOps tools read a profile (kstatus: sigs.k8s.io/cli-utils) ----------
# Present and True while the operator converges a change: children being
# created or rolled out, or a pass to retry after a passing error. Absent
# otherwise (Flux's convention: at most one of Reconciling and Stalled).
RECONCILING = "Reconciling"
# Present and True when progress needs a person: the budget refused, a child
# refused or owned by somebody else, an input missing, or a pass that fails on
# this profile. kstatus then reports Failed instead of waiting out a timeout.
STALLED = "Stalled"
# computed from the components on every pass, never kept from the last one
PROGRESS_TYPES = frozenset({RECONCILING, STALLED})

# -- components: each holds Ready back while it is not True ------------------
# The plan fits the primary (and the replicas') connection limits.
CONNECTION_BUDGET = "ConnectionBudget"
# The write pooler (PgBouncer Deployment or CloudNativePG Pooler) is rolled out.
POOLER_READY = "PoolerReady"
# The read pooler in front of the replicas is rolled out.
READ_POOLER_READY = "ReadPoolerReady"
# The hot standbys Headroom runs (readReplicas mode streaming) are ready.
STANDBYS_READY = "StandbysReady"
# Every Redis instance is ready.
CACHE_READY = "CacheReady"
# Every queue's workers are rolled out.
WORKERS_READY = "WorkersReady"
# The app's HPA and PDB exist (the app's Deployment is there to scale).
AUTOSCALING_READY = "AutoscalingReady"
# Every bucket is in the binding with working credentials.
STORAGE_READY = "StorageReady"
# Every child the pass wanted was applied.
CHILDREN_APPLIED = "ChildrenApplied"
# No object with one of our names belongs to somebody else.
CHILDREN_OWNED = "ChildrenOwned"
# The app's Deployment (spec.app.deployment) exists; only written when it does not.
APP_FOUND = "AppFound"
# Only on a profile being deleted: False while pods that are not Headroom's read
# its bindings (spec.inUseProtection), naming their workloads.
DELETABLE = "Deletable"

# -- informational: said, never part of Ready ---------------------------------
# Whether the workers scale on the queue's backlog (KEDA) or on CPU.
BACKLOG_SCALING = "BacklogScaling"
# The operator could not read the primary, but the pooler may.
PRIMARY_LIMITS = "PrimaryLimits"
# The app's HPA exists but may not get metrics (no metrics-server, no CPU
# requests on the app's pods); its own ScalingActive condition says so.
APP_SCALING_ACTIVE = "AppScalingActive"
# The read pool goes on with fewer replicas (or the fallback).
READ_REPLICAS_IN_POOL = "ReadReplicasInPool"
# Whether the standbys' slots can fill the primary's disk.
SLOT_RETENTION = "SlotRetention"
# Whether an installed Prometheus picks the alerts and monitors up.
ALERTS_SELECTED = "AlertsSelected"
# Whether the database servers' own metrics are collected (postgres_exporter
# ready on every server, or CloudNativePG's).
DATABASE_METRICS = "DatabaseMetrics"
# Whether the database metrics carry per-statement times (pg_stat_statements).
STATEMENT_STATS = "StatementStats"
# With spec.load: whether the time per transaction the write pooler observes stays
# within the alert's factor of the declared databaseSecondsPerRequest (less the reads),
# and the read pooler's within its factor of readSecondsPerRequest when declared.
LOAD_BASELINE = "LoadBaseline"
INFORMATIONAL = frozenset(
    {
        BACKLOG_SCALING,
        PRIMARY_LIMITS,
        APP_SCALING_ACTIVE,
        READ_REPLICAS_IN_POOL,
        SLOT_RETENTION,
        ALERTS_SELECTED,
        DATABASE_METRICS,
        STATEMENT_STATS,
        LOAD_BASELINE,
    }
)

# Reasons that mean "on its way", not "something is wrong": not worth an Event,
# and a profile held back by one of them is Reconciling; held back by any other
# reason of a component below, it is Stalled (a person must act).
# the connection budget: a profile's share is there once the others' poolers
# on the server have shrunk to theirs (a rebalance in progress)
WAITING_FOR_ROOM = "WaitingForRoom"
# the connection budget: a server runs over its budget (an upgrade, a pooler
# sized before the shares) and this profile's poolers are being brought down
# to its share, held at their larger size until their pods confirm it
OVER_BUDGET = "OverBudget"
PROGRESSING = frozenset(
    {
        WAITING_FOR_ROOM,
        OVER_BUDGET,
        "NotCreated",
        "RollingOut",
        "PodsNotReady",
        "NotApplied",
        "NotReportedYet",
        # a CloudNativePG Pooler rolling out
        "WaitingForCNPG",
        # a COSI driver or the builtin S3 server provisioning a bucket
        "AccessPending",
        "CredentialsPending",
        "ServerNotReady",
    }
)


@dataclass(frozen=True)
class Cond:
    """One condition as the pass decides it; :func:`merge` adds the times."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def merge(
    previous: list[dict[str, Any]], current: list[Cond], *, now: str, generation: int
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous or []}
    merged = []
    for cond in current:
        old = before.get(cond.type)
        keep = old is not None and old.get("status") == cond.status
        since = old.get("lastTransitionTime") if keep and old is not None else None
        merged.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": _bounded(cond.message),
                "observedGeneration": generation,
                "lastTransitionTime": since or now,
            }
        )
    return merged


def _bounded(message: str) -> str:
    """The CRD caps a message as metav1.Condition does; a longer one (every
    refused child, say) is cut rather than have the status write refused."""
    limit = status.MESSAGE_MAX
    if len(message) <= limit:
        return message
    tail = f"... ({len(message) - limit} more characters)"
    return message[: limit - len(tail)] + tail


def ready(components: list[Cond], *, informational: frozenset[str] = INFORMATIONAL) -> Cond:
    """Top-level Ready: True only when every component condition is True
    (``informational`` ones, such as an optional engine being absent, excepted)."""
    failing = [c for c in components if c.status != "True" and c.type not in informational]
    if not failing:
        return Cond(READY, "True", "AllComponentsReady", "every component is ready")
    first = failing[0]
    return Cond(READY, "False", first.reason, f"{first.type}: {first.message}")


def notable(previous: list[dict[str, Any]], current: list[Cond]) -> list[Cond]:
    """Transitions worth an Event: every change of the top-level Ready, and a
    component turning False or Unknown for a reason other than progress
    (recoveries show in Ready). Rollouts then record a handful of Events per
    profile, not one per condition flip."""
    return [
        c
        for c in transitions(previous, current)
        if c.type == READY or (c.status != "True" and c.reason not in PROGRESSING)
    ]


def transitions(previous: list[dict[str, Any]], current: list[Cond]) -> list[Cond]:
    """Conditions whose status or reason differs from ``previous`` (new ones included)."""
    before = {c.get("type"): c for c in previous or []}
    return [
        c
        for c in current
        if (before.get(c.type) or {}).get("status") != c.status
        or (before.get(c.type) or {}).get("reason") != c.reason
    ]


# Reconciling's reason when a pass was cut short by a passing error (the API
# server unavailable, a conflict, the pass timeout): the queue retries it.
RETRYING = "RetryingAfterError"
# Stalled's reason when a pass fails on this profile with an error that
# retrying will not cure; the operator's log has it.
RECONCILE_FAILED = "ReconcileFailed"


def progress(
    components: list[Cond],
    *,
    retry: bool = False,
    informational: frozenset[str] = INFORMATIONAL,
) -> list[Cond]:
    """``Reconciling`` or ``Stalled`` (at most one; none when every component
    is ready), as kstatus reads them. A component held back for a reason of
    :data:`PROGRESSING` is on its way; any other reason needs a person, except
    children the API server refused for a passing error (``retry``)."""
    held = [c for c in components if c.status != "True" and c.type not in informational]
    stuck = [
        c
        for c in held
        if c.reason not in PROGRESSING and not (retry and c.type == CHILDREN_APPLIED)
    ]
    if stuck:
        first = stuck[0]
        return [Cond(STALLED, "True", first.reason, f"{first.type}: {first.message}")]
    if held:
        first = held[0]
        return [Cond(RECONCILING, "True", first.reason, f"{first.type}: {first.message}")]
    if retry:
        return [Cond(RECONCILING, "True", RETRYING, "a passing error; the pass is retried")]
    return []


# Every reason a condition can carry, with the types that carry it (Ready and
# Stalled repeat the reason of the component holding them back, AppScalingActive
# the HPA controller's own reasons besides NotReportedYet). docs/operations.md
# has a runbook entry for each; tests/unit/test_operations_doc.py holds both to
# the reasons the code writes.
_MISSING_INPUT = frozenset({POOLER_READY, READ_POOLER_READY})
_CONTAINED = frozenset(
    {
        POOLER_READY,
        READ_POOLER_READY,
        STANDBYS_READY,
        CACHE_READY,
        WORKERS_READY,
        STORAGE_READY,
        CHILDREN_OWNED,
    }
)
REASONS: dict[str, frozenset[str]] = {
    "AllComponentsReady": frozenset({READY}),
    RETRYING: frozenset({RECONCILING}),
    RECONCILE_FAILED: frozenset({READY, STALLED}),
    "WithinBudget": frozenset({CONNECTION_BUDGET}),
    "BudgetExceeded": frozenset({CONNECTION_BUDGET}),
    WAITING_FOR_ROOM: frozenset({CONNECTION_BUDGET}),
    OVER_BUDGET: frozenset({CONNECTION_BUDGET}),
    "InvalidSpec": frozenset({CONNECTION_BUDGET}),
    "PodsReady": frozenset({POOLER_READY, READ_POOLER_READY, STANDBYS_READY, CACHE_READY}),
    "PodsNotReady": frozenset(
        {READ_POOLER_READY, STANDBYS_READY, CACHE_READY, WORKERS_READY, DATABASE_METRICS}
    ),
    "RollingOut": frozenset({POOLER_READY}),
    "NotCreated": frozenset({POOLER_READY}),
    "CNPGPoolerReady": frozenset({POOLER_READY, READ_POOLER_READY}),
    "WaitingForCNPG": frozenset({POOLER_READY, READ_POOLER_READY}),
    "CNPGClusterNotFound": frozenset({READ_POOLER_READY}),
    "CredentialsNotFound": _MISSING_INPUT,
    "CredentialsInvalid": _MISSING_INPUT | {STORAGE_READY},
    "ServerCANotFound": _MISSING_INPUT,
    "ServerCAInvalid": _MISSING_INPUT,
    "NameConflict": _CONTAINED,
    "ClaimPending": frozenset({CACHE_READY, STORAGE_READY}),
    "ScaledByKEDA": frozenset({WORKERS_READY}),
    "ScaledByHPA": frozenset({WORKERS_READY}),
    "HPAReady": frozenset({AUTOSCALING_READY}),
    "Disabled": frozenset({AUTOSCALING_READY}),
    "NotApplied": frozenset({AUTOSCALING_READY}),
    "AppDeploymentNotFound": frozenset({AUTOSCALING_READY, APP_FOUND}),
    "Ready": frozenset({STORAGE_READY}),
    "COSINotInstalled": frozenset({STORAGE_READY}),
    "AccessPending": frozenset({STORAGE_READY}),
    "CredentialsPending": frozenset({STORAGE_READY}),
    "CredentialsSecretMissing": frozenset({STORAGE_READY}),
    "CredentialsKeyMissing": frozenset({STORAGE_READY}),
    "ServerNotReady": frozenset({STORAGE_READY}),
    "BucketNotFound": frozenset({STORAGE_READY}),
    "CredentialsRejected": frozenset({STORAGE_READY}),
    "Applied": frozenset({CHILDREN_APPLIED}),
    "ApplyFailed": frozenset({CHILDREN_APPLIED}),
    "KEDAInstalled": frozenset({BACKLOG_SCALING}),
    "KEDANotInstalled": frozenset({BACKLOG_SCALING}),
    "LimitsRead": frozenset({PRIMARY_LIMITS}),
    "PrimaryUnreachable": frozenset({PRIMARY_LIMITS}),
    "NotReadYet": frozenset({PRIMARY_LIMITS}),
    "NotReportedYet": frozenset({APP_SCALING_ACTIVE}),
    "AllInPool": frozenset({READ_REPLICAS_IN_POOL}),
    "SomeOut": frozenset({READ_REPLICAS_IN_POOL}),
    "AllOut": frozenset({READ_REPLICAS_IN_POOL}),
    "Bounded": frozenset({SLOT_RETENTION}),
    "Unbounded": frozenset({SLOT_RETENTION}),
    "Selected": frozenset({ALERTS_SELECTED}),
    "NotSelected": frozenset({ALERTS_SELECTED}),
    "NoPrometheus": frozenset({ALERTS_SELECTED}),
    "NoPrometheusOperator": frozenset({ALERTS_SELECTED}),
    "InUse": frozenset({DELETABLE}),
    "ExportersReady": frozenset({DATABASE_METRICS}),
    "CloudNativePGMetrics": frozenset({DATABASE_METRICS, STATEMENT_STATS}),
    "MonitoringCredentialsNotFound": frozenset({DATABASE_METRICS}),
    "Collected": frozenset({STATEMENT_STATS}),
    "NeedsMonitoringRole": frozenset({STATEMENT_STATS}),
    "NotChecked": frozenset({STATEMENT_STATS}),
    "ExtensionMissing": frozenset({STATEMENT_STATS}),
    "WithinBaseline": frozenset({LOAD_BASELINE}),
    "AboveBaseline": frozenset({LOAD_BASELINE}),
}
