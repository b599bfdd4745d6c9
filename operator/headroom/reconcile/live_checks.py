"""The plan against the servers themselves, through the periodic probes: each
``s3`` bucket's HEAD (StorageReady), the primary's real limits (PrimaryLimits)
and whether it has per-statement times (StatementStats), and the read replicas'
lag and limits (ReadReplicasInPool, status.readReplicas, an Event per
membership change). A plan the real limits cannot carry is not
applied (:mod:`headroom.planning.live_limits` says which declared field is
wrong). Called by :mod:`headroom.reconcile.reconciler` once the plan is within
its declared budget and the credentials are known.

Nothing here waits for a server: each probe gives its last answer. A target
not read yet (a new profile, a changed primary or login) is being read in the
background; since a plan the real limits cannot carry must not be applied,
the pass does not apply until the limits it depends on have an answer or
:data:`FIRST_ANSWER_SECONDS` have passed since they were first asked for
(then it plans with the declared limits, and the answer, when it comes,
re-plans). The answer (or that deadline) queues the next pass, so a new
profile waits at most that long for a server, however many profiles are
probed at once (first readings go ahead of refreshes, and a read is given up
after its time limit). Buckets are never waited for: a verdict never stops a
plan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headroom.api import conditions, status
from headroom.planning import (
    connection_budget,
    credentials,
    database_metrics,
    live_limits,
    membership,
    planner,
)
from headroom.reconcile import bucket_check, outcome, primary_limits, probe, replica_lag, resolver

FIRST_ANSWER_SECONDS = 5.0
# How long a pass waits, holding its worker, for first answers already being
# read (a server that answers or refuses at once), before it gives the worker
# up until they come or FIRST_ANSWER_SECONDS pass: saves the pass a new
# profile would otherwise run twice (at N=500, ~1.4 s each, behind the queue)
IN_PASS_SECONDS = 0.5


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
    # seconds until the limits the plan depends on are due (not applied before)
    wait_seconds: float | None = None


@dataclass
class Probes:
    """The periodic probes of one operator process: one reading per target,
    one resolver and one set of slots for all."""

    primary_limits: primary_limits.PrimaryLimitsProbe
    replica_lag: replica_lag.ReplicaProbe
    bucket_check: bucket_check.BucketProbe
    resolve: resolver.Resolver = field(default_factory=resolver.Resolver)
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def make(
        cls,
        *,
        primary_check_seconds: float = 300.0,
        replica_check_seconds: float = 30.0,
        bucket_check_seconds: float = 300.0,
        slots: int = probe.DEFAULT_SLOTS,
        allow_internal_endpoints: bool = False,
    ) -> Probes:
        resolve = resolver.Resolver()
        shared = probe.Slots(slots)
        return cls(
            primary_limits=primary_limits.PrimaryLimitsProbe(
                ttl_seconds=primary_check_seconds, resolve=resolve, slots=shared
            ),
            replica_lag=replica_lag.ReplicaProbe(
                ttl_seconds=replica_check_seconds, resolve=resolve, slots=shared
            ),
            bucket_check=bucket_check.BucketProbe(
                ttl_seconds=bucket_check_seconds,
                resolve=resolve,
                allow_internal=allow_internal_endpoints,
                slots=shared,
            ),
            resolve=resolve,
        )

    def all(self) -> tuple[probe.PeriodicProbe[Any, Any], ...]:
        return (self.primary_limits, self.replica_lag, self.bucket_check)

    def version(self, user: str) -> tuple[tuple[int, ...], ...]:
        """Changes whenever an answer ``user`` relies on does."""
        return tuple(p.version(user) for p in self.all())

    def release(self, user: str) -> None:
        for p in self.all():
            p.release(user)

    async def first_answers(self, user: str, *, within: float) -> bool:
        """Wait at most ``within`` seconds for the first answers ``user`` waits
        for that are being read; True when they all came."""
        pending = [t for p in self.all() for t in p.first_readings(user)]
        if not pending:
            return False
        _, still = await asyncio.wait(pending, timeout=within)
        return not still

    def refresh_due(self) -> int:
        """Start every reading that is due (never waits); how many."""
        return sum(p.refresh_due() for p in self.all())

    async def close(self) -> None:
        for p in self.all():
            await p.close()
        self.resolve.close()


def check(
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
        verdicts = probes.bucket_check.check(bucket_check.targets(planned, creds.buckets), user=key)
        for name, verdict in verdicts.items():
            if verdict is None:  # not checked yet: said once it is
                continue
            if verdict.reason is not None:  # in the binding still: the check may be wrong
                found.bucket_problems[name] = (verdict.reason, verdict.message)
            if verdict.note:
                found.bucket_notes[name] = verdict.note
    else:
        probes.bucket_check.release(key)
    # both are asked before either is judged: their first reads run at once
    primary = (
        probes.primary_limits.check(planned, creds, user=key)
        if planned.database.read_limits
        else None
    )
    replicas: dict[str, probe.Answer[replica_lag.ReplicaReading]] = {}
    if measures_replicas(planned):
        replicas = probes.replica_lag.check(planned, creds, user=key)
    else:
        probes.replica_lag.release(key)
    now = probes.clock()
    waits = [
        w
        for a in (primary, *replicas.values())
        if a is not None and a.result is None and (w := _wait(a, now)) is not None
    ]
    if waits:
        found.wait_seconds = max(waits)
        return found
    if primary is not None:
        if primary.result is None:
            found.checks.append(_not_read_yet(planned))
        else:
            found.primary, primary_cond = primary_limits.condition(planned.database, primary.result)
            found.checks.append(primary_cond)
            found.problems = live_limits.primary_problems(planned, found.primary)
            if found.problems:  # the declared limits are higher than the real ones
                return found
    statements = statement_stats(planned, found.primary)
    if statements is not None:
        found.checks.append(statements)
    if replicas:
        _replicas(
            found,
            readings={n: a.result for n, a in replicas.items() if a.result is not None},
            planned=planned,
            previous_status=previous_status,
            events=events,
        )
    return found


def _wait(answer: probe.Answer[Any], now: float) -> float | None:
    """Seconds left to wait for a first answer (None: waited long enough)."""
    left = answer.asked + FIRST_ANSWER_SECONDS - now
    return left if left > 0 else None


def _not_read_yet(planned: planner.Plan) -> conditions.Cond:
    db = planned.database
    return conditions.Cond(
        conditions.PRIMARY_LIMITS,
        "Unknown",
        "NotReadYet",
        f"the limits of {db.host}:{db.port} were not read within "
        f"{FIRST_ANSWER_SECONDS:g} s; planning with the declared ones until they are",
    )


def statement_stats(
    planned: planner.Plan, primary: planner.PrimaryLimits | None
) -> conditions.Cond | None:
    """Informational: whether the database metrics carry per-statement times
    (None: no database metrics)."""
    metrics = planned.database_metrics
    if metrics is None:
        return None

    def cond(status: str, reason: str, message: str) -> conditions.Cond:
        return conditions.Cond(conditions.STATEMENT_STATS, status, reason, message)

    if metrics.source == database_metrics.CNPG:
        return cond(
            "False",
            "CloudNativePGMetrics",
            f"CloudNativePG's default metrics of Cluster {metrics.cnpg_cluster} have no "
            "pg_stat_statements: no per-statement times (HeadroomQuerySlow still reads the "
            "running queries)",
        )
    if not metrics.monitoring_role:
        return cond(
            "False",
            "NeedsMonitoringRole",
            "postgres_exporter logs in with the app's role, which pg_stat_statements hides "
            "the other roles' query ids from (postgres_exporter 0.17 then fails the whole "
            "scrape): no per-statement times. Give spec.database.metrics.credentialsSecret a "
            "role granted pg_monitor",
        )
    db = planned.database
    if primary is None:
        return cond(
            "Unknown",
            "NotChecked",
            f"whether pg_stat_statements exists in database {db.name} is read with the "
            "primary's limits (PrimaryLimits)",
        )
    if primary.statements_missing:
        return cond(
            "False",
            "ExtensionMissing",
            f"pg_stat_statements cannot be read in database {db.name} "
            f"({primary.statements_missing}): set shared_preload_libraries = "
            "'pg_stat_statements' and CREATE EXTENSION pg_stat_statements there; until "
            "then no per-statement times",
        )
    return cond(
        "True",
        "Collected",
        f"postgres_exporter collects per-statement times from pg_stat_statements in "
        f"database {db.name} (HeadroomStatementsSlow)",
    )


def measures_replicas(planned: planner.Plan) -> bool:
    """The operator measures the replicas the read-pool agent decides on: not
    CNPG's (its own Pooler routes), and only where it may read the servers."""
    return (
        planned.read is not None and not planned.read.cnpg_poolers and planned.database.read_limits
    )


def _replicas(
    found: LiveChecks,
    *,
    readings: dict[str, replica_lag.ReplicaReading],
    planned: planner.Plan,
    previous_status: dict[str, Any],
    events: list[outcome.Event],
) -> None:
    """Judge the replicas (their last readings; one not read yet counts as not
    probed): the membership the agent would decide, an Event per change since
    the last status, their own limits."""
    config = membership.read_pool_config(planned)
    before = {
        str(r.get("name")): bool(r.get("inPool"))
        for r in previous_status.get("readReplicas") or []
        if isinstance(r, dict)
    }
    names = {r.name for r in config.replicas}
    decided = membership.decide(
        config,
        observed={name: r.observed for name, r in readings.items()},
        previous={n: member for n, member in before.items() if n in names},
    )
    events.extend(
        outcome.Event(
            "Normal" if "joins" in line or "again" in line else "Warning",
            outcome.READ_POOL,
            line,
        )
        for line in decided.changes
    )
    found.checks.append(_in_pool_condition(decided, config))
    found.problems = live_limits.replica_problems(
        planned, {name: r.limits for name, r in readings.items() if r.limits is not None}
    )
    found.read_status = {
        "readReplicas": [
            status.ReadReplicaStatus(
                name=v.name,
                host=v.host,
                in_pool=v.member,
                lag_seconds=_finite(readings[v.name].observed.lag_seconds)
                if v.name in readings
                else None,
                lag_bytes=readings[v.name].observed.lag_bytes if v.name in readings else None,
                reason=v.reason[:1024],
            ).model_dump(by_alias=True, exclude_none=True)
            for v in decided.verdicts
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
