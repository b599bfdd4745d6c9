"""A pool sized from a declared load (spec.load), run: a Poisson load at the declared
rate through the real PgBouncer (the default image's release) Headroom renders for it,
in front of a real Postgres 15, on 127.0.0.1 (tests/conformance/open_loop.py).

- the planned pool keeps the measured share of requests that waited within the
  stated chance of waiting;
- a pool one connection above the load (what a hand-sized pool often is) lets far
  more wait: the measurement tells the two apart;
- the pool from "fill the budget" serves the same load with no more waiting but
  opens more server connections than the load needs (PgBouncer opens one only when
  none is idle): connections taken from every other app on the server.

The three loads run at once (the ``runs`` fixture), each through its own PgBouncer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import open_loop
import pytest
import servers

from headroom.api import v1alpha1
from headroom.planning import planner, queueing

pytestmark = pytest.mark.conformance

STATS_PASSWORD = "stats-secret-1"
TAG = v1alpha1.PGBOUNCER_IMAGE.rsplit(":", 1)[1]
# 32 requests/s x 250 ms = 8 connections busy on average; at most 20 % may wait.
RATE, SECONDS, TARGET = 32.0, 0.25, 0.2
LOAD = {"peakRequestsPerSecond": RATE, "databaseSecondsPerRequest": SECONDS}
OFFERED = open_loop.Offered(
    requests_per_second=RATE,
    seconds_per_request=SECONDS,
    warmup_seconds=3,
    measured_requests=1600,
    clients=40,
    # a wait, when there is one, lasts W / (s - a) = 62 ms on average at the planned 12;
    # 10 ms keeps the machine's hiccups out and 85 % of the waits in
    threshold_seconds=0.01,
)
# The waits of a queue come in runs, so 1,600 requests are worth fewer independent
# samples: the measured share may exceed the chance by this much and still meet it.
SLACK = 0.05


def _longer(servers: int) -> float:
    """M/M/s: the chance of a wait longer than the threshold with ``servers``."""
    return queueing.wait_longer_than(
        servers=servers,
        offered_load=RATE * SECONDS,
        seconds_per_request=SECONDS,
        seconds=OFFERED.threshold_seconds,
    )


def _plan(
    database: servers.AppDatabase, *, load: bool, parameters: dict[str, str] | None = None
) -> planner.Plan:
    plan = servers.pooler_plan(
        name="load",
        uid="load",
        port=database.port,
        dbname=database.name,
        max_replicas=5,
        pool_per_pod=20,  # the app's pool carries the whole load on one pod
        max_connections=100,
        superuser_reserved_connections=3,
        version=TAG,
        parameters=parameters,
        load={**LOAD, "waitProbability": TARGET} if load else None,
    )
    assert plan.ok, plan.problem_text()
    return plan


@dataclass(frozen=True)
class Run:
    plan: planner.Plan
    measured: open_loop.Measured
    opened: int  # the server connections the load opened (the most it needed at once)


@pytest.fixture(scope="module")
def runs(
    database: servers.AppDatabase,
    start_module_pgbouncer: servers.StartPgBouncer,
    default_pgbouncer: Path,
) -> dict[str, Run]:
    """The load through the planned pool, a pool of 9 and the pool "fill the budget"
    gives, the three at once: each its own PgBouncer, clients and arrivals, so each
    measures its own pool as if alone. They share no server connection (each
    PgBouncer opens its own, at most its max_db_connections: 13 + 13 + 44, under the
    server's 97) and little CPU (the requests are pg_sleep; the 10 ms threshold keeps
    the hops out). Each still counts all its 1,600 requests: run one after the
    other, the three took 160 s; at once, a third of that."""
    plans = {
        "planned": _plan(database, load=True),
        "tight": _plan(database, load=False, parameters={"default_pool_size": "9"}),
        "filled": _plan(database, load=False),
    }
    assert sum(p.budget.max_db_connections for p in plans.values()) <= 97, plans
    database.wait_for_no_app_backends()
    userlist = database.userlist(STATS_PASSWORD)
    bouncers = {
        name: start_module_pgbouncer(servers.ini_for(plan), userlist, default_pgbouncer)
        for name, plan in plans.items()
    }
    measured = open_loop.run_together(
        [(open_loop.conninfo(bouncer, database), OFFERED) for bouncer in bouncers.values()]
    )
    found = {}
    for (name, plan), bouncer, one in zip(plans.items(), bouncers.values(), measured, strict=True):
        opened = open_loop.opened(bouncer, database, stats_password=STATS_PASSWORD)
        bouncer.stop()
        found[name] = Run(plan, one, opened)
    return found


def _measured(run: Run) -> open_loop.Measured:
    measured = run.measured
    assert measured.errors == 0
    assert measured.client_short == 0, "the generator ran out of client connections"
    assert measured.requests == OFFERED.measured_requests
    return measured


def test_the_planned_pool_meets_the_stated_chance_and_a_smaller_one_does_not(
    runs: dict[str, Run],
) -> None:
    planned = runs["planned"].plan
    size = planned.budget.default_pool_size
    needed, chance = queueing.servers_needed(
        offered_load=RATE * SECONDS, target_wait_probability=TARGET
    )
    assert size == needed == 12
    measured, opened = _measured(runs["planned"]), runs["planned"].opened
    # Erlang C: 14 % wait at all, 12 % longer than 10 ms
    assert chance <= TARGET
    assert measured.wait_share <= TARGET + SLACK, (
        f"{measured.waited} of {measured.requests} waited ({measured.wait_share:.1%}); "
        f"planned {chance:.1%} with {size} connections ({_longer(size):.1%} over 10 ms)"
    )
    assert opened <= size + planned.budget.reserve_pool_size

    # one connection above the load: Erlang C says 65 % wait; far above the target
    tight = runs["tight"].plan
    assert tight.budget.default_pool_size == 9
    expected = queueing.erlang_c(servers=9, offered_load=RATE * SECONDS)
    assert expected > 0.5
    small = _measured(runs["tight"])
    assert _longer(9) > 0.6
    assert small.wait_share > TARGET + SLACK, (
        f"{small.waited} of {small.requests} waited ({small.wait_share:.1%}) with 9"
    )
    assert small.mean_wait_seconds > measured.mean_wait_seconds


def test_filling_the_budget_opens_connections_the_load_does_not_need(
    database: servers.AppDatabase, runs: dict[str, Run]
) -> None:
    filled = runs["filled"].plan
    sized = _plan(database, load=True).budget
    assert filled.budget.default_pool_size > 3 * sized.default_pool_size
    measured, opened = _measured(runs["filled"]), runs["filled"].opened
    # no more waiting than the sized pool allows, on more server connections than it has
    assert measured.wait_share <= TARGET + SLACK
    assert opened > sized.default_pool_size + sized.reserve_pool_size, (
        f"the load opened {opened} server connections through the filled pool"
    )
