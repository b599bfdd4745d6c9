"""The operator's view of the read replicas: status.readReplicas, the
ReadReplicasInPool condition, an Event per membership change, and a read plan
refused when a replica's real limits cannot carry it. The reader stands in for
Postgres here; tests/conformance/test_replica_lag.py reads real standbys with
the probe's own reader."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from headroom.planning import membership, planner
from headroom.reconcile import reconciler, replica_lag, telemetry
from tests import profiles
from tests.unit import fake_cluster, passes
from tests.unit.test_engine import KEY, _cluster, _conditions

LIMITS_100 = planner.PrimaryLimits(max_connections=100, superuser_reserved_connections=3)
CAUGHT_UP = membership.Observed(in_recovery=True, lag_bytes=0, lag_seconds=0.0)


def _profile() -> dict[str, Any]:
    return profiles.base(
        **{
            "database.readReplicas": profiles.external_replicas(
                {"host": "ro-1.example.com"}, {"host": "ro-2.example.com"}
            )
        }
    )


HOSTS = {"ro-1.example.com": "replica-0", "ro-2.example.com": "replica-1"}


class Reader:
    def __init__(self) -> None:
        self.observed = {"replica-0": CAUGHT_UP, "replica-1": CAUGHT_UP}
        self.limits: dict[str, planner.PrimaryLimits | None] = {
            "replica-0": LIMITS_100,
            "replica-1": LIMITS_100,
        }
        self.reads = 0

    async def __call__(self, pair: replica_lag.Pair) -> replica_lag.ReplicaReading:
        self.reads += 1
        assert "s3cret" not in repr(pair)  # the password never in a repr
        assert pair.primary.host == "db.default.svc"  # the primary, as the pooler resolves it
        name = HOSTS[pair.replica.host]
        return replica_lag.ReplicaReading(observed=self.observed[name], limits=self.limits[name])


@pytest.fixture
def setup(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[fake_cluster.FakeCluster, reconciler.Reconciler, Reader]:
    cluster = _cluster(_profile())
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    reader = Reader()
    eng.probes.replica_lag = replica_lag.ReplicaProbe(ttl_seconds=0.0, read=reader)
    return cluster, eng, reader


def _status(cluster: fake_cluster.FakeCluster) -> dict[str, Any]:
    found = cluster.profile("default", "shop")
    assert found is not None
    status: dict[str, Any] = found["status"]
    return status


def test_replicas_in_status_and_a_lagging_one_leaves_with_an_event(
    setup: tuple[fake_cluster.FakeCluster, reconciler.Reconciler, Reader],
) -> None:
    cluster, eng, reader = setup
    changed: list[set[str]] = []
    eng.probes.replica_lag.on_change = changed.append
    passes.run(eng, KEY)
    assert changed == [{KEY}, {KEY}]  # each replica's first answer queued the profile
    status = _status(cluster)
    assert [(r["name"], r["inPool"]) for r in status["readReplicas"]] == [
        ("replica-0", True),
        ("replica-1", True),
    ]
    assert _conditions(cluster)["ReadReplicasInPool"]["reason"] == "AllInPool"

    reader.observed["replica-1"] = membership.Observed(
        in_recovery=True, lag_bytes=4096, lag_seconds=120.0
    )
    asyncio.run(passes.refreshed(eng))
    assert changed == [{KEY}] * 3  # queued again: one replica's answer changed
    passes.run(eng, KEY)
    status = _status(cluster)
    lagging = status["readReplicas"][1]
    assert (lagging["inPool"], lagging["lagSeconds"], lagging["lagBytes"]) == (False, 120.0, 4096)
    assert "over maxLagSeconds 30" in lagging["reason"]
    condition = _conditions(cluster)["ReadReplicasInPool"]
    assert (condition["status"], condition["reason"]) == ("False", "SomeOut")
    assert ("Warning", "ReadPool") in {(t, r) for t, r, _ in cluster.events}
    assert any("replica replica-1 leaves" in m for _, _, m in cluster.events)
    # informational: the read pool goes on with the other replica
    assert _conditions(cluster)["Ready"]["message"].find("ReadReplicasInPool") == -1

    reader.observed["replica-1"] = CAUGHT_UP
    asyncio.run(passes.refreshed(eng))
    passes.run(eng, KEY)
    assert _status(cluster)["readReplicas"][1]["inPool"] is True
    assert any("replica replica-1 joins" in m for _, _, m in cluster.events)


def test_a_replica_below_the_declared_limits_stops_the_plan(
    setup: tuple[fake_cluster.FakeCluster, reconciler.Reconciler, Reader],
) -> None:
    cluster, eng, reader = setup
    reader.limits["replica-1"] = planner.PrimaryLimits(
        max_connections=40, superuser_reserved_connections=3
    )
    passes.run(eng, KEY)
    budget = _conditions(cluster)["ConnectionBudget"]
    assert (budget["status"], budget["reason"]) == ("False", "BudgetExceeded")
    assert (
        "spec.database.maxConnections: the replica ro-2.example.com:5432 reports 37"
        in (budget["message"])
    )
    assert cluster.find("Deployment", "shop-pooler-ro") is None  # nothing applied


def test_without_read_limits_the_replicas_are_not_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = _profile()
    body["spec"]["database"]["readLimits"] = False
    cluster = _cluster(body)
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    reader = Reader()
    eng.probes.replica_lag = replica_lag.ReplicaProbe(ttl_seconds=0.0, read=reader)
    passes.run(eng, KEY)
    assert reader.reads == 0
    assert "readReplicas" not in _status(cluster)
