"""Recommendations from a pooler's observed figures (planning.recommendations): tables
built on published Erlang C values (10 erlangs: 12 connections wait 44.94 %, 13 28.53 %,
14 17.41 %, 15 10.20 %), and properties: never above the budget, the right direction."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headroom.planning import queueing, recommendations

TARGET = 0.2  # 14 connections for 10 erlangs (17.41 %); 13 wait 28.53 %


def observed(**figures: Any) -> recommendations.PoolObservation:
    base: dict[str, Any] = {
        "pool_size": 10,
        "budget": 20,
        "queries_per_second": 100.0,
        "seconds_per_query": 0.1,  # 10 erlangs
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
        # clients seen waiting count beyond the averages: 12 active + 6 waiting
        (
            {"pool_size": 12, "servers_active": 12, "clients_waiting": 6, "max_wait_seconds": 2},
            18,
            18,
            True,
            "6 clients waiting (oldest 2 s)",
        ),
        # a burst the averages miss (1 erlang needs 3): 8 busy and 4 waiting at once
        (
            {"pool_size": 8, "queries_per_second": 10.0, "servers_active": 8, "clients_waiting": 4},
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
            {"pool_size": 20, "queries_per_second": 0.0, "servers_active": 0, "servers_idle": 20},
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
    rate = f"{figures_in.queries_per_second:g} queries/s x {figures_in.seconds_per_query:g} s"
    assert rate in found.reason
    assert f"{figures_in.clients_waiting} clients waiting" in found.reason


@pytest.mark.parametrize(
    "figures",
    [
        {"pool_size": 14},  # exactly what the target needs
        {"pool_size": 27, "budget": 30},  # idle, but under twice the need: no swing
        # idle on average, but a client waited: never lower then
        {"pool_size": 28, "budget": 30, "max_wait_seconds": 1.0, "servers_active": 2},
    ],
)
def test_nothing_to_change(figures: dict[str, Any]) -> None:
    assert recommendations.recommend(observed(**figures), target_wait_probability=TARGET) == []


@pytest.mark.parametrize(
    ("figures", "field"),
    [
        ({"pool_size": 21}, "pool_size 21 is above the budget 20"),
        ({"clients_waiting": -1}, "clients_waiting"),
        ({"seconds_per_query": float("nan")}, "seconds_per_query"),
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
        queries_per_second=draw(st.floats(0, 5000)),
        seconds_per_query=draw(st.floats(0, 0.5)),
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
    load = figures.queries_per_second * figures.seconds_per_query
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
