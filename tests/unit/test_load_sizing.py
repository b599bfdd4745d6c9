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
from headroom.planning import load_report, load_sizing, planner, queueing
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


def test_workers_that_declare_their_database_time_count_as_load_not_as_a_ceiling() -> None:
    queue = {"name": "mail", "redis": "jobs", "listName": "mail", "image": "w:1"}
    queue |= {"replicas": {"min": 1, "max": 3}, "databasePoolSize": 2}
    # 40 jobs/s, each 0.5 s in a worker and 0.05 s on a connection: 2 busy on average
    queue["load"] = {
        "peakJobsPerSecond": 40,
        "secondsPerJob": 0.5,
        "concurrencyPerPod": 10,
        "databaseSecondsPerJob": 0.05,
    }
    plan = _plan(**GYM, cache=profiles.instance(), queues=[queue], load=SEED_003)
    assert plan.ok, plan.problem_text()
    assert plan.budget.undeclared_per_pod == 0
    # the requests' 33.1 and the jobs' 2 on one pool: 17.5 busy on each of 2 pooler pods
    busy = (4000 / 6.05 * 0.05 + 2) / 2
    needed, _ = queueing.servers_needed(offered_load=busy, target_wait_probability=0.05)
    assert plan.budget.default_pool_size == needed
    # fewer than the 25 + 3 the same workers' ceiling keeps (the test above), more than
    # the requests' 25 alone
    assert 25 < needed < 28
    rows = dict(load_report.rows(plan))
    assert rows["server pool"].startswith(f"{needed} per pooler pod, 17.5 busy on each of 2")
    assert "the workers' jobs' 2 busy included" in rows["server pool"]
    # a refusal names the jobs in the load
    tight = _plan(
        **GYM,
        **{"database.maxConnections": 60},
        cache=profiles.instance(),
        queues=[queue],
        load=SEED_003,
    )
    assert "x 0.05 s + 2 for the workers' jobs = 35.1 connections busy" in tight.problem_text()


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


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=1, max_value=600, allow_nan=False),
    jobs=st.floats(min_value=0.1, max_value=200, allow_nan=False),
    more=st.floats(min_value=1, max_value=4, allow_nan=False),
    job_seconds=st.floats(min_value=0.001, max_value=0.2, allow_nan=False),
)
def test_jobs_on_the_server_pool_fit_meet_the_target_and_grow_with_the_jobs(
    rate: float, jobs: float, more: float, job_seconds: float
) -> None:
    def plan_for(jobs_per_second: float) -> planner.Plan:
        return _plan(
            **{"app.poolSizePerPod": 1000},
            load={"peakRequestsPerSecond": rate, "databaseSecondsPerRequest": 0.01},
            **profiles.queue_with_load(
                most=1000,
                peakJobsPerSecond=jobs_per_second,
                secondsPerJob=job_seconds,
                concurrencyPerPod=1000,
                databaseSecondsPerJob=job_seconds,
            ),
        )

    low, high = plan_for(jobs), plan_for(jobs * more)
    for plan in (low, high):
        b = plan.budget
        busy = (rate * 0.01 + plan.queues[0].load.peak_jobs_per_second * job_seconds) / 2  # type: ignore[union-attr]
        if plan.ok:
            assert b.server_connections <= b.available
            assert b.undeclared_per_pod == 0
            assert queueing.erlang_c(servers=b.default_pool_size, offered_load=busy) <= 0.05
        else:
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


def test_what_if_scale_grows_every_declared_load_and_shows_where_it_breaks(run: Any) -> None:
    gym = profiles.base(name="gym", **GYM, load=AT_20, **_queue(**JOBS, max=10))
    code, out, _ = run(gym, argv=["--scale", "1.1"])
    assert code == 0, out
    assert (
        "1.1x the declared load: spec.load.users.concurrent 4400 "
        "(declared 4000), spec.queues[0].load.peakJobsPerSecond 55 (declared 50)"
    ) in out
    # 55 jobs/s x 0.2 s = 11 slots busy: 15 slots keep 20 % (Erlang C), 8 pods of 2
    assert "mail: 55 jobs/s x 0.2 s = 11 slots busy on average" in out
    assert "(fewest for 20%: 15 slots, 8 pods)" in out
    # twice the load: the jobs fill every slot the workers may have, and the app's
    # requests need more than its pool and the database give: refused naming them
    code, out, err = run(gym, argv=["--scale", "2"])
    assert code == 1
    assert "10 pods x 2 = 20 slots: the backlog grows without bound" in out
    assert "spec.app.poolSizePerPod" in err and "spec.queues[0].replicas.max" in err
    # a rate is scaled as a rate; a profile with no load is left alone and said so
    rated = profiles.base(name="api", load={"peakRequestsPerSecond": 50, **_SECONDS})
    code, out, _ = run(rated, argv=["--scale", "0.5"])
    assert code == 0
    assert "spec.load.peakRequestsPerSecond 25 (declared 50)" in out
    admin = profiles.base(name="admin")
    code, _, err = run(admin, argv=["--scale", "2"])
    assert code == 1 and "--scale: no profile in " in err
    for bad in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(SystemExit):
            run(gym, argv=["--scale", bad])
    with pytest.raises(SystemExit):
        run(gym, argv=["--scale", "2", "--users", "10"])


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


def _queue(**load: Any) -> dict[str, Any]:
    """spec.cache and one queue ``mail`` that declares its jobs (at most 7 workers)."""
    return profiles.queue_with_load(most=load.pop("max", 7), **load)


# 50 jobs/s x 0.2 s = 10 slots busy: published Erlang C, 14 slots wait 17.41 %, 13 28.53 %
JOBS = {"peakJobsPerSecond": 50, "secondsPerJob": 0.2, "concurrencyPerPod": 2}
AT_20 = {**SEED_003, "waitProbability": 0.2}


def test_workers_slots_are_sized_by_erlang_c_and_a_short_fleet_is_refused() -> None:
    plan = _plan(**GYM, load=AT_20, **_queue(**JOBS))
    assert plan.ok, plan.problem_text()
    (workers,) = plan.worker_loads
    assert (workers.slots, workers.pool.staffing and workers.pool.staffing.needed) == (14, 14)
    assert workers.pods_needed == 7
    assert workers.text() == (
        "mail: 50 jobs/s x 0.2 s = 10 slots busy on average; 7 pods x 2 = 14 slots: 17% "
        "chance a job waits, mean wait 8.7 ms (fewest for 20%: 14 slots, 7 pods)"
    )
    # 6 pods of 2: 12 slots, 2 short of the 14 the target needs
    short = _plan(**GYM, load=AT_20, **_queue(**JOBS, max=6))
    assert [p.field for p in short.problems] == ["spec.queues[0].replicas.max"]
    assert "needs 14 slots (7 pods of 2), 2 more" in short.problem_text()


@pytest.mark.parametrize(
    ("pool", "says"),
    [
        # as many connections as jobs at once: none ever waits for one
        (4, "databasePoolSize 4 >= concurrencyPerPod 4: no job waits for its pod's database pool"),
        # 20 jobs/s x 0.05 s = 1 busy over the fewest pods for the slots (11 of 4: 3):
        # 0.333 on each; one connection leaves a third of the jobs waiting (M/M/1: rho)
        (
            1,
            "databasePoolSize 1, 0.333 busy on each of 3 pods: 33% chance a job waits for it "
            "(fewest for 5%: 2)",
        ),
    ],
)
def test_a_worker_pods_database_pool_is_checked_against_the_jobs_database_time(
    pool: int, says: str
) -> None:
    plan = _plan(
        **profiles.queue_with_load(
            pool=pool,
            most=4,
            peakJobsPerSecond=20,
            secondsPerJob=0.3,
            concurrencyPerPod=4,
            databaseSecondsPerJob=0.05,
        )
    )
    (workers,) = plan.worker_loads
    assert workers.pods_needed == 3
    assert workers.text().endswith(says)


def test_plan_names_workers_and_redis_memory_among_the_bottlenecks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = profiles.base(**GYM, load=AT_20, **_queue(**JOBS))
    body["spec"]["queues"].append(
        {"name": "thumbs", "redis": "jobs", "listName": "t", "image": "w:1"}
    )
    path = tmp_path / "gym.yaml"
    path.write_text(yaml.safe_dump(body))
    assert cli.main(["plan", str(path)]) == 0
    rows = dict(
        (line[:20].strip(), line[20:].strip()) for line in capsys.readouterr().out.splitlines()
    )
    # the slots carry up to capacity(14) / 0.2 s jobs/s within 20 %: a factor of the peak,
    # as the app's limits are (the jobs taken to grow with the requests)
    most = load_sizing.capacity(servers=14, target_wait_probability=0.2) / 0.2
    found = rows["first bottleneck"].split("; then ")
    worker = next(f for f in found if f.startswith("workers mail"))
    assert worker.startswith(
        f"workers mail (spec.queues[0].replicas.max 7 x concurrencyPerPod 2): up to {most:.0f} "
        f"jobs/s ({most / 50:.2f}x the peak) at 20%"
    )
    factors = [float(f.split("(")[-1].split("x the peak")[0]) for f in found]
    assert factors == sorted(factors)
    assert rows["first bottleneck"].endswith("; workers thumbs: no spec.queues[].load declared")
    # nothing declares what the jobs keep in Redis: no invented estimate
    assert rows["redis memory"] == (
        "not declared (no spec.queues[].load.redis on it): jobs (queue: maxmemory 96Mi, "
        "noeviction when full)"
    )


def test_workers_are_checked_without_an_app_load_at_the_default_target() -> None:
    plan = _plan(**_queue(**JOBS, max=9))
    assert plan.load is None and plan.ok, plan.problem_text()
    (workers,) = plan.worker_loads
    assert workers.load.target_wait_probability == v1alpha1.DEFAULT_WAIT_PROBABILITY
    # 10 erlangs within 5 %: 17 slots (16 leave 5.7 %)
    assert queueing.erlang_c(servers=16, offered_load=10) > 0.05
    assert queueing.erlang_c(servers=17, offered_load=10) <= 0.05
    shown = dict(load_report.rows(plan))
    assert set(shown) == {"workers", "first bottleneck", "redis memory"}
    assert "(fewest for 5%: 17 slots, 9 pods)" in shown["workers"]
    # 8 pods of 2: 16 slots, one short
    short = _plan(**_queue(**JOBS, max=8))
    assert "needs 17 slots (9 pods of 2), 1 more" in short.problem_text()
    # what status holds of it
    found = outcome.budget_status(plan, since="")["load"]
    assert set(found) == {"workers", "firstBottleneck", "redisMemory"}


@settings(max_examples=100, deadline=None)
@given(
    jobs=st.floats(min_value=0.1, max_value=500, allow_nan=False),
    seconds=st.floats(min_value=0.01, max_value=5, allow_nan=False),
    concurrency=st.integers(1, 20),
    pods=st.integers(1, 60),
)
def test_workers_fit_exactly_when_their_slots_meet_the_target(
    jobs: float, seconds: float, concurrency: int, pods: int
) -> None:
    checked = load_sizing.workers(
        queue="q",
        index=0,
        spec=v1alpha1.QueueLoad(
            peak_jobs_per_second=jobs, seconds_per_job=seconds, concurrency_per_pod=concurrency
        ),
        max_pods=pods,
        target=0.05,
    )
    busy = jobs * seconds
    meets = pods * concurrency > busy and (
        queueing.erlang_c(servers=pods * concurrency, offered_load=busy) <= 0.05
    )
    assert checked.fits == meets
    if checked.pods_needed is not None:
        # the fewest pods: one fewer would not meet it
        assert checked.pods_needed * concurrency >= checked.pool.staffing.needed  # type: ignore[union-attr]
        assert (checked.pods_needed - 1) * concurrency < checked.pool.staffing.needed  # type: ignore[union-attr]


# -- the reads of a request on the read pool (spec.load.readSecondsPerRequest)

# 300 requests/s: 0.03 s on the primary (9 busy) and 0.02 s on the read pool (6 busy),
# over 2 pods each: 3 read connections busy on each pod. Published Erlang C for 3
# erlangs: 5 servers 23.62 %, 6 9.91 %, 7 3.78 %: 7 meet 5 %, 5 leave 24 % waiting.
READS = {"peakRequestsPerSecond": 300, "databaseSecondsPerRequest": 0.05}
REPLICAS = {
    "database.readReplicas": {
        **profiles.external_replicas({"host": "r1"}),
        "readPoolSizePerPod": 10,
    }
}
TWO_PODS = {"app.replicas.min": 2, "app.poolSizePerPod": 10}


def test_reads_are_sized_on_the_read_pool_and_the_rest_on_the_primary() -> None:
    plan = _plan(**TWO_PODS, **REPLICAS, load={**READS, "readSecondsPerRequest": 0.02})
    assert plan.ok, plan.problem_text()
    assert plan.load is not None and plan.read_load is not None and plan.read is not None
    assert plan.load.seconds_per_request == pytest.approx(0.03)
    assert plan.budget.load_pool is not None
    assert plan.budget.load_pool.busy_per_pod == pytest.approx(4.5)
    assert plan.read.budget.max_db_connections == 7
    assert plan.app_read_pool is not None
    assert plan.app_read_pool.busy_per_pod == pytest.approx(3)
    # without the split the primary carries every request's whole database time
    whole = _plan(**TWO_PODS, **REPLICAS, load=READS)
    assert whole.read_load is None and whole.budget.load_pool is not None
    assert whole.budget.load_pool.busy_per_pod == pytest.approx(7.5)
    assert whole.budget.max_db_connections > plan.budget.max_db_connections
    # the app's read pool of 5 leaves 24 % waiting: refused naming it
    small = {**REPLICAS["database.readReplicas"], "readPoolSizePerPod": 5}
    short = _plan(
        **TWO_PODS,
        **{"database.readReplicas": small},
        load={**READS, "readSecondsPerRequest": 0.02},
    )
    assert [p.field for p in short.problems] == [planner.READ_POOL_FIELD]
    assert "needs 7 connections per app pod, 2 more than the 5" in short.problem_text()
    assert "(5 leave 24% waiting)" in short.problem_text()


def test_reads_without_read_replicas_or_longer_than_the_request_are_refused() -> None:
    alone = _plan(**TWO_PODS, load={**READS, "readSecondsPerRequest": 0.02})
    assert [p.field for p in alone.problems] == [planner.READ_SECONDS_FIELD]
    assert "declares no spec.database.readReplicas" in alone.problem_text()
    with pytest.raises(v1alpha1.ProfileError, match=r"spec\.load\.readSecondsPerRequest: 0\.05"):
        _plan(**TWO_PODS, **REPLICAS, load={**READS, "readSecondsPerRequest": 0.05})


@given(st.floats(min_value=0.001, max_value=0.03), st.floats(min_value=0.001, max_value=0.03))
@settings(max_examples=40, deadline=None)
def test_the_read_pool_grows_with_the_reads_and_the_write_pool_shrinks(a: float, b: float) -> None:
    low, high = sorted((a, b))
    roomy = {**REPLICAS["database.readReplicas"], "readPoolSizePerPod": 20}
    plans = [
        _plan(
            **{**TWO_PODS, "app.poolSizePerPod": 20, "database.readReplicas": roomy},
            load={**READS, "readSecondsPerRequest": s},
        )
        for s in (low, high)
    ]
    assert all(p.ok and p.read is not None for p in plans), [p.problem_text() for p in plans]
    reads = [p.read.budget.max_db_connections for p in plans if p.read]
    writes = [p.budget.max_db_connections for p in plans]
    assert reads[0] <= reads[1] and writes[0] >= writes[1]


def test_plan_shows_the_read_pool_and_the_replica_among_the_bottlenecks(run: Any) -> None:
    body = profiles.base(**TWO_PODS, **REPLICAS, load={**READS, "readSecondsPerRequest": 0.02})
    code, out, err = run(body, argv=[])
    assert code == 0, err
    rows = {line[:25].strip(): line[25:].strip() for line in out.splitlines()}
    assert rows["load"].endswith("; reads: 300 requests/s x 0.02 s = 6 connections busy on average")
    assert rows["read pool"].startswith("app 10 per app pod, 3 busy on each of 2 app pods: ")
    assert (
        "read pooler 7 per pooler pod, 3 busy on each of 2 pooler pods: 3.8%" in rows["read pool"]
    )
    assert "replica replica-0 (max_connections 100:" in rows["first bottleneck"]
    assert (
        "app read pool (spec.database.readReplicas.readPoolSizePerPod 10 on 2 pods)"
        in rows["first bottleneck"]
    )
