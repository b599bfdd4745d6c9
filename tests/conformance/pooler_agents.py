"""What the conformance tests of the poolers' agents share
(test_pooler_reload.py: the write pooler's, test_read_reload.py: the read
pooler's, both following their ConfigMap on a real API server): the
builder's objects made applicable without their profile, the agent's
identity and report ConfigMap applied as the operator applies them, a
container's command as this machine runs it, pgbench under way through the
pooler, the agent's report awaited, the resize under load both tests run
(:func:`resize_under_load`), and the agent stopped as kubelet stops it.
Like servers.py it must not import pytest.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import api_server
import servers
from api_server import Cluster
from tests.e2e import kube

from headroom.planning import agentfile, pooler_state

Obj = dict[str, Any]


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
