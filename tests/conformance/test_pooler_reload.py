"""Online pool resizing, for real: Postgres 15 (max_connections 100), the
default image's PgBouncer (1.26.1), and the write pooler's agent run as its
pod runs it (the init step, then the sidecar, each with the command line the
Deployment Headroom renders gives it), watching the pooler's ConfigMap on a
real API server (the session's local control plane, or $KUBECONFIG) with a
token of the ServiceAccount Headroom renders, bound by its Role, and
reporting into the state ConfigMap.

pgbench runs through the pooler all along. The ConfigMap goes from a
20-connection pool to a 5-connection one: the server connections Postgres
itself counts (pg_stat_activity) fall to 5 or fewer within SHRINK_BOUND
seconds of the change, PgBouncer keeps its pid (a RELOAD, no restart), no
transaction fails, and the report says the pod runs the new config within
its limit. Then back to 20: the pool grows again. Only addresses differ from
a cluster's: the pgbouncer.ini names this machine's ports and files, the
agent's paths are this test's directories.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import api_server
import pytest
import servers
from api_server import Cluster
from tests.e2e import kube

from headroom.builders import agent_pod, pgbouncer
from headroom.planning import agentfile, credentials, planner, pooler_state, recommendations

pytestmark = pytest.mark.conformance

STATS_PASSWORD, AGENT_PASSWORD = "stats-secret-5", "agent-secret-7-never-logged"
POD = "shop-pooler-7d9f-abcde"
LARGE, SMALL = 20, 5
CLIENTS = 30  # more than the large pool: PgBouncer holds all it may
SHRINK_BOUND = 10.0  # seconds from the ConfigMap's change to the new limit on Postgres
LOAD_SECONDS = 45
SCRIPT = "SELECT pg_sleep(0.02);\n"


def _plan(database: servers.AppDatabase, pool: int) -> planner.Plan:
    plan = servers.pooler_plan(
        name="shop",
        uid="reload",
        port=database.port,
        dbname=database.name,
        max_replicas=10,
        pool_per_pod=5,
        max_connections=100,
        superuser_reserved_connections=3,
        version="1.26.0",
        parameters={"max_db_connections": str(pool), "default_pool_size": str(pool)},
    )
    assert plan.ok, plan.problem_text()
    return plan


def _creds(database: servers.AppDatabase) -> credentials.Credentials:
    return credentials.Credentials(
        username=database.user,
        password=database.password,
        stats_password=STATS_PASSWORD,
        revision="1",
        pooler_agent_password=AGENT_PASSWORD,
    )


def _built(plan: planner.Plan, creds: credentials.Credentials, namespace: str) -> dict[str, Any]:
    """The write pooler's objects by Kind/name, in ``namespace``, with no owner
    (the profile is not in this cluster: its garbage collector would take them)."""
    found = {}
    for obj in pgbouncer.build(plan, creds):
        obj["metadata"]["namespace"] = namespace
        obj["metadata"].pop("ownerReferences", None)
        if obj["kind"] == "RoleBinding":
            for subject in obj["subjects"]:
                subject["namespace"] = namespace
        found[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return found


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    (found,) = [c for c in [*spec["initContainers"], *spec["containers"]] if c["name"] == name]
    return found


def _command(container: dict[str, Any], paths: dict[str, str]) -> list[str]:
    """The container's command on this machine: this interpreter, and each
    path the pod has (a mount) at this test's place for it."""
    argv = list(container["command"])
    assert argv[:3] == ["python", "-m", "headroom.agent.pooler"], argv
    return [sys.executable, *(paths.get(arg, arg) for arg in argv[1:])]


def _state(cluster: Cluster, namespace: str, name: str) -> dict[str, pooler_state.Entry]:
    found = kube.get_json(cluster.kubectl, "configmap", name, "-n", namespace)
    return pooler_state.entries(found.get("data"))


def _ini_for(plan: planner.Plan, *, port: int, auth_file: str) -> str:
    return pgbouncer.render_ini(
        plan, listen_addr=servers.HOST, listen_port=port, auth_file=auth_file
    )


def _set_config(cluster: Cluster, config_map: dict[str, Any], ini: str) -> None:
    config_map["data"] = {"pgbouncer.ini": ini}
    kube.apply(cluster.kubectl, config_map)


def test_pool_sizes_change_online_by_reload_under_load(
    database: servers.AppDatabase,
    start_pgbouncer: servers.StartPgBouncer,
    default_pgbouncer: Path,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    database.wait_for_no_app_backends()
    creds = _creds(database)
    large, small = _plan(database, LARGE), _plan(database, SMALL)
    objects = _built(large, creds, namespace)
    names = large.names
    deployment = objects[f"Deployment/{names.pooler}"]
    config_map = objects[f"ConfigMap/{names.pooler_config}"]
    # what the operator creates before the pods: the agent's identity and rights,
    # the empty state ConfigMap
    kube.apply(
        cluster.kubectl,
        *(
            objects[key]
            for key in (
                f"ServiceAccount/{names.pooler_agent}",
                f"Role/{names.pooler_agent}",
                f"RoleBinding/{names.pooler_agent}",
                f"ConfigMap/{names.pooler_state}",
            )
        ),
    )
    token_dir = api_server.token_dir(
        cluster, service_account=names.pooler_agent, namespace=namespace, path=tmp_path / "token"
    )
    mounted = tmp_path / "config"  # the ConfigMap as kubelet mounts it
    mounted.mkdir()
    userlist = database.userlist(STATS_PASSWORD, **{planner.AGENT_USER: AGENT_PASSWORD})
    texts: dict[str, str] = {}

    def start_file(port: int, auth_file: str) -> str:
        """The pod's start: the ConfigMap (this port, this auth file), the
        agent-init step's copy of it, which PgBouncer then runs."""
        texts["large"] = _ini_for(large, port=port, auth_file=auth_file)
        texts["small"] = _ini_for(small, port=port, auth_file=auth_file)
        _set_config(cluster, config_map, texts["large"])
        (mounted / "pgbouncer.ini").write_text(texts["large"])
        output = Path(auth_file).parent / "pgbouncer.ini"
        paths = {
            f"{pgbouncer.CONFIG_DIR}/pgbouncer.ini": str(mounted / "pgbouncer.ini"),
            pgbouncer.START_FILE: str(output),
        }
        subprocess.run(
            _command(_container(deployment, "agent-init"), paths), check=True, timeout=60
        )
        return output.read_text()

    bouncer = start_pgbouncer(start_file, userlist, default_pgbouncer)
    assert bouncer.proc is not None
    pid = bouncer.proc.pid
    agent_log = (tmp_path / "agent.log").open("w")
    paths = {
        pgbouncer.START_FILE: str(bouncer.in_dir("pgbouncer.ini")),
        agent_pod.TOKEN_DIR: str(token_dir),
    }
    agent = subprocess.Popen(
        _command(_container(deployment, "agent"), paths),
        env={
            **os.environ,
            **api_server.agent_env(cluster),
            "POD_NAME": POD,
            "HEADROOM_AGENT_PASSWORD": AGENT_PASSWORD,
        },
        stdout=agent_log,
        stderr=subprocess.STDOUT,
    )
    script = tmp_path / "sleep.sql"
    script.write_text(SCRIPT)
    result: list[servers.PgbenchResult] = []
    load = threading.Thread(
        target=lambda: result.append(
            database.pgbench(
                bouncer.port,
                clients=CLIENTS,
                jobs=2,
                duration=LOAD_SECONDS,
                extra=("-f", str(script)),
            )
        )
    )
    try:
        # started: the report names the config PgBouncer runs
        started = kube.wait_for(
            lambda: _state(cluster, namespace, names.pooler_state).get(POD),
            timeout=30,
            what="the agent's report at start",
        )
        assert started.config == agentfile.content_hash(texts["large"])
        assert started.max_db_connections == LARGE
        load.start()
        kube.wait_for(
            lambda: database.backends() >= LARGE - 2,
            timeout=20,
            interval=0.1,
            what="the large pool filled by pgbench",
        )

        # shrink: the server connections on Postgres within the new limit, online
        _set_config(cluster, config_map, texts["small"])
        changed = time.monotonic()
        kube.wait_for(
            lambda: database.backends() <= SMALL,
            timeout=SHRINK_BOUND,
            interval=0.05,
            what=f"at most {SMALL} server connections on Postgres",
        )
        shrink_seconds = time.monotonic() - changed
        with servers.Sampler(database.backends, interval=0.1) as after:
            report = kube.wait_for(
                lambda: (
                    entry
                    if (entry := _state(cluster, namespace, names.pooler_state).get(POD))
                    and entry.config == agentfile.content_hash(texts["small"])
                    else None
                ),
                timeout=20,
                what="the report of the small config",
            )
            # a second of samples at least, every one within the new limit
            kube.wait_for(lambda: len(after.values) >= 10, timeout=30, what="10 samples")
        assert report.confirmed_at(agentfile.content_hash(texts["small"])), report
        assert report.max_db_connections == SMALL
        # the load figures the operator's recommendations read (from SHOW STATS/POOLS)
        assert report.observed is not None, report
        seen = recommendations.PoolFigures.from_report(report.observed)
        # and what the app's pool is judged by: the clients' time and connections
        assert seen.client_seconds_per_transaction is not None, report.observed
        assert seen.clients_open is not None and seen.clients_open >= 1, report.observed
        assert after.peak <= SMALL, after.values

        # growth: the pool takes the room again, still without a restart
        _set_config(cluster, config_map, texts["large"])
        kube.wait_for(
            lambda: database.backends() > SMALL + 5,
            timeout=20,
            interval=0.1,
            what="the pool grown past the small limit",
        )
        grown = kube.wait_for(
            lambda: (
                entry
                if (entry := _state(cluster, namespace, names.pooler_state).get(POD))
                and entry.max_db_connections == LARGE
                else None
            ),
            timeout=20,
            what="the report of the large config",
        )
        assert grown.config == agentfile.content_hash(texts["large"])
        assert load.is_alive(), "pgbench ended before the test was done: raise LOAD_SECONDS"
        load.join(timeout=LOAD_SECONDS + 60)
        (bench,) = result
        assert bench.returncode == 0, bench.output[-2000:]
        assert bench.failed_transactions == 0, bench.output[-2000:]
        assert bench.processed and bench.processed > 0
        assert bouncer.proc.poll() is None and bouncer.proc.pid == pid  # never restarted
        assert agent.poll() is None
        print(
            json.dumps(
                {
                    "shrink_seconds": round(shrink_seconds, 2),
                    "transactions": bench.processed,
                    "failed": bench.failed_transactions,
                }
            )
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            code = agent.wait(timeout=5)  # SIGTERM ends it at once
        finally:
            if agent.poll() is None:
                agent.kill()
            agent_log.close()
        load.join(timeout=LOAD_SECONDS + 60)
    log = (tmp_path / "agent.log").read_text()
    assert code == 0, log
    assert AGENT_PASSWORD not in log and database.password not in log
    assert "PgBouncer reloaded" in log and "within max_db_connections" in log, log
