"""Several profiles on one Postgres server share its max_connections."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from headroom.api import v1alpha1
from headroom.planning import admission, connection_budget, planner, server_shares
from headroom.runtime import share_table
from tests import profiles


def _profile(name: str, *, created: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    body = profiles.base(name=name, namespace=namespace, **spec)
    body["metadata"]["creationTimestamp"] = created
    return body


def test_the_server_is_host_and_port_qualified_by_namespace() -> None:
    db = v1alpha1.parse_profile(profiles.base(**{"database.host": "pg"})).spec.database
    assert server_shares.server_key("shop", db) == "pg.shop.svc:5432"
    fqdn = v1alpha1.parse_profile(
        profiles.base(**{"database.host": "PG.shop.svc.cluster.local"})
    ).spec.database
    assert server_shares.server_key("other", fqdn) == "pg.shop.svc:5432"


def test_the_second_profile_gets_what_the_first_leaves_and_no_more() -> None:
    table = share_table.SharedBudgets()
    # the first pins its pool so that it leaves room: 3 pods at peak x 20 = 60 of 92
    first = _profile(
        "web",
        created="2026-01-01T00:00:00Z",
        **{"pooler.parameters": {"max_db_connections": "20", "default_pool_size": "18"}},
    )
    second = _profile("admin", created="2026-01-02T00:00:00Z", **{"app.replicas.max": 4})
    table.update("shop/web", first)
    requeue, changed = table.update("shop/admin", second)
    assert requeue == {"shop/web"} and changed  # both on db.shop.svc:5432
    (use,) = table.older("shop/admin")
    assert use.profile == "shop/web" and use.server_connections > 0
    assert table.older("shop/web") == ()  # the older one never gives way
    planned = planner.plan(
        v1alpha1.parse_profile(second), facts=planner.Facts(shared=table.older("shop/admin"))
    )
    # the newer one is sized to what the older one leaves: together they fit
    total = planned.budget.server_connections + use.server_connections
    assert use.server_connections == 60
    assert planned.ok and planned.budget.available == 92 - 60 and total <= 92


def test_a_profile_that_does_not_fit_beside_the_others_is_refused_naming_both() -> None:
    table = share_table.SharedBudgets()
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z"))
    newcomer = _profile(
        "admin",
        created="",
        **{"pooler.poolMode": "session", "app.replicas.max": 10, "app.poolSizePerPod": 5},
    )
    server = "db.shop.svc:5432"

    def lookup(srv: str, key: str) -> tuple[connection_budget.SharedUse, ...]:
        return share_table.others(table.table(), srv, key)

    message = admission.review(newcomer, shared=lookup)
    assert message is not None
    assert "shop/web" in message and "spec.app.replicas.max" in message
    assert server in table.table()
    # alone on its server, the same profile is fine
    assert admission.review(newcomer) is None


def test_profiles_on_different_servers_do_not_share() -> None:
    table = share_table.SharedBudgets()
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z"))
    requeue, _ = table.update(
        "shop/other",
        _profile("other", created="2026-01-02T00:00:00Z", **{"database.host": "other-db"}),
    )
    assert requeue == set()
    assert table.older("shop/other") == ()


def test_deleting_the_older_profile_frees_its_share() -> None:
    table = share_table.SharedBudgets()
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z"))
    table.update("shop/admin", _profile("admin", created="2026-01-02T00:00:00Z"))
    assert table.older("shop/admin")
    requeue, _ = table.update("shop/web", None)
    assert requeue == {"shop/admin"}  # it may now have room: look at it again
    assert table.older("shop/admin") == ()


def test_profiles_created_in_the_same_second_rank_by_their_first_plan_then_name() -> None:
    second = "2026-01-01T00:00:00Z"  # creationTimestamp has whole seconds
    small = {"pooler.parameters": {"max_db_connections": "20", "default_pool_size": "18"}}
    web = _profile("web", created=second, **small)
    admin = _profile("admin", created=second, **small)
    # neither planned yet: the name decides (shop/admin < shop/web), the same way everywhere
    table = share_table.SharedBudgets()
    table.update("shop/web", web)
    table.update("shop/admin", admin)
    assert [u.profile for u in table.older("shop/web")] == ["shop/admin"]
    # web was planned first (its status says when): it stays the older one,
    # although admin sorts first by name
    web["status"] = {"budget": {"plannedSince": "2026-01-01T00:00:00.250000+00:00"}}
    table.update("shop/web", web)
    assert table.older("shop/web") == ()
    assert [u.profile for u in table.older("shop/admin")] == ["shop/web"]
    admin["status"] = {"budget": {"plannedSince": "2026-01-01T00:00:00.900000+00:00"}}
    table.update("shop/admin", admin)
    assert [u.profile for u in table.older("shop/admin")] == ["shop/web"]


# --- read replicas: one mechanism with the primary's ----------------------------------

REPLICA = {"mode": "external", "hosts": [{"host": "r1.replicas.example"}]}


def _reader(name: str, *, created: str, primary: str = "db", **spec: Any) -> dict[str, Any]:
    """A profile reading from the one replica r1 (max_connections 100), on its own primary."""
    replica = copy.deepcopy(REPLICA)
    return _profile(
        name,
        created=created,
        **{"database.host": primary, "database.readReplicas": replica},
        **spec,
    )


def _lookup(table: share_table.SharedBudgets) -> Any:
    def lookup(srv: str, key: str) -> tuple[connection_budget.SharedUse, ...]:
        return share_table.others(table.table(), srv, key)

    return lookup


def test_two_read_pools_on_one_replica_the_second_is_refused_naming_both() -> None:
    table = share_table.SharedBudgets()
    # on different primaries: only the replica links them
    table.update("shop/first", _reader("first", created="2026-01-01T00:00:00Z"))
    replica = "r1.replicas.example:5432"
    ((key, _, opened),) = table.table()[replica]
    # 100 - 3 superuser - 5 reserved - 4 lag probes = 88: 3 read-pooler pods x 29 = 87,
    # and its 4 lag probes
    assert (key, opened) == ("shop/first", 87 + 4)
    second = _reader("second", created="", primary="other-db")
    message = admission.review(second, shared=_lookup(table))
    assert message is not None
    assert message.startswith("spec.database.readReplicas.pooler.instances: ")
    assert "opened by the other profiles on this server (shop/first 91, beside shop/second)" in (
        message
    )
    assert "r1.replicas.example:5432" in message
    # alone, the same profile is fine; and the primaries were never shared
    assert admission.review(second) is None
    assert "other-db.shop.svc:5432" not in table.table()


def test_a_read_pool_gets_what_the_older_ones_leave_on_the_replica() -> None:
    table = share_table.SharedBudgets()
    # the older one reads little: 2 read-pooler pods at peak x 20 on r1
    small = {"database.readReplicas.pooler": {"instances": 1}, "app.replicas.max": 4}
    table.update("shop/first", _reader("first", created="2026-01-01T00:00:00Z", **small))
    second = _reader("second", created="2026-01-02T00:00:00Z", primary="db2")
    table.update("shop/second", second)
    (use,) = table.older("shop/second")
    assert use.server == "r1.replicas.example:5432" and use.profile == "shop/first"
    planned = planner.plan(
        v1alpha1.parse_profile(second), facts=planner.Facts(shared=table.older("shop/second"))
    )
    assert planned.ok, planned.problem_text()
    assert planned.read is not None
    read = planned.read.budget
    # what the older one opens on r1 leaves the newer one's read pool less room
    assert read.available == 88 - use.server_connections
    assert use.server_connections + read.server_connections + planned.read.lag_probes <= 97


def test_a_profile_whose_replica_is_another_profiles_primary_counts_both() -> None:
    """One server, two roles: one profile's primary is the other's read replica."""
    table = share_table.SharedBudgets()
    table.update("shop/writer", _profile("writer", created="2026-01-01T00:00:00Z", **{
        "database.host": "r1.replicas.example"}))  # fmt: skip
    reader = _reader("reader", created="")
    message = admission.review(reader, shared=_lookup(table))
    assert message is not None and "shop/writer" in message


def test_a_refused_profile_opens_nothing_on_any_of_its_servers() -> None:
    table = share_table.SharedBudgets()
    table.update("shop/first", _reader("first", created="2026-01-01T00:00:00Z"))
    # refused on the replica: it must not keep a share of its own primary either
    table.update("shop/second", _reader("second", created="2026-01-02T00:00:00Z", primary="db2"))
    assert "db2.shop.svc:5432" not in table.table()
    third = _profile("third", created="2026-01-03T00:00:00Z", **{"database.host": "db2"})
    table.update("shop/third", third)
    assert table.older("shop/third") == ()


@st.composite
def _server_group(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """2-5 profiles over two primaries and two replicas, each created in its own second."""
    group = []
    for index in range(draw(st.integers(2, 5))):
        spec: dict[str, Any] = {
            "database.host": draw(st.sampled_from(("db", "db2", "r1.replicas.example"))),
            "app.replicas.max": draw(st.integers(2, 12)),
            "pooler.poolMode": draw(st.sampled_from(("transaction", "session"))),
        }
        hosts = draw(st.sampled_from(([], ["r1"], ["r2"], ["r1", "r2"])))
        if hosts:
            spec["database.readReplicas"] = {
                "mode": "external",
                "hosts": [{"host": f"{h}.replicas.example"} for h in hosts],
                "pooler": {"instances": draw(st.integers(1, 2))},
            }
        name = f"p{index}"
        group.append(
            (f"shop/{name}", _profile(name, created=f"2026-01-01T00:00:0{index}Z", **spec))
        )
    return group


@given(group=_server_group(), order=st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_the_shares_are_the_same_whatever_order_the_profiles_arrive_in(
    group: list[tuple[str, dict[str, Any]]], order: Any
) -> None:
    """Primaries and replicas alike: a restart (a fresh table) and any order of
    watch events end in the same table."""
    fresh = share_table.SharedBudgets()
    for key, body in group:
        fresh.update(key, body)
    shuffled = share_table.SharedBudgets()
    events = [*group, *group[: len(group) // 2]]  # some profiles seen twice (updates)
    order.shuffle(events)
    for key, body in events:
        shuffled.update(key, body)
    assert shuffled.table() == fresh.table()
    for key, _ in group:
        assert shuffled.older(key) == fresh.older(key)
    # no server is overbooked: every one has max_connections 100, 3 superuser-reserved
    for server, rows in fresh.table().items():
        assert sum(count for _, _, count in rows) <= 97, (server, rows)
