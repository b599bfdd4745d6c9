"""status.recommendations from what a real PgBouncer counts: a Poisson load at a known
rate through the PgBouncer (the default image's release) Headroom renders, in front of a
real Postgres 15, on 127.0.0.1 (tests/conformance/open_loop.py: 32 transactions/s holding
a connection 250 ms each, 8 busy on average; at the default target chance of waiting,
5 %, Erlang C needs 14).

The figures are read as the write pooler's agent reads them: ``SHOW STATS`` and ``SHOW
POOLS`` on the admin console, once per ``stats_period`` (10 s here, so a 50 s run gives a
few readings), through planning.recommendations.figures_from_show, and reported in the
state ConfigMap's entry that the pass reads (recommendations.for_plan):

- a pool pinned below the load (9) is told to rise, to what the load needs (14, one
  either way for the noise of 10 s averages);
- the pool "fill the budget" gives (over twice what the load needs) is told to come down
  to it; nobody waited there. The app's pool (one app pod of 40 here; the load's own
  client connections are more, so that none is ever short) is estimated from the same
  readings, as the clients see a transaction: about the 8 the load keeps busy, so 40 is
  told to come down to 14 too.

The pool at 9, the filled pool and autoTune's first size run their loads at once (the
``runs`` fixture), each through its own PgBouncer; autoTune's second size runs alone.
"""

from __future__ import annotations

import datetime
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path

import open_loop
import pytest
import servers

from headroom.api import v1alpha1
from headroom.planning import planner, pooler_state, queueing, recommendations

pytestmark = pytest.mark.conformance

STATS_PASSWORD = "stats-secret-1"
TAG = v1alpha1.PGBOUNCER_IMAGE.rsplit(":", 1)[1]
RATE, SECONDS = 32.0, 0.25
TARGET = v1alpha1.DEFAULT_WAIT_PROBABILITY  # no spec.load: the default target
STATS_PERIOD = 10
OFFERED = open_loop.Offered(
    requests_per_second=RATE,
    seconds_per_request=SECONDS,
    warmup_seconds=3,
    measured_requests=1600,  # 50 s: four or five stats periods
    clients=90,  # a queue at 9 connections can pass 40 on a busy machine
    threshold_seconds=0.01,
)
NEEDED, _ = queueing.servers_needed(offered_load=RATE * SECONDS, target_wait_probability=TARGET)


def _profile(database: servers.AppDatabase, **parameters: str) -> v1alpha1.ScalingProfile:
    return servers.pooler_profile(
        name="tuned",
        uid="tuned",
        port=database.port,
        dbname=database.name,
        max_replicas=5,
        pool_per_pod=40,
        max_connections=100,
        superuser_reserved_connections=3,
        version=TAG,
        parameters={"stats_period": str(STATS_PERIOD), **parameters},
    )


def _plan(database: servers.AppDatabase, **parameters: str) -> planner.Plan:
    plan = planner.plan(_profile(database, **parameters))
    assert plan.ok, plan.problem_text()
    return plan


# autoTune's state before its loop: it last applied 9, under the load
START_TUNING: dict[str, object] = {"defaultPoolSize": 9, "changes": [], "why": ""}


def _tuned(database: servers.AppDatabase) -> v1alpha1.ScalingProfile:
    base = _profile(database)
    pooler = base.spec.pooler.model_copy(
        update={"auto_tune": v1alpha1.AutoTune(enabled=True, max_changes_per_hour=12)}
    )
    return base.model_copy(update={"spec": base.spec.model_copy(update={"pooler": pooler})})


def _tuned_plan(tuned: v1alpha1.ScalingProfile, previous: dict[str, object] | None) -> planner.Plan:
    """The plan at the size autoTune picks from its ``previous`` state."""
    size = recommendations.tuned_size(tuned, {"tuning": previous})
    assert size is not None
    plan = planner.plan(recommendations.with_pool_size(tuned, size))
    assert plan.ok and plan.budget.default_pool_size == size
    return plan


def _readings(
    database: servers.AppDatabase,
    start_pgbouncer: servers.StartPgBouncer,
    default_pgbouncer: Path,
    plans: list[planner.Plan],
) -> list[list[recommendations.PoolFigures]]:
    """The load through a PgBouncer configured by each plan, all at once (each its
    own PgBouncer, clients and arrivals), and each one's figures read once per stats
    period while the loads run (the first period, which began before them, left out)."""
    database.wait_for_no_app_backends()
    bouncers = [
        start_pgbouncer(servers.ini_for(plan), database.userlist(STATS_PASSWORD), default_pgbouncer)
        for plan in plans
    ]
    found: list[list[recommendations.PoolFigures]] = [[] for _ in plans]
    done = threading.Event()

    def read(bouncer: servers.PgBouncer, into: list[recommendations.PoolFigures]) -> None:
        if done.wait(OFFERED.warmup_seconds + STATS_PERIOD + 1):
            return
        while not done.wait(STATS_PERIOD):
            stats, pools = (
                bouncer.show(what, user=planner.STATS_USER, password=STATS_PASSWORD)
                for what in ("STATS", "POOLS")
            )
            seen = recommendations.figures_from_show(
                stats=stats, pools=pools, database=database.name
            )
            if seen is not None and not done.is_set():
                into.append(seen)

    readers = [
        threading.Thread(target=read, args=(bouncer, into))
        for bouncer, into in zip(bouncers, found, strict=True)
    ]
    for reader in readers:
        reader.start()
    try:
        measured = open_loop.run_together(
            [(open_loop.conninfo(bouncer, database), OFFERED) for bouncer in bouncers]
        )
    finally:
        done.set()
        for reader in readers:
            reader.join()
        for bouncer in bouncers:
            bouncer.stop()
    for one, readings in zip(measured, found, strict=True):
        assert one.errors == 0 and one.client_short == 0
        assert len(readings) >= 3, readings
    return found


@dataclass(frozen=True)
class Run:
    plan: planner.Plan
    readings: list[recommendations.PoolFigures]


@pytest.fixture(scope="module")
def runs(
    database: servers.AppDatabase,
    start_module_pgbouncer: servers.StartPgBouncer,
    default_pgbouncer: Path,
) -> dict[str, Run]:
    """The load through a pool pinned at 9, the filled pool and autoTune's first
    size, the three at once. Each PgBouncer opens server connections of its own, at
    most its max_db_connections (together under the server's 97), so no load waits
    for another's; the requests are pg_sleep, so they hardly share CPU; and each
    stats period's figures are its own PgBouncer's. Run one after the other, the
    three took 160 s; at once, a third of that."""
    plans = {
        "tight": _plan(database, default_pool_size="9"),
        "filled": _plan(database),
        "auto-tune": _tuned_plan(_tuned(database), START_TUNING),
    }
    assert sum(p.budget.max_db_connections for p in plans.values()) <= 97, plans
    found = _readings(database, start_module_pgbouncer, default_pgbouncer, list(plans.values()))
    return {
        name: Run(plan, readings)
        for (name, plan), readings in zip(plans.items(), found, strict=True)
    }


def _entries(plan: planner.Plan, seen: recommendations.PoolFigures) -> list[dict[str, object]]:
    """What the pass writes to status from one reading, reported as the agent does."""
    entry = pooler_state.Entry(
        config="h", max_db_connections=9, server_connections=0, at="", observed=seen.report()
    ).text()
    return recommendations.for_plan(plan, state={"pooler-0": entry}, previous=None)


def _recommended(plan: planner.Plan, seen: recommendations.PoolFigures) -> dict[str, object]:
    """The server pool's entry."""
    (server,) = [e for e in _entries(plan, seen) if e["field"] == recommendations.FIELD]
    return server


def test_an_under_sized_pool_is_told_to_rise_to_what_the_load_needs(
    runs: dict[str, Run],
) -> None:
    tight, readings = runs["tight"].plan, runs["tight"].readings
    assert tight.budget.default_pool_size == 9 < NEEDED == 14
    entries = [_recommended(tight, seen) for seen in readings]
    loads = [round(seen.offered_load, 2) for seen in readings]
    for entry in entries:
        assert entry["field"] == "spec.pooler.parameters.default_pool_size"
        assert entry["current"] == 9
        assert int(str(entry["recommended"])) > 9, (entry, loads)
        assert "fits the budget" in str(entry["why"])
    sizes = [int(str(e["recommended"])) for e in entries]
    # a measured queue can push one reading higher; what the readings agree on is the load's
    assert NEEDED - 1 <= statistics.median_low(sizes) <= NEEDED + 1, (sizes, loads)


def test_the_filled_pool_is_told_to_come_down_to_what_the_load_needs(
    runs: dict[str, Run],
) -> None:
    filled, readings = runs["filled"].plan, runs["filled"].readings
    size = filled.budget.default_pool_size
    assert size >= 2 * (NEEDED + 1)
    entries = [_recommended(filled, seen) for seen in readings]
    loads = [round(seen.offered_load, 2) for seen in readings]
    assert all(seen.clients_waiting == 0 for seen in readings)
    sizes = [int(str(e["recommended"])) for e in entries]
    assert all(e["current"] == size for e in entries)
    assert all("lower default_pool_size" in str(e["why"]) for e in entries), entries
    assert NEEDED - 1 <= statistics.median_low(sizes) <= NEEDED + 1, (sizes, loads)
    # the clients' side: nobody waited, so about the 8 the load keeps in a transaction
    in_use = [seen.clients_in_transaction or 0.0 for seen in readings]
    assert all(0.8 * RATE * SECONDS <= busy <= 1.25 * RATE * SECONDS for busy in in_use), in_use
    apps = [
        e
        for seen in readings
        for e in _entries(filled, seen)
        if e["field"] == recommendations.APP_POOL_FIELD
    ]
    assert len(apps) == len(readings) and all(a["kind"] == "LowerAppPool" for a in apps), apps
    app_sizes = [int(str(a["recommended"])) for a in apps]
    assert NEEDED - 1 <= statistics.median_low(app_sizes) <= NEEDED + 1, (app_sizes, in_use)


def test_auto_tune_converges_on_the_real_pooler(
    database: servers.AppDatabase,
    start_pgbouncer: servers.StartPgBouncer,
    default_pgbouncer: Path,
    runs: dict[str, Run],
) -> None:
    """autoTune's loop with the real program in it: the pool it last applied (9, under
    the load) runs the load, the readings go through the pass's reader, autoTune picks
    a size, the pooler runs that, and the next readings ask for nothing more."""
    tuned = _tuned(database)
    previous: dict[str, object] | None = START_TUNING
    sizes = []
    now = datetime.datetime(2026, 12, 7, 15, 0, tzinfo=datetime.UTC)
    for step in range(3):
        plan = _tuned_plan(tuned, previous)
        size = plan.budget.default_pool_size
        sizes.append(size)
        if step == 0:  # the first size's load ran with the module's others
            first = runs["auto-tune"]
            assert servers.ini_for(plan)(0, "") == servers.ini_for(first.plan)(0, ""), sizes
            readings = first.readings
        else:
            (readings,) = _readings(database, start_pgbouncer, default_pgbouncer, [plan])
        # what status holds after the run: the readings' median figures, reported
        middle = sorted(readings, key=lambda seen: seen.offered_load)[len(readings) // 2]
        entry = pooler_state.Entry(
            config="h",
            max_db_connections=size,
            server_connections=0,
            at="",
            observed=middle.report(),
        ).text()
        found = recommendations.for_plan(plan, state={"pooler-0": entry}, previous=None)
        decided = recommendations.tune(
            tuned,
            previous=previous,
            recommended=found,
            current=size,
            now=now + datetime.timedelta(minutes=step),
            fits=lambda n: planner.plan(recommendations.with_pool_size(tuned, n)).ok,
        )
        if decided.size is None:
            break
        previous = decided.status
    else:
        pytest.fail(f"autoTune did not settle: {sizes}")
    # one change, upwards, to a size that meets the target for the load (14), and no more
    assert sizes[0] == 9 and len(sizes) == 2, sizes
    assert sizes[1] >= NEEDED, sizes
