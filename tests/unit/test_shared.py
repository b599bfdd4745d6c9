"""Several profiles on one Postgres server share its max_connections."""

from __future__ import annotations

from typing import Any

from headroom.api import v1alpha1
from headroom.planning import admission, shared
from headroom.planning import plan as plan_mod
from headroom.reconcile import shared as shared_state
from tests import profiles


def _profile(name: str, *, created: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    body = profiles.base(name=name, namespace=namespace, **spec)
    body["metadata"]["creationTimestamp"] = created
    return body


def test_the_server_is_host_and_port_qualified_by_namespace() -> None:
    db = v1alpha1.parse_profile(profiles.base(**{"database.host": "pg"})).spec.database
    assert shared.server_key("shop", db) == "pg.shop.svc:5432"
    fqdn = v1alpha1.parse_profile(
        profiles.base(**{"database.host": "PG.shop.svc.cluster.local"})
    ).spec.database
    assert shared.server_key("other", fqdn) == "pg.shop.svc:5432"


def test_the_second_profile_gets_what_the_first_leaves_and_no_more() -> None:
    table = shared_state.SharedBudgets()
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
    planned = plan_mod.plan(
        v1alpha1.parse_profile(second), facts=plan_mod.Facts(shared=table.older("shop/admin"))
    )
    # the newer one is sized to what the older one leaves: together they fit
    total = planned.budget.server_connections + use.server_connections
    assert use.server_connections == 60
    assert planned.ok and planned.budget.available == 92 - 60 and total <= 92


def test_a_profile_that_does_not_fit_beside_the_others_is_refused_naming_both() -> None:
    table = shared_state.SharedBudgets()
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z"))
    newcomer = _profile(
        "admin",
        created="",
        **{"pooler.poolMode": "session", "app.replicas.max": 10, "app.poolSizePerPod": 5},
    )
    server = "db.shop.svc:5432"

    def lookup(srv: str, key: str) -> tuple[shared.budget_mod.SharedUse, ...]:
        return shared_state.others(table.table(), srv, key)

    message = admission.review(newcomer, shared=lookup)
    assert message is not None
    assert "shop/web" in message and "spec.app.replicas.max" in message
    assert server in table.table()
    # alone on its server, the same profile is fine
    assert admission.review(newcomer) is None


def test_profiles_on_different_servers_do_not_share() -> None:
    table = shared_state.SharedBudgets()
    table.update("shop/web", _profile("web", created="2026-01-01T00:00:00Z"))
    requeue, _ = table.update(
        "shop/other",
        _profile("other", created="2026-01-02T00:00:00Z", **{"database.host": "other-db"}),
    )
    assert requeue == set()
    assert table.older("shop/other") == ()


def test_deleting_the_older_profile_frees_its_share() -> None:
    table = shared_state.SharedBudgets()
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
    table = shared_state.SharedBudgets()
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
