"""status.recommendations for the read side from what a real read pooler reports: the
default image's PgBouncer (1.26.1) as the read pooler Headroom renders, in front of a
real hot standby of a Postgres 15 primary (conftest's hot_standby), with its agent run
as its pod runs it (conftest's read_pod, pooler_agents.read_pod: the lag loop puts the
standby in the read pool, the config loop reads SHOW STATS/POOLS and reports the
figures into ``<name>-pooler-ro-state`` on a real API server), and the pass's reader of
that report (observe.recommendations_of), and of LoadBaseline from the same report
(observe.load_baseline, against a declared spec.load.readSecondsPerRequest).

An open-loop Poisson load of reads through it (tests/conformance/open_loop.py): 32
reads/s holding a connection 250 ms each, 8 busy on average; at the default target
chance of waiting (5 %, no spec.load) Erlang C needs 14 (by hand: 14 wait 3.9 %, 13
7.6 %). The read pool is what the standby's room gives one read-pooler pod (2 at a
rollout's peak): max_connections 100 - 3 superuser - 68 reservedConnections - 3 lag
probes - 3 for postgres_exporter = 23 available, 11 per pod, a pool of 10 and 1 in
reserve: under the load (it queues, stably: 10 > 8), and at the room's limit, so:

- the smallest replica's max_connections is the limit (ReadPoolOverBudget): 14 per pod
  and the reserve at that size (1) = 15, x 2 pods = 30, 7 more than the 23 available: 107
  for the load offered; the figure is the measured load's (four runs: reports at 27-29
  reads/s x 0.228-0.280 s, 6.6-7.6 busy, asked for 103-107), checked as a user would: the plan at
  the recommended max_connections gives each read-pooler pod what meets the target for
  the measured load, and at one less a smaller pool;
- the app's read pool (readPoolSizePerPod 40, one app pod at its floor) is mostly idle
  (LowerAppReadPool): the clients hold a connection for a transaction and its wait, a
  little more than the server side's busy connections; the fewest that meet the target for
  that, far under half of 40 (the same runs: 12-14).

The figures are read once, from the first report the agent wrote while most of the
offered rate went through (it reports when its figures move materially; its check runs
every 10 s and stats_period is 5 s here, so within about 20 s of the load's start): a
stored fact, not a moving state caught by polling. 33-36 s with the cluster up
(``nice -n 10 pytest tests/conformance/test_read_recommendations.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import open_loop
import pooler_agents
import pytest
import servers
from tests.e2e import kube

from headroom.api import conditions, status, v1alpha1
from headroom.planning import planner, pooler_state, queueing, recommendations
from headroom.reconcile import observe

pytestmark = pytest.mark.conformance

POD = "shop-pooler-ro-7d9e-klmno"
TAG = v1alpha1.PGBOUNCER_IMAGE.rsplit(":", 1)[1]
RATE, SECONDS = 32.0, 0.25
TARGET = v1alpha1.DEFAULT_WAIT_PROBABILITY
NEEDED, _ = queueing.servers_needed(offered_load=RATE * SECONDS, target_wait_probability=TARGET)
RESERVED = 68  # spec.database.readReplicas.reservedConnections: a read pool of 10
APP_READ_POOL = 40
OFFERED = open_loop.Offered(
    requests_per_second=RATE,
    seconds_per_request=SECONDS,
    warmup_seconds=2,
    measured_requests=800,  # 25 s: the agent's second check falls within it
    clients=90,  # a queue at 10 connections can pass 40 on a busy machine
    threshold_seconds=0.01,
)
# a report counts once it carries most of the offered rate (a stats period the load
# filled, not one it began in)
LOADED_SHARE = 0.75


def _plan(
    database: servers.AppDatabase,
    *,
    replica_max_connections: int = 100,
    load: dict[str, Any] | None = None,
) -> planner.Plan:
    return pooler_agents.read_plan(
        database,
        uid="read-recommendations",
        version=TAG,
        reserved=RESERVED,
        max_replicas=3,
        parameters={"stats_period": "5"},
        hosts=[{"host": "standby-0.example", "maxConnections": replica_max_connections}],
        readPoolSizePerPod=APP_READ_POOL,
        pooler={"instances": 1},
        load=load,
    )


def _read_pool(plan: planner.Plan) -> int:
    assert plan.read is not None
    return plan.read.budget.default_pool_size


def _loaded(data: dict[str, str]) -> dict[str, str] | None:
    """``data`` once the pod's report carries the load's figures."""
    entry = pooler_state.entries(data).get(POD)
    observed = entry.observed if entry else None
    rate = (observed or {}).get("transactionsPerSecond") or 0
    return data if rate >= LOADED_SHARE * RATE else None


def test_an_under_sized_read_pool_and_an_idle_app_read_pool_are_told_from_the_report(
    hot_standby: tuple[servers.AppDatabase, servers.Standby],
    read_pod: Callable[..., pooler_agents.ReadPod],
) -> None:
    database, _ = hot_standby
    plan = _plan(database)
    assert _read_pool(plan) == 10 < NEEDED == 14
    measured: list[open_loop.Measured] = []
    pod = read_pod(plans={"planned": plan}, start="planned", pod=POD)
    reads = open_loop.conninfo(pod.bouncer, database)
    load = threading.Thread(target=lambda: measured.append(open_loop.run(reads, OFFERED)))
    load.start()
    try:
        data = kube.wait_for(
            lambda: _loaded(pod.report()),
            timeout=OFFERED.warmup_seconds + OFFERED.measured_requests / RATE,
            interval=0.5,
            what="the read pooler's report under the load",
        )
    finally:
        load.join()
    (run,) = measured
    assert run.errors == 0 and run.client_short == 0, run
    seen = recommendations.figures_from_state(data)[POD]
    offered = RATE * SECONDS
    # the real pooler's figures agree with the load offered (a 5 s average)
    assert 0.7 * offered <= seen.offered_load <= 1.3 * offered, seen
    applied = {f"ConfigMap/{plan.names.read_pooler_state}": {"data": data}}
    found = {e["kind"]: e for e in observe.recommendations_of(plan, applied, previous=None)}
    for entry in found.values():
        status.RecommendationStatus.model_validate(entry)  # what the CRD holds
    assert set(found) == {"ReadPoolOverBudget", "LowerAppReadPool"}, (found, seen)
    print(
        {"figures": seen.report(), "recommended": {k: e["recommended"] for k, e in found.items()}}
    )

    # the replica is the limit: raise its max_connections, to what the measured load needs
    limit = found["ReadPoolOverBudget"]
    assert limit["field"] == "spec.database.readReplicas.hosts[0].maxConnections"
    assert limit["current"] == 100 < limit["recommended"], limit
    needed, _ = queueing.servers_needed(
        offered_load=seen.offered_load, target_wait_probability=TARGET
    )
    # what meets the target for the measured load (a queue the model cannot explain may
    # ask for more: then every busy connection and waiting client at once)
    assert queueing.erlang_c(servers=needed, offered_load=seen.offered_load) <= TARGET
    assert needed > _read_pool(plan)
    wanted = int(str(limit["recommended"]))
    at = _read_pool(_plan(database, replica_max_connections=wanted))
    assert at >= needed, (at, needed, limit)
    assert _read_pool(_plan(database, replica_max_connections=wanted - 1)) < at, limit
    assert f"{at} server connections per read-pooler pod" in str(limit["why"]), limit

    # the app's read pool: lower it, to what the clients' time in a transaction needs
    app = found["LowerAppReadPool"]
    assert app["field"] == "spec.database.readReplicas.readPoolSizePerPod"
    assert app["current"] == APP_READ_POOL and 2 * int(str(app["recommended"])) <= APP_READ_POOL
    in_use = seen.clients_in_transaction
    assert in_use is not None and in_use >= seen.offered_load  # the wait is on top
    lowered = int(str(app["recommended"]))
    assert queueing.erlang_c(servers=lowered, offered_load=in_use) <= TARGET, (app, in_use)
    assert queueing.erlang_c(servers=lowered - 1, offered_load=in_use) > TARGET, (app, in_use)

    # LoadBaseline from the same report: the read pool's time per transaction against
    # a declared spec.load.readSecondsPerRequest (the ro pool's default thresholds: 3x
    # and 0.05 s). Declared at what the load offers, within; at a fifth of it, above.
    def judged(read_seconds: float) -> conditions.Cond | None:
        declared = {
            "peakRequestsPerSecond": 1,
            "databaseSecondsPerRequest": 1.0,
            "readSecondsPerRequest": read_seconds,
        }
        return observe.load_baseline(_plan(database, load=declared), applied)

    within, above = judged(SECONDS), judged(SECONDS / 5)
    assert within is not None and (within.status, within.reason) == ("True", "WithinBaseline")
    assert above is not None and (above.status, above.reason) == ("False", "AboveBaseline")
    assert f"read pooler {POD}" in above.message, above
