"""Online read pool resizing, for real: a Postgres 15 primary and a hot
standby streaming from it (max_connections 100 each), the default image's
PgBouncer (1.26.1) as the read pooler, and the read pooler's agent run as
its pod runs it (the init step, then the sidecar, each with the command line
the Deployment Headroom renders gives it): the lag loop measures the standby
and writes the ``[databases]`` include, the config loop watches the read
pooler's ConfigMap on a real API server (the session's local control plane,
or $KUBECONFIG) with a token of the ServiceAccount Headroom renders, bound by
its Role, and reports into ``<name>-pooler-ro-state``.

pgbench (reads) runs through the read pooler all along. The ConfigMap's
pgbouncer.ini goes from a 28-connection read pool (the replica's room with 5
reserved) to a 5-connection one (75 reserved, as when another profile's
share of the replica grows): the server connections the standby itself
counts fall to 5 or fewer within SHRINK_BOUND seconds, PgBouncer keeps its
pid (a RELOAD, no restart), no query fails, the report says the pod runs the
new config within its limit, and the lag loop's include file still sends the
reads to the standby. Then back: the pool grows again. A new readpool.json
reaches the lag loop the same way. Only addresses differ from a cluster's.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import api_server
import pooler_agents
import pytest
import servers
from api_server import Cluster
from tests.e2e import kube

from headroom.builders import agent_pod, pgbouncer, read_pooler
from headroom.planning import credentials, membership, planner

pytestmark = pytest.mark.conformance

USER, PASSWORD, DBNAME = "ro_app", "ro-app-secret-3", "rodb"
STATS_PASSWORD, AGENT_PASSWORD = "stats-secret-5", "agent-secret-11-never-logged"
SLOT = "headroom_readreload_0"
POD = "shop-pooler-ro-6c8d-fghij"
RESERVED = {"large": 5, "small": 75}  # spec.database.readReplicas.reservedConnections
LARGE, SMALL = 28, 5  # the read pool's max_db_connections they give
CLIENTS = 30  # more than the large pool: PgBouncer holds all it may
SHRINK_BOUND = 10.0
LOAD_SECONDS = 45
SCRIPT = "SELECT pg_sleep(0.02);\n"  # a read: the standby serves it


@pytest.fixture(scope="module")
def replica(tools: servers.Tools) -> Iterator[tuple[servers.AppDatabase, servers.Standby]]:
    """The app's database on a primary, and a hot standby of it."""
    primary = servers.Postgres(tools, max_connections=100, superuser_reserved_connections=3)
    standby: servers.Standby | None = None
    try:
        primary.start()
        primary.create_app(USER, PASSWORD, DBNAME, scale=1)
        standby = servers.Standby(primary, slot=SLOT).start()
        yield servers.AppDatabase(primary, USER, PASSWORD, DBNAME), standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def _plan(database: servers.AppDatabase, reserved: int) -> planner.Plan:
    plan = servers.pooler_plan(
        name="shop",
        uid="read-reload",
        port=database.port,
        dbname=database.name,
        max_replicas=10,
        pool_per_pod=5,
        max_connections=100,
        superuser_reserved_connections=3,
        version="1.26.0",
        read_replicas={
            "mode": "external",
            "hosts": [{"host": "standby-0.example"}],
            "maxLagSeconds": 5,
            "pollSeconds": 1,
            "reservedConnections": reserved,
            "whenAllLagging": "refuse",
        },
    )
    assert plan.ok, plan.problem_text()
    return plan


def _built(plan: planner.Plan, namespace: str) -> dict[str, Any]:
    """The read pooler's objects by Kind/name, applicable in ``namespace``."""
    creds = credentials.Credentials(
        username=USER,
        password=PASSWORD,
        stats_password=STATS_PASSWORD,
        revision="1",
        agent_password=AGENT_PASSWORD,
    )
    return pooler_agents.in_namespace(read_pooler.build(plan, creds), namespace)


def _command(deployment: dict[str, Any], name: str, paths: dict[str, str]) -> list[str]:
    return pooler_agents.command(deployment, name, paths, module=read_pooler.AGENT_MODULE)


def test_a_read_pool_resizes_online_by_reload_under_load(
    replica: tuple[servers.AppDatabase, servers.Standby],
    start_pgbouncer: servers.StartPgBouncer,
    default_pgbouncer: Path,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    database, standby = replica
    plans = {size: _plan(database, reserved) for size, reserved in RESERVED.items()}
    objects = _built(plans["large"], namespace)
    names = plans["large"].names
    deployment = objects[f"Deployment/{names.read_pooler}"]
    config_map = objects[f"ConfigMap/{names.read_pooler_config}"]
    token_dir = pooler_agents.identity(
        cluster,
        objects,
        agent=names.read_pooler_agent,
        state=names.read_pooler_state,
        namespace=namespace,
        path=tmp_path / "token",
    )
    mounted = tmp_path / "config"  # the ConfigMap as kubelet mounts it
    mounted.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        "PGUSER": USER,
        "PGPASSWORD": PASSWORD,
        "HEADROOM_AGENT_PASSWORD": AGENT_PASSWORD,
    }
    texts: dict[str, str] = {}
    paths: dict[str, str] = {}

    def start_file(port: int, auth_file: str) -> str:
        """The pod's start: the ConfigMap (this port, this auth file, the
        include in PgBouncer's dir), the agent-init step's copy of it and its
        include file, which PgBouncer then runs."""
        run_dir = Path(auth_file).parent
        include = run_dir / "readpool-databases.ini"
        for size, plan in plans.items():
            texts[size] = pgbouncer.render_read_ini(
                plan,
                listen_addr=servers.HOST,
                listen_port=port,
                auth_file=auth_file,
                include_file=str(include),
            )
        rendered = membership.read_pool_config(plans["large"], output=str(include))
        agent_config = rendered.model_copy(
            update={
                "port": standby.port,
                "replicas": (membership.Replica(name="replica-0", host=servers.HOST),),
                "connect_timeout_seconds": 2,
                "admin": rendered.admin.model_copy(update={"port": port}),
            }
        ).to_json()
        config_map["data"] = {
            "pgbouncer.ini": texts["large"],
            read_pooler.CONFIG_FILE: agent_config,
        }
        kube.apply(cluster.kubectl, config_map)
        (mounted / "pgbouncer.ini").write_text(texts["large"])
        (mounted / read_pooler.CONFIG_FILE).write_text(agent_config)
        paths.update(
            {
                f"{pgbouncer.READ_CONFIG_DIR}/pgbouncer.ini": str(mounted / "pgbouncer.ini"),
                f"{pgbouncer.READ_CONFIG_DIR}/{read_pooler.CONFIG_FILE}": str(
                    mounted / read_pooler.CONFIG_FILE
                ),
                pgbouncer.START_FILE: str(run_dir / "pgbouncer.ini"),
                agent_pod.TOKEN_DIR: str(token_dir),
            }
        )
        init = subprocess.run(
            _command(deployment, "agent-init", paths),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert init.returncode == 0, init.stderr
        assert f"host={servers.HOST}" in include.read_text()  # the standby is in the pool
        return (run_dir / "pgbouncer.ini").read_text()

    userlist = database.userlist(STATS_PASSWORD, **{planner.AGENT_USER: AGENT_PASSWORD})
    bouncer = start_pgbouncer(start_file, userlist, default_pgbouncer)
    assert bouncer.proc is not None
    pid = bouncer.proc.pid
    include = bouncer.in_dir("readpool-databases.ini")
    log_path = tmp_path / "agent.log"
    agent_log = log_path.open("w")
    agent = subprocess.Popen(
        _command(deployment, "agent", paths),
        env={**env, **api_server.agent_env(cluster), "POD_NAME": POD},
        stdout=agent_log,
        stderr=subprocess.STDOUT,
    )
    script = tmp_path / "read.sql"
    script.write_text(SCRIPT)
    load = pooler_agents.Load(
        database, port=bouncer.port, clients=CLIENTS, seconds=LOAD_SECONDS, script=script
    )

    def set_config(ini: str) -> None:
        config_map["data"]["pgbouncer.ini"] = ini
        kube.apply(cluster.kubectl, config_map)

    resize = pooler_agents.Resize(
        cluster=cluster,
        namespace=namespace,
        state=names.read_pooler_state,
        pod=POD,
        texts=texts,
        large=LARGE,
        small=SMALL,
        set_config=set_config,
        backends=lambda: standby.backends(USER),  # what the standby counts
        shrink_bound=SHRINK_BOUND,
    )
    try:
        kube.wait_for(
            lambda: "membership: reads go to replica-0" in log_path.read_text(),
            timeout=30,
            what="the lag loop's first membership",
        )
        resized = pooler_agents.resize_under_load(resize, load)
        assert bouncer.proc.poll() is None and bouncer.proc.pid == pid  # never restarted
        assert agent.poll() is None
        # the lag loop kept its include: reads still go to the standby
        assert f"host={servers.HOST}" in include.read_text()
        # and takes a new readpool.json from the ConfigMap as it runs (a watch of its own)
        changed = json.loads(config_map["data"][read_pooler.CONFIG_FILE]) | {"maxLagSeconds": 4}
        config_map["data"][read_pooler.CONFIG_FILE] = json.dumps(changed)
        kube.apply(cluster.kubectl, config_map)
        kube.wait_for(
            lambda: "readpool.json changed: 1 replicas, maxLagSeconds 4" in log_path.read_text(),
            timeout=30,
            what="the lag loop's new readpool.json",
        )
        assert agent.poll() is None and bouncer.proc.pid == pid
        print(resized.figures())
    finally:
        code = pooler_agents.stop(agent, agent_log)  # SIGTERM ends both loops at once
        load.join()
    log = log_path.read_text()
    assert code == 0, log
    assert AGENT_PASSWORD not in log and PASSWORD not in log
    assert "PgBouncer reloaded" in log and "within max_db_connections" in log, log
    assert "step failed" not in log and "poll failed" not in log, log
