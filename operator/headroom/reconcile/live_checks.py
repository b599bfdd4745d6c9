"""The plan against the servers themselves, through the periodic probes: each
``s3`` bucket's HEAD (StorageReady), the primary's real limits (PrimaryLimits)
and the read replicas' lag and limits (ReadReplicasInPool, status.readReplicas,
an Event per membership change). A plan the real limits cannot carry is not
applied (:mod:`headroom.planning.live_limits` says which declared field is
wrong). Called by :mod:`headroom.reconcile.reconciler` once the plan is within
its declared budget and the credentials are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headroom.api import conditions, status
from headroom.planning import connection_budget, credentials, live_limits, membership, planner
from headroom.reconcile import bucket_check, outcome, primary_limits, replica_lag


@dataclass
class LiveChecks:
    """What the probes said of one profile."""

    checks: list[conditions.Cond] = field(default_factory=list)  # informational conditions
    problems: list[connection_budget.Problem] = field(
        default_factory=list
    )  # the plan must not apply
    primary: planner.PrimaryLimits | None = None  # as the primary reports them
    read_status: dict[str, Any] = field(default_factory=dict)  # status.readReplicas
    # buckets: the problems a HEAD found (reason, message), and what it could not check
    bucket_problems: dict[str, tuple[str, str]] = field(default_factory=dict)
    bucket_notes: dict[str, str] = field(default_factory=dict)
    probe_key: primary_limits.ProbeKey | None = None


@dataclass
class Probes:
    """The periodic probes of one operator process (one reading per target)."""

    primary_limits: primary_limits.PrimaryLimitsProbe
    replica_lag: replica_lag.ReplicaProbe
    bucket_check: bucket_check.BucketProbe

    def all(self) -> tuple[Any, ...]:
        return (self.primary_limits, self.replica_lag, self.bucket_check)


async def check(
    probes: Probes,
    *,
    key: str,
    planned: planner.Plan,
    creds: credentials.Credentials,
    bucket_problems: dict[str, tuple[str, str]],
    previous_status: dict[str, Any],
    events: list[outcome.Event],
) -> LiveChecks:
    """Every probe ``planned`` needs, in the order a refusal is decided: the
    buckets (never refused), the primary, then the replicas."""
    found = LiveChecks(bucket_problems=dict(bucket_problems))
    if planned.buckets:
        verdicts = await probes.bucket_check.check(
            bucket_check.targets(planned, creds.buckets), user=key
        )
        for name, verdict in verdicts.items():
            if verdict.reason is not None:  # in the binding still: the check may be wrong
                found.bucket_problems[name] = (verdict.reason, verdict.message)
            if verdict.note:
                found.bucket_notes[name] = verdict.note
    else:
        probes.bucket_check.release(key)
    if planned.database.read_limits:
        found.probe_key = probes.primary_limits.key(planned, creds)
        found.primary, primary_cond = await probes.primary_limits.check(planned, creds, user=key)
        found.checks.append(primary_cond)
        found.problems = live_limits.primary_problems(planned, found.primary)
        if found.problems:  # the declared limits are higher than the real ones
            return found
    if measures_replicas(planned):
        await _replicas(
            probes.replica_lag,
            found,
            key=key,
            planned=planned,
            creds=creds,
            previous_status=previous_status,
            events=events,
        )
    else:
        probes.replica_lag.release(key)
    return found


def measures_replicas(planned: planner.Plan) -> bool:
    """The operator measures the replicas the read-pool agent decides on: not
    CNPG's (its own Pooler routes), and only where it may read the servers."""
    return (
        planned.read is not None and not planned.read.cnpg_poolers and planned.database.read_limits
    )


async def _replicas(
    probe: replica_lag.ReplicaProbe,
    found: LiveChecks,
    *,
    key: str,
    planned: planner.Plan,
    creds: credentials.Credentials,
    previous_status: dict[str, Any],
    events: list[outcome.Event],
) -> None:
    """Measure the replicas (their last reading): the membership the agent
    would decide, an Event per change since the last status, their own limits."""
    reading = await probe.check(planned, creds, user=key)
    config = membership.read_pool_config(planned)
    before = {
        str(r.get("name")): bool(r.get("inPool"))
        for r in previous_status.get("readReplicas") or []
        if isinstance(r, dict)
    }
    names = {r.name for r in config.replicas}
    decided = membership.decide(
        config,
        observed={r.name: r.observed for r in reading},
        previous={n: member for n, member in before.items() if n in names},
    )
    events.extend(
        outcome.Event(
            "Normal" if "joins" in line or "again" in line else "Warning", "ReadPool", line
        )
        for line in decided.changes
    )
    found.checks.append(_in_pool_condition(decided, config))
    found.problems = live_limits.replica_problems(
        planned, {r.name: r.limits for r in reading if r.limits is not None}
    )
    found.read_status = {
        "readReplicas": [
            status.ReadReplicaStatus(
                name=v.name,
                host=v.host,
                in_pool=v.member,
                lag_seconds=_finite(r.observed.lag_seconds),
                lag_bytes=r.observed.lag_bytes,
                reason=v.reason[:1024],
            ).model_dump(by_alias=True, exclude_none=True)
            for v, r in zip(decided.verdicts, reading, strict=True)
        ]
    }


def _finite(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else seconds


def _in_pool_condition(
    found: membership.Membership, config: membership.ReadPoolConfig
) -> conditions.Cond:
    """Informational: the read pool works with fewer replicas, or none (fallback)."""
    out = [v for v in found.verdicts if not v.member]
    if not out:
        return conditions.Cond(
            conditions.READ_REPLICAS_IN_POOL,
            "True",
            "AllInPool",
            f"{len(found.verdicts)} replica(s) within {config.max_lag_seconds:g}s of the primary",
        )
    text = "; ".join(f"{v.name} ({v.host}) out: {v.reason}" for v in out)
    if found.target == "replicas":
        return conditions.Cond(conditions.READ_REPLICAS_IN_POOL, "False", "SomeOut", text[:2000])
    where = "reads go to the primary" if found.target == "fallback" else "reads are refused"
    return conditions.Cond(
        conditions.READ_REPLICAS_IN_POOL, "False", "AllOut", f"{where}; {text}"[:2000]
    )
