"""A pooler rollout under load, against Postgres with max_connections 100.

The Deployment Headroom renders replaces pooler pods one at a time, and a
PgBouncer that is being stopped keeps its server connections until its
clients leave or its grace period ends (PgBouncer >= 1.23 waits for its
clients on SIGTERM). So during a rollout one pod more than ``instances`` holds
server connections, and the budget counts it (planning.budget,
ROLLOUT_EXTRA_PODS). This test runs that rollout for real: the pgbouncer.ini
Headroom renders, in Debian's PgBouncer, as many processes as the Deployment
would have at each moment, each saturated by pgbench, while the direct
sessions the profile reserves (migrations, admin) are held open. The order
and the waits come from the rendered Deployment (strategy, minReadySeconds,
terminationGracePeriodSeconds), scaled down in time; the invariant the
budget rests on (minReadySeconds > the grace period) does not depend on the
scale.

With the old sizing (pods at peak = instances) the same rollout opens
3 x 48 server connections + 5 direct against 97 slots.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import servers

from headroom.builders import pgbouncer
from headroom.planning import credentials, database_metrics, planner

pytestmark = pytest.mark.conformance

STATS_PASSWORD = "stats-secret-1"
INSTANCES = 2
MAX_REPLICAS = 20
POOL_PER_POD = 5  # 100 clients: more than the server side, so every pooler is saturated
RESERVED = 5  # the profile's default spec.database.reservedConnections
TIME_SCALE = 0.2  # 1 s of the rendered Deployment's timings = 0.2 s here
# Each transaction holds its server connection for a while, so pools fill up.
SCRIPT = "SELECT pg_sleep(0.05);\n"


def _rollout_settings(plan: planner.Plan) -> tuple[dict[str, int], int, int]:
    creds = credentials.Credentials(username="app", password="x", stats_password="y", revision="1")
    (deployment,) = [o for o in pgbouncer.build(plan, creds) if o["kind"] == "Deployment"]
    spec = deployment["spec"]
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    return spec["strategy"]["rollingUpdate"], spec["minReadySeconds"], grace


def test_a_pooler_rollout_under_load_never_runs_out_of_connection_slots(
    database: servers.AppDatabase,
    start_pgbouncer: servers.StartPgBouncer,
    tmp_path: Path,
) -> None:
    plan = servers.pooler_plan(
        name="roll",
        uid="rollout",
        port=database.port,
        dbname=database.name,
        max_replicas=MAX_REPLICAS,
        pool_per_pod=POOL_PER_POD,
        max_connections=100,
        superuser_reserved_connections=3,
        version="1.18",
        instances=INSTANCES,
    )
    assert plan.ok, plan.problem_text()
    budget = plan.budget
    # No reserve was asked for: the default keeps RESERVED direct sessions, and
    # the profile's postgres_exporter (on by default) its own.
    kept = RESERVED + database_metrics.EXPORTER_CONNECTIONS
    assert budget.reserved == 3 + kept
    assert budget.pooler_pods_at_peak == INSTANCES + 1
    assert budget.server_connections + kept <= 100 - 3
    strategy, min_ready, grace = _rollout_settings(plan)
    assert (strategy["maxSurge"], strategy["maxUnavailable"]) == (0, 1)
    assert min_ready > grace  # one draining pod at a time

    script = tmp_path / "busy.sql"
    script.write_text(SCRIPT)
    script.chmod(0o644)
    clients_per_pod = budget.client_demand // INSTANCES
    userlist = database.userlist(STATS_PASSWORD)
    ini = servers.ini_for(plan)
    database.wait_for_no_app_backends()
    # The Postgres is shared by the conformance tests: only this test's log counts.
    log_before = len(database.server.log_text())

    def load(port: int, clients: int = clients_per_pod) -> servers.Load:
        return servers.Load(database, port=port, clients=clients, script=script)

    # The reserved direct sessions, as a migration and an admin console would hold them.
    loads = [load(database.port, RESERVED)]
    pods = [start_pgbouncer(ini, userlist) for _ in range(INSTANCES)]
    with servers.Sampler(database.backends, interval=0.1) as seen:
        loads += [load(pod.port) for pod in pods]
        # Long enough for reserve_pool_timeout (5 s): the reserve pool is in use too.
        time.sleep(6)
        for index in range(INSTANCES):
            # maxSurge 0 / maxUnavailable 1: the old pod leaves the Service (its
            # clients stay, draining) and its replacement starts at once.
            draining, draining_load = pods[index], loads[1 + index]
            stopped_at = time.monotonic()
            pods[index] = start_pgbouncer(ini, userlist)
            loads.append(load(pods[index].port))
            # The kubelet kills the old pod when the grace period ends ...
            time.sleep(grace * TIME_SCALE)
            draining_load.stop()
            assert draining.proc is not None
            draining.proc.kill()
            draining.stop()
            # ... and the Deployment moves on when the new one has been ready
            # for minReadySeconds (it was ready at once here).
            time.sleep(max(0.0, min_ready * TIME_SCALE - (time.monotonic() - stopped_at)))
        time.sleep(2)
        for running in loads:
            running.stop()

    slot_errors = [line for running in loads for line in running.slot_errors()]
    postgres_refusals = [
        line
        for line in database.server.log_text()[log_before:].splitlines()
        if any(message in line for message in servers.SLOT_ERRORS)
    ]
    assert slot_errors == [] and postgres_refusals == [], (slot_errors, postgres_refusals)
    assert seen.errors == []
    # Three pooler pods really held server connections at once (more than two
    # pods' worth), yet the app never had more than its budget plus the reserve.
    assert seen.peak > INSTANCES * budget.max_db_connections + RESERVED, seen.peak
    assert seen.peak <= budget.server_connections + RESERVED, seen.peak
