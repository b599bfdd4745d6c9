"""What the conformance tests of the poolers' agents share
(test_pooler_reload.py: the write pooler's, test_read_reload.py: the read
pooler's, both following their ConfigMap on a real API server): the
builder's objects made applicable without their profile, the agent's
identity and report ConfigMap applied as the operator applies them, a
container's command as this machine runs it, pgbench under way through the
pooler, the agent's report awaited, the resize under load both tests run
(:func:`resize_under_load`), and the agent stopped as kubelet stops it;
and a read-pooler pod as its Deployment runs it in front of a hot standby
(:func:`read_pod`: test_read_reload.py, test_read_recommendations.py).
Like servers.py it must not import pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import api_server
import servers
from api_server import Cluster
from tests.e2e import kube

from headroom.builders import agent_pod, pgbouncer, read_pooler
from headroom.planning import agentfile, credentials, membership, names, planner, pooler_state

Obj = dict[str, Any]

# the read pooler's stats user's and agent's passwords (read_pod)
READ_STATS_PASSWORD, READ_AGENT_PASSWORD = "stats-secret-5", "agent-secret-11-never-logged"


def in_namespace(objects: Iterable[Obj], namespace: str) -> dict[str, Obj]:
    """``objects`` by Kind/name, in ``namespace``, with no owner (the profile
    is not in this cluster: its garbage collector would take them)."""
    found = {}
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
        obj["metadata"].pop("ownerReferences", None)
        for subject in obj.get("subjects") or []:
            subject["namespace"] = namespace
        found[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return found


def identity(
    cluster: Cluster,
    objects: dict[str, Obj],
    *,
    agent: str,
    state: str,
    namespace: str,
    path: Path,
) -> Path:
    """What the operator applies before the pods (the agent's ServiceAccount,
    Role and RoleBinding ``agent``, the empty ConfigMap ``state``), and the
    agent's token directory at ``path``, as kubelet projects it."""
    kube.apply(
        cluster.kubectl,
        *(
            objects[key]
            for key in (
                f"ServiceAccount/{agent}",
                f"Role/{agent}",
                f"RoleBinding/{agent}",
                f"ConfigMap/{state}",
            )
        ),
    )
    return api_server.token_dir(cluster, service_account=agent, namespace=namespace, path=path)


def command(deployment: Obj, name: str, paths: dict[str, str], *, module: str) -> list[str]:
    """Container ``name``'s command (``python -m module ...``) on this
    machine: this interpreter, and each path the pod has at this test's place."""
    spec = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in [*spec["initContainers"], *spec["containers"]] if c["name"] == name]
    argv = list(container["command"])
    assert argv[:3] == ["python", "-m", module], argv
    return [sys.executable, *(paths.get(arg, arg) for arg in argv[1:])]


def report_of(
    cluster: Cluster, *, namespace: str, state: str, pod: str
) -> pooler_state.Entry | None:
    found = kube.get_json(cluster.kubectl, "configmap", state, "-n", namespace)
    return pooler_state.entries(found.get("data")).get(pod)


def wait_for_report(
    cluster: Cluster, *, namespace: str, state: str, pod: str, ini: str, what: str
) -> pooler_state.Entry:
    """``pod``'s report once it names ``ini`` (the config PgBouncer loaded)."""
    return kube.wait_for(
        lambda: (
            entry
            if (entry := report_of(cluster, namespace=namespace, state=state, pod=pod))
            and entry.config == agentfile.content_hash(ini)
            else None
        ),
        timeout=30,
        what=what,
    )


class Load:
    """pgbench running ``script`` through the pooler at ``port`` for
    ``seconds`` on a thread; :meth:`result` joins it."""

    def __init__(
        self,
        database: servers.AppDatabase,
        *,
        port: int,
        clients: int,
        seconds: int,
        script: Path,
    ) -> None:
        self.seconds = seconds
        self._found: list[servers.PgbenchResult] = []
        self._thread = threading.Thread(
            target=lambda: self._found.append(
                database.pgbench(
                    port, clients=clients, jobs=2, duration=seconds, extra=("-f", str(script))
                )
            )
        )

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout=self.seconds + 60)

    def result(self) -> servers.PgbenchResult:
        """What pgbench did, checked: it ran to the end with no failed transaction."""
        self.join()
        (bench,) = self._found
        assert bench.returncode == 0, bench.output[-2000:]
        assert bench.failed_transactions == 0, bench.output[-2000:]
        assert bench.processed and bench.processed > 0
        return bench


def stop(agent: subprocess.Popen[bytes], log: IO[str]) -> int:
    """SIGTERM, as kubelet sends it (the agent ends at once), then its exit code."""
    agent.send_signal(signal.SIGTERM)
    try:
        return agent.wait(timeout=5)
    finally:
        if agent.poll() is None:
            agent.kill()
        log.close()


@dataclass(frozen=True)
class Resize:
    """A running pooler pod and what the resize scenario needs of it: the
    pgbouncer.ini texts of the ``large`` and ``small`` pools (their
    max_db_connections), how the ConfigMap gets one (``set_config``), and the
    server connections the database server itself counts (``backends``)."""

    cluster: Cluster
    namespace: str
    state: str
    pod: str
    texts: dict[str, str]
    large: int
    small: int
    set_config: Callable[[str], None]
    backends: Callable[[], int]
    shrink_bound: float

    def report_at(self, size: str) -> pooler_state.Entry:
        return wait_for_report(
            self.cluster,
            namespace=self.namespace,
            state=self.state,
            pod=self.pod,
            ini=self.texts[size],
            what=f"the report of the {size} config",
        )


@dataclass(frozen=True)
class Resized:
    shrink_seconds: float  # from the ConfigMap's change to the small limit on the server
    report: pooler_state.Entry  # the pod's report of the small config
    bench: servers.PgbenchResult

    def figures(self) -> str:
        return json.dumps(
            {
                "shrink_seconds": round(self.shrink_seconds, 2),
                "transactions": self.bench.processed,
                "failed": self.bench.failed_transactions,
            }
        )


def resize_under_load(pod: Resize, load: Load) -> Resized:
    """pgbench fills the large pool; the ConfigMap goes small: the server's
    connections fall within the small limit within ``shrink_bound`` seconds and
    stay there while the pod reports the small config confirmed; back to
    large: the pool grows again. pgbench runs throughout, with no failed
    transaction."""
    started = pod.report_at("large")
    assert started.max_db_connections == pod.large
    load.start()
    kube.wait_for(
        lambda: pod.backends() >= pod.large - 2,
        timeout=20,
        interval=0.1,
        what="the large pool filled by pgbench",
    )
    pod.set_config(pod.texts["small"])
    changed = time.monotonic()
    kube.wait_for(
        lambda: pod.backends() <= pod.small,
        timeout=pod.shrink_bound,
        interval=0.05,
        what=f"at most {pod.small} server connections on the server",
    )
    shrink_seconds = time.monotonic() - changed
    with servers.Sampler(pod.backends, interval=0.1) as after:
        report = pod.report_at("small")
        # a second of samples at least, every one within the new limit
        kube.wait_for(lambda: len(after.values) >= 10, timeout=30, what="10 samples")
    assert report.confirmed_at(agentfile.content_hash(pod.texts["small"])), report
    assert report.max_db_connections == pod.small
    assert after.peak <= pod.small, after.values
    # growth: the pool takes the room again, still without a restart
    pod.set_config(pod.texts["large"])
    kube.wait_for(
        lambda: pod.backends() > pod.small + 5,
        timeout=20,
        interval=0.1,
        what="the pool grown past the small limit",
    )
    assert pod.report_at("large").max_db_connections == pod.large
    assert load.running, "pgbench ended before the test was done: raise its seconds"
    return Resized(shrink_seconds=shrink_seconds, report=report, bench=load.result())


@dataclass(frozen=True)
class ReadPod:
    """A read-pooler pod running on 127.0.0.1: PgBouncer, the agent (its lag loop
    and its config loop, reporting into the read pooler's state ConfigMap), the
    ConfigMap it follows, and each plan's pgbouncer.ini as rendered for this pod."""

    bouncer: servers.PgBouncer
    agent: subprocess.Popen[bytes]
    log_path: Path
    config_map: Obj
    texts: dict[str, str]
    names: names.ChildNames
    cluster: Cluster
    pod: str

    def set_config(self, ini: str) -> None:
        self.config_map["data"]["pgbouncer.ini"] = ini
        kube.apply(self.cluster.kubectl, self.config_map)

    def report(self) -> dict[str, str]:
        """The read pooler's state ConfigMap's data, as the operator's cache holds it."""
        found = kube.get_json(
            self.cluster.kubectl,
            "configmap",
            self.names.read_pooler_state,
            "-n",
            self.config_map["metadata"]["namespace"],
        )
        return dict(found.get("data") or {})


@contextlib.contextmanager
def read_pod(
    *,
    plans: dict[str, planner.Plan],
    start: str,
    database: servers.AppDatabase,
    standby: servers.Standby,
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    start_pgbouncer: servers.StartPgBouncer,
    pgbouncer_binary: Path,
    pod: str,
) -> Iterator[ReadPod]:
    """The read pooler of ``plans[start]`` as its pod runs it, in front of
    ``standby``: the operator's objects for its agent applied in ``namespace`` (the
    ConfigMap carries this pod's port), the agent-init step's command, PgBouncer,
    then the agent sidecar's command, each as the Deployment Headroom renders gives
    it; the lag loop has put the standby in the read pool before this yields. The
    other plans' pgbouncer.ini are rendered for the same pod (:meth:`ReadPod.set_config`
    applies one). On exit the agent is stopped as kubelet stops it; it must end
    cleanly, with no password and no failed step in its log."""
    stats_password, agent_password = READ_STATS_PASSWORD, READ_AGENT_PASSWORD
    creds = credentials.Credentials(
        username=database.user,
        password=database.password,
        stats_password=stats_password,
        revision="1",
        agent_password=agent_password,
    )
    chosen = plans[start]
    objects = in_namespace(read_pooler.build(chosen, creds), namespace)
    names_of = chosen.names
    deployment = objects[f"Deployment/{names_of.read_pooler}"]
    config_map = objects[f"ConfigMap/{names_of.read_pooler_config}"]
    token_dir = identity(
        cluster,
        objects,
        agent=names_of.read_pooler_agent,
        state=names_of.read_pooler_state,
        namespace=namespace,
        path=tmp_path / "token",
    )
    mounted = tmp_path / "config"  # the ConfigMap as kubelet mounts it
    mounted.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        "PGUSER": database.user,
        "PGPASSWORD": database.password,
        "HEADROOM_AGENT_PASSWORD": agent_password,
    }
    texts: dict[str, str] = {}
    paths: dict[str, str] = {}

    def run(name: str) -> list[str]:
        return command(deployment, name, paths, module=read_pooler.AGENT_MODULE)

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
        rendered = membership.read_pool_config(chosen, output=str(include))
        agent_config = rendered.model_copy(
            update={
                "port": standby.port,
                "replicas": (membership.Replica(name="replica-0", host=servers.HOST),),
                "connect_timeout_seconds": 2,
                "admin": rendered.admin.model_copy(update={"port": port}),
            }
        ).to_json()
        config_map["data"] = {
            "pgbouncer.ini": texts[start],
            read_pooler.CONFIG_FILE: agent_config,
        }
        kube.apply(cluster.kubectl, config_map)
        (mounted / "pgbouncer.ini").write_text(texts[start])
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
            run("agent-init"), env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert init.returncode == 0, init.stderr
        assert f"host={servers.HOST}" in include.read_text()  # the standby is in the pool
        return (run_dir / "pgbouncer.ini").read_text()

    userlist = database.userlist(stats_password, **{planner.AGENT_USER: agent_password})
    bouncer = start_pgbouncer(start_file, userlist, pgbouncer_binary)
    log_path = tmp_path / "agent.log"
    agent_log = log_path.open("w")
    agent = subprocess.Popen(
        run("agent"),
        env={**env, **api_server.agent_env(cluster), "POD_NAME": pod},
        stdout=agent_log,
        stderr=subprocess.STDOUT,
    )
    try:
        kube.wait_for(
            lambda: "membership: reads go to replica-0" in log_path.read_text(),
            timeout=30,
            what="the lag loop's first membership",
        )
        yield ReadPod(
            bouncer=bouncer,
            agent=agent,
            log_path=log_path,
            config_map=config_map,
            texts=texts,
            names=names_of,
            cluster=cluster,
            pod=pod,
        )
    finally:
        code = stop(agent, agent_log)  # SIGTERM ends both loops at once
    log = log_path.read_text()
    assert code == 0, log
    assert agent_password not in log and database.password not in log
    assert "step failed" not in log and "poll failed" not in log, log


def read_plan(
    database: servers.AppDatabase,
    *,
    uid: str,
    version: str,
    reserved: int,
    max_replicas: int = 10,
    parameters: dict[str, str] | None = None,
    load: dict[str, Any] | None = None,
    **read_replicas: Any,
) -> planner.Plan:
    """Profile ``shop`` with its reads on one external replica (``standby-0.example``,
    the hot standby :func:`read_pod` puts at 127.0.0.1) that keeps ``reserved``
    connections (readReplicas.reservedConnections), and ``read_replicas`` besides;
    sized from ``load`` (spec.load) when given."""
    plan = servers.pooler_plan(
        name="shop",
        uid=uid,
        port=database.port,
        dbname=database.name,
        max_replicas=max_replicas,
        pool_per_pod=5,
        max_connections=100,
        superuser_reserved_connections=3,
        version=version,
        parameters=parameters,
        load=load,
        read_replicas={
            "mode": "external",
            "hosts": [{"host": "standby-0.example"}],
            "maxLagSeconds": 5,
            "pollSeconds": 1,
            "reservedConnections": reserved,
            "whenAllLagging": "refuse",
            **read_replicas,
        },
    )
    assert plan.ok, plan.problem_text()
    return plan
