"""What runs is what is counted, through the reconcile pass on the fake
cluster: a refused change leaves the running pooler as it is (same object,
same size), its status says it runs its last accepted plan, and the other
profile on the server counts it at what its objects say it runs; a server
found over its budget (a pooler that grew before the shares) is brought back
inside it by the passes, and an Event says what was done."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from headroom.api import v1alpha1
from headroom.planning import agentfile, names, planner, pooler_state, server_shares
from headroom.reconcile import outcome, reconciler, telemetry
from tests import profiles
from tests.unit import fake_cluster, passes, test_rollout

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVER = "shop-db.default.svc:5432"
CAPACITY = 100 - 3


def _body(name: str, *, created: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / "shop-scaled.yaml").read_text())
    body["metadata"] = {
        "name": name,
        "namespace": "default",
        "uid": f"{name}-uid",
        "generation": 1,
        "creationTimestamp": created,
    }
    body["spec"].pop("cache", None)
    body["spec"]["queues"] = []
    for path, value in spec.items():
        *parents, last = path.split(".")
        node = body["spec"]
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return body


def _world(*bodies: dict[str, Any]) -> tuple[fake_cluster.FakeCluster, reconciler.Reconciler]:
    cluster = fake_cluster.FakeCluster()
    for body in bodies:
        cluster.put(body)
    app = bodies[0]["spec"]["app"]["deployment"]
    cluster.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": app, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": app}}},
        }
    )
    secret = bodies[0]["spec"]["database"]["credentialsSecret"]["name"]
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": "default"},
            "data": {"username": "c2hvcF9hcHA=", "password": "czNjcmV0"},
        }
    )
    return cluster, reconciler.Reconciler(cluster, telemetry.Metrics())


def _settle(cluster: fake_cluster.FakeCluster, eng: reconciler.Reconciler) -> None:
    for _ in range(6):
        before = len(cluster.writes())
        for name in ("shop", "admin"):
            if cluster.profile("default", name) is not None:
                passes.run(eng, f"default/{name}")
                assert _at_peak(cluster) <= CAPACITY, _at_peak(cluster)
        if len(cluster.writes()) == before:
            return
    raise AssertionError("no fixpoint")


def _max_db(cluster: fake_cluster.FakeCluster, name: str, *, pooler: str = "pooler") -> int:
    config = cluster.find("ConfigMap", f"{name}-{pooler}-config")
    assert config is not None
    found = re.search(r"^max_db_connections = (\d+)$", config["data"]["pgbouncer.ini"], re.M)
    assert found is not None
    return int(found[1])


def _at_peak(cluster: fake_cluster.FakeCluster) -> int:
    """What the running poolers may open at peak (2 pods + 1 of a rollout) and
    what each profile keeps (5 direct, 3 postgres_exporter)."""
    return sum(
        3 * _max_db(cluster, name) + 8
        for name in ("shop", "admin")
        if cluster.find("ConfigMap", f"{name}-pooler-config") is not None
    )


def _conditions(cluster: fake_cluster.FakeCluster, name: str) -> dict[str, dict[str, Any]]:
    body = cluster.profile("default", name)
    assert body is not None
    return {c["type"]: c for c in body["status"]["conditions"]}


def test_a_refused_change_leaves_what_runs_and_is_counted_as_it_runs() -> None:
    shop = _body("shop", created="2026-01-01T00:00:00Z")
    admin = _body("admin", created="2026-01-02T00:00:00Z", **{"pooler.poolMode": "session"})
    cluster, eng = _world(shop, admin)
    _settle(cluster, eng)
    assert _conditions(cluster, "shop")["ConnectionBudget"]["status"] == "True"
    deployment = cluster.find("Deployment", "shop-pooler")
    assert deployment is not None
    uid, size = deployment["metadata"]["uid"], _max_db(cluster, "shop")

    # shop's change wants 40 sessions (3 pods x 20): admin's minimum no longer fits beside it
    changed = copy.deepcopy(cluster.profile("default", "shop"))
    assert changed is not None
    changed["spec"]["pooler"]["poolMode"] = "session"
    changed["spec"]["app"]["replicas"]["max"] = 4
    changed["spec"]["app"]["poolSizePerPod"] = 10
    changed["metadata"]["generation"] = 2
    cluster.put(changed)
    _settle(cluster, eng)

    found = _conditions(cluster, "shop")
    assert found["ConnectionBudget"]["reason"] == "BudgetExceeded"
    assert found["Stalled"]["status"] == "True"
    stalled = found["Stalled"]["message"]
    assert "do not fit" in stalled and "To fit:" in stalled  # the field and the fix
    assert "runs its last accepted plan (generation 1" in stalled
    # what runs stays as it was: the same pooler, the same size
    deployment = cluster.find("Deployment", "shop-pooler")
    assert deployment is not None and deployment["metadata"]["uid"] == uid
    assert _max_db(cluster, "shop") == size
    assert _conditions(cluster, "admin")["ConnectionBudget"]["status"] == "True"

    # admin's plan counts shop at what its objects say, not at what shop's status says
    def counted() -> int:
        return cluster.shared.grants("default/admin")[SERVER].others_now

    assert counted() == 3 * size + 8
    config = cluster.find("ConfigMap", "shop-pooler-config")
    assert config is not None
    grown = copy.deepcopy(config)  # somebody's edit: the refused profile's pass leaves it
    grown["data"]["pgbouncer.ini"] = grown["data"]["pgbouncer.ini"].replace(
        f"max_db_connections = {size}", f"max_db_connections = {size + 2}"
    )
    cluster.put(grown)
    assert counted() == 3 * (size + 2) + 8
    shop_status = cluster.profile("default", "shop")
    assert shop_status is not None
    assert shop_status["status"]["budget"]["held"][0]["connections"] == 3 * size + 8


def test_a_server_over_its_budget_is_brought_inside_it_and_an_event_says_so() -> None:
    shop = _body("shop", created="2026-01-01T00:00:00Z")
    admin = _body("admin", created="2026-01-02T00:00:00Z")
    cluster, eng = _world(shop, admin)
    _settle(cluster, eng)
    size = _max_db(cluster, "shop")
    # a pooler sized before the shares: 40 per pod, with admin's the server is over
    config = cluster.find("ConfigMap", "shop-pooler-config")
    assert config is not None
    grown = copy.deepcopy(config)
    grown["data"]["pgbouncer.ini"] = grown["data"]["pgbouncer.ini"].replace(
        f"max_db_connections = {size}", "max_db_connections = 40"
    )
    cluster.put(grown)
    _confirm(cluster, "shop")  # its pods' agents loaded it and say so
    assert _at_peak(cluster) > CAPACITY
    # admin's share does not move, and nothing grows into what shop's pooler holds
    passes.run(eng, "default/admin")
    assert _conditions(cluster, "admin")["ConnectionBudget"]["status"] == "True"
    events = len(cluster.events)
    passes.run(eng, "default/shop")
    assert _max_db(cluster, "shop") == size and _at_peak(cluster) <= CAPACITY
    (said,) = [e for e in cluster.events[events:] if e[1] == outcome.SERVER_OVER_BUDGET]
    assert said[0] == "Warning"
    assert (
        f"{SERVER} was over its budget: {3 * 40 + 8 + 3 * _max_db(cluster, 'admin') + 8}"
        in (said[2])
    )
    assert f"its poolers go from 120 to {3 * size}, its share" in said[2]
    # until its pods confirm the smaller size, shop holds what they report, and says so
    budget = _conditions(cluster, "shop")["ConnectionBudget"]
    assert (budget["status"], budget["reason"]) == ("False", "OverBudget")
    others = 3 * _max_db(cluster, "admin") + 8
    assert (
        f"{SERVER} is over its budget: {3 * 40 + 8 + others} server connections held "
        f"(this profile {3 * 40 + 8}, the other profiles {others}) against {CAPACITY}"
    ) in budget["message"]
    assert f"this profile's poolers go to {3 * size + 8}" in budget["message"]
    assert _held(cluster, "shop") == 3 * 40 + 8
    found = _conditions(cluster, "shop")
    assert (found["Reconciling"]["status"], found["Ready"]["status"]) == ("True", "False")
    assert "Stalled" not in found or found["Stalled"]["status"] == "False"
    _settle(cluster, eng)
    assert _held(cluster, "shop") == 3 * 40 + 8  # no pod has confirmed yet
    # the agents report the new config loaded: inside, and the condition clears
    _confirm(cluster, "shop")
    passes.run(eng, "default/shop")
    budget = _conditions(cluster, "shop")["ConnectionBudget"]
    assert (budget["status"], budget["reason"]) == ("True", "WithinBudget")
    assert _held(cluster, "shop") == 3 * size + 8
    _settle(cluster, eng)
    assert _conditions(cluster, "admin")["ConnectionBudget"]["status"] == "True"


def _held(cluster: fake_cluster.FakeCluster, name: str) -> int:
    return server_shares.held_of(cluster.profile("default", name))[0][SERVER]


def _pooled(cluster: fake_cluster.FakeCluster, name: str, *, server: str) -> int:
    """status.budget.held[].pooled of ``name`` on ``server``: its poolers, held."""
    body = cluster.profile("default", name)
    assert body is not None
    (row,) = [r for r in body["status"]["budget"]["held"] if r["server"] == server]
    return int(row["pooled"])


def _confirm(cluster: fake_cluster.FakeCluster, name: str, *, pooler: str = "pooler") -> None:
    """Every pod of ``name``'s ``pooler`` (``pooler-ro``: the read pooler)
    reports its config loaded, within its limit."""
    config = cluster.find("ConfigMap", f"{name}-{pooler}-config")
    state = cluster.find("ConfigMap", f"{name}-{pooler}-state")
    deployment = cluster.find("Deployment", f"{name}-{pooler}")
    assert config is not None and state is not None and deployment is not None
    entry = pooler_state.Entry(
        config=agentfile.content_hash(config["data"]["pgbouncer.ini"]),
        max_db_connections=_max_db(cluster, name, pooler=pooler),
        server_connections=0,
        at="2026-01-01T00:00:00Z",
    )
    pods = pooler_state.pods_of(deployment)
    cluster.put({**state, "data": {f"{name}-{pooler}-{i}": entry.text() for i in range(pods)}})


def _larger_by_10(rows: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """A stored body whose status held every pool of ``rows`` larger by 10."""
    held = [{"server": s, "connections": c + 10, "pooled": p + 10} for s, (c, p) in rows.items()]
    return {"status": {"budget": {"held": held}}}


def test_an_unconfirmed_write_pooler_holds_its_primary_not_the_replicas_read_pool() -> None:
    """A read pool that shrank on a shared replica is held at its new size even
    while the write pooler's pods have not confirmed their config: that
    confirmation is about the primary only (a kwok e2e without agents found a
    second profile never admitted to the room the first's read pool left)."""
    body = profiles.base(name="reads")
    body["spec"]["database"]["readLimits"] = False
    body["spec"]["database"]["readReplicas"] = profiles.external_replicas(
        {"host": "ro-shared.db.example.com"}
    )
    planned = planner.plan(v1alpha1.ScalingProfile.model_validate(body))
    assert planned.read is not None and len(planned.demands) == 2
    primary, replica = planned.demands[0].server, planned.demands[1].server
    fresh = {s: (c, p) for s, c, p in server_shares.held_rows(planned)}
    before = _larger_by_10(fresh)
    rows = {
        s: (c, p) for s, c, p in server_shares.held_rows(planned, before=before, confirmed=False)
    }
    assert rows[primary] == (fresh[primary][0] + 10, fresh[primary][1] + 10)
    assert rows[replica] == fresh[replica]
    confirmed = {s: (c, p) for s, c, p in server_shares.held_rows(planned, before=before)}
    assert confirmed == fresh


def test_an_unconfirmed_read_pooler_holds_its_replicas_not_the_primary() -> None:
    """A read pool that shrank is held on each of its replicas at the larger
    of what the status said and what its pods report they run, until every
    read pooler pod confirms the new config; the primary is the write
    pooler's to confirm."""
    body = profiles.base(name="reads")
    body["spec"]["database"]["readLimits"] = False
    body["spec"]["database"]["readReplicas"] = profiles.external_replicas(
        {"host": "ro-1.db.example.com"}, {"host": "ro-2.db.example.com"}
    )
    planned = planner.plan(v1alpha1.ScalingProfile.model_validate(body))
    assert planned.read is not None and len(planned.demands) == 3
    primary, *replicas = (d.server for d in planned.demands)
    fresh = {s: (c, p) for s, c, p in server_shares.held_rows(planned)}
    before = _larger_by_10(fresh)

    def rows(**given: Any) -> dict[str, tuple[int, int]]:
        return {s: (c, p) for s, c, p in server_shares.held_rows(planned, before=before, **given)}

    held = rows(read_confirmed=False)
    for replica in replicas:
        assert held[replica] == (fresh[replica][0] + 10, fresh[replica][1] + 10)
    assert held[primary] == fresh[primary]
    # its pods report a larger size than the status said (a pooler that grew past its plan)
    reported = fresh[replicas[0]][1] + 25
    held = rows(read_confirmed=False, read_reported=reported)
    for replica in replicas:
        assert held[replica][1] == reported
    assert rows() == fresh


def _read_pooler(pods: int, *, ini: str, entries: dict[str, pooler_state.Entry]) -> dict[str, Any]:
    child = names.ChildNames("shop", "default")
    return {
        f"ConfigMap/{child.read_pooler_config}": {"data": {"pgbouncer.ini": ini}},
        f"Deployment/{child.read_pooler}": {"spec": {"replicas": pods}, "status": {}},
        f"ConfigMap/{child.read_pooler_state}": {
            "data": {pod: e.text() for pod, e in entries.items()}
        },
    }


def test_a_read_pooler_is_confirmed_when_every_pod_reports_the_config_within_its_limit() -> None:
    child = names.ChildNames("shop", "default")
    ini = "[pgbouncer]\nmax_db_connections = 8\n"
    at = agentfile.content_hash(ini)

    def entry(config: str, held: int) -> pooler_state.Entry:
        return pooler_state.Entry(
            config=config, max_db_connections=8, server_connections=held, at="t"
        )

    def confirmed(**entries: pooler_state.Entry) -> bool:
        children = _read_pooler(2, ini=ini, entries=entries)
        return server_shares.confirmed(child, children, read=True)

    assert confirmed(a=entry(at, 8), b=entry(at, 0))
    assert not confirmed(a=entry(at, 8))  # one pod has not reported
    assert not confirmed(a=entry(at, 9), b=entry(at, 0))  # over its new limit still
    assert not confirmed(a=entry("old", 0), b=entry(at, 0))  # runs the old config
    # the write pooler's confirmation is another pooler's: none here, nothing to confirm
    assert server_shares.confirmed(child, _read_pooler(2, ini=ini, entries={}))
    children = _read_pooler(2, ini=ini, entries={"a": entry(at, 0)})
    assert server_shares.reported(child, children, read=True) == 8 * (2 + 1)  # at rollout peak


def test_a_read_pool_grows_on_a_shared_replica_only_once_the_others_shrink_is_confirmed() -> None:
    """Two profiles on different primaries read from one replica: when the
    second arrives, the first's read pool shrinks by RELOAD, and the second's
    grows there only once every pod of the first's read pooler has confirmed
    the smaller size (its agents' reports in ``<name>-pooler-ro-state``)."""
    replica = {"mode": "external", "hosts": [{"host": "ro-1.default.svc"}]}
    server = "ro-1.default.svc:5432"
    shop = _body("shop", created="2026-01-01T00:00:00Z", **{"database.readReplicas": replica})
    cluster, eng = _world(shop)
    passes.run(eng, "default/shop")
    _confirm(cluster, "shop", pooler="pooler-ro")
    passes.run(eng, "default/shop")
    alone = _max_db(cluster, "shop", pooler="pooler-ro")
    deployment = cluster.find("Deployment", "shop-pooler-ro")
    assert deployment is not None
    template, uid = copy.deepcopy(deployment["spec"]["template"]), deployment["metadata"]["uid"]

    admin = _body(
        "admin",
        created="2026-01-02T00:00:00Z",
        **{"database.readReplicas": replica, "database.host": "admin-db.default.svc"},
    )
    cluster.put(admin)
    passes.run(eng, "default/shop")
    shrunk = _max_db(cluster, "shop", pooler="pooler-ro")
    assert shrunk < alone
    # online: the same pods, the template untouched; held at the old size until confirmed
    deployment = cluster.find("Deployment", "shop-pooler-ro")
    assert deployment is not None
    assert (deployment["metadata"]["uid"], deployment["spec"]["template"]) == (uid, template)
    assert _pooled(cluster, "shop", server=server) == 3 * alone
    passes.run(eng, "default/admin")
    budget = _conditions(cluster, "admin")["ConnectionBudget"]
    assert (budget["status"], budget["reason"]) == ("False", "WaitingForRoom")
    assert f"waiting for room on {server}" in budget["message"]
    assert cluster.find("ConfigMap", "admin-pooler-ro-config") is None  # nothing grew

    _confirm(cluster, "shop", pooler="pooler-ro")
    passes.run(eng, "default/shop")
    assert _pooled(cluster, "shop", server=server) == 3 * shrunk
    passes.run(eng, "default/admin")
    assert _conditions(cluster, "admin")["ConnectionBudget"]["status"] == "True"
    grown = _max_db(cluster, "admin", pooler="pooler-ro")
    assert grown > 0
    assert 3 * shrunk + 3 * grown <= 100 - 3  # the replica's budget at the rollout peak


def test_an_earlier_releases_read_pooler_keeps_its_pods_until_a_change_rolls_them() -> None:
    """A read pooler whose agent did not RELOAD pgbouncer.ini (the release
    before) is not rolled for the agent's new loop alone: passes that change
    nothing it runs keep its template; a pool-size change, which its pods could
    only take by a roll, rolls them with the agent, and an Event says why."""
    replica = {"mode": "external", "hosts": [{"host": "ro-1.default.svc"}]}
    shop = _body("shop", created="2026-01-01T00:00:00Z", **{"database.readReplicas": replica})
    cluster, eng = _world(shop)
    passes.run(eng, "default/shop")
    config = cluster.find("ConfigMap", "shop-pooler-ro-config")
    written = cluster.find("Deployment", "shop-pooler-ro")
    assert config is not None and written is not None
    cluster.put(test_rollout.earlier_read_pooler(written, config["data"]))

    def template() -> dict[str, Any]:
        found = cluster.find("Deployment", "shop-pooler-ro")
        assert found is not None
        kept = copy.deepcopy(found["spec"]["template"])
        kept["metadata"].pop("creationTimestamp", None)
        return kept

    before = template()
    for _ in range(2):
        passes.run(eng, "default/shop")
    assert template() == before
    assert not [e for e in cluster.events if e[1] == outcome.POOLER_RESTART]

    # another profile on the replica: shop's read pool shrinks, which these pods
    # can only take by a roll: they roll, with the agent that RELOADs from now on
    admin = _body(
        "admin",
        created="2026-01-02T00:00:00Z",
        **{"database.readReplicas": replica, "database.host": "admin-db.default.svc"},
    )
    cluster.put(admin)
    passes.run(eng, "default/shop")
    rolled = template()
    assert rolled != before
    assert rolled["spec"]["serviceAccountName"] == "shop-pooler-ro"
    (event,) = [e for e in cluster.events if e[1] == outcome.POOLER_RESTART]
    assert "read pooler" in event[2] and "pgbouncer.ini or readpool.json" in event[2], event
