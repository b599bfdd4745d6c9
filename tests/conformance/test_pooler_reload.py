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

import os
import subprocess
from pathlib import Path
from typing import Any

import api_server
import pooler_agents
import pytest
import servers
from api_server import Cluster
from tests.e2e import kube

from headroom.builders import agent_pod, pgbouncer
from headroom.planning import credentials, planner, recommendations

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
    """The write pooler's objects by Kind/name, applicable in ``namespace``."""
    return pooler_agents.in_namespace(pgbouncer.build(plan, creds), namespace)


def _command(deployment: dict[str, Any], name: str, paths: dict[str, str]) -> list[str]:
    return pooler_agents.command(deployment, name, paths, module=pgbouncer.AGENT_MODULE)


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
    token_dir = pooler_agents.identity(
        cluster,
        objects,
        agent=names.pooler_agent,
        state=names.pooler_state,
        namespace=namespace,
        path=tmp_path / "token",
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
        subprocess.run(_command(deployment, "agent-init", paths), check=True, timeout=60)
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
        _command(deployment, "agent", paths),
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
    load = pooler_agents.Load(
        database, port=bouncer.port, clients=CLIENTS, seconds=LOAD_SECONDS, script=script
    )

    resize = pooler_agents.Resize(
        cluster=cluster,
        namespace=namespace,
        state=names.pooler_state,
        pod=POD,
        texts=texts,
        large=LARGE,
        small=SMALL,
        set_config=lambda ini: _set_config(cluster, config_map, ini),
        backends=database.backends,
        shrink_bound=SHRINK_BOUND,
    )
    try:
        resized = pooler_agents.resize_under_load(resize, load)
        report = resized.report
        # the load figures the operator's recommendations read (from SHOW STATS/POOLS)
        assert report.observed is not None, report
        seen = recommendations.PoolFigures.from_report(report.observed)
        # and what the app's pool is judged by: the clients' time and connections
        assert seen.client_seconds_per_transaction is not None, report.observed
        assert seen.clients_open is not None and seen.clients_open >= 1, report.observed
        assert bouncer.proc.poll() is None and bouncer.proc.pid == pid  # never restarted
        assert agent.poll() is None
        print(resized.figures())
    finally:
        code = pooler_agents.stop(agent, agent_log)
        load.join()
    log = (tmp_path / "agent.log").read_text()
    assert code == 0, log
    assert AGENT_PASSWORD not in log and database.password not in log
    assert "PgBouncer reloaded" in log and "within max_db_connections" in log, log
