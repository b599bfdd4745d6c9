"""Profile -> Plan: the one planning function.

The admission webhook, the reconcile pass and ``headroom plan`` all call
:func:`plan`; a Plan with problems is a profile that must not be applied. The
Plan holds every size and setting the builders need, so builders make no
decisions of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from headroom.api import v1alpha1
from headroom.planning import budget as budget_mod
from headroom.planning import pgbouncer_params

POOLER_PORT = 6432
EXPORTER_PORT = 9127
STATS_USER = "headroom_stats"

# Defaults Headroom renders unless the profile overrides them. query_wait_timeout
# bounds how long a client queues for a server connection before it gets an
# error instead of hanging; server_lifetime recycles connections so a failover
# or a DNS change is picked up.
_DEFAULT_SETTINGS: dict[str, str] = {
    "server_lifetime": "3600",
    "server_idle_timeout": "600",
    "query_wait_timeout": "120",
    "ignore_startup_parameters": "extra_float_digits",
    "log_connections": "0",
    "log_disconnections": "0",
    "stats_period": "60",
}
# Prepared statements survive transaction pooling from 1.21 on (Prisma, asyncpg).
_PREPARED_STATEMENTS_DEFAULT = "200"


@dataclass(frozen=True)
class PoolerPlan:
    instances: int
    pool_mode: str
    image: str
    exporter_image: str
    version: tuple[int, int]
    max_surge: int
    max_unavailable: int
    # The [pgbouncer] settings that are tunable, final values (sizing included).
    settings: dict[str, str]


@dataclass(frozen=True)
class AppPlan:
    deployment: str
    min_replicas: int
    max_replicas: int
    pool_size_per_pod: int


@dataclass(frozen=True)
class Plan:
    name: str
    namespace: str
    uid: str
    generation: int
    app: AppPlan
    database: v1alpha1.Database
    pooler: PoolerPlan
    budget: budget_mod.ConnectionBudget
    problems: tuple[budget_mod.Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_text(self) -> str:
        return "; ".join(str(p) for p in self.problems)


def _app_plan(app: v1alpha1.App) -> tuple[AppPlan, list[budget_mod.Problem]]:
    problems: list[budget_mod.Problem] = []
    if app.replicas is not None:
        low, high = app.replicas.min, app.replicas.max
        if low > high:
            problems.append(
                budget_mod.Problem(
                    "spec.app.replicas.min",
                    f"{low} must be <= spec.app.replicas.max {high}",
                )
            )
    elif app.capacity is not None:
        cap = app.capacity
        high = math.ceil(cap.target_concurrent_users / cap.users_per_pod)
        low = min(cap.min_replicas, high)
        if high > 1000:
            problems.append(
                budget_mod.Problem(
                    "spec.app.capacity",
                    f"targetConcurrentUsers {cap.target_concurrent_users} / usersPerPod "
                    f"{cap.users_per_pod} = {high} pods > 1000",
                )
            )
    else:
        low = high = 1
        problems.append(budget_mod.Problem("spec.app", "set exactly one of replicas or capacity"))
    if app.replicas is not None and app.capacity is not None:
        problems.append(
            budget_mod.Problem("spec.app", "set exactly one of replicas or capacity, not both")
        )
    return (
        AppPlan(
            deployment=app.deployment,
            min_replicas=low,
            max_replicas=high,
            pool_size_per_pod=app.pool_size_per_pod,
        ),
        problems,
    )


def _pooler_settings(
    pooler: v1alpha1.Pooler, *, version: tuple[int, int]
) -> tuple[dict[str, str], dict[str, int], list[budget_mod.Problem]]:
    problems: list[budget_mod.Problem] = []
    settings = dict(_DEFAULT_SETTINGS)
    if version >= (1, 21) and pooler.pool_mode == "transaction":
        settings["max_prepared_statements"] = _PREPARED_STATEMENTS_DEFAULT
    pinned: dict[str, int] = {}
    for key, value in sorted(pooler.parameters.items()):
        problem = pgbouncer_params.check(key, value, version=version)
        if problem:
            problems.append(budget_mod.Problem(f"spec.pooler.parameters.{key}", problem))
            continue
        if key in pgbouncer_params.SIZING_KEYS:
            pinned[key] = int(value)
        else:
            settings[key] = value.strip()
    return settings, pinned, problems


def plan(profile: v1alpha1.ScalingProfile) -> Plan:
    """Compute the whole plan for ``profile``; never raises for a parsed profile."""
    spec = profile.spec
    app, problems = _app_plan(spec.app)
    version = pgbouncer_params.parse_version(spec.pooler.version)
    settings, pinned, setting_problems = _pooler_settings(spec.pooler, version=version)
    problems += setting_problems

    db = spec.database
    if db.superuser_reserved_connections + db.reserved_connections >= db.max_connections:
        problems.append(
            budget_mod.Problem(
                "spec.database.maxConnections",
                f"{db.max_connections} leaves nothing after "
                f"superuserReservedConnections {db.superuser_reserved_connections} + "
                f"reservedConnections {db.reserved_connections}",
            )
        )
    clients = (
        budget_mod.ClientGroup(
            label="app",
            field="spec.app.replicas.max" if spec.app.replicas else "spec.app.capacity",
            max_pods=app.max_replicas,
            connections_per_pod=app.pool_size_per_pod,
        ),
    )
    budget, budget_problems = budget_mod.compute(
        budget_mod.BudgetInput(
            max_connections=db.max_connections,
            superuser_reserved=db.superuser_reserved_connections,
            other_reserved=db.reserved_connections,
            pooler_instances=spec.pooler.instances,
            session_mode=spec.pooler.pool_mode == "session",
            clients=clients,
            pinned=pinned,
        )
    )
    problems += budget_problems
    settings.update(
        {
            "pool_mode": spec.pooler.pool_mode,
            "default_pool_size": str(budget.default_pool_size),
            "reserve_pool_size": str(budget.reserve_pool_size),
            "max_db_connections": str(budget.max_db_connections),
            "max_client_conn": str(budget.max_client_conn),
        }
    )
    settings.setdefault("server_tls_sslmode", db.ssl_mode)
    single = spec.pooler.instances == 1
    pooler = PoolerPlan(
        instances=spec.pooler.instances,
        pool_mode=spec.pooler.pool_mode,
        image=spec.pooler.image,
        exporter_image=spec.pooler.exporter_image,
        version=version,
        max_surge=budget_mod.SINGLE_INSTANCE_SURGE if single else 0,
        max_unavailable=0 if single else 1,
        settings=dict(sorted(settings.items())),
    )
    return Plan(
        name=profile.name,
        namespace=profile.namespace,
        uid=profile.uid,
        generation=profile.generation,
        app=app,
        database=db,
        pooler=pooler,
        budget=budget,
        problems=tuple(problems),
    )
