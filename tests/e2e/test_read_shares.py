"""Two apps reading from one real hot standby, on a real API server, with the
pooler pods run for real by pooler_pods (PgBouncer 1.26.1 and the read
pooler's agent: its lag loop measures the standby against the primary, its
config loop RELOADs): the first app's read pool alone on the standby, then a
second app arrives and the standby is divided between them. pgbench reads
through each read pooler's Service the whole time while the standby's client
backends are sampled every 100 ms: the first's read pool shrinks by RELOAD in
the same pods (no pod replaced, no container restarted, no client error), and
the second's grows only once every pod of the first has confirmed the smaller
size (its agents' reports), never past the standby's max_connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kube
import operator_process
import pytest
import shared_server
from apps import app_deployment, credentials
from shared_server import HOST, MAX_CONNECTIONS, SUPERUSER_RESERVED
from tests import profiles
from tests.conformance import servers

from headroom.planning import agentfile, pooler_state

REPLICA = "pg-replica"  # the standby's name, resolved to 127.0.0.1 in the pooler pods
APPS = ("orders", "reports")
CLIENTS = {"orders": 70, "reports": 40}  # more than their read pools hold: they queue


@pytest.fixture
def standby() -> Iterator[tuple[servers.Postgres, servers.Standby]]:
    """The apps' primary and a hot standby streaming from it."""
    with shared_server.server_for_pods(list(APPS)) as pg:
        node = servers.Standby(pg, slot="headroom_e2e_read_shares").start()
        try:
            yield pg, node
        finally:
            node.stop()


def _reader(namespace: str, name: str, *, primary: int, replica: int) -> dict[str, Any]:
    body = profiles.base(name=name, namespace=namespace, **{"database.readLimits": False})
    body["spec"]["database"].update(host=HOST, port=primary, name=name)
    body["spec"]["database"]["readReplicas"] = {
        **profiles.external_replicas({"host": REPLICA, "port": replica}),
        "pollSeconds": 1,
    }
    return body


def _read_pool_confirmed(kubectl: kube.Kubectl, namespace: str, pods: Any, name: str) -> int | None:
    """The read pool's max_db_connections once every pod of ``name``'s read
    pooler runs here and has reported its ConfigMap's config confirmed."""
    maps = {
        c["metadata"]["name"]: c.get("data") or {}
        for c in kube.get_json(kubectl, "configmaps", "-n", namespace)["items"]
    }
    ini = maps.get(f"{name}-pooler-ro-config", {}).get("pgbouncer.ini")
    if ini is None:
        return None
    runs = pods.running(f"{name}-pooler-ro")
    reports = pooler_state.entries(maps.get(f"{name}-pooler-ro-state"))
    at = agentfile.content_hash(ini)
    uids = shared_server.read_pooler_pods(kubectl, namespace, name)
    if not runs or {r.uid for r in runs} != uids:
        return None
    if not all(r.name in reports and reports[r.name].confirmed_at(at) for r in runs):
        return None
    limit = shared_server.MAX_DB.search(ini)
    return int(limit[1]) if limit else None


def _ready(kubectl: kube.Kubectl, namespace: str, name: str) -> bool:
    sp = kube.get_json(kubectl, "scalingprofile", name, "-n", namespace)
    status = sp.get("status") or {}
    return (
        status.get("observedGeneration") == sp["metadata"]["generation"]
        and kube.condition(sp, "Ready") == "True"
    )


def test_two_read_pools_on_one_standby_rebalance_online_within_its_budget(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    standby: tuple[servers.Postgres, servers.Standby],
) -> None:
    pg, node = standby
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    orders, reports = (
        _reader(namespace, name, primary=pg.port, replica=node.port) for name in APPS
    )
    with (
        shared_server.pooler_pods_here(
            kubectl, namespace, hosts=(HOST, REPLICA), ports=(pg.port, node.port)
        ) as pods,
        shared_server.Budget(node) as budget,
    ):
        budget.allow(MAX_CONNECTIONS - SUPERUSER_RESERVED, "the standby")
        traffic = shared_server.Traffic(
            pods, tools=pg.tools, clients=CLIENTS, workdir=pods.node.workdir, pooler="pooler-ro"
        )
        try:
            kube.apply(kubectl, orders, namespace=namespace)
            kube.wait_for(lambda: _ready(kubectl, namespace, "orders"), timeout=180, what="orders")
            alone = kube.wait_for(
                lambda: _read_pool_confirmed(kubectl, namespace, pods, "orders"),
                timeout=120,
                what="orders' read pooler pods running their config",
            )
            traffic.start("orders")
            kube.wait_for(
                lambda: budget.peak >= 2 * alone - 4,
                timeout=60,
                what="orders' read pool filled on the standby",
            )
            before = shared_server.read_pooler_pods(kubectl, namespace, "orders")
            with (
                traffic.held(),
                shared_server.ReadOrder(
                    kubectl, namespace, first="orders", second="reports"
                ) as order,
            ):
                kube.apply(kubectl, reports, namespace=namespace)
                for name in APPS:
                    kube.wait_for(
                        lambda name=name: _ready(kubectl, namespace, name),
                        timeout=180,
                        what=f"{name} Ready beside the other",
                    )
                shrunk = kube.wait_for(
                    lambda: _read_pool_confirmed(kubectl, namespace, pods, "orders"),
                    timeout=120,
                    what="orders' read pool shrunk and confirmed",
                )
                kube.wait_for(
                    lambda: _read_pool_confirmed(kubectl, namespace, pods, "reports"),
                    timeout=120,
                    what="reports' read pooler pods running their config",
                )
                traffic.start("reports")
                kube.wait_for(lambda: len(budget.samples) > 30, timeout=30, what="3 s of samples")
            assert shrunk < alone
            order.check(limit=shrunk)
            # resized by RELOAD: the same pods, none of their containers restarted
            assert shared_server.read_pooler_pods(kubectl, namespace, "orders") == before
        finally:
            traffic.stop()
        print(
            f"orders' read pool {alone} -> {shrunk} per pod; peak {budget.peak} client "
            f"backends on the standby, {len(budget.samples)} samples; errors {traffic.failed()}"
        )
        assert budget.samples and budget.over() == [], budget.over()[:20]
        assert pods.errors == [], pods.errors
        assert pods.restarts() == 0
        assert traffic.failed() == {}
