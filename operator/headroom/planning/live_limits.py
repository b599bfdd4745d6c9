"""A plan against what the servers themselves report: the primary's and each
read replica's real connection limits, read by the operator
(:mod:`headroom.reconcile.primary_limits`, :mod:`headroom.reconcile.replica_lag`).

The declared limits were checked at admission; the real ones may be lower (a
smaller tier, a changed parameter group). Then the plan must not be applied,
and each problem says which declared field is wrong. Pure; the reconcile pass
calls these on a plan that is otherwise within its budget.
"""

from __future__ import annotations

from collections.abc import Mapping

from headroom.planning import connection_budget, planner, read_plan


def primary_problems(
    plan: planner.Plan, primary: planner.PrimaryLimits | None
) -> list[connection_budget.Problem]:
    """What the primary's real limits cannot carry (none when not read)."""
    if primary is None:
        return []
    db, budget = plan.database, plan.budget
    others = sum(use.server_connections for use in budget.shared)
    exporter = plan.exporter_connections
    live = primary.available - db.reserved_connections - exporter - others
    opened = budget.server_connections + budget.read_fallback
    if opened <= live:
        return []
    field = (
        "spec.database.maxConnections"
        if primary.max_connections < db.max_connections
        else "spec.database.superuserReservedConnections"
    )
    parts = f"{budget.server_connections} for the write pool"
    if budget.read_fallback:
        parts += (
            f" + {budget.read_fallback} for the read pool when every replica is out "
            "(spec.database.readReplicas.primaryFallbackConnections)"
        )
    return [
        connection_budget.Problem(
            field,
            f"the primary reports {primary.describe()}"
            + (f" - {db.reserved_connections} reserved" if db.reserved_connections else "")
            + (f" - {exporter} for postgres_exporter" if exporter else "")
            + (f" - {others} opened by the other profiles on it" if others else "")
            + f" = {live} available, but the plan opens {opened} server "
            f"connections ({parts}; declared maxConnections {db.max_connections}, "
            f"superuserReservedConnections {db.superuser_reserved_connections}); "
            "declare the primary's real limits",
        )
    ]


def replica_problems(
    plan: planner.Plan, limits: Mapping[str, planner.PrimaryLimits]
) -> list[connection_budget.Problem]:
    """A replica whose real limits are below the declared ones cannot carry the
    read pool when it is the only one left. ``limits``: by replica name, those
    the operator could read."""
    read, rr = plan.read, plan.database.read_replicas
    if read is None or rr is None:
        return []
    probes = rr.pooler.instances + connection_budget.ROLLOUT_EXTRA_PODS + read_plan.OPERATOR_PROBES
    reserved = rr.reserved_connections + probes + read.exporter_connections
    budget = read.budget
    problems = []
    for replica in read.replicas:
        found = limits.get(replica.name)
        if found is None:
            continue
        available = found.available
        # what the other profiles that share this replica open on it
        others = tuple(
            use for use in plan.facts.shared if replica.server and use.server == replica.server
        )
        taken = reserved + sum(use.server_connections for use in others)
        if budget.server_connections <= available - taken:
            continue
        shared = (
            " and what other profiles open on it ("
            + ", ".join(f"{use.profile} {use.server_connections}" for use in others)
            + ")"
            if others
            else ""
        )
        problems.append(
            connection_budget.Problem(
                replica.field,
                f"the replica {replica.host}:{replica.port} reports {available} connections "
                f"available, {available - taken} after {reserved} kept for direct use and "
                f"lag probes{shared}, but the read pool may open {budget.server_connections} "
                "on it; declare the replica's real max_connections",
            )
        )
    return problems
