"""CloudNativePG ``Pooler`` objects (``postgresql.cnpg.io/v1``) for a profile
whose database is a CNPG Cluster (``spec.database.readReplicas.mode: cnpg``)
while CNPG is installed: CNPG runs PgBouncer itself (authenticating through
its auth_query user), Headroom gives it the sizes CNPG does not compute.

Pure. Two Poolers, named like Headroom's own pooler Services
(``<name>-pooler-rw`` type rw, ``<name>-pooler-ro`` type ro), so CNPG's
Services carry the names the binding already points at. The Cluster itself is
only read, never written.
"""

from __future__ import annotations

from headroom.builders import common, pgbouncer
from headroom.planning import planner

API_VERSION = "postgresql.cnpg.io/v1"
# pgbouncer.ini settings CNPG's admission accepts in spec.pgbouncer.parameters
# (its AllowedPgbouncerGenericConfigurationParameters); the rest CNPG manages.
ALLOWED = frozenset(
    {
        "default_pool_size",
        "reserve_pool_size",
        "max_db_connections",
        "max_client_conn",
        "min_pool_size",
        "max_prepared_statements",
        "ignore_startup_parameters",
        "log_connections",
        "log_disconnections",
        "query_wait_timeout",
        "server_idle_timeout",
        "server_lifetime",
        "stats_period",
        "idle_transaction_timeout",
        "query_timeout",
        "client_idle_timeout",
    }
)


def uses_cnpg_poolers(plan: planner.Plan) -> bool:
    return plan.read is not None and plan.read.cnpg_poolers


def _pooler(
    plan: planner.Plan, *, name: str, kind: str, pooler: planner.PoolerPlan, component: str
) -> common.Obj:
    assert plan.read is not None and plan.read.cnpg_cluster is not None
    return {
        "apiVersion": API_VERSION,
        "kind": "Pooler",
        "metadata": common.metadata(plan, name=name, component=component, app_name="pgbouncer"),
        "spec": {
            "cluster": {"name": plan.read.cnpg_cluster},
            "type": kind,
            "instances": pooler.instances,
            "pgbouncer": {
                "poolMode": pooler.pool_mode,
                "parameters": {k: v for k, v in pooler.settings.items() if k in ALLOWED},
            },
            # one pod at a time, as the budget counted (planning.budget)
            "deploymentStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": pooler.max_surge,
                    "maxUnavailable": pooler.max_unavailable,
                },
            },
        },
    }


def build_write(plan: planner.Plan) -> list[common.Obj]:
    return [
        _pooler(
            plan,
            name=plan.names.pooler_service,
            kind="rw",
            pooler=plan.pooler,
            component=pgbouncer.COMPONENT,
        )
    ]


def build_read(plan: planner.Plan) -> list[common.Obj]:
    assert plan.read_pooler is not None
    return [
        _pooler(
            plan,
            name=plan.names.read_pooler_service,
            kind="ro",
            pooler=plan.read_pooler,
            component=pgbouncer.READ_COMPONENT,
        )
    ]
