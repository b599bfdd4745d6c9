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
from collections.abc import Callable
from pathlib import Path

import pooler_agents
import pytest
import servers
from api_server import Cluster
from tests.e2e import kube

from headroom.builders import read_pooler

pytestmark = pytest.mark.conformance

POD = "shop-pooler-ro-6c8d-fghij"
RESERVED = {"large": 5, "small": 75}  # spec.database.readReplicas.reservedConnections
LARGE, SMALL = 28, 5  # the read pool's max_db_connections they give
CLIENTS = 30  # more than the large pool: PgBouncer holds all it may
SHRINK_BOUND = 10.0
LOAD_SECONDS = 45
SCRIPT = "SELECT pg_sleep(0.02);\n"  # a read: the standby serves it


def test_a_read_pool_resizes_online_by_reload_under_load(
    hot_standby: tuple[servers.AppDatabase, servers.Standby],
    read_pod: Callable[..., pooler_agents.ReadPod],
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    database, standby = hot_standby
    plans = {
        size: pooler_agents.read_plan(database, uid="read-reload", version="1.26.0", reserved=n)
        for size, n in RESERVED.items()
    }
    pod = read_pod(plans=plans, start="large", pod=POD)
    bouncer, agent, config_map, log_path = pod.bouncer, pod.agent, pod.config_map, pod.log_path
    assert bouncer.proc is not None
    pid = bouncer.proc.pid
    include = bouncer.in_dir("readpool-databases.ini")
    script = tmp_path / "read.sql"
    script.write_text(SCRIPT)
    load = pooler_agents.Load(
        database, port=bouncer.port, clients=CLIENTS, seconds=LOAD_SECONDS, script=script
    )
    resize = pooler_agents.Resize(
        cluster=cluster,
        namespace=namespace,
        state=pod.names.read_pooler_state,
        pod=POD,
        texts=pod.texts,
        large=LARGE,
        small=SMALL,
        set_config=pod.set_config,
        backends=lambda: standby.backends(database.user),  # what the standby counts
        shrink_bound=SHRINK_BOUND,
    )
    try:
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
        load.join()
    # the agent's exit and the rest of its log are checked when it stops (read_pod)
    log = log_path.read_text()
    assert "PgBouncer reloaded" in log and "within max_db_connections" in log, log
