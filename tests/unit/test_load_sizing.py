"""spec.load: the pools the planner sizes from a declared peak, and what it refuses.

Field-level intent, with the seeds' numbers: seed 003's 4,000 gym members, a request every
6 s, 50 ms of database time each under load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom import cli
from headroom.api import v1alpha1
from headroom.planning import planner, queueing
from headroom.reconcile import outcome
from tests import profiles

SEED_003 = {"users": {"concurrent": 4000, "thinkSeconds": 6}, "databaseSecondsPerRequest": 0.05}
# the app: a floor of 4 pods with 15 connections each (8.26 busy on each at the peak)
GYM = {"app.replicas.min": 4, "app.poolSizePerPod": 15}


def _plan(**overrides: Any) -> planner.Plan:
    return planner.plan(v1alpha1.parse_profile(profiles.base(**overrides)))


def _server_wait(plan: planner.Plan) -> float:
    """The chance of waiting at each pooler pod's pool, as planned."""
    b = plan.budget
    assert plan.load is not None
    return queueing.erlang_c(
        servers=b.default_pool_size - b.undeclared_per_pod,
        offered_load=plan.load.offered_load / plan.pooler.instances,
    )


def test_seed_003_sizes_the_pooler_from_the_load_not_the_budget() -> None:
    filled = _plan(**GYM)
    sized = _plan(**GYM, load=SEED_003)
    assert sized.ok, sized.problem_text()
    assert sized.load is not None
    # 4,000 / (6 + 0.05) requests/s x 0.05 s = 33.06 busy, 16.53 on each of 2 pooler pods
    assert sized.load.offered_load == pytest.approx(4000 / 6.05 * 0.05)
    needed, waiting = queueing.servers_needed(
        offered_load=sized.load.offered_load / 2, target_wait_probability=0.05
    )
    assert sized.budget.default_pool_size == needed == 25
    assert waiting <= 0.05 < queueing.erlang_c(servers=24, offered_load=sized.load.offered_load / 2)
    assert _server_wait(sized) <= 0.05
    # filling the budget gives each pooler pod 27 + 2 (87 of 89): connections this load
    # never needs; sized, 25 + 2 (81), the reserve of its own connections
    assert filled.budget.default_pool_size == 27
    assert filled.budget.server_connections == 87
    assert sized.budget.server_connections == 81
    assert sized.pooler.settings["default_pool_size"] == "25"


def test_a_rate_sizes_as_the_published_erlang_c_table() -> None:
    # 200 requests/s x 50 ms = 10 erlangs on one pooler pod; at most 20 % waiting needs 14
    # (the call-centre table in test_queueing: 13 leave 28.5 %, 14 leave 17.4 %).
    plan = _plan(
        **{
            "pooler.instances": 1,
            "app.poolSizePerPod": 10,
            "load": {
                "peakRequestsPerSecond": 200,
                "databaseSecondsPerRequest": 0.05,
                "waitProbability": 0.2,
            },
        }
    )
    assert plan.ok, plan.problem_text()
    assert plan.budget.default_pool_size == 14
    assert plan.budget.load_pool is not None
    assert plan.budget.load_pool.staffing is not None
    assert plan.budget.load_pool.staffing.wait_probability == pytest.approx(0.1741, abs=5e-5)


def test_a_load_the_budget_cannot_serve_is_refused_with_the_limit_and_the_shortfall() -> None:
    plan = _plan(**GYM, **{"database.maxConnections": 60}, load=SEED_003)
    assert not plan.ok
    text = plan.problem_text()
    assert "spec.load.users.concurrent: 4000 users thinking 6 s" in text
    # 60 - 3 - 5 direct - 3 postgres_exporter = 49 available / 3 pooler pods at peak = 16
    # per pod; 25 needed: 9 short
    assert "needs 25 connections per pooler pod, 9 more than the 16 each may have" in text
    assert "49 available on the primary (max_connections 60" in text


def test_an_app_pool_too_small_for_the_load_is_refused_naming_it() -> None:
    plan = _plan(**{"app.poolSizePerPod": 10, "app.replicas.min": 4, "load": SEED_003})
    # 33.06 busy over the floor of 4 app pods = 8.26 each: 10 leave 37 % waiting; 14 needed
    needed, _ = queueing.servers_needed(
        offered_load=4000 / 6.05 * 0.05 / 4, target_wait_probability=0.05
    )
    assert needed == 14
    assert [p.field for p in plan.problems] == ["spec.app.poolSizePerPod"]
    assert "needs 14 connections per app pod, 4 more than the 10 each may have" in (
        plan.problem_text()
    )


def test_a_pinned_pool_is_checked_against_the_load() -> None:
    plan = _plan(**GYM, **{"pooler.parameters": {"default_pool_size": "20"}}, load=SEED_003)
    assert [p.field for p in plan.problems] == ["spec.pooler.parameters.default_pool_size"]
    assert "5 more than the 20 each may have" in plan.problem_text()


def test_workers_keep_their_whole_pools_beside_the_load() -> None:
    queue = {"name": "mail", "redis": "jobs", "listName": "mail", "image": "w:1"}
    queue |= {"replicas": {"min": 1, "max": 3}, "databasePoolSize": 2}
    plan = _plan(**GYM, cache=profiles.instance(), queues=[queue], load=SEED_003)
    assert plan.ok, plan.problem_text()
    # 3 workers x 2 = 6 connections whose load is not declared: 3 more on each pooler pod
    assert plan.budget.undeclared_per_pod == 3
    assert plan.budget.default_pool_size == 25 + 3


def test_session_mode_checks_the_app_pool_and_keeps_the_session_rule() -> None:
    # 4 pods x 15 = 60 sessions on 3 pooler pods x 22 (89 / 4 pods at peak)
    session = {"pooler.poolMode": "session", "app.replicas.max": 4, "pooler.instances": 3, **GYM}
    sized = _plan(**session, load=SEED_003)
    assert sized.ok, sized.problem_text()
    assert sized.budget.load_pool is None  # the sessions are the app's pools
    assert sized.app_load_pool is not None and sized.app_load_pool.fits
    assert sized.budget == _plan(**session).budget
    # a pool the load overruns is refused in session mode too
    small = _plan(**{**session, "app.poolSizePerPod": 10}, load=SEED_003)
    assert [p.field for p in small.problems] == ["spec.app.poolSizePerPod"]


def test_the_model_refuses_neither_rate_nor_users() -> None:
    with pytest.raises(v1alpha1.ProfileError, match=r"spec\.load: set exactly one of"):
        v1alpha1.parse_profile(profiles.base(load={"databaseSecondsPerRequest": 0.05}))


def test_plan_shows_the_load_the_pools_and_the_first_bottleneck(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    path = tmp_path / "gym.yaml"
    path.write_text(yaml.safe_dump(profiles.base(**GYM, load=SEED_003)))
    assert cli.main(["plan", str(path)]) == 0
    rows = dict(
        (line[:20].strip(), line[20:].strip()) for line in capsys.readouterr().out.splitlines()
    )
    assert rows["load"] == (
        "4000 users thinking 6 s (at most 661.2 requests/s) x 0.05 s = 33.1 connections busy "
        "on average"
    )
    assert rows["wait target"] == "5% chance a request waits for a connection"
    assert rows["server pool"].startswith(
        "25 per pooler pod, 16.5 busy on each of 2 pooler pods: 3.6% chance of waiting"
    )
    assert "(fewest for 5%: 25; square-root staffing: 24)" in rows["server pool"]
    assert rows["app pool"].startswith(
        "15 per app pod, 8.26 busy on each of 4 app pods: 2.5% chance of waiting"
    )
    # 15 connections on each of 4 app pods carry 9.05 erlangs each at 5 %: 724 requests/s;
    # 29 per pooler pod on 2 pooler pods carry 20.4 each: 816 requests/s
    assert rows["first bottleneck"].startswith(
        "app pool (spec.app.poolSizePerPod 15 on 4 pods): up to 724 requests/s (1.09x the peak)"
    )
    assert (
        "; then database (max_connections 100: 29 per pooler pod): up to 816"
        in (rows["first bottleneck"])
    )


rates = st.floats(min_value=1, max_value=3000, allow_nan=False)
seconds = st.floats(min_value=0.001, max_value=0.2, allow_nan=False)
targets = st.floats(min_value=0.001, max_value=0.5, allow_nan=False)


def _rate_plan(*, rate: float, seconds: float, target: float, instances: int) -> planner.Plan:
    return _plan(
        **{
            "app.poolSizePerPod": 1000,
            "pooler.instances": instances,
            "load": {
                "peakRequestsPerSecond": rate,
                "databaseSecondsPerRequest": seconds,
                "waitProbability": target,
            },
        }
    )


@settings(max_examples=150, deadline=None)
@given(
    rate=rates,
    more=st.floats(min_value=1, max_value=4, allow_nan=False),
    seconds=seconds,
    target=targets,
    instances=st.integers(1, 4),
)
def test_sizes_fit_the_budget_meet_the_target_and_grow_with_the_load(
    rate: float, more: float, seconds: float, target: float, instances: int
) -> None:
    low = _rate_plan(rate=rate, seconds=seconds, target=target, instances=instances)
    high = _rate_plan(rate=rate * more, seconds=seconds, target=target, instances=instances)
    for plan in (low, high):
        b = plan.budget
        if plan.ok:
            # inside the budget, and at the stated chance of waiting (or better)
            assert b.server_connections <= b.available
            assert _server_wait(plan) <= target
        else:
            # refused naming the load, never sized past the budget silently
            assert any(p.field == "spec.load.peakRequestsPerSecond" for p in plan.problems)
    if high.ok:
        assert low.ok
        assert low.budget.default_pool_size <= high.budget.default_pool_size


def test_on_a_shared_server_the_load_is_the_pools_minimum_and_all_it_takes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    gym = profiles.base(name="gym", **GYM, load=SEED_003)
    admin = profiles.base(
        name="admin", **{"app.replicas": {"min": 1, "max": 2}, "database.reservedConnections": 2}
    )
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([gym, admin]))
    assert cli.main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    alone = _plan(**GYM, load=SEED_003).budget
    # the same pool as alone: 25 + 2 in reserve on each of 3 pods at peak
    assert alone.server_connections == 81
    assert "default_pool_size   25\n" in out.split("profile", 2)[1]
    assert "server connections  81 of 81" in out
    # the other profile gets the rest: 97 - 81 held by gym and the 5 + 3 it keeps (direct,
    # postgres_exporter) - its own 2 + 3 kept
    assert "share               3 on db.default.svc:5432" in out
    # a second copy of the load does not fit: refused naming the load and the holders
    twin = profiles.base(name="twin", **GYM, load=SEED_003)
    path.write_text(yaml.safe_dump_all([gym, twin]))
    assert cli.main(["plan", str(path)]) == 1
    err = capsys.readouterr().err
    assert "spec.load.users.concurrent: the guaranteed minimums on db.default.svc:5432" in err
    assert "default/gym 89 (spec.load: 25 per pooler pod for a 5% chance of waiting" in err


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Any:
    def plan(*bodies: dict[str, Any], argv: list[str]) -> tuple[int, str, str]:
        path = tmp_path / "profiles.yaml"
        path.write_text(yaml.safe_dump_all(list(bodies)))
        code = cli.main(["plan", str(path), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return plan


def test_what_if_another_peak_shows_the_sizes_and_where_it_breaks(run: Any) -> None:
    gym = profiles.base(name="gym", **GYM, load=SEED_003)
    code, out, _ = run(gym, argv=["--users", "4300"])
    assert code == 0
    assert "what-if             spec.load.users.concurrent 4300 (declared 4000)" in out
    # 4,300 / 6.05 x 0.05 = 35.5 busy, 17.8 on each pooler pod: 26 for 5 %
    assert "default_pool_size   26\n" in out
    assert "(1.02x the peak)" in out
    # 6,000 users break the app's pool first (20 needed of 15), then the database
    code, out, err = run(gym, argv=["--users", "6000"])
    assert code == 1
    assert "first bottleneck    app pool (spec.app.poolSizePerPod 15 on 4 pods)" in out
    assert "spec.app.poolSizePerPod: 15 connections per app pod; 6000 users" in err
    assert "needs 35 connections per pooler pod, 6 more than the 29 each may have" in err
    # a rate in place of the users
    code, out, _ = run(gym, argv=["--rps", "300"])
    assert code == 0
    assert "load                300 requests/s x 0.05 s = 15 connections busy on average" in out
    assert "(declared as users: concurrent 4000, thinkSeconds 6)" in out


def test_what_if_touches_only_the_profiles_with_a_load_and_says_what_it_cannot_do(
    run: Any,
) -> None:
    gym = profiles.base(name="gym", **GYM, load=SEED_003)
    admin = profiles.base(name="admin", **{"app.replicas": {"min": 1, "max": 2}})
    # a lower peak, so that admin's minimum fits beside gym's on the server
    code, out, _ = run(gym, admin, argv=["--users", "3000"])
    assert code == 0
    first, second = out.split("\nprofile ", 1)
    assert "what-if" in first
    assert "what-if" not in second
    code, _, err = run(admin, argv=["--rps", "10"])
    assert code == 1
    assert err.startswith("error: --users/--rps: no profile in ")
    assert err.strip().endswith("declares spec.load")
    rated = profiles.base(name="api", load={"peakRequestsPerSecond": 50, **_SECONDS})
    code, _, err = run(rated, argv=["--users", "100"])
    assert code == 1
    assert "--users: default/api declares spec.load.peakRequestsPerSecond" in err
    with pytest.raises(SystemExit):
        run(gym, argv=["--users", "100", "--rps", "10"])


_SECONDS = {"databaseSecondsPerRequest": 0.05}


def test_status_says_what_plan_says_of_the_load(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(**GYM, load=SEED_003)
    shown = outcome.budget_status(plan, since="")["load"]
    assert list(shown) == ["offered", "target", "appPool", "poolerPool", "firstBottleneck"]
    assert cli.main(["plan", "examples/gym-load.yaml"]) == 0
    printed = capsys.readouterr().out
    for text in shown.values():
        assert f"  {text}\n" in printed
    assert shown["poolerPool"].startswith("25 per pooler pod, 16.5 busy on each of 2 pooler")
    # without a load, no such section (nothing changes for the profiles that have none)
    assert "load" not in outcome.budget_status(_plan(**GYM), since="")
