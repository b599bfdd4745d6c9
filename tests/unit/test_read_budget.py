"""The read side of the plan (spec.database.readReplicas), table-driven with
the seeds' numbers, and what the builders make of it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from headroom.api import conditions, v1alpha1
from headroom.builders import cnpg, desired, pgbouncer, read_pooler
from headroom.planning import credentials, membership, names, planner, read_plan
from headroom.reconcile import observe
from tests import profiles

CREDS = credentials.Credentials(
    username="app", password="pw", stats_password="st", revision="1", agent_password="ag"
)


def _plan(**overrides: object) -> planner.Plan:
    return planner.plan(v1alpha1.parse_profile(profiles.base(**overrides)))


NEON = {  # seed 002: ~100 connections, 10 Cloud Run instances, two read replicas
    "app.replicas.max": 10,
    "app.poolSizePerPod": 5,
    "database.readReplicas": {
        **profiles.external_replicas({"host": "read-1.neon.tech"}, {"host": "read-2.neon.tech"}),
        "readPoolSizePerPod": 5,
    },
}
RENDER = {  # seed 004: a 50-connection tier, 1-2 replicas, 20 serverless instances
    "app.replicas.max": 20,
    "app.poolSizePerPod": 2,
    "database.maxConnections": 50,
    "database.readReplicas": {
        **profiles.external_replicas(
            {"host": "replica-1.render.com", "maxConnections": 50},
            {"host": "replica-2.render.com", "maxConnections": 50},
        ),
        "readPoolSizePerPod": 1,
        "whenAllLagging": "refuse",
    },
}


@pytest.mark.parametrize(
    ("case", "overrides", "expect_read", "expect_write"),
    [
        (
            "seed-002-neon-two-replicas",
            NEON,
            # 100 - 3 superuser - 5 reservedConnections - 4 lag probes (3 pods + operator)
            # - 3 for the replica's postgres_exporter
            {"available": 85, "client_demand": 50, "max_db_connections": 28},
            # a tenth of the primary's 89 (8), 2 per read-pooler pod at peak, is kept for
            # reads when both replicas are out
            {"read_fallback": 6, "available": 83},
        ),
        (
            "seed-004-render-refuse",
            RENDER,
            {"available": 35, "client_demand": 20, "max_db_connections": 11},
            # refuse: the primary keeps everything for writes
            {"read_fallback": 0, "available": 39},
        ),
        (
            "smallest-replica-sizes-the-pool",
            {
                "database.readReplicas": profiles.external_replicas(
                    {"host": "big", "maxConnections": 400}, {"host": "small", "maxConnections": 40}
                )
            },
            {"max_connections": 40, "available": 25, "max_db_connections": 8},
            {},
        ),
        (
            "workers-that-read-are-counted",
            {
                **profiles.worker_resources(),
                "queues": [
                    {
                        "name": "mail",
                        "redis": "jobs",
                        "listName": "mail",
                        "image": "w:1",
                        "replicas": {"max": 4},
                        "databaseReadPoolSize": 3,
                    }
                ],
                "database.readReplicas": profiles.external_replicas({"host": "r1"}),
            },
            {"client_demand": 10 * 5 + 4 * 3},
            {},
        ),
    ],
)
def test_read_budget_table(
    case: str,
    overrides: dict[str, object],
    expect_read: dict[str, int],
    expect_write: dict[str, int],
) -> None:
    planned = _plan(**overrides)
    assert planned.ok, planned.problem_text()
    assert planned.read is not None
    read = planned.read.budget
    for key, value in expect_read.items():
        assert getattr(read, key) == value, (case, key)
    for key, value in expect_write.items():
        assert getattr(planned.budget, key) == value, (case, key)
    # the degraded case: any one replica carries the whole read pool
    assert read.server_connections <= read.available
    assert planned.read.smallest.max_connections == min(
        r.max_connections for r in planned.read.replicas
    )
    # and the fallback share fits on the primary beside the write pool (and the exporter)
    pools = planned.primary_connections - planned.exporter_connections
    assert pools <= planned.budget.available + planned.budget.read_fallback


def test_read_pool_in_session_mode_must_fit_the_replica() -> None:
    planned = _plan(
        **{
            "pooler.poolMode": "session",
            "app.poolSizePerPod": 1,
            "database.readReplicas": {
                **profiles.external_replicas({"host": "r1", "maxConnections": 50}),
                "readPoolSizePerPod": 10,
            },
        }
    )
    assert [p.field for p in planned.problems] == ["spec.app.replicas.max"]
    assert "app ceiling 10 pods x 10 connections per pod = 100 session connections" in (
        planned.problem_text()
    )
    assert "spec.database.readReplicas.readPoolSizePerPod" in planned.problem_text()


def test_a_fallback_share_below_one_per_pod_is_refused() -> None:
    planned = _plan(
        **{
            "database.readReplicas": {
                **profiles.external_replicas({"host": "r1"}),
                "primaryFallbackConnections": 2,
            }
        }
    )
    assert [p.field for p in planned.problems] == [
        "spec.database.readReplicas.primaryFallbackConnections"
    ]


def test_the_fallback_share_counts_on_a_shared_server() -> None:
    """Another profile on the same primary sees the read fallback (and the
    profile's postgres_exporter) as opened."""
    planned = _plan(**NEON)
    assert planned.exporter_connections == 3
    assert planned.primary_connections == (
        planned.budget.server_connections + planned.budget.read_fallback + 3
    )


def _secret(objects: dict[str, Any], name: str) -> dict[str, str]:
    data = objects[f"Secret/{name}"]["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_binding_points_reads_at_the_read_pooler() -> None:
    planned = _plan(**NEON)
    objects = desired.build(planned, CREDS)
    data = _secret(objects, planned.names.binding)
    assert data["DATABASE_READ_URL"] == ("postgresql://app:pw@shop-pooler-ro.default.svc:5432/shop")
    assert data["DATABASE_READ_POOL_SIZE"] == "5"
    assert data["DATABASE_URL_POOLED"].startswith("postgresql://app:pw@shop-pooler-rw.")
    assert "DATABASE_READ_REPLICA_URL" not in data


def test_prisma_gets_its_read_replica_url_with_the_read_pool_size() -> None:
    planned = _plan(**NEON, **{"app.client": "prisma"})
    data = _secret(desired.build(planned, CREDS), planned.names.binding)
    assert data["DATABASE_READ_REPLICA_URL"] == data["DATABASE_READ_URL"]
    assert "connection_limit=5" in data["DATABASE_READ_URL"]


def test_no_read_replicas_no_read_pooler_and_no_read_url() -> None:
    planned = _plan()
    objects = desired.build(planned, CREDS)
    assert not [k for k in objects if "pooler-ro" in k or "standby" in k]
    assert "DATABASE_READ_URL" not in _secret(objects, planned.names.binding)


def test_read_pooler_config_leaves_databases_to_the_agent() -> None:
    planned = _plan(**RENDER)
    objects = desired.build(planned, CREDS)
    config = objects[f"ConfigMap/{planned.names.read_pooler_config}"]["data"]
    ini = config["pgbouncer.ini"]
    assert "[databases]\n" not in ini
    assert ini.rstrip().endswith(f"%include {pgbouncer.READ_DATABASES_FILE}")
    assert "max_db_connections = 11\n" in ini
    assert f"admin_users = {planner.AGENT_USER}\n" in ini
    agent = json.loads(config[read_pooler.CONFIG_FILE])
    assert [r["host"] for r in agent["replicas"]] == [
        "replica-1.render.com",
        "replica-2.render.com",
    ]
    assert agent["fallback"] is None  # whenAllLagging: refuse
    users = _secret(objects, planned.names.read_pooler_auth)["userlist.txt"]
    assert f'"{planner.AGENT_USER}" "ag"' in users
    pod = objects[f"Deployment/{planned.names.read_pooler}"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["agent-init"]
    assert [c["name"] for c in pod["containers"]] == ["pgbouncer", "exporter", "agent"]
    assert "--once" in pod["initContainers"][0]["command"]


def test_fallback_entry_is_capped_at_the_share_the_primary_keeps() -> None:
    planned = _plan(**NEON)
    assert planned.read is not None
    fallback = membership.read_pool_config(planned).fallback
    assert fallback is not None
    assert (fallback.host, fallback.port, fallback.max_db_connections) == ("db", 5432, 2)
    assert planned.read.fallback_connections == 6 == planned.budget.read_fallback


STREAMING = {
    "database.readReplicas": {
        "mode": "streaming",
        "streaming": {"standbys": 2, "replicationSecret": {"name": "repl"}},
    }
}


def test_streaming_standbys_are_a_statefulset_with_retained_volumes() -> None:
    planned = _plan(**STREAMING)
    assert planned.ok, planned.problem_text()
    objects = desired.build(planned, CREDS)
    sts = objects["StatefulSet/shop-standby"]["spec"]
    assert sts["replicas"] == 2
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    clone = sts["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e for e in clone["env"]}
    assert env["SLOT_PREFIX"]["value"] == names.ChildNames("shop", "default").slot_prefix
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "repl", "key": "password"}
    assert env["REPLICATION_USER"]["valueFrom"]["secretKeyRef"] == {
        "name": "repl",
        "key": "username",
    }
    conf = objects["ConfigMap/shop-standby-config"]["data"]["postgresql.conf"]
    assert "max_connections = 100\n" in conf and "hot_standby = on\n" in conf
    assert planned.read is not None
    assert [r.host for r in planned.read.replicas] == [
        "shop-standby-0.shop-standby.default.svc",
        "shop-standby-1.shop-standby.default.svc",
    ]


def test_slot_prefixes_differ_across_namespaces_and_fit_postgres() -> None:
    a = names.ChildNames("x" * 40, "team-a").slot_prefix
    b = names.ChildNames("x" * 40, "team-b").slot_prefix
    assert a != b
    assert len(a + "7") <= 63


CNPG = {
    "database.host": "shop-pg-rw",
    "database.readReplicas": {"mode": "cnpg", "cnpg": {"cluster": "shop-pg"}},
}


def test_cnpg_installed_gives_cnpg_poolers_with_headrooms_sizes() -> None:
    cluster = read_plan.cnpg_cluster(
        {
            "metadata": {"name": "shop-pg"},
            "spec": {"instances": 3, "postgresql": {"parameters": {"max_connections": "200"}}},
        }
    )
    profile = v1alpha1.parse_profile(profiles.base(**CNPG, **{"database.maxConnections": 200}))
    planned = planner.plan(profile, facts=planner.Facts(cnpg=True, cnpg_cluster=cluster))
    assert planned.ok, planned.problem_text()
    objects = desired.build(planned, CREDS)
    assert not [k for k in objects if k.startswith("Deployment/")]  # CNPG runs PgBouncer
    rw, ro = objects["Pooler/shop-pooler-rw"]["spec"], objects["Pooler/shop-pooler-ro"]["spec"]
    assert (rw["type"], ro["type"]) == ("rw", "ro")
    assert rw["cluster"] == ro["cluster"] == {"name": "shop-pg"}
    assert planned.read is not None
    assert ro["pgbouncer"]["parameters"]["max_db_connections"] == str(
        planned.read.budget.max_db_connections
    )
    assert set(rw["pgbouncer"]["parameters"]) <= cnpg.ALLOWED
    assert planned.read.budget.max_connections == 200  # read from the Cluster
    assert planned.budget.read_fallback == 0  # CNPG's -ro has no fallback
    data = _secret(objects, planned.names.binding)
    assert "@shop-pooler-ro.default.svc:5432/" in data["DATABASE_READ_URL"]


def test_cnpg_absent_falls_back_to_headrooms_pgbouncer_on_the_cluster_services() -> None:
    planned = _plan(**CNPG)
    assert planned.ok, planned.problem_text()
    objects = desired.build(planned, CREDS)
    assert "Deployment/shop-pooler-ro" in objects and not [k for k in objects if "Pooler/" in k]
    agent = json.loads(objects["ConfigMap/shop-pooler-ro-config"]["data"][read_pooler.CONFIG_FILE])
    assert [r["host"] for r in agent["replicas"]] == ["shop-pg-ro.default.svc"]


def test_cnpg_mode_needs_the_clusters_rw_service_as_primary() -> None:
    planned = _plan(**{**CNPG, "database.host": "db"})
    assert [p.field for p in planned.problems] == ["spec.database.host"]
    assert "shop-pg-rw" in planned.problem_text()


def test_cnpg_cluster_below_the_declared_max_connections_is_refused() -> None:
    cluster = read_plan.CnpgCluster(name="shop-pg", instances=2, max_connections=50)
    profile = v1alpha1.parse_profile(profiles.base(**CNPG))
    planned = planner.plan(profile, facts=planner.Facts(cnpg=True, cnpg_cluster=cluster))
    assert [p.field for p in planned.problems] == ["spec.database.maxConnections"]


@pytest.mark.parametrize(
    ("keep_size", "expect"),
    [(-1, ("False", "Unbounded")), (10240, ("True", "Bounded")), (None, None)],
)
def test_standbys_say_whether_their_slots_can_fill_the_primary(
    keep_size: int | None, expect: tuple[str, str] | None
) -> None:
    live = planner.PrimaryLimits(
        max_connections=100, superuser_reserved_connections=3, max_slot_wal_keep_size_mb=keep_size
    )
    profile = v1alpha1.parse_profile(profiles.base(**STREAMING))
    planned = planner.plan(profile)
    found = {c.type: c for c in observe.components(planned, {}, app_found=True, primary=live)}
    retention = found.get(conditions.SLOT_RETENTION)
    assert (retention.status, retention.reason) == expect if retention else expect is None
    assert conditions.SLOT_RETENTION in conditions.INFORMATIONAL  # never holds Ready back
