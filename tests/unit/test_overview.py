"""headroom status's grouping and sums (headroom.overview) over statuses as
the operator writes them; tests/e2e/test_status_cli.py checks the same against
real profiles on the local cluster."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from headroom import cli, overview
from headroom.api import v1alpha1
from headroom.planning import planner, pooler_state, recommendations
from headroom.reconcile import observe
from tests import profiles


def _profile(
    name: str,
    *,
    server: str = "db-1.data.svc:5432",
    planned: int | None = 30,
    demand: int = 40,
    within: bool = True,
    stalled: tuple[str, str] | None = None,
    shared: tuple[tuple[str, int], ...] = (),
    max_connections: int = 100,
    fallback: int = 0,
    since: str = "2026-01-01T00:00:00.000001Z",
) -> dict[str, Any]:
    conditions = [
        {"type": "Ready", "status": "True" if within and not stalled else "False", "reason": "X"},
        {
            "type": "ConnectionBudget",
            "status": "True" if within else "False",
            "reason": "WithinBudget" if within else "BudgetExceeded",
            "message": "fits" if within else "410 > 92 available",
        },
    ]
    if stalled:
        conditions.append(
            {"type": "Stalled", "status": "True", "reason": stalled[0], "message": stalled[1]}
        )
    budget: dict[str, Any] = {
        "server": server,
        "maxConnections": max_connections,
        "available": max_connections - 8 - sum(n for _, n in shared) - fallback,
        "clientDemand": demand,
        "sharedWith": [{"profile": p, "serverConnections": n} for p, n in shared],
        "plannedSince": since,
        "readFallback": fallback,
    }
    if planned is not None:
        budget["serverConnections"] = planned
    return {
        "metadata": {"namespace": "apps", "name": name},
        "spec": {"database": {"host": server.split(":", maxsplit=1)[0]}},
        "status": {"conditions": conditions, "budget": budget},
    }


def test_shared_total_counts_accepted_profiles_only() -> None:
    groups = overview.build(
        [
            _profile("a", planned=30, since="2026-01-01T00:00:01Z"),
            _profile("b", planned=40, shared=(("apps/a", 30),), since="2026-01-01T00:00:02Z"),
            _profile(
                "c",
                planned=50,
                within=False,
                shared=(("apps/a", 30), ("apps/b", 40)),
                since="2026-01-01T00:00:03Z",
            ),
            _profile("d", server="db-2.data.svc:5432", planned=10, fallback=5),
        ]
    )
    assert [g.server for g in groups] == ["db-1.data.svc:5432", "db-2.data.svc:5432"]
    db1, db2 = groups
    assert [p.name for p in db1.profiles] == ["a", "b", "c"]
    assert db1.planned == 70 and db1.available == {92} and db1.free == 22
    assert [p.name for p in db1.refused] == ["c"]
    # the read fallback a profile keeps on its primary is part of what it holds there
    assert db2.planned == 15 and db2.free == 92 - 15
    summary = overview.to_json(groups)
    assert summary["profiles"] == 4 and summary["ready"] == 3
    assert summary["refused"] == [
        {
            "namespace": "apps",
            "name": "c",
            "server": "db-1.data.svc:5432",
            "refusal": "BudgetExceeded: 410 > 92 available",
        }
    ]
    table = overview.format_table(groups)
    assert (
        "SERVER db-1.data.svc:5432  max_connections 100  available 92  planned 70  free 22" in table
    )
    assert "(50)" in table  # a refused profile's plan is shown, not counted


def test_a_profile_waiting_for_room_is_counted_at_what_it_holds_not_refused() -> None:
    waiting = _profile("w", planned=40, within=False)
    budget = waiting["status"]["conditions"][1]
    budget.update(reason="WaitingForRoom", message="waiting for room on db-1")
    waiting["status"]["budget"]["held"] = [{"server": "db-1.data.svc:5432", "connections": 20}]
    (group,) = overview.build([_profile("a", planned=30), waiting])
    assert group.refused == []
    row = next(p for p in group.profiles if p.name == "w")
    assert row.counted and row.planned == 20 and row.refusal == ""
    assert group.planned == 30 + 20


def test_stalled_and_unplanned_profiles() -> None:
    never = {
        "metadata": {"namespace": "apps", "name": "new"},
        "spec": {"database": {"host": "db-3"}},
    }
    groups = overview.build(
        [_profile("s", stalled=("AppDeploymentNotFound", "no Deployment web")), never]
    )
    by_server = {g.server: g for g in groups}
    unplanned = by_server["db-3:5432"].profiles[0]
    assert unplanned.ready == "" and unplanned.planned is None and not unplanned.counted
    stalled = by_server["db-1.data.svc:5432"].profiles[0]
    assert stalled.stalled and stalled.refusal == "AppDeploymentNotFound: no Deployment web"
    assert "Stalled" in overview.format_table(groups)


def test_different_max_connections_on_one_server_are_flagged() -> None:
    groups = overview.build([_profile("a"), _profile("b", max_connections=200)])
    assert groups[0].max_connections == {100, 200}
    assert "declare different max_connections" in overview.format_table(groups)


def test_status_without_a_cluster_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot list ScalingProfiles:") and err.count("\n") == 1


def test_the_table_in_the_docs_is_what_the_cli_prints() -> None:
    shared = "shared-db.shop.svc:5432"
    orders = _profile("orders", server=shared, planned=90, demand=50, since="2026-01-01T00:01Z")
    billing = _profile(
        "billing",
        server=shared,
        planned=3,
        demand=20,
        within=False,
        stalled=("BudgetExceeded", "spec.pooler.instances: ..."),
        shared=(("shop/orders", 90),),
        since="2026-01-01T00:02Z",
    )
    billing["status"]["conditions"][1]["message"] = "spec.pooler.instances: ..."
    for body in (orders, billing):
        body["metadata"]["namespace"] = "shop"
    doc = (Path(__file__).resolve().parents[2] / "docs" / "gitops.md").read_text()
    shown = doc[doc.index("```\nSERVER ") + 4 :]
    shown = shown[: shown.index("```")]
    assert overview.format_table(overview.build([orders, billing])) == shown


def test_recommendations_are_shown_under_their_server() -> None:
    tuned = _profile("a", planned=30)
    entry = {
        "field": "spec.pooler.parameters.default_pool_size",
        "current": 9,
        "recommended": 12,
        "why": "raise default_pool_size to 12 (fits the budget 27): 32 transactions/s x 0.25 s",
        "confidence": "high",
    }
    tuned["status"]["recommendations"] = [entry]
    groups = overview.build([tuned, _profile("b", planned=10)])
    table = overview.format_table(groups)
    assert (
        "  apps/a: recommend spec.pooler.parameters.default_pool_size 9 -> 12 (high "
        "confidence): raise default_pool_size to 12 (fits the budget 27)" in table
    )
    assert "apps/b: recommend" not in table
    rows = overview.to_json(groups)["servers"][0]["profiles"]
    assert [r["recommendations"] for r in rows] == [[entry], []]


def test_the_recommendation_line_in_the_docs_is_what_status_prints() -> None:
    seen = recommendations.PoolObservation(
        pool_size=9,
        budget=27,
        transactions_per_second=32.0,
        seconds_per_transaction=0.25,
        clients_waiting=3,
        max_wait_seconds=0.2,
        servers_active=9,
        servers_idle=0,
    )
    entry = recommendations.settle(
        None,
        recommendations.combine(
            {"pod": recommendations.recommend(seen, target_wait_probability=0.2)}
        ),
    )
    assert entry is not None
    shown = f"  shop/orders: {overview.recommended(entry)}\n"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert shown in docs


def test_plan_of_a_profile_read_back_shows_what_the_cluster_observed(tmp_path: Path) -> None:
    body = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples/shop.yaml").read_text())
    entry = {
        "field": "spec.pooler.parameters.default_pool_size",
        "current": 9,
        "recommended": 12,
        "why": "raise default_pool_size to 12 (fits the budget 27)",
        "confidence": "high",
    }
    body["status"] = {"recommendations": [entry]}
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(body))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["plan", str(path)]) == 0
    last = out.getvalue().rstrip("\n").splitlines()[-1]
    assert last == f"{'observed':<20}{overview.recommended(entry)}"


def test_every_kind_of_recommendation_is_one_line_naming_its_kind() -> None:
    entry = {
        "kind": "LowerAppPool",
        "field": "spec.app.poolSizePerPod",
        "current": 40,
        "recommended": 14,
        "why": "the app's pool is 80% idle: lower poolSizePerPod to 14",
        "confidence": "high",
    }
    assert overview.recommended(entry) == (
        "recommend spec.app.poolSizePerPod 40 -> 14 (LowerAppPool, high confidence): "
        "the app's pool is 80% idle: lower poolSizePerPod to 14"
    )
    # an entry written before kinds existed still prints
    older = {k: v for k, v in entry.items() if k != "kind"}
    assert overview.recommended(older).startswith(
        "recommend spec.app.poolSizePerPod 40 -> 14 (high confidence)"
    )


def test_the_read_poolers_recommendations_are_shown_beside_the_write_ones() -> None:
    """What the pass writes from both poolers' reports, a line each under the profile."""
    body = profiles.base(
        **{
            "database.readReplicas": {
                **profiles.external_replicas({"host": "r1", "maxConnections": 40}),
                "readPoolSizePerPod": 20,
            }
        }
    )
    plan = planner.plan(v1alpha1.parse_profile(body))
    assert plan.ok, plan.problem_text()

    # each read-pooler pod: 100 transactions/s x 0.1 s = 10 busy, more than r1's room
    # per pod gives; the write pooler's pod: 40 x 0.1 s = 4, its filled pool idle
    def report(rate: float) -> str:
        # as the agent writes it (recommendations.PoolFigures.report)
        busy = {"transactionsPerSecond": rate, "secondsPerTransaction": 0.1}
        busy |= {"clientsWaiting": 0, "maxWaitSeconds": 0.0, "serversActive": 8, "serversIdle": 0}
        entry = pooler_state.Entry(config="h", max_db_connections=8, server_connections=8, at="")
        return dataclasses.replace(entry, observed=busy).text()

    applied = {
        f"ConfigMap/{plan.names.pooler_state}": {"data": {"a": report(40.0)}},
        f"ConfigMap/{plan.names.read_pooler_state}": {"data": {"b": report(100.0)}},
    }
    entries = observe.recommendations_of(plan, applied, previous=None)
    kinds = [e["kind"] for e in entries]
    assert "ReadPoolOverBudget" in kinds and len(kinds) >= 2, kinds
    shown = _profile("a", planned=30)
    shown["status"]["recommendations"] = entries
    table = overview.format_table(overview.build([shown]))
    lines = [line for line in table.splitlines() if line.startswith("  apps/a: recommend")]
    assert lines == [f"  apps/a: {overview.recommended(e)}" for e in entries]
    assert any(
        "spec.database.readReplicas.hosts[0].maxConnections 40 -> " in line
        and "(ReadPoolOverBudget, high confidence)" in line
        for line in lines
    ), lines
