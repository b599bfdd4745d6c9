"""Recommendations from a pooler's observed figures (planning.recommendations): tables
built on published Erlang C values (10 erlangs: 12 connections wait 44.94 %, 13 28.53 %,
14 17.41 %, 15 10.20 %), and properties: never above the budget, the right direction."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom.api import status, v1alpha1
from headroom.planning import planner, pooler_state, queueing, read_plan, recommendations
from headroom.reconcile import observe
from tests import profiles

TARGET = 0.2  # 14 connections for 10 erlangs (17.41 %); 13 wait 28.53 %


def observed(**figures: Any) -> recommendations.PoolObservation:
    base: dict[str, Any] = {
        "pool_size": 10,
        "budget": 20,
        "transactions_per_second": 100.0,
        "seconds_per_transaction": 0.1,  # 10 erlangs
        "clients_waiting": 0,
        "max_wait_seconds": 0.0,
        "servers_active": 10,
        "servers_idle": 0,
    }
    return recommendations.PoolObservation(**(base | figures))


def test_the_table_value_behind_the_tables() -> None:
    assert queueing.erlang_c(servers=13, offered_load=10) == pytest.approx(0.2853, abs=5e-5)
    assert queueing.erlang_c(servers=14, offered_load=10) == pytest.approx(0.1741, abs=5e-5)


@pytest.mark.parametrize(
    ("figures", "proposed", "needed", "fits", "says"),
    [
        # under-sized, room in the budget: raise to the Erlang C answer
        ({}, 14, 14, True, "raise default_pool_size to 14 (fits the budget 20)"),
        # the budget is the limit: raise as far as it goes, and say by how much it is short
        (
            {"budget": 12},
            12,
            14,
            False,
            "needs 14 server connections, the budget allows 12 (2 short",
        ),
        ({"pool_size": 12, "budget": 12}, 12, 14, False, "the budget is the limit"),
        # a wait the averages cannot explain (2 s at 12 for 10 erlangs): 12 active + 6 waiting
        (
            {"pool_size": 12, "servers_active": 12, "clients_waiting": 6, "max_wait_seconds": 2},
            18,
            18,
            True,
            "6 clients waiting (oldest 2 s, more than the load explains)",
        ),
        # a burst the averages miss (1 erlang needs 3): 8 busy and 4 waiting at once
        (
            {
                "pool_size": 8,
                "transactions_per_second": 10.0,
                "servers_active": 8,
                "clients_waiting": 4,
            },
            12,
            12,
            True,
            "raise default_pool_size to 12",
        ),
        # idle: at least twice what the load needs, nobody waited
        (
            {"pool_size": 28, "budget": 30, "servers_active": 10, "servers_idle": 18},
            14,
            14,
            True,
            "lower default_pool_size to 14: the pool is 64% idle",
        ),
        (
            {
                "pool_size": 20,
                "transactions_per_second": 0.0,
                "servers_active": 0,
                "servers_idle": 20,
            },
            1,
            0,
            True,
            "the pool is 100% idle",
        ),
    ],
)
def test_recommendation_table(
    figures: dict[str, Any], proposed: int, needed: int, fits: bool, says: str
) -> None:
    figures_in = observed(**figures)
    (found,) = recommendations.recommend(figures_in, target_wait_probability=TARGET)
    assert (found.parameter, found.proposed, found.needed, found.fits_budget) == (
        "default_pool_size",
        proposed,
        needed,
        fits,
    )
    assert says in found.reason
    # the figures behind it
    rate = (
        f"{figures_in.transactions_per_second:g} transactions/s x "
        f"{figures_in.seconds_per_transaction:g} s"
    )
    assert rate in found.reason
    assert f"{figures_in.clients_waiting} clients waiting" in found.reason


@pytest.mark.parametrize(
    "figures",
    [
        {"pool_size": 14},  # exactly what the target needs
        {"pool_size": 27, "budget": 30},  # idle, but under twice the need: no swing
        # idle on average, but a client waited: never lower then
        {"pool_size": 28, "budget": 30, "max_wait_seconds": 1.0, "servers_active": 2},
        # waiting as the target allows it (17 % wait at 14): a queue of 2, 50 ms old
        {"pool_size": 14, "servers_active": 14, "clients_waiting": 2, "max_wait_seconds": 0.05},
    ],
)
def test_nothing_to_change(figures: dict[str, Any]) -> None:
    assert recommendations.recommend(observed(**figures), target_wait_probability=TARGET) == []


@pytest.mark.parametrize(
    ("figures", "field"),
    [
        ({"pool_size": 21}, "pool_size 21 is above the budget 20"),
        ({"clients_waiting": -1}, "clients_waiting"),
        ({"seconds_per_transaction": float("nan")}, "seconds_per_transaction"),
    ],
)
def test_impossible_figures_are_refused_naming_them(figures: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        observed(**figures)


@st.composite
def observations(draw: st.DrawFn) -> recommendations.PoolObservation:
    budget = draw(st.integers(1, 500))
    return recommendations.PoolObservation(
        pool_size=draw(st.integers(0, budget)),
        budget=budget,
        transactions_per_second=draw(st.floats(0, 5000)),
        seconds_per_transaction=draw(st.floats(0, 0.5)),
        clients_waiting=draw(st.integers(0, 1000)),
        max_wait_seconds=draw(st.floats(0, 120)),
        servers_active=draw(st.integers(0, budget)),
        servers_idle=draw(st.integers(0, budget)),
    )


@given(figures=observations(), target=st.sampled_from((0.01, 0.05, 0.2, 0.5)))
def test_never_above_the_budget_and_always_the_right_way(
    figures: recommendations.PoolObservation, target: float
) -> None:
    found = recommendations.recommend(figures, target_wait_probability=target)
    assert len(found) <= 1
    load = figures.transactions_per_second * figures.seconds_per_transaction
    for rec in found:
        assert 1 <= rec.proposed <= figures.budget
        assert rec.current == figures.pool_size
        assert rec.fits_budget == (rec.needed <= figures.budget)
        if rec.proposed < rec.current:
            # lowered: nobody waited, and the new size still meets the target
            assert figures.clients_waiting == 0 and figures.max_wait_seconds == 0
            assert queueing.erlang_c(servers=rec.proposed, offered_load=load) <= target or (
                load == 0
            )
        elif rec.fits_budget:
            assert rec.proposed == rec.needed > rec.current
        else:
            assert rec.proposed == figures.budget


def figures(**values: Any) -> recommendations.PoolFigures:
    base: dict[str, Any] = {
        "transactions_per_second": 100.0,
        "seconds_per_transaction": 0.1,
        "clients_waiting": 0,
        "max_wait_seconds": 0.0,
        "servers_active": 10,
        "servers_idle": 0,
    }
    return recommendations.PoolFigures(**(base | values))


def test_figures_from_pgbouncer_rows_of_the_app_database() -> None:
    # columns as PgBouncer 1.26 names them (times in microseconds)
    stats = [
        {"database": "pgbouncer", "avg_xact_count": 1, "avg_xact_time": 10},
        # the transaction's time includes its wait for a server: 250 ms held
        {
            "database": "app",
            "avg_xact_count": 32,
            "avg_xact_time": 390_000,
            "avg_wait_time": 140_000,
        },
    ]
    pools = [
        {
            "database": "app",
            "user": "app",
            "cl_active": 12,
            "cl_waiting": 3,
            "sv_active": 9,
            "sv_idle": 0,
            "sv_used": 1,
            "maxwait": 1,
            "maxwait_us": 500_000,
        },
        {
            "database": "app",
            "user": "other",
            "cl_active": 2,
            "cl_waiting": 1,
            "sv_active": 1,
            "sv_idle": 2,
            "sv_used": 0,
            "maxwait": 0,
            "maxwait_us": 10,
        },
        {"database": "pgbouncer", "user": "pgbouncer", "cl_waiting": 9, "sv_active": 0},
    ]
    found = recommendations.figures_from_show(stats=stats, pools=pools, database="app")
    # the console's rows as text (a simple-protocol client's) give the same figures
    as_text = [{k: str(v) for k, v in row.items()} for row in pools]
    stats_text = [{k: str(v) for k, v in row.items()} for row in stats]
    assert found == recommendations.figures_from_show(
        stats=stats_text, pools=as_text, database="app"
    )
    assert found == recommendations.PoolFigures(
        transactions_per_second=32.0,
        seconds_per_transaction=0.25,
        clients_waiting=4,
        max_wait_seconds=1.5,
        servers_active=10,
        servers_idle=3,
        # as the clients see it: the wait included, and every client connection
        client_seconds_per_transaction=0.39,
        clients_open=18,
    )
    assert found.offered_load == pytest.approx(8.0)
    assert found.clients_in_transaction == pytest.approx(32 * 0.39)
    assert recommendations.figures_from_show(stats=stats, pools=pools, database="x") is None


def test_the_report_round_trips_and_bad_values_are_named() -> None:
    seen = figures(clients_waiting=2, max_wait_seconds=0.25)
    assert recommendations.PoolFigures.from_report(seen.report()) == seen
    client = figures(client_seconds_per_transaction=0.3, clients_open=7)
    assert recommendations.PoolFigures.from_report(client.report()) == client
    with pytest.raises(ValueError, match=r"observed\.clientsOpen must be a whole number"):
        recommendations.PoolFigures.from_report(client.report() | {"clientsOpen": 0.5})
    bad = seen.report() | {"clientsWaiting": "2"}
    with pytest.raises(ValueError, match=r"observed\.clientsWaiting"):
        recommendations.PoolFigures.from_report(bad)
    with pytest.raises(ValueError, match=r"observed\.serversIdle must be a whole number"):
        recommendations.PoolFigures.from_report(seen.report() | {"serversIdle": 1.5})
    with pytest.raises(ValueError, match="seconds_per_transaction"):
        figures(seconds_per_transaction=float("inf"))


def _entry(observed: dict[str, Any] | None) -> str:
    """A pod's entry in the state ConfigMap as its agent writes it."""
    return pooler_state.Entry(
        config="h",
        max_db_connections=4,
        server_connections=1,
        at="2026-12-07T15:00:00Z",
        observed=observed,
    ).text()


def test_figures_from_the_state_configmap_skip_what_is_not_a_report() -> None:
    report = figures().report()
    data = {
        "pooler-a": _entry(report),
        "pooler-b": _entry(None),  # no figures
        "pooler-c": "{not json",
        "pooler-d": _entry({**report, "serversActive": -1}),
        "pooler-gone": _entry(report),
    }
    found = recommendations.figures_from_state(
        data, pods=["pooler-a", "pooler-b", "pooler-c", "pooler-d"]
    )
    assert found == {"pooler-a": figures()}
    assert set(recommendations.figures_from_state(data)) == {"pooler-a", "pooler-gone"}
    assert recommendations.figures_from_state(None) == {}


@pytest.mark.parametrize(
    ("after", "moved"),
    [
        ({"transactions_per_second": 110.0}, False),  # 10 % more load: noise
        ({"servers_active": 3, "servers_idle": 7}, False),  # the same load
        ({"transactions_per_second": 130.0}, True),  # 30 % more
        ({"clients_waiting": 1}, True),  # waiting started
        ({"max_wait_seconds": 0.5}, True),
    ],
)
def test_figures_move_materially_only_past_the_band(after: dict[str, Any], moved: bool) -> None:
    assert recommendations.moved(figures(), figures(**after)) is moved
    assert recommendations.moved(None, figures())
    # a small load's wobble under half a connection is never material
    small = figures(transactions_per_second=1.0)
    assert not recommendations.moved(small, figures(transactions_per_second=3.0))


def _rec(current: int, proposed: int, **more: Any) -> recommendations.Recommendation:
    return recommendations.Recommendation(
        parameter="default_pool_size",
        kind=more.pop("kind", "RaiseServerPool" if proposed > current else "LowerServerPool"),
        current=current,
        proposed=proposed,
        needed=more.pop("needed", proposed),
        fits_budget=True,
        reason=more.pop("reason", f"to {proposed}"),
        **more,
    )


def test_combine_raises_for_the_busiest_pod_and_lowers_only_when_all_agree() -> None:
    lower, raise_ = _rec(20, 8), _rec(20, 24)
    assert recommendations.combine({"a": [lower], "b": [raise_]}) == raise_
    assert recommendations.combine({"a": [lower], "b": []}) is None
    assert recommendations.combine({"a": [lower], "b": [_rec(20, 10)]}) == _rec(20, 10)
    assert recommendations.combine({}) is None


def test_settle_keeps_the_last_recommendation_inside_its_band() -> None:
    first = recommendations.settle(None, _rec(10, 20, reason="raise to 20: 100 tx/s"))
    assert first is not None and first["recommended"] == 20
    assert set(first) == {"kind", "field", "current", "recommended", "why", "confidence"}
    # 21 and 22 are within max(1, 10 % of 20) = 2: the status stays as it was
    for near in (21, 22, 18):
        assert recommendations.settle(first, _rec(10, near, reason="other figures")) == first
    moved_on = recommendations.settle(first, _rec(10, 23))
    assert moved_on is not None and moved_on["recommended"] == 23
    # the other way, or after the pool changed: a new entry
    assert recommendations.settle(first, _rec(30, 22)) != first
    # another kind (the budget became the limit), or an entry of before kinds: a new one
    over = recommendations.settle(first, _rec(10, 21, kind="ServerPoolOverBudget"))
    assert over is not None and over["kind"] == "ServerPoolOverBudget"
    old = {k: v for k, v in first.items() if k != "kind"}
    assert recommendations.settle(old, _rec(10, 21)) == {**first, "recommended": 21, "why": "to 21"}
    assert recommendations.settle(first, None) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"transactions_per_second": 10.0}, "high"),  # 600 in a stats period
        ({"transactions_per_second": 1.0}, "medium"),  # 60
        ({"transactions_per_second": 0.2}, "low"),  # 12
    ],
)
def test_confidence_from_the_transactions_behind_the_averages(
    values: dict[str, Any], expected: str
) -> None:
    seen = recommendations.PoolObservation.of(figures(**values), pool_size=1, budget=50)
    assert recommendations.confidence(seen, unexplained=False) == expected
    assert recommendations.confidence(seen, unexplained=True) == "high"


def test_pool_ceiling_is_the_share_per_pod_at_peak_less_the_reserve() -> None:
    assert (
        recommendations.pool_ceiling(
            available=89, pooler_pods_at_peak=3, reserve_pool_size=2, client_demand=300
        )
        == 27
    )
    assert (
        recommendations.pool_ceiling(
            available=89, pooler_pods_at_peak=3, reserve_pool_size=2, client_demand=10
        )
        == 10
    )


def _state(plan: planner.Plan, **pods: recommendations.PoolFigures) -> dict[str, Any]:
    """The write pooler's state ConfigMap as the agents leave it."""
    data = {pod: _entry(seen.report()) for pod, seen in pods.items()}
    return {f"ConfigMap/{plan.names.pooler_state}": {"data": data}}


def test_the_pass_recommends_from_the_agents_report_and_holds_it_on_a_wobble() -> None:
    # 32 transactions/s x 0.25 s = 8 busy per pod, at a target of 20 %: 12 each
    plan = planner.plan(
        v1alpha1.parse_profile(
            profiles.base(
                load={
                    "peakRequestsPerSecond": 32,
                    "databaseSecondsPerRequest": 0.05,
                    "waitProbability": 0.2,
                },
            )
        )
    )
    size = plan.budget.default_pool_size
    assert size < 12
    seen = figures(transactions_per_second=32.0, seconds_per_transaction=0.25, servers_active=size)
    applied = _state(plan, **{"pooler-a": seen, "pooler-b": figures(transactions_per_second=1.0)})
    (entry,) = observe.recommendations_of(plan, applied, previous=None)
    assert entry["field"] == "spec.pooler.parameters.default_pool_size"
    assert (entry["current"], entry["recommended"], entry["confidence"]) == (size, 12, "high")
    assert "32 transactions/s x 0.25 s = 8 connections busy" in entry["why"]
    status.RecommendationStatus.model_validate(entry)  # what the CRD holds
    # 5 % more load: 12 still, or one above: the entry as status holds it, no write
    wobble = _state(
        plan, **{"pooler-a": figures(transactions_per_second=34.0, seconds_per_transaction=0.25)}
    )
    assert observe.recommendations_of(plan, wobble, previous=[entry]) == [entry]
    # no report (the agent of an older release, or none yet): nothing
    assert observe.recommendations_of(plan, {}, previous=[entry]) == []
    # a session-mode pooler's pool is its clients: nothing to recommend
    session = planner.plan(v1alpha1.parse_profile(profiles.base(**{"pooler.poolMode": "session"})))
    assert observe.recommendations_of(session, _state(session, a=seen), previous=None) == []


def _loaded(**alerts: Any) -> planner.Plan:
    body = profiles.base(load={"peakRequestsPerSecond": 32, "databaseSecondsPerRequest": 0.05})
    if alerts:
        body["spec"]["alerts"] = {"pooler": alerts}
    return planner.plan(v1alpha1.parse_profile(body))


@pytest.mark.parametrize(
    ("seconds", "alerts", "status", "reason"),
    [
        (0.06, {}, "True", "WithinBaseline"),  # 1.2 x the declared 0.05 s
        (0.16, {}, "False", "AboveBaseline"),  # 3.2 x, above the 0.05 s floor
        (0.16, {"write": {"queryTimeBaselineFactor": 4}}, "True", "WithinBaseline"),
        # far above its declared time, but under the floor: noise
        (0.16, {"queryTimeFloorSeconds": 0.5}, "True", "WithinBaseline"),
    ],
)
def test_load_baseline_compares_the_slowest_pod_with_the_declared_time(
    seconds: float, alerts: dict[str, Any], status: str, reason: str
) -> None:
    plan = _loaded(**alerts)
    applied = _state(
        plan,
        **{
            "pooler-a": figures(transactions_per_second=16.0, seconds_per_transaction=0.05),
            "pooler-b": figures(transactions_per_second=16.0, seconds_per_transaction=seconds),
            # an idle pod has no time per transaction to speak of
            "pooler-c": figures(transactions_per_second=0.0, seconds_per_transaction=9.0),
        },
    )
    found = observe.load_baseline(plan, applied)
    assert found is not None
    assert (found.type, found.status, found.reason) == ("LoadBaseline", status, reason)
    assert found.message.startswith(f"pooler-b: {seconds:g} s per transaction")
    assert "spec.load.databaseSecondsPerRequest" in found.message


def test_load_baseline_is_absent_without_a_load_or_figures() -> None:
    plan = _loaded()
    assert observe.load_baseline(plan, {}) is None
    unloaded = planner.plan(v1alpha1.parse_profile(profiles.base()))
    assert observe.load_baseline(unloaded, _state(unloaded, a=figures())) is None


NOW = datetime.datetime(2026, 12, 7, 15, 0, tzinfo=datetime.UTC)


def _tuned_profile(**auto: Any) -> v1alpha1.ScalingProfile:
    return v1alpha1.parse_profile(profiles.base(**{"pooler.autoTune": {"enabled": True, **auto}}))


def _entry_of(current: int, proposed: int, confidence: str = "high") -> dict[str, Any]:
    return {
        "field": recommendations.FIELD,
        "current": current,
        "recommended": proposed,
        "why": f"to {proposed}",
        "confidence": confidence,
    }


def test_tune_applies_a_confident_recommendation_that_fits() -> None:
    profile = _tuned_profile()

    def tune(entry: dict[str, Any], *, current: int, most: int, previous: Any = None) -> Any:
        return recommendations.tune(
            profile,
            previous=previous,
            recommended=[entry],
            current=current,
            now=NOW,
            fits=lambda size: size <= most,
        )

    done = tune(_entry_of(10, 14), current=10, most=20)
    # 14 and a quarter of headroom (the agent's reporting band)
    assert done.size == 18 and done.status is not None
    assert done.status == {
        "defaultPoolSize": 18,
        "changes": ["2026-12-07T15:00:00+00:00"],
        "why": "to 14",
    }
    assert done.change is not None
    assert "default_pool_size 10 -> 18 (1 of at most 2" in done.change
    status.TuningStatus.model_validate(done.status)  # what the CRD holds
    # where only the bare size fits, the bare size
    assert tune(_entry_of(10, 14), current=10, most=14).size == 14
    # 31 + 8 does not fit, and 31 alone is within a tenth of 30: no change
    assert tune(_entry_of(30, 31), current=30, most=33).size is None
    kept = {"defaultPoolSize": 10, "changes": [], "why": ""}
    # low confidence, no fit, nothing new: status.tuning as it was, no change
    for entry, most in (
        (_entry_of(10, 14, "low"), 99),
        (_entry_of(10, 14), 12),
        (_entry_of(10, 10), 99),
    ):
        same = tune(entry, current=10, most=most, previous=kept)
        assert (same.status, same.change) == (kept, None)


def test_tune_keeps_to_its_changes_per_hour() -> None:
    profile = _tuned_profile(maxChangesPerHour=2)
    earlier = ["2026-12-07T14:10:00+00:00", "2026-12-07T14:40:00+00:00"]
    previous = {"defaultPoolSize": 12, "changes": earlier, "why": ""}
    held = recommendations.tune(
        profile,
        previous=previous,
        recommended=[_entry_of(12, 16)],
        current=12,
        now=NOW,
        fits=lambda _: True,
    )
    assert held.change is None and held.status == previous
    # an hour after the first, one is free again; the old stamp is dropped
    later = NOW + datetime.timedelta(minutes=11)
    moved = recommendations.tune(
        profile,
        previous=previous,
        recommended=[_entry_of(12, 16)],
        current=12,
        now=later,
        fits=lambda _: True,
    )
    assert moved.status is not None
    assert moved.status["changes"] == [earlier[1], "2026-12-07T15:11:00+00:00"]


def test_tune_is_off_without_the_switch_or_with_a_pin() -> None:
    off = v1alpha1.parse_profile(profiles.base())
    pinned = v1alpha1.parse_profile(
        profiles.base(
            **{
                "pooler.autoTune": {"enabled": True},
                "pooler.parameters": {"default_pool_size": "8"},
            }
        )
    )
    for profile in (off, pinned):
        done = recommendations.tune(
            profile,
            previous={"defaultPoolSize": 3},
            recommended=[_entry_of(8, 14)],
            current=8,
            now=NOW,
            fits=lambda _: True,
        )
        assert (done.status, done.change) == (None, None)
        assert recommendations.tuned_size(profile, {"tuning": {"defaultPoolSize": 3}}) is None
    assert recommendations.tuned_size(_tuned_profile(), {"tuning": {"defaultPoolSize": 3}}) == 3


@pytest.mark.parametrize("load", [0.5, 2.0, 8.0, 20.0])
@pytest.mark.parametrize("start", [1, 5, 28])
def test_auto_tune_converges_without_oscillation(load: float, start: int) -> None:
    """The loop on the M/M/s model: each pass the pool's figures (the load's averages,
    a 10 % wobble either way, and the queue Erlang C expects at the pool's size), its
    recommendation, the status band and autoTune. It settles within two changes at a
    size that meets the target, never goes back the way it came, and stays."""
    profile = _tuned_profile(maxChangesPerHour=12)
    budget, target = 30, 0.05
    size, previous, tuning = start, None, None
    sizes = [size]
    for step in range(40):
        wobble = 1 + 0.1 * ((step % 3) - 1)
        offered = load * wobble
        queue = 0
        if size > offered:
            queue = round(
                queueing.erlang_c(servers=size, offered_load=offered) * offered / (size - offered)
            )
        seen = recommendations.PoolObservation(
            pool_size=size,
            budget=budget,
            transactions_per_second=offered * 10,
            seconds_per_transaction=0.1,
            clients_waiting=queue,
            max_wait_seconds=0.0,
            servers_active=min(size, round(offered)),
            servers_idle=max(0, size - round(offered)),
        )
        fresh = recommendations.combine(
            {"pod": recommendations.recommend(seen, target_wait_probability=target)}
        )
        entry = recommendations.settle(previous, fresh)
        previous = entry
        done = recommendations.tune(
            profile,
            previous=tuning,
            recommended=[entry] if entry else [],
            current=size,
            now=NOW + datetime.timedelta(minutes=10 * step),
            fits=lambda s: s <= budget,
        )
        tuning = done.status
        if done.size is not None:
            size = done.size
            sizes.append(size)
    changes = len(sizes) - 1
    assert changes <= 2, sizes
    steps = [b - a for a, b in itertools.pairwise(sizes)]
    assert all(s > 0 for s in steps) or all(s < 0 for s in steps) or not steps, sizes
    worst = load * 1.1
    assert size >= worst or queueing.erlang_c(servers=size, offered_load=load) <= target, sizes


def _app_plan(**overrides: Any) -> planner.Plan:
    """2 write-pooler pods, the app's floor 2 pods of 20, a small load at a 20 % target."""
    body = profiles.base(
        **{"app.poolSizePerPod": 20},
        load={
            "peakRequestsPerSecond": 32,
            "databaseSecondsPerRequest": 0.05,
            "waitProbability": 0.2,
        },
    )
    for path, value in overrides.items():
        profiles.set_path(body["spec"], path, value)
    return planner.plan(v1alpha1.parse_profile(body))


def _app_entry(plan: planner.Plan, **pods: recommendations.PoolFigures) -> dict[str, Any] | None:
    found = observe.recommendations_of(plan, _state(plan, **pods), previous=None)
    app = [e for e in found if e["field"] == "spec.app.poolSizePerPod"]
    for entry in app:
        status.RecommendationStatus.model_validate(entry)  # what the CRD holds
    return app[0] if app else None


def test_an_idle_app_pool_is_lowered_to_what_erlang_c_needs_on_the_floor() -> None:
    # each pooler pod: 20 transactions/s x 0.1 s as the clients see it = 2 in a
    # transaction; 2 pods: 4, over the app's floor of 2 pods: 2 erlangs on each, which
    # 4 connections carry within 20 % (published: 2 erlangs wait 44.4 % at 3, 17.4 % at 4)
    plan = _app_plan()
    assert queueing.erlang_c(servers=4, offered_load=2) == pytest.approx(0.1739, abs=5e-5)
    busy = figures(
        transactions_per_second=20.0,
        seconds_per_transaction=0.08,
        client_seconds_per_transaction=0.1,
        clients_open=16,
    )
    entry = _app_entry(plan, a=busy, b=busy)
    assert entry is not None
    assert (entry["kind"], entry["current"], entry["recommended"]) == ("LowerAppPool", 20, 4)
    assert "the app's pool is 90% idle: lower poolSizePerPod to 4" in entry["why"]
    assert "40 transactions/s x 0.1 s" in entry["why"]
    assert (
        "2 on each of the app's floor of 2 pods of 20 (32 client connections open on the 2 "
        "pooler pods that report)" in entry["why"]
    )
    # one pod reported (the other not yet): its figures stand for both
    alone = _app_entry(plan, a=busy)
    assert alone is not None and alone["recommended"] == 4
    # 7 is under twice the 4 it needs: no swing
    assert _app_entry(_app_plan(**{"app.poolSizePerPod": 7}), a=busy, b=busy) is None
    # an agent that reports no client-side figures: nothing said of the app's pool
    old = figures(transactions_per_second=20.0, seconds_per_transaction=0.08)
    assert _app_entry(plan, a=old, b=old) is None


def test_the_app_pool_is_never_lowered_below_what_the_declared_load_needs() -> None:
    # 400 requests/s x 0.05 s = 20 erlangs over the floor of 2 pods: 10 on each
    plan = _app_plan(**{"app.poolSizePerPod": 40, "load.peakRequestsPerSecond": 400})
    assert plan.app_load_pool is not None and plan.app_load_pool.staffing is not None
    declared = plan.app_load_pool.staffing.needed
    assert declared == 14  # published: 10 erlangs wait 17.41 % at 14, 28.53 % at 13
    quiet = figures(
        transactions_per_second=2.0,
        seconds_per_transaction=0.05,
        client_seconds_per_transaction=0.05,
    )
    entry = _app_entry(plan, a=quiet, b=quiet)
    assert entry is not None and entry["recommended"] == declared
    assert "spec.load needs 14" in entry["why"]


def test_auto_tune_never_applies_the_app_pool_or_max_connections() -> None:
    profile = _tuned_profile()
    for field in ("spec.app.poolSizePerPod", "spec.database.maxConnections"):
        entry = _entry_of(20, 4) | {"field": field}
        done = recommendations.tune(
            profile, previous=None, recommended=[entry], current=10, now=NOW, fits=lambda _: True
        )
        assert (done.change, done.size) == (None, None)


def test_max_connections_is_the_limit_says_what_the_plan_needs() -> None:
    # max_connections 40 - 3 superuser - 5 reservedConnections - 3 for postgres_exporter
    # = 29 over 3 pooler pods at peak: 9 each (the load's small pool has no reserve);
    # 10 erlangs on a pod need 14 at 20 % (published: 17.41 %)
    plan = _app_plan(**{"database.maxConnections": 40})
    budget = plan.budget
    assert (budget.available, budget.pooler_pods_at_peak, budget.reserve_pool_size) == (29, 3, 0)
    seen = figures(transactions_per_second=100.0, seconds_per_transaction=0.1)
    found = observe.recommendations_of(plan, _state(plan, a=seen), previous=None)
    by_kind = {e["kind"]: e for e in found}
    for entry in found:
        status.RecommendationStatus.model_validate(entry)
    assert by_kind["ServerPoolOverBudget"]["recommended"] == 9
    limit = by_kind["MaxConnectionsLimit"]
    # 14 + the reserve the plan keeps at that size (1) = 15 per pod x 3 pods = 45, 16
    # more than the 29 available
    assert (limit["field"], limit["current"], limit["recommended"]) == (
        "spec.database.maxConnections",
        40,
        56,
    )
    assert "max_connections is the limit: the plan needs 56 (now 40)" in limit["why"]
    assert "14 server connections per pooler pod + 1 reserve" in limit["why"]
    assert "= 45, 16 more than the 29 available" in limit["why"]
    # what it says holds: at 56 the plan takes a pool of 14 per pod, at 55 it does not
    pin = {"pooler.parameters": {"default_pool_size": "14"}}
    assert _app_plan(**{"database.maxConnections": 56}, **pin).problems == ()
    assert _app_plan(**{"database.maxConnections": 55}, **pin).problems != ()
    # inside the budget: no such entry
    fits = figures(transactions_per_second=50.0, seconds_per_transaction=0.1)
    kinds = {
        e["kind"] for e in observe.recommendations_of(plan, _state(plan, a=fits), previous=None)
    }
    assert "MaxConnectionsLimit" not in kinds
    # the clients' own pools are the limit (10 pods x 1): not max_connections
    small = _app_plan(**{"database.maxConnections": 40, "app.poolSizePerPod": 1})
    found = observe.recommendations_of(small, _state(small, a=seen), previous=None)
    assert "MaxConnectionsLimit" not in {e["kind"] for e in found}


@given(
    rate=st.floats(min_value=0, max_value=2000),
    client_seconds=st.floats(min_value=0, max_value=2),
    size=st.integers(min_value=1, max_value=200),
    floor=st.integers(min_value=1, max_value=8),
)
def test_an_app_pool_recommendation_only_ever_lowers_and_meets_the_target(
    rate: float, client_seconds: float, size: int, floor: int
) -> None:
    plan = planner.plan(
        v1alpha1.parse_profile(
            profiles.base(**{"app.poolSizePerPod": size, "app.replicas": {"min": floor, "max": 10}})
        )
    )
    seen = figures(
        transactions_per_second=rate,
        seconds_per_transaction=0.0,
        client_seconds_per_transaction=client_seconds,
    )
    found = recommendations.app_pool(
        [seen], plan=plan, target_wait_probability=v1alpha1.DEFAULT_WAIT_PROBABILITY
    )
    per_pod = rate * client_seconds * plan.pooler.instances / floor
    if found is None:
        return
    assert 1 <= found.proposed < size and found.proposed * 2 <= size
    if per_pod > 0:
        assert (
            queueing.erlang_c(servers=found.proposed, offered_load=per_pod)
            <= v1alpha1.DEFAULT_WAIT_PROBABILITY
        )


# the read side: the read pooler's agents report the same figures into its own state
# ConfigMap, read against the read plan (planning.read_plan)

READ_LOAD = {"peakRequestsPerSecond": 32, "databaseSecondsPerRequest": 0.05, "waitProbability": 0.2}


def _read_plan(**overrides: Any) -> planner.Plan:
    """Two external replicas, the smaller (r1) with max_connections 40; 2 read-pooler pods;
    the app's floor 2 pods of 20 read connections each; a 20 % target (spec.load)."""
    body = profiles.base(
        load=dict(READ_LOAD),
        **{
            "database.readReplicas": {
                **profiles.external_replicas({"host": "r1", "maxConnections": 40}, {"host": "r2"}),
                "readPoolSizePerPod": 20,
            }
        },
    )
    for path, value in overrides.items():
        profiles.set_path(body["spec"], path, value)
    plan = planner.plan(v1alpha1.parse_profile(body))
    assert plan.ok, plan.problem_text()
    return plan


def _read_state(plan: planner.Plan, **pods: recommendations.PoolFigures) -> dict[str, Any]:
    """The read pooler's state ConfigMap as its agents leave it."""
    data = {pod: _entry(seen.report()) for pod, seen in pods.items()}
    return {f"ConfigMap/{plan.names.read_pooler_state}": {"data": data}}


def _read_entries(
    plan: planner.Plan, previous: list[dict[str, Any]] | None = None, **pods: Any
) -> dict[str, dict[str, Any]]:
    found = observe.recommendations_of(plan, _read_state(plan, **pods), previous=previous)
    for entry in found:
        status.RecommendationStatus.model_validate(entry)  # what the CRD holds
    return {e["kind"]: e for e in found}


def _read_pool_with_r1_at(max_connections: int) -> int:
    """Each read-pooler pod's pool when r1 declares ``max_connections`` (and r2, at the
    profile's 100, as many when that is more, as the recommendation says)."""
    hosts = [
        {"host": "r1", "maxConnections": max_connections},
        {"host": "r2", "maxConnections": max(max_connections, 100)},
    ]
    read = _read_plan(**{"database.readReplicas.hosts": hosts}).read
    assert read is not None
    return read.budget.default_pool_size


def test_the_smallest_replica_is_the_read_pools_limit_and_says_by_how_much() -> None:
    # r1: max_connections 40 - 3 superuser - 5 reservedConnections - 4 lag probes (3
    # read-pooler pods at peak + the operator's) - 3 for its postgres_exporter = 25
    # over 3 read-pooler pods at peak: 8 each, no reserve (8 // 10 = 0)
    plan = _read_plan()
    read = plan.read
    assert read is not None and read.smallest.host == "r1"
    budget = read.budget
    assert (budget.available, budget.pooler_pods_at_peak, budget.default_pool_size) == (25, 3, 8)
    # 100 reads/s x 0.1 s = 10 erlangs on each read-pooler pod: 14 at 20 % (published:
    # 14 wait 17.41 %, 13 28.53 %); 14 + the reserve at that size (15 // 10 = 1) = 15 per
    # pod x 3 = 45, 20 more than the 25 available: r1 needs 40 + 20 = 60
    busy = figures(transactions_per_second=100.0, seconds_per_transaction=0.1, servers_active=8)
    found = _read_entries(plan, a=busy, b=busy)
    assert set(found) == {"ReadPoolOverBudget"}, found
    entry = found["ReadPoolOverBudget"]
    assert (entry["field"], entry["current"], entry["recommended"]) == (
        "spec.database.readReplicas.hosts[0].maxConnections",
        40,
        60,
    )
    why = entry["why"]
    assert "the max_connections of replica r1:5432 is the read pool's limit" in why
    assert "it needs 60 (now 40): 14 server connections per read-pooler pod + 1 reserve" in why
    assert "x 3 read-pooler pods at peak (one more during a rolling update) = 45" in why
    assert "20 more than the 25 available" in why
    assert "100 transactions/s x 0.1 s = 10 connections busy" in why
    assert entry["confidence"] == "high"  # 6000 transactions in a stats period
    # what it says holds: at 60 the read pool is 14 per pod, at 59 it is less
    assert _read_pool_with_r1_at(60) == 14
    assert _read_pool_with_r1_at(59) < 14
    # within the room (5 erlangs need 8 at 20 %: 8 wait 16.7 %, 7 32.4 %): nothing about it
    fits = figures(transactions_per_second=50.0, seconds_per_transaction=0.1, servers_active=6)
    assert _read_entries(plan, a=fits) == {}
    # the write pooler's report is its own: the read figures say nothing of its pool
    assert all(
        e["field"].startswith("spec.database.readReplicas")
        for e in observe.recommendations_of(plan, _read_state(plan, a=busy), previous=None)
    )


def test_a_standbys_limit_names_the_standbys_own_max_connections() -> None:
    plan = _read_plan(
        **{
            "database.readReplicas": {
                "mode": "streaming",
                "streaming": {
                    "standbys": 2,
                    "replicationSecret": {"name": "repl"},
                    "maxConnections": 100,
                },
                "readPoolSizePerPod": 20,
            }
        }
    )
    assert plan.read is not None
    per_pod = plan.read.budget.default_pool_size
    # 80 erlangs a pod: more than the standby's room per pod gives
    heavy = figures(transactions_per_second=800.0, seconds_per_transaction=0.1)
    (entry,) = _read_entries(plan, a=heavy).values()
    assert entry["kind"] == "ReadPoolOverBudget"
    assert entry["field"] == "spec.database.readReplicas.streaming.maxConnections"
    assert entry["current"] == 100 and entry["recommended"] > 100, entry
    assert "server connections per read-pooler pod" in entry["why"] and per_pod < 80


def test_an_idle_app_read_pool_is_lowered_and_never_below_the_declared_reads() -> None:
    # each read-pooler pod: 20 reads/s x 0.1 s as the clients see it = 2 in a
    # transaction; 2 pods: 4, over the app's floor of 2 pods: 2 erlangs on each, which 4
    # connections carry within 20 % (published: 2 erlangs wait 17.4 % at 4, 44.4 % at 3)
    plan = _read_plan()
    quiet = figures(
        transactions_per_second=20.0,
        seconds_per_transaction=0.08,
        servers_active=2,
        client_seconds_per_transaction=0.1,
        clients_open=16,
    )
    found = _read_entries(plan, a=quiet, b=quiet)
    assert set(found) == {"LowerAppReadPool"}, found
    entry = found["LowerAppReadPool"]
    assert (entry["field"], entry["current"], entry["recommended"]) == (
        "spec.database.readReplicas.readPoolSizePerPod",
        20,
        4,
    )
    assert "the app's read pool is 90% idle: lower readPoolSizePerPod to 4" in entry["why"]
    assert "40 transactions/s x 0.1 s" in entry["why"]
    assert "over 2 read-pooler pods" in entry["why"]
    # 7 is under twice the 4 it needs: no swing
    assert (
        _read_entries(_read_plan(**{"database.readReplicas.readPoolSizePerPod": 7}), a=quiet) == {}
    )
    # the declared reads (spec.load.readSecondsPerRequest 0.4 s): 32 requests/s x 0.4 s
    # = 12.8 erlangs over the app's floor of 2 pods, 6.4 on each: 10 at 20 % (Erlang C
    # by hand: 10 wait 14.2 %, 9 26.2 %); r1 large enough for the read pool it sizes
    slow = _read_plan(
        **{
            "load.readSecondsPerRequest": 0.4,
            "load.databaseSecondsPerRequest": 0.5,
            "database.readReplicas.hosts": [{"host": "r1", "maxConnections": 100}, {"host": "r2"}],
        }
    )
    assert slow.app_read_pool is not None and slow.app_read_pool.staffing is not None
    assert slow.app_read_pool.staffing.needed == 10
    entry = _read_entries(slow, a=quiet, b=quiet)["LowerAppReadPool"]
    assert entry["recommended"] == 10 and "spec.load needs 10" in entry["why"]


def test_read_entries_hold_on_a_wobble_beside_the_write_ones() -> None:
    plan = _read_plan()
    busy = figures(transactions_per_second=100.0, seconds_per_transaction=0.1, servers_active=8)
    write = figures(transactions_per_second=32.0, seconds_per_transaction=0.25, servers_active=4)
    applied = {**_state(plan, w=write), **_read_state(plan, a=busy)}
    first = observe.recommendations_of(plan, applied, previous=None)
    kinds = [e["kind"] for e in first]
    assert "ReadPoolOverBudget" in kinds and any(k != "ReadPoolOverBudget" for k in kinds), kinds
    # 5 % more reads: 60 still, or within its band: every entry as status holds it
    wobble = figures(transactions_per_second=105.0, seconds_per_transaction=0.1, servers_active=8)
    again = {**_state(plan, w=write), **_read_state(plan, a=wobble)}
    assert observe.recommendations_of(plan, again, previous=first) == first
    # a load that moved: a new read entry, the write ones kept
    heavier = figures(transactions_per_second=150.0, seconds_per_transaction=0.1)
    moved_on = observe.recommendations_of(
        plan, {**_state(plan, w=write), **_read_state(plan, a=heavier)}, previous=first
    )
    read_of = {e["kind"]: e for e in moved_on}["ReadPoolOverBudget"]
    assert read_of["recommended"] > 60
    assert [e for e in moved_on if e["kind"] != "ReadPoolOverBudget"] == [
        e for e in first if e["kind"] != "ReadPoolOverBudget"
    ]


def test_no_read_recommendation_without_figures_or_an_agent() -> None:
    plan = _read_plan()
    busy = figures(transactions_per_second=100.0, seconds_per_transaction=0.1)
    # no report, or a report without figures (an agent of an older release)
    assert _read_entries(plan) == {}
    no_figures = {f"ConfigMap/{plan.names.read_pooler_state}": {"data": {"a": _entry(None)}}}
    assert observe.recommendations_of(plan, no_figures, previous=None) == []
    # no read replicas: the read pooler's state (were it there) is nobody's
    bare = planner.plan(v1alpha1.parse_profile(profiles.base(load=dict(READ_LOAD))))
    assert (
        recommendations.for_plan(bare, state={"a": _entry(busy.report())}, previous=None, read=True)
        == []
    )
    # a session-mode read pooler's pool is its clients
    session = _read_plan(
        **{
            "pooler.poolMode": "session",
            "database.readReplicas.readPoolSizePerPod": 2,
            "database.readReplicas.hosts": [{"host": "r1"}],
        }
    )
    assert observe.recommendations_of(session, _read_state(session, a=busy), previous=None) == []


def test_no_read_recommendation_for_cloudnativepgs_poolers() -> None:
    """CloudNativePG runs the poolers of mode cnpg when it is installed: no agent
    reports, and Headroom does not size a pool it does not run from figures."""
    body = profiles.base(
        **{
            "database.host": "shop-pg-rw",
            "database.maxConnections": 200,
            "database.readReplicas": {"mode": "cnpg", "cnpg": {"cluster": "shop-pg"}},
        }
    )
    cluster = read_plan.CnpgCluster(name="shop-pg", instances=3, max_connections=200)
    plan = planner.plan(
        v1alpha1.parse_profile(body), facts=planner.Facts(cnpg=True, cnpg_cluster=cluster)
    )
    assert plan.ok and plan.read is not None and plan.read.cnpg_poolers
    heavy = figures(transactions_per_second=2000.0, seconds_per_transaction=0.1)
    state = {"a": _entry(heavy.report())}
    assert recommendations.for_plan(plan, state=state, previous=None, read=True) == []


# LoadBaseline for the read pooler: with readSecondsPerRequest 0.04 s of the declared
# 0.1 s, the read pool's baseline is 0.04 s and the write pool's the other 0.06 s


def _split_plan(**alerts: Any) -> planner.Plan:
    split = {"load.readSecondsPerRequest": 0.04, "load.databaseSecondsPerRequest": 0.1}
    return _read_plan(**split, **({"alerts.pooler": alerts} if alerts else {}))


def _baseline(plan: planner.Plan, *, write: float | None, read: float | None) -> Any:
    """LoadBaseline from one busy pod per pooler at ``write`` / ``read`` seconds per
    transaction (None: that pooler reports nothing), beside an idle pod of each."""
    idle = figures(transactions_per_second=0.0, seconds_per_transaction=9.0)
    applied: dict[str, Any] = {}
    if write is not None:
        busy = figures(transactions_per_second=16.0, seconds_per_transaction=write)
        applied |= _state(plan, **{"pooler-a": busy, "pooler-idle": idle})
    if read is not None:
        busy = figures(transactions_per_second=16.0, seconds_per_transaction=read)
        applied |= _read_state(plan, **{"pooler-ro-a": busy, "pooler-ro-idle": idle})
    return observe.load_baseline(plan, applied)


@pytest.mark.parametrize(
    ("seconds", "alerts", "status", "says"),
    [
        # 1.25 x the declared 0.04 s
        (0.05, {}, "True", "within 3 x the declared 0.04 s"),
        # 5 x, above the floor 0.05 s
        (0.2, {}, "False", "above 3 x the declared 0.04 s (spec.load.readSecondsPerRequest) and"),
        # the read pooler's own factor, over the group's: 0.2 is within 6 x 0.04
        (0.2, {"read": {"queryTimeBaselineFactor": 6}}, "True", "within 6 x"),
        (0.2, {"queryTimeBaselineFactor": 6}, "True", "within 6 x"),
        (0.2, {"queryTimeBaselineFactor": 6, "read": {"queryTimeBaselineFactor": 4}}, "False", ""),
        # the write pooler's settings are its own
        (0.2, {"write": {"queryTimeBaselineFactor": 6}}, "False", "above 3 x"),
        # far above its declared time, but under the read pooler's floor: noise
        (0.2, {"read": {"queryTimeFloorSeconds": 0.5}}, "True", "within 3 x"),
    ],
)
def test_load_baseline_judges_the_read_pool_against_the_declared_reads(
    seconds: float, alerts: dict[str, Any], status: str, says: str
) -> None:
    plan = _split_plan(**alerts)
    found = _baseline(plan, write=None, read=seconds)
    assert found is not None
    assert (found.type, found.status) == ("LoadBaseline", status)
    assert found.reason == ("WithinBaseline" if status == "True" else "AboveBaseline")
    # the read pooler's slowest busy pod, named as the read pooler's
    assert found.message.startswith(f"read pooler pooler-ro-a: {seconds:g} s per transaction")
    assert says in found.message and "spec.load.readSecondsPerRequest" in found.message
    assert ("the replicas got slower" in found.message) == (status == "False")


@pytest.mark.parametrize(
    ("write", "read", "status", "above"),
    [
        (0.07, 0.05, "True", []),  # 0.07 is within 3 x the write pool's 0.06 s
        (0.07, 0.2, "False", ["read"]),
        (0.2, 0.05, "False", ["write"]),  # 0.2 is above 3 x 0.06 s
        (0.2, 0.2, "False", ["write", "read"]),
    ],
)
def test_load_baseline_names_both_poolers_when_both_report(
    write: float, read: float, status: str, above: list[str]
) -> None:
    found = _baseline(_split_plan(), write=write, read=read)
    assert found is not None and found.status == status
    first, second = found.message.split("; read pooler ")
    assert first.startswith(f"write pooler pooler-a: {write:g} s per transaction")
    # the write pool's baseline is what the reads leave of the request's database time
    assert "the declared 0.06 s (spec.load.databaseSecondsPerRequest less readSecondsPerReq" in (
        first
    )
    assert second.startswith(f"pooler-ro-a: {read:g} s per transaction")
    assert ("above 3 x" in first) == ("write" in above)
    assert ("above 3 x" in second) == ("read" in above)


def test_load_baseline_without_read_figures_is_the_write_poolers_alone() -> None:
    found = _baseline(_split_plan(), write=0.07, read=None)
    assert found is not None and found.status == "True"
    assert found.message.startswith("pooler-a: 0.07 s per transaction")
    assert "read pooler" not in found.message
    # no figures from either: no condition
    assert _baseline(_split_plan(), write=None, read=None) is None


def test_load_baseline_does_not_judge_reads_nobody_declared() -> None:
    # spec.load without readSecondsPerRequest: nothing says how long the reads hold a
    # read-pool connection, so the read pooler's figures, however slow, are not judged
    plan = _read_plan()
    assert plan.load is not None and plan.read_load is None
    assert _baseline(plan, write=None, read=9.0) is None
    found = _baseline(plan, write=0.06, read=9.0)
    assert found is not None and found.status == "True"
    assert found.message.startswith("pooler-a: 0.06 s per transaction")
    assert "read pooler" not in found.message and "readSecondsPerRequest" not in found.message


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(min_value=0, max_value=400),
    seconds=st.floats(min_value=0.001, max_value=0.5),
    extra=st.floats(min_value=0, max_value=0.2),
)
def test_read_recommendations_raise_only_the_room_and_lower_only_the_app_pool(
    rate: float, seconds: float, extra: float
) -> None:
    """Whatever the read figures: the replica's max_connections only ever rises, to one
    at which the plan gives each read-pooler pod what the observed load needs (never a
    pool the budget does not hold), and the app's read pool only ever comes down, to at
    most half."""
    plan = _read_plan()
    seen = figures(
        transactions_per_second=rate,
        seconds_per_transaction=seconds,
        servers_active=0,
        client_seconds_per_transaction=seconds + extra,
    )
    for entry in _read_entries(plan, a=seen).values():
        if entry["kind"] == "ReadPoolOverBudget":
            assert entry["recommended"] > entry["current"] == 40
            needed, _ = queueing.servers_needed(
                offered_load=min(seen.offered_load, queueing.MAX_OFFERED_LOAD),
                target_wait_probability=0.2,
            )
            assert _read_pool_with_r1_at(entry["recommended"]) >= needed
        else:
            assert entry["kind"] == "LowerAppReadPool"
            assert entry["recommended"] >= 1 and 2 * entry["recommended"] <= entry["current"]


def test_the_smaller_replica_is_the_one_named() -> None:
    # r2 (hosts[1], 30) is smaller than r1 (hosts[0], the profile's 100): its field
    hosts = [{"host": "r1"}, {"host": "r2", "maxConnections": 30}]
    plan = _read_plan(**{"database.readReplicas.hosts": hosts})
    busy = figures(transactions_per_second=100.0, seconds_per_transaction=0.1)
    entry = _read_entries(plan, a=busy)["ReadPoolOverBudget"]
    assert (entry["field"], entry["current"]) == (
        "spec.database.readReplicas.hosts[1].maxConnections",
        30,
    )
    assert "replica r2:5432" in entry["why"]
    # r1 stays above what it needs: nothing said of it
    assert "hosts[0]" not in entry["why"]
    # r2 at 30 and r1 at 50: r1 must rise as far as r2, or it is the limit next
    hosts = [{"host": "r1", "maxConnections": 50}, {"host": "r2", "maxConnections": 30}]
    plan = _read_plan(**{"database.readReplicas.hosts": hosts})
    entry = _read_entries(plan, a=busy)["ReadPoolOverBudget"]
    assert entry["field"] == "spec.database.readReplicas.hosts[1].maxConnections"
    assert entry["recommended"] > 50
    assert (
        f"raise spec.database.readReplicas.hosts[0].maxConnections (r1:5432, 50) to "
        f"{entry['recommended']} too, or it is the limit next" in entry["why"]
    )
