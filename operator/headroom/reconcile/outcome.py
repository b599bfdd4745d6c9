"""The last phase of a pass: what it reports. The top-level Ready from the
component conditions, the conditions merged into ``status.conditions`` (their
times kept while their status holds), ``status.budget``/``pooler``/
``readReplicas``/``binding``, the status written only when it changed, and
the Events worth recording. A failure path keeps what it did not get to as it
was. Called by :mod:`headroom.reconcile.reconciler`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from headroom.api import conditions, status, v1alpha1
from headroom.kube import errors
from headroom.planning import connection_budget, load_report, planner, server_shares
from headroom.reconcile import cluster_view

Obj = cluster_view.Obj


# The reasons of the Events a pass records that are not a condition's reason
# (a condition's change is recorded with its own reason, api.conditions.REASONS).
APPLIED = "Applied"  # children created or updated
PRUNED = "Pruned"  # a child no longer wanted, deleted
SCALED_AWAY = "ScaledAway"  # a contained component's StatefulSet scaled to 0
READ_POOL = "ReadPool"  # a replica joins or leaves the read pool
POOLER_RESTART = "PoolerRestart"  # a pgbouncer.ini setting taken only at start rolls the pooler
REDIS_RESTART = "RedisRestart"  # a redis.conf directive taken only at start rolls the Redis pods
SERVER_OVER_BUDGET = "ServerOverBudget"  # a pass shrank poolers on a server over its budget
POOL_TUNED = "PoolTuned"  # spec.pooler.autoTune changed the write pooler's pool size
EVENT_REASONS = frozenset(
    {
        APPLIED,
        PRUNED,
        SCALED_AWAY,
        READ_POOL,
        POOLER_RESTART,
        REDIS_RESTART,
        SERVER_OVER_BUDGET,
        POOL_TUNED,
    }
)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    ready: bool = False
    writes: int = 0
    skipped: bool = False  # nothing changed since the last pass: no work done
    # skipped by a restarted operator: nothing changed since the last pass
    # that found nothing to change (status.converged); a full pass comes later
    confirmed: bool = False
    retry: bool = False  # something transient failed: the queue retries with backoff
    # waiting for a server's first answer: a pass again after this many seconds
    # at the latest (the answer, when it comes first, queues one itself)
    recheck_seconds: float | None = None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Report:
    """What one pass of one profile reports; :meth:`finish` ends the pass."""

    def __init__(
        self,
        cluster: cluster_view.Cluster,
        body: Obj,
        *,
        key: str,
        on_inputs: Callable[[frozenset[cluster_view.InputRef]], None],
    ) -> None:
        self.cluster = cluster
        self.key = key
        self.meta = body["metadata"]
        self.generation = int(self.meta.get("generation", 0))
        self.previous_status: dict[str, Any] = body.get("status") or {}
        self.previous: list[dict[str, Any]] = self.previous_status.get("conditions") or []
        self.events: list[Event] = []
        self.refs: set[cluster_view.InputRef] = set()  # the inputs this pass read
        self.writes = 0
        self._on_inputs = on_inputs

    async def finish(
        self,
        components: list[conditions.Cond],
        *,
        keep_last: bool = False,
        retry: bool = False,
        **extra: Any,
    ) -> Outcome:
        """``keep_last``: a failure path; conditions of components this pass
        did not get to, and the last status.pooler/binding, stay as they were.
        ``retry``: something failed in passing and the queue runs the pass
        again. The pass decided on its generation, so observedGeneration is
        written; Reconciling or Stalled says whether it is still on its way."""
        top = conditions.ready(components)
        progress = conditions.progress(components, retry=retry)
        self.events.extend(
            Event(
                "Normal" if c.status == "True" else "Warning",
                c.reason,
                f"{c.type}: {c.message}",
            )
            for c in conditions.notable(self.previous, [top, *components])
        )
        merged = conditions.merge(
            self.previous, [top, *progress, *components], now=now(), generation=self.generation
        )
        shaped: dict[str, Any] = {}
        if keep_last:
            seen = {c["type"] for c in merged} | conditions.PROGRESS_TYPES
            merged += [c for c in self.previous if c.get("type") not in seen]
            shaped = {k: v for k, v in self.previous_status.items() if k in ("pooler", "binding")}
        shaped |= {"observedGeneration": self.generation, "conditions": merged, **extra}
        await self._keep_inputs()
        if _status_differs(self.previous_status, shaped):
            await self._write_status(shaped)
            self.writes += 1
        return Outcome(
            status=shaped,
            events=self.events,
            ready=top.status == "True",
            writes=self.writes,
            retry=retry,
        )

    async def failed(self, *, error: str, retriable: bool) -> None:
        """A pass that raised ``error`` (an exception's type) before it could
        report: the profile must not read as healthy, nor as unchanged. A
        passing error (``retriable``) leaves Ready and observedGeneration as
        they were and says Reconciling; any other is a verdict on this
        generation: Ready=False and Stalled, both ReconcileFailed. Nothing
        else of the status changes; the message names the error's type only
        (its text may quote values), the operator's log has the rest."""
        kept = [c for c in self.previous if c.get("type") not in conditions.PROGRESS_TYPES]
        if retriable:
            message = f"the last pass failed ({error}); it is retried"
            current = [
                conditions.Cond(conditions.RECONCILING, "True", conditions.RETRYING, message)
            ]
            generation = int(self.previous_status.get("observedGeneration") or 0)
        else:
            message = (
                f"every pass fails on this profile ({error}); the operator's log has the "
                "error, and the pass is retried with backoff"
            )
            reason = conditions.RECONCILE_FAILED
            current = [
                conditions.Cond(conditions.READY, "False", reason, message),
                conditions.Cond(conditions.STALLED, "True", reason, message),
            ]
            generation = self.generation
        merged = conditions.merge(self.previous, current, now=now(), generation=generation)
        replaced = {c["type"] for c in merged}
        merged += [c for c in kept if c.get("type") not in replaced]
        shaped = {**self.previous_status, "observedGeneration": generation, "conditions": merged}
        if _status_differs(self.previous_status, shaped):
            await self._write_status(shaped)

    async def postpone(self, seconds: float) -> Outcome:
        """End the pass without applying or reporting anything: what it
        depends on is due within ``seconds`` (the inputs it read stay watched)."""
        await self._keep_inputs()
        return Outcome(status=self.previous_status, recheck_seconds=seconds)

    async def _keep_inputs(self) -> None:
        await self.cluster.use_inputs(self.key, self.refs)
        self._on_inputs(frozenset(self.refs))

    async def _write_status(self, shaped: dict[str, Any]) -> None:
        patch = {
            "apiVersion": v1alpha1.API_VERSION,
            "kind": v1alpha1.KIND,
            "metadata": {"name": self.meta["name"], "namespace": self.meta["namespace"]},
            "status": shaped,
        }
        try:
            await self.cluster.apply(patch, subresource="status")
        except errors.ApiError as err:
            if err.status != 404:  # deleted meanwhile: nothing to report on
                raise

    def held(
        self, planned: planner.Plan, *, children: Mapping[str, dict[str, Any]]
    ) -> list[tuple[str, int, int]]:
        """What ``planned``'s poolers hold once applied
        (:func:`headroom.planning.server_shares.held_rows`): a shrink of either
        pooler not yet confirmed by every pod of it (its state ConfigMap among
        the live ``children``) at what they held before, in the status or as
        the pods report they run."""
        names = planned.names
        return server_shares.held_rows(
            planned,
            before={"status": self.previous_status},
            confirmed=server_shares.confirmed(names, children),
            reported=server_shares.reported(names, children),
            read_confirmed=server_shares.confirmed(names, children, read=True),
            read_reported=server_shares.reported(names, children, read=True),
        )

    def budget(
        self, planned: planner.Plan, *, held: list[tuple[str, int, int]] | None = None
    ) -> dict[str, Any]:
        """status.budget of ``planned``; plannedSince kept from the first pass.
        ``held``: its children were applied, so its poolers hold these rows
        (:meth:`held`); else they hold what the status said before."""
        previous = self.previous_status.get("budget") or {}
        since = str(previous.get("plannedSince") or "")
        if held is not None:
            rows = [
                status.HeldConnections(server=server, connections=count, pooled=pooled)
                for server, count, pooled in held
            ]
            generation = self.generation
        else:
            previous_rows = previous.get("held") or []
            rows = [status.HeldConnections.model_validate(row) for row in previous_rows]
            generation = int(previous.get("heldGeneration") or 0)
        return budget_status(
            planned,
            since=since or datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds"),
            held=rows,
            held_generation=generation,
        )

    def refused(
        self, problems: list[connection_budget.Problem] | tuple[connection_budget.Problem, ...]
    ) -> conditions.Cond:
        """ConnectionBudget False for ``problems``: nothing of this generation
        is applied, and what the last accepted plan made keeps running as it
        is (counted at what it runs in every other profile's share)."""
        cond = exceeded(problems)
        budget = self.previous_status.get("budget") or {}
        accepted = int(budget.get("heldGeneration") or 0)
        if not accepted:
            return cond
        rows = ", ".join(
            f"{row.get('connections')} on {row.get('server')}"
            for row in budget.get("held") or []
            if isinstance(row, dict)
        )
        holding = f", holding {rows}" if rows else ""
        message = (
            f"{cond.message}. Nothing of this change is applied: the profile runs its last "
            f"accepted plan (generation {accepted}{holding}), its poolers and binding as they "
            "are, until a change fits"
        )
        return conditions.Cond(cond.type, cond.status, cond.reason, message)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _status_differs(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """The API server drops nulls from a structural schema's status: compare as stored."""
    return bool(_without_nulls(before) != _without_nulls(after))


def within_budget(planned: planner.Plan) -> conditions.Cond:
    return conditions.Cond(
        conditions.CONNECTION_BUDGET,
        "True",
        "WithinBudget",
        f"{planned.budget.server_connections} server connections of "
        f"{planned.budget.available} available, margin {planned.budget.margin}; "
        f"client demand {planned.budget.client_demand}",
    )


def budget_condition(planned: planner.Plan, held: list[tuple[str, int, int]]) -> conditions.Cond:
    """ConnectionBudget of an applied plan: within it, or, while a server it
    uses runs over its budget and this profile's poolers are brought down to
    its share (``held``: what they hold until their pods confirm), what is
    held against the budget and what is being done."""
    over = server_shares.over_budget(planned, held)
    if not over:
        return within_budget(planned)
    return conditions.Cond(
        conditions.CONNECTION_BUDGET, "False", conditions.OVER_BUDGET, "; ".join(over)
    )


def exceeded(
    problems: list[connection_budget.Problem] | tuple[connection_budget.Problem, ...],
) -> conditions.Cond:
    return conditions.Cond(
        conditions.CONNECTION_BUDGET, "False", "BudgetExceeded", "; ".join(str(p) for p in problems)
    )


def budget_status(
    planned: planner.Plan,
    *,
    since: str,
    held: list[status.HeldConnections] | None = None,
    held_generation: int = 0,
) -> dict[str, Any]:
    b = planned.budget
    model = status.BudgetStatus(
        summary=b.summary,
        max_connections=b.max_connections,
        reserved=b.reserved,
        available=b.available,
        app_pods_max=planned.app.max_replicas,
        client_connections_per_pod=planned.app.pool_size_per_pod,
        client_demand=b.client_demand,
        pooler_pods_at_peak=b.pooler_pods_at_peak,
        default_pool_size=b.default_pool_size,
        reserve_pool_size=b.reserve_pool_size,
        max_db_connections=b.max_db_connections,
        max_client_conn=b.max_client_conn,
        server_connections=b.server_connections,
        margin=b.margin,
        server=server_shares.server_key(planned.namespace, planned.database),
        shared_with=[
            status.SharedProfile(profile=use.profile, server_connections=use.server_connections)
            for use in b.shared
        ],
        read_fallback=b.read_fallback,
        read=_read_budget_status(planned),
        load=_load_status(planned),
        planned_since=since,
        held=held or [],
        held_generation=held_generation,
    )
    return model.model_dump(by_alias=True, exclude_none=True)


def _load_status(planned: planner.Plan) -> status.LoadStatus | None:
    """spec.load against the plan: the lines ``headroom plan`` prints for it."""
    # cut to what the CRD holds: several queues' workers can say more than that
    found = {
        load_report.LABELS[label]: text[: status.LOAD_TEXT_MAX]
        for label, text in load_report.rows(planned)
    }
    return status.LoadStatus.model_validate(found) if found else None


def _read_budget_status(planned: planner.Plan) -> status.ReadBudgetStatus | None:
    read = planned.read
    if read is None:
        return None
    b = read.budget
    return status.ReadBudgetStatus(
        mode=read.mode,
        replicas=len(read.replicas),
        smallest=f"{read.smallest.host}:{read.smallest.port}",
        max_connections=b.max_connections,
        reserved=b.reserved,
        available=b.available,
        client_demand=b.client_demand,
        pooler_pods_at_peak=b.pooler_pods_at_peak,
        default_pool_size=b.default_pool_size,
        max_db_connections=b.max_db_connections,
        max_client_conn=b.max_client_conn,
        server_connections=b.server_connections,
        margin=b.margin,
        when_all_lagging=read.when_all_lagging,
        shared_with=[
            status.SharedProfile(profile=use.profile, server_connections=use.server_connections)
            for use in b.shared
        ],
    )
