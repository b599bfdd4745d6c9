"""Several profiles on one Postgres server share its max_connections by weight."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom.api import v1alpha1
from headroom.planning import admission, connection_budget, names, planner, server_shares
from headroom.runtime import share_table
from tests import profiles

SERVER = "db.shop.svc:5432"
REPLICA = "r1.replicas.example:5432"


def _profile(name: str, *, created: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    body = profiles.base(name=name, namespace=namespace, **spec)
    body["metadata"]["creationTimestamp"] = created
    body["metadata"]["generation"] = 1
    return body


def _claim(
    profile: str, low: int, high: int, *, step: int = 1, weight: int = 1, **kw: Any
) -> server_shares.Claim:
    pool = connection_budget.PoolRange(low, high, step, "why", "field")
    return server_shares.Claim(profile, pool, weight=weight, rank=(1, "", profile), **kw)


def _plan(table: share_table.SharedBudgets, body: dict[str, Any]) -> planner.Plan:
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    return planner.plan(v1alpha1.parse_profile(body), facts=planner.Facts(grants=table.grants(key)))


def _beside(table: share_table.SharedBudgets) -> admission.Beside:
    def lookup(servers: set[str], key: str) -> list[server_shares.Peer]:
        return share_table.beside(table.table(), servers, key)

    return lookup


def test_the_server_is_host_and_port_qualified_by_namespace() -> None:
    db = v1alpha1.parse_profile(profiles.base(**{"database.host": "pg"})).spec.database
    assert server_shares.server_key("shop", db) == "pg.shop.svc:5432"
    fqdn = v1alpha1.parse_profile(
        profiles.base(**{"database.host": "PG.shop.svc.cluster.local"})
    ).spec.database
    assert server_shares.server_key("other", fqdn) == "pg.shop.svc:5432"


# --- the division itself: a pure function of the set of claims ----------------------


@pytest.mark.parametrize(
    ("capacity", "claims", "shares", "refused"),
    [
        # by weight once the minimums are given: 1/1/2
        (80, [_claim("a", 0, 100), _claim("b", 0, 100), _claim("c", 0, 100, weight=2)],
         {"a": 20, "b": 20, "c": 40}, ()),
        # never past what a pool could use; the room nobody needs stays free
        (80, [_claim("a", 0, 10), _claim("b", 0, 15)], {"a": 10, "b": 15}, ()),
        # what one cannot take goes to the others
        (80, [_claim("a", 0, 10), _claim("b", 0, 100)], {"a": 10, "b": 70}, ()),
        # minimums first (a session pool's sessions), the rest by weight
        (60, [_claim("a", 40, 40), _claim("b", 3, 100, step=3), _claim("c", 3, 100, step=3)],
         {"a": 40, "b": 9, "c": 9}, ()),
        # whole connections per pooler pod: 3 pods take 3 at a time
        (10, [_claim("a", 3, 30, step=3), _claim("b", 2, 30, step=2)], {"a": 6, "b": 4}, ()),
        # what profiles keep for direct use is counted, not divided
        (50, [_claim("a", 0, 100, fixed=10), _claim("b", 0, 100, fixed=20)],
         {"a": 10, "b": 10}, ()),
        # the minimums do not fit: the lowest-ranked is refused, the others divide
        (50, [_claim("a", 30, 30), _claim("b", 30, 30)], {"a": 30}, ("b",)),
        # what runs under a refusal is counted as it is, never refused itself
        (50, [_claim("a", 30, 30, held=True, fixed=48), _claim("b", 3, 30)], {}, ("b",)),
        (50, [_claim("a", 30, 30, held=True, fixed=45), _claim("b", 3, 30)], {"b": 5}, ()),
    ],
)  # fmt: skip
def test_divide(
    capacity: int,
    claims: list[server_shares.Claim],
    shares: dict[str, int],
    refused: tuple[str, ...],
) -> None:
    division = server_shares.divide(capacity, claims)
    assert division.shares == shares
    assert division.refused == refused
    assert division.fixed + sum(division.shares.values()) <= capacity or refused


@given(
    capacity=st.integers(0, 300),
    claims=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 80), st.integers(1, 4), st.integers(1, 5)),
        min_size=1,
        max_size=6,
    ),
    order=st.randoms(use_true_random=False),
)
@settings(max_examples=200, deadline=None)
def test_the_division_depends_on_the_set_not_the_order(
    capacity: int, claims: list[tuple[int, int, int, int]], order: Any
) -> None:
    made = [
        _claim(f"p{i}", low * step, max(low, high) * step, step=step, weight=weight)
        for i, (low, high, step, weight) in enumerate(claims)
    ]
    division = server_shares.divide(capacity, made)
    shuffled = list(made)
    order.shuffle(shuffled)
    assert server_shares.divide(capacity, shuffled) == division
    kept = [c for c in made if c.profile not in division.refused]
    # the kept fit, each within its bounds, in whole connections per pod
    assert sum(division.shares.values()) <= capacity
    for claim in kept:
        share = division.shares[claim.profile]
        assert claim.pool.minimum <= share <= claim.pool.maximum
        assert share % claim.pool.step == 0
    # the refused are the last-ranked, and only as many as needed
    assert division.refused == tuple(c.profile for c in made[len(kept) :])
    if division.refused:
        back = made[len(kept)]
        assert sum(c.pool.minimum for c in kept) + back.pool.minimum > capacity
    # no room is left that a kept pool below its maximum could take
    left = capacity - sum(division.shares.values())
    assert all(
        division.shares[c.profile] + c.pool.step > c.pool.maximum or c.pool.step > left
        for c in kept
    )


# --- five apps on one server: the example of docs/api.md ------------------------------

FIVE = Path(__file__).parents[2] / "examples" / "shared" / "five-apps.yaml"


def _five() -> list[dict[str, Any]]:
    with open(FIVE) as handle:
        return [body for body in yaml.safe_load_all(handle) if body]


def test_five_apps_on_one_server_get_the_documented_shares() -> None:
    table = share_table.SharedBudgets()
    bodies = _five()
    for body in bodies:
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        table.update(key, body)
    plans = {body["metadata"]["name"]: _plan(table, body) for body in bodies}
    assert all(p.ok for p in plans.values()), [p.problem_text() for p in plans.values()]
    # 100 - 3 superuser-reserved - 5 x (2 kept for direct use + 3 postgres_exporter) = 72
    # for the poolers; reports (session) and billing (pinned) get what they need, the
    # 37 left go 2:1:1 in steps of 3 (the step weight cannot split goes by rank); what
    # is left is less than a connection for each of 3 pods
    opened = {name: p.budget.server_connections for name, p in plans.items()}
    assert opened == {"orders": 24, "web": 9, "admin": 12, "reports": 18, "billing": 8}
    assert sum(opened.values()) + 5 * (2 + 3) <= 97
    assert plans["reports"].budget.max_db_connections == 6  # 12 sessions over 2 pods
    assert plans["billing"].budget.max_db_connections == 4  # as pinned


def test_shares_do_not_depend_on_which_profile_came_first() -> None:
    first = share_table.SharedBudgets()
    second = share_table.SharedBudgets()
    web = _profile("web", created="2026-01-01T00:00:00Z")
    admin = _profile("admin", created="2026-01-02T00:00:00Z")
    first.update("shop/web", web)
    first.update("shop/admin", admin)
    second.update("shop/admin", admin)
    second.update("shop/web", web)
    assert first.grants("shop/web") == second.grants("shop/web")
    # equal weights: 97 - 2 x (5 direct + 3 postgres_exporter) = 81, 3 pods at peak
    # each, so 13 and 14 per pod; the odd 3 go to the older one (a tie is settled by
    # rank, never by order)
    assert first.grants("shop/web")[SERVER].connections == 42
    assert first.grants("shop/admin")[SERVER].connections == 39
    plan = _plan(first, web)
    assert plan.ok and plan.budget.server_connections == 42
    assert plan.budget.shared == (connection_budget.SharedUse(SERVER, "shop/admin", 47),)


def test_a_profile_alone_on_its_server_is_planned_as_before() -> None:
    table = share_table.SharedBudgets()
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z"))
    table.update("shop/other", _profile("other", created="", **{"database.host": "other-db"}))
    assert table.grants("shop/web") == {} and table.grants("shop/other") == {}


def test_deleting_a_profile_gives_its_share_back() -> None:
    table = share_table.SharedBudgets()
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z"))
    table.update("shop/admin", _profile("admin", created="2026-01-02T00:00:00Z"))
    requeue, _ = table.update("shop/web", None)
    assert requeue == {"shop/admin"}  # its share changed: look at it again
    assert table.grants("shop/admin") == {}


def test_admission_refuses_only_when_the_minimums_do_not_fit_naming_the_holders() -> None:
    table = share_table.SharedBudgets()
    # a session-mode app whose 40 sessions are its guaranteed minimum: 20 per pod, 3 at peak
    sessions = {"pooler.poolMode": "session", "app.replicas.max": 8, "app.poolSizePerPod": 5}
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z", **sessions))
    # a transaction-mode app needs only 1 connection per pooler pod: it fits
    assert admission.review(_profile("admin", created=""), beside=_beside(table)) is None
    # a second session-mode app does not
    newcomer = _profile("report", created="", **sessions)
    message = admission.review(newcomer, beside=_beside(table))
    assert message is not None
    assert message.startswith("spec.app.replicas.max: ")
    assert f"the guaranteed minimums on {SERVER} do not fit" in message
    assert "shop/web 68 (session mode: 40 sessions over 2 pooler pods" in message
    assert "and 3 for postgres_exporter" in message
    assert "39 short" in message, message  # 68 + 68 - 97
    assert "lower spec.app.replicas.max or spec.app.poolSizePerPod" in message
    assert "(39 fewer in all)" in message
    # alone on its server, the same profile is fine
    assert admission.review(newcomer) is None


def test_contradictory_max_connections_on_one_server_are_refused_naming_both() -> None:
    table = share_table.SharedBudgets()
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z"))
    other = _profile("admin", created="", **{"database.maxConnections": 200})
    message = admission.review(other, beside=_beside(table))
    assert message is not None and message.startswith("spec.database.maxConnections: 200 ")
    assert "shop/web declares 100 for the same server" in message


def test_a_refused_change_is_counted_at_what_its_poolers_hold() -> None:
    """The pass refuses a change that no longer fits (two were admitted at
    once): what runs is counted in every other profile's share."""
    table = share_table.SharedBudgets()
    web = _profile("web", created="2026-01-01T00:00:00Z")
    web["status"] = {"budget": {"held": [{"server": SERVER, "connections": 47}],
                                "heldGeneration": 1}}  # fmt: skip
    table.update("shop/web", web)
    # its new spec wants 3 x 40 sessions: the other profile keeps its minimum
    changed = copy.deepcopy(web)
    changed["metadata"]["generation"] = 2
    profiles.set_path(changed["spec"], "pooler.poolMode", "session")
    profiles.set_path(changed["spec"], "app.replicas.max", 8)
    profiles.set_path(changed["spec"], "app.poolSizePerPod", 5)
    admin = _profile("admin", created="2026-01-02T00:00:00Z", **{
        "pooler.poolMode": "session", "app.replicas.max": 4})  # fmt: skip
    admin["status"] = {"budget": {"held": [{"server": SERVER, "connections": 35}],
                                  "heldGeneration": 1}}  # fmt: skip
    table.update("shop/admin", admin)
    table.update("shop/web", changed)
    refused = _plan(table, changed)
    assert not refused.ok and "do not fit" in refused.problem_text()
    kept = _plan(table, admin)
    assert kept.ok
    # web is counted at the 47 its poolers hold
    assert kept.budget.shared == (connection_budget.SharedUse(SERVER, "shop/web", 47),)


# --- read replicas: one mechanism with the primary's ----------------------------------


def _reader(name: str, *, created: str, primary: str = "db", **spec: Any) -> dict[str, Any]:
    """A profile reading from the one replica r1 (max_connections 100), on its own primary."""
    replica = {"mode": "external", "hosts": [{"host": "r1.replicas.example"}]}
    return _profile(
        name,
        created=created,
        **{"database.host": primary, "database.readReplicas": replica},
        **spec,
    )


def test_two_read_pools_on_one_replica_share_it() -> None:
    table = share_table.SharedBudgets()
    # on different primaries: only the replica links them
    first = _reader("first", created="2026-01-01T00:00:00Z")
    table.update("shop/first", first)
    second = _reader("second", created="", primary="other-db")
    assert admission.review(second, beside=_beside(table)) is None
    second["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    table.update("shop/second", second)
    plans = [_plan(table, first), _plan(table, second)]
    assert all(p.ok for p in plans)
    reads = [p.read.budget for p in plans if p.read is not None]
    # 100 - 3 superuser - 2 x (5 direct + 4 lag probes + 3 postgres_exporter) = 73:
    # 36 each, 3 pods x 12
    assert [b.server_connections for b in reads] == [36, 36]
    assert sum(b.server_connections for b in reads) + 2 * 12 <= 97
    # their primaries are their own
    assert set(table.grants("shop/first")) == {REPLICA}


def test_a_profile_whose_replica_is_another_profiles_primary_counts_both() -> None:
    """One server, two roles: one profile's primary is the other's read replica."""
    table = share_table.SharedBudgets()
    sessions = {"pooler.poolMode": "session", "app.replicas.max": 8, "app.poolSizePerPod": 5}
    table.update("shop/writer", _profile("writer", created="2026-01-01T00:00:00Z", **{
        "database.host": "r1.replicas.example"}, **sessions))  # fmt: skip
    reader = _reader("reader", created="2026-01-02T00:00:00Z", **{"app.replicas.max": 20})
    assert admission.review(reader, beside=_beside(table)) is None
    table.update("shop/reader", reader)
    # the writer's 60 sessions, 5 direct and its postgres_exporter's 3, the reader's 5
    # direct, 4 lag probes and its postgres_exporter's 3 there: 97 - 68 - 12 = 17 left,
    # 15 in whole connections for 3 read-pooler pods
    assert table.grants("shop/reader")[REPLICA].connections == 15
    assert table.grants("shop/writer")[REPLICA].connections == 60


# --- any order, any restart: where a fresh operator would be --------------------------


@st.composite
def _server_group(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """2-5 profiles over two primaries and two replicas, weights and modes mixed."""
    group = []
    for index in range(draw(st.integers(2, 5))):
        spec: dict[str, Any] = {
            "database.host": draw(st.sampled_from(("db", "db2", "r1.replicas.example"))),
            "app.replicas.max": draw(st.integers(2, 12)),
            "pooler.poolMode": draw(st.sampled_from(("transaction", "session"))),
            "database.share": {"weight": draw(st.integers(1, 3))},
        }
        hosts = draw(st.sampled_from(([], ["r1"], ["r2"], ["r1", "r2"])))
        if hosts:
            spec["database.readReplicas"] = {
                "mode": "external",
                "hosts": [{"host": f"{h}.replicas.example"} for h in hosts],
                "pooler": {"instances": draw(st.integers(1, 2))},
            }
        name = f"p{index}"
        created = f"2026-01-01T00:00:0{draw(st.integers(0, 2))}Z"  # some in the same second
        group.append((f"shop/{name}", _profile(name, created=created, **spec)))
    return group


@given(
    group=_server_group(),
    events=st.lists(st.tuples(st.integers(0, 4), st.sampled_from("cudr")), max_size=12),
)
@settings(max_examples=80, deadline=None)
def test_any_order_of_creates_updates_deletes_and_restarts_ends_where_a_fresh_table_would(
    group: list[tuple[str, dict[str, Any]]], events: list[tuple[int, str]]
) -> None:
    """Primaries and replicas alike: after any history, the table gives every
    profile the shares a fresh operator (a new table fed the stored objects
    once) gives it, and no server is overbooked."""
    stored: dict[str, dict[str, Any]] = {}
    table = share_table.SharedBudgets()
    for index, verb in [*events, *((i, "c") for i in range(len(group)))]:
        key, body = group[index % len(group)]
        if verb == "r":  # a restart: a new table, fed what is stored, in another order
            table = share_table.SharedBudgets()
            for k in sorted(stored, reverse=True):
                table.update(k, stored[k])
            continue
        if verb == "d":
            stored.pop(key, None)
            table.update(key, None)
            continue
        changed = copy.deepcopy(body)
        if verb == "u":
            changed["spec"]["app"]["replicas"]["max"] += 1
        stored[key] = changed
        table.update(key, changed)
    fresh = share_table.SharedBudgets()
    for key in sorted(stored):
        fresh.update(key, stored[key])
    for key in stored:
        assert table.grants(key) == fresh.grants(key)
    # every server: what the kept profiles hold fits its 97
    for server in fresh.table():
        held = sum(
            g.connections + 0
            for key in stored
            for s, g in fresh.grants(key).items()
            if s == server and not g.refusal
        )
        assert held <= 97, (server, held)


def _holding(body: dict[str, Any], connections: int) -> dict[str, Any]:
    """``body`` as its pass leaves it: its poolers hold ``connections``."""
    held = copy.deepcopy(body)
    held["status"] = {"budget": {"held": [{"server": SERVER, "connections": connections}],
                                 "heldGeneration": 1}}  # fmt: skip
    return held


def test_a_pool_grows_only_into_what_the_others_no_longer_hold() -> None:
    """A rebalance moves connections between profiles without the server's sum
    passing its capacity: the one that shrinks does so at once, the one that
    grows waits for what the other's poolers still hold."""
    table = share_table.SharedBudgets()
    web = _profile("web", created="2026-01-01T00:00:00Z")
    table.update("shop/web", _holding(web, 95))  # alone: 30 per pod x 3, and 5 kept
    sessions = {"pooler.poolMode": "session", "app.replicas": {"min": 1, "max": 4}}
    report = _profile("report", created="2026-01-02T00:00:00Z", **sessions)
    table.update("shop/report", report)
    # report's minimum (10 sessions per pod x 3) fits beside web's (3): web shrinks at once
    shrink = table.grants("shop/web")[SERVER]
    assert not shrink.wait and shrink.connections < 90
    # report waits while web's poolers hold 95: 97 - 95 - 5 leaves nothing for its 30
    (wait,) = (g.wait for g in table.grants("shop/report").values())
    assert f"waiting for room on {SERVER}: the others' poolers hold shop/web 95" in wait
    assert "its minimum is 30" in wait
    # web's pass applied its share: report may now have all of its own
    table.update("shop/web", _holding(web, shrink.connections + 5))
    grown = table.grants("shop/report")[SERVER]
    assert not grown.wait
    assert grown.connections + 5 + shrink.connections + 5 <= 97


# --- what runs is what is counted ------------------------------------------------------


def _pooler(name: str, *, max_db: int, replicas: int = 2, now: int | None = None) -> dict[str, Any]:
    """A write pooler's ConfigMap and Deployment as the cache holds them
    ("Kind/name" -> object): ``max_db`` per pod, ``now`` pods running."""
    ini = (
        f";; Rendered by Headroom for ScalingProfile shop/{name}.\n[databases]\n"
        "shop = host=db port=5432 dbname=shop\n\n[pgbouncer]\nlisten_port = 6432\n"
        f"default_pool_size = 20\nmax_db_connections = {max_db}\n"
    )
    deployment: dict[str, Any] = {
        "metadata": {"name": f"{name}-pooler"},
        "spec": {"replicas": replicas},
    }
    if now is not None:
        deployment["status"] = {"replicas": now}
    return {
        f"ConfigMap/{name}-pooler-config": {"data": {"pgbouncer.ini": ini}},
        f"Deployment/{name}-pooler": deployment,
    }


def test_what_a_pooler_runs_is_read_from_its_objects() -> None:
    web = names.ChildNames("web", "shop")
    # max_db_connections x (2 replicas + the one more of a rollout), on the server its ini names
    assert server_shares.running(web, _pooler("web", max_db=30)) == {SERVER: 90}
    # a rollout that runs more pods than that counts them
    assert server_shares.running(web, _pooler("web", max_db=30, now=4)) == {SERVER: 120}
    # scaled to nothing while its last pods go: what still runs
    assert server_shares.running(web, _pooler("web", max_db=30, replicas=0, now=1)) == {SERVER: 30}
    # half a pooler (a ConfigMap without its Deployment) is not read: the status stands in
    config_only = {k: v for k, v in _pooler("web", max_db=30).items() if k.startswith("ConfigMap")}
    assert server_shares.running(web, config_only) == {}
    # the read pooler: all of it on every replica it may use
    read = {
        "ConfigMap/web-pooler-ro-config": _pooler("x", max_db=10)["ConfigMap/x-pooler-config"],
        "Deployment/web-pooler-ro": {"spec": {"replicas": 1}},
    }
    assert server_shares.running(web, read, read_servers=[REPLICA]) == {REPLICA: 20}


def test_a_pooler_that_runs_larger_than_its_status_says_is_counted_as_it_runs() -> None:
    """After an upgrade (a status without held connections) or with a pooler
    sized before the shares, the live objects say what runs: another profile
    grows only into what they leave."""
    running = {"shop/web": _pooler("web", max_db=30)}  # 90 at peak, whatever its status says
    table = share_table.SharedBudgets(
        children=lambda uid: running.get(uid.removesuffix("-uid"), {})
    )
    web = _profile("web", created="2026-01-01T00:00:00Z")
    web["metadata"]["uid"] = "shop/web-uid"
    web["status"] = {"budget": {"held": [{"server": SERVER, "connections": 20, "pooled": 12}],
                                "heldGeneration": 1}}  # fmt: skip
    table.update("shop/web", web)
    sessions = {"pooler.poolMode": "session", "app.replicas": {"min": 1, "max": 4}}
    report = _profile("report", created="2026-01-02T00:00:00Z", **sessions)
    table.update("shop/report", report)
    # web counted at 8 kept (20 - 12) + the 90 its pooler runs, not the 20 of its status
    (peer,) = (p for p in table.table()[SERVER] if p.key == "shop/web")
    assert peer.held == {SERVER: 98} and peer.recorded == {SERVER: 20}
    (wait,) = (g.wait for g in table.grants("shop/report").values())
    assert "the others' poolers hold shop/web 98" in wait
    # its pass shrank it to its share: the table sees the objects change, report may grow
    share = table.grants("shop/web")[SERVER].connections
    running["shop/web"] = _pooler("web", max_db=share // 3)
    table.refresh("shop/web")
    grown = table.grants("shop/report")[SERVER]
    assert not grown.wait and grown.others_now == 8 + share // 3 * 3
    # gone: the status stands in for what no longer runs
    running.clear()
    table.refresh("shop/web")
    (peer,) = (p for p in table.table()[SERVER] if p.key == "shop/web")
    assert peer.held == {SERVER: 20}
