"""Five apps on one Postgres server (examples/shared/five-apps.yaml) on a real
API server, with a real Postgres (max_connections 100) and the pooler pods run
for real by pooler_pods (PgBouncer 1.26.1 and whatever else their spec lists):
applied in one file and again in reverse order, one deleted and added back, the
operator restarted five times along the way. Every time all five are Ready with
the shares `headroom plan` prints for the same documents, every running
PgBouncer has loaded its pooler's ConfigMap, and a restart changes no share and
replaces no pooler pod; nor does a rebalance (the others' pools resize by
RELOAD). pgbench runs through every pooler's Service the whole time while
Postgres' client backends are sampled every 100 ms (pg_stat_activity): never
above what the server has for the pools, no client error, no pooler container
restarted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kube
import operator_process
import pytest
import shared_server
import yaml
from apps import CREDENTIALS, credentials, named_app
from shared_server import HOST, MAX_CONNECTIONS, SUPERUSER_RESERVED
from tests.conformance import servers

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shared" / "five-apps.yaml"
# pgbench clients per profile, through its pooler's Service: more than the
# transaction-mode pools hold (they queue in PgBouncer), within the session
# profile's sessions.
CLIENTS = {"orders": 30, "web": 14, "admin": 16, "reports": 6, "billing": 8}


@pytest.fixture
def postgres() -> Iterator[servers.Postgres]:
    with shared_server.server_for_pods(list(CLIENTS)) as pg:
        yield pg


def _documents(namespace: str, port: int) -> list[dict[str, Any]]:
    """The example's five profiles in ``namespace``, on a server named there
    (``pg-main``, which the pooler pods resolve to 127.0.0.1) at ``port``."""
    found = []
    for doc in yaml.safe_load_all(EXAMPLE.read_text()):
        doc["metadata"]["namespace"] = namespace
        db = doc["spec"]["database"]
        db.update(host=HOST, port=port, credentialsSecret={"name": CREDENTIALS}, readLimits=False)
        found.append(doc)
    return found


def _without(poolers: dict[str, str], profile: str) -> dict[str, str]:
    """The pooler pods' uids but ``profile``'s."""
    return {k: v for k, v in poolers.items() if not k.startswith(f"pods/{profile}-pooler-")}


def _straddled(kubectl: kube.Kubectl, namespace: str) -> bool:
    """Whether the stored profiles were created in more than one second."""
    items = kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]
    return len({sp["metadata"]["creationTimestamp"] for sp in items}) > 1


def _restart(operator: operator_process.OperatorProcess, namespace: str, names: list[str]) -> None:
    """kill -9 and start the operator; wait until the new one has passed every
    profile and has nothing queued or running."""
    operator.kill_and_restart()

    def passed() -> bool:
        text = operator.metrics()
        seen = all(
            f'headroom_profile_last_pass_timestamp_seconds{{namespace="{namespace}",'
            f'profile="{name}"}}' in text
            for name in names
        )
        idle = operator.metric("headroom_queue_depth") == 0
        return seen and idle and operator.metric("headroom_passes_in_flight") == 0

    kube.wait_for(passed, timeout=120, what="the restarted operator to pass every profile")


def test_five_apps_share_one_server_as_headroom_plan_says_whatever_the_order(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    postgres: servers.Postgres,
    tmp_path: Path,
) -> None:
    tools = postgres.tools
    documents = _documents(namespace, postgres.port)
    names = [d["metadata"]["name"] for d in documents]
    apps = [named_app(namespace, d["spec"]["app"]["deployment"]) for d in documents]
    kube.apply(kubectl, credentials(namespace), *apps)
    planned = shared_server.planned(documents, tmp_path)
    # docs/api.md's table: 2:1:1 beyond the minimums, the session and the pin kept
    assert planned == {"orders": 24, "web": 9, "admin": 12, "reports": 18, "billing": 8}

    with (
        shared_server.pooler_pods_of(kubectl, namespace, postgres) as pods,
        shared_server.Budget(postgres) as budget,
    ):
        traffic = shared_server.Traffic(
            pods, tools=tools, clients=CLIENTS, workdir=pods.node.workdir
        )
        budget.allow(MAX_CONNECTIONS - SUPERUSER_RESERVED, "the server")

        def restarted(expected: dict[str, int], poolers: dict[str, str]) -> None:
            """The operator restarted: no client error meanwhile, the same
            shares, the same pooler pods running the same config."""
            with traffic.held():
                _restart(operator, namespace, list(expected))
                assert shared_server.shares(kubectl, namespace) == expected
                assert shared_server.poolers_running(kubectl, namespace, pods, tools) == poolers

        try:
            kube.apply(kubectl, *documents, namespace=namespace)  # one file
            stored = shared_server.planned_as_stored(kubectl, namespace)
            if not _straddled(kubectl, namespace):  # one apply in one second, as plan takes it
                assert stored == planned
            planned = stored
            poolers = shared_server.converged(kubectl, namespace, pods, tools, planned)
            budget.allow(shared_server.room(kubectl, namespace, names), "five profiles")
            traffic.start(*names)
            restarted(planned, poolers)  # 1

            # one deleted: the four left divide the server again, as plan says for them
            traffic.stop("web")
            kubectl("delete", "scalingprofile", "web", "-n", namespace, "--wait=true")
            planned_four = shared_server.planned_as_stored(kubectl, namespace)
            kept = _without(poolers, "web")
            poolers = shared_server.converged(kubectl, namespace, pods, tools, planned_four)
            assert poolers == kept  # the four grew by RELOAD: no pooler pod replaced
            budget.allow(
                shared_server.room(kubectl, namespace, [n for n in names if n != "web"]), "four"
            )
            restarted(planned_four, poolers)  # 2

            # and added back, the operator restarted halfway: the five shares again
            kube.apply(kubectl, next(d for d in documents if d["metadata"]["name"] == "web"))
            planned = shared_server.planned_as_stored(kubectl, namespace)
            _restart(operator, namespace, names)  # 3
            kept = poolers
            poolers = shared_server.converged(kubectl, namespace, pods, tools, planned)
            assert _without(poolers, "web") == kept  # and shrank by RELOAD
            budget.allow(shared_server.room(kubectl, namespace, names), "five profiles")
            traffic.start("web")
            restarted(planned, poolers)  # 4

            # all deleted and applied again in reverse order: the same shares
            traffic.stop()
            budget.allow(MAX_CONNECTIONS - SUPERUSER_RESERVED, "the server")
            kubectl("delete", "scalingprofiles", "--all", "-n", namespace, "--wait=true")
            kube.wait_for(
                lambda: not kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"],
                timeout=120,
                what="every profile gone",
            )
            kube.apply(kubectl, *reversed(documents), namespace=namespace)
            planned = shared_server.planned_as_stored(kubectl, namespace)
            poolers = shared_server.converged(kubectl, namespace, pods, tools, planned)
            budget.allow(shared_server.room(kubectl, namespace, names), "five profiles")
            traffic.start(*names)
            restarted(planned, poolers)  # 5
        finally:
            traffic.stop()
            logs = "\n".join(r.logs() for r in [*pods.pods.values(), *pods.ended][-4:])
        print(
            f"peak {budget.peak} server connections of the pools, "
            f"{budget.samples and len(budget.samples)} samples; client errors {traffic.failed()}"
        )
        assert budget.samples and budget.over() == [], budget.over()[:20]
        assert pods.errors == [], pods.errors
        assert pods.restarts() == 0, logs  # no container of a pooler pod exited
        assert traffic.failed() == {}  # no client error, rebalancing included
