"""Read replicas end to end: each mode applies and goes Ready with its read
budget in status; switching modes converges without leftovers; the binding's
DATABASE_READ_URL follows the read pooler and disappears with it.

The replicas themselves are not reachable from the control plane's fake pods
(kwok): what is checked here is what the API server holds. The data path (real
standbys, real PgBouncer, the lag agent) is in tests/conformance.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kube
import operator_process
import shared_server
from apps import app_deployment, credentials
from tests import profiles

NAME = "reads"
READY_TIMEOUT = "120s"


def _profile(namespace: str, read_replicas: dict[str, Any] | None) -> dict[str, Any]:
    body = profiles.base(name=NAME, namespace=namespace, **{"database.readLimits": False})
    if read_replicas is not None:
        body["spec"]["database"]["readReplicas"] = read_replicas
    return body


def _wait_ready(kubectl: kube.Kubectl, namespace: str) -> dict[str, Any]:
    def converged() -> bool:
        sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
        status = sp.get("status") or {}
        return (
            status.get("observedGeneration") == sp["metadata"]["generation"]
            and kube.condition(sp, "Ready") == "True"
        )

    kube.wait_for(converged, timeout=120, what=f"{NAME} Ready at its generation")
    return kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)


def _binding(kubectl: kube.Kubectl, namespace: str) -> dict[str, str]:
    secret = kube.get_json(kubectl, "secret", f"{NAME}-binding", "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _owned(kubectl: kube.Kubectl, namespace: str, kind: str, component: str) -> list[str]:
    found = kube.get_json(
        kubectl,
        kind,
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component={component}",
    )["items"]
    return sorted(
        o["metadata"]["name"] for o in found if not o["metadata"].get("deletionTimestamp")
    )


def test_read_replica_modes_apply_switch_and_leave_nothing_behind(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    standby_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "replication", "namespace": namespace},
        "stringData": {"username": "replicator", "password": "r3pl"},
    }
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace), standby_secret)

    # external: two managed replicas
    kube.apply(
        kubectl,
        _profile(
            namespace,
            {
                **profiles.external_replicas(
                    {"host": "ro-1.db.example.com"},
                    {"host": "ro-2.db.example.com", "maxConnections": 60},
                ),
                "readPoolSizePerPod": 4,
            },
        ),
        namespace=namespace,
    )
    sp = _wait_ready(kubectl, namespace)
    read = sp["status"]["budget"]["read"]
    # the smallest replica: 60 - 3 superuser - 5 reserved - 4 lag probes - 3 postgres_exporter
    assert read["mode"] == "external"
    assert read["smallest"] == "ro-2.db.example.com:5432"
    assert (read["available"], read["clientDemand"], read["maxDbConnections"]) == (45, 40, 15)
    # a tenth of the primary's 89 (100 - 3 superuser - 5 reserved - 3 postgres_exporter),
    # in whole connections per read-pooler pod: 3 pods at peak x 2
    assert sp["status"]["budget"]["readFallback"] == 6
    assert kube.condition(sp, "ReadPoolerReady") == "True"
    assert kube.get_json(kubectl, "deployment", f"{NAME}-pooler-ro", "-n", namespace)
    config = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-ro-config", "-n", namespace)
    assert "ro-2.db.example.com" in config["data"]["readpool.json"]
    binding = _binding(kubectl, namespace)
    assert binding["DATABASE_READ_URL"].startswith(
        f"postgresql://shop_app:p%40ss%3Aw%2Frd@{NAME}-pooler-ro.{namespace}.svc:5432/"
    )
    assert binding["DATABASE_READ_POOL_SIZE"] == "4"

    # streaming: Headroom's own hot standbys, with retained volumes
    kube.apply(
        kubectl,
        _profile(
            namespace,
            {
                "mode": "streaming",
                "streaming": {
                    "standbys": 2,
                    "replicationSecret": {"name": "replication"},
                    "storage": {"size": "1Gi"},
                },
                "whenAllLagging": "refuse",
            },
        ),
        namespace=namespace,
    )
    sp = _wait_ready(kubectl, namespace)
    assert sp["status"]["budget"]["read"]["mode"] == "streaming"
    assert sp["status"]["budget"]["readFallback"] == 0
    assert kube.condition(sp, "StandbysReady") == "True"
    sts = kube.get_json(kubectl, "statefulset", f"{NAME}-standby", "-n", namespace)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    config = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-ro-config", "-n", namespace)
    assert f"{NAME}-standby-1.{NAME}-standby.{namespace}.svc" in config["data"]["readpool.json"]
    assert "ro-2.db.example.com" not in config["data"]["readpool.json"]

    # no read replicas: the read pooler and the standbys go, the read URL too,
    # and the standbys' volumes stay (data is retained unless the profile says so)
    kube.apply(kubectl, _profile(namespace, None), namespace=namespace)
    sp = _wait_ready(kubectl, namespace)
    assert "read" not in sp["status"]["budget"]

    def pruned() -> bool:
        return not any(
            _owned(kubectl, namespace, kind, component)
            for kind in ("deployment", "statefulset", "service", "configmap", "secret")
            for component in ("pooler-ro", "standby")
        )

    kube.wait_for(pruned, timeout=60, what="the read pooler and the standbys to be pruned")
    assert "DATABASE_READ_URL" not in _binding(kubectl, namespace)
    assert kube.condition(sp, "ReadPoolerReady") is None
    claims = kube.get_json(kubectl, "pvc", "-n", namespace)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == [
        f"data-{NAME}-standby-0",
        f"data-{NAME}-standby-1",
    ]


CNPG_CRDS = ("postgresql.cnpg.io_clusters.yaml", "postgresql.cnpg.io_poolers.yaml")


def test_cnpg_mode_composes_cnpg_poolers_and_falls_back_without_cnpg(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    upstream_crds_dir: Path,
) -> None:
    names = kube.install_crds(kubectl, [upstream_crds_dir / f for f in CNPG_CRDS])
    try:
        cluster = {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "shop-pg", "namespace": namespace},
            "spec": {
                "instances": 3,
                "storage": {"size": "1Gi"},
                "postgresql": {"parameters": {"max_connections": "200"}},
            },
        }
        kube.apply(kubectl, app_deployment(namespace), credentials(namespace), cluster)
        body = _profile(namespace, {"mode": "cnpg", "cnpg": {"cluster": "shop-pg"}})
        body["spec"]["database"] |= {"host": "shop-pg-rw", "maxConnections": 200}
        kube.apply(kubectl, body, namespace=namespace)

        def poolers_applied() -> bool:
            # until the Cluster is in the operator's cache a pass may run its own
            # pooler (PoolerReady RollingOut): wait for the verdict CNPG's Poolers get
            sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
            reason = next(
                (
                    c["reason"]
                    for c in sp["status"].get("conditions", [])
                    if c["type"] == "PoolerReady" and c["status"] == "False"
                ),
                None,
            )
            return reason == "WaitingForCNPG" and bool(
                _owned(kubectl, namespace, "poolers.postgresql.cnpg.io", "pooler-ro")
            )

        kube.wait_for(poolers_applied, timeout=90, what="CNPG Poolers applied")
        # accepted by the upstream CRD's own schema, pointing at the Cluster
        for name, kind in ((f"{NAME}-pooler-rw", "rw"), (f"{NAME}-pooler-ro", "ro")):
            pooler = kube.get_json(kubectl, "poolers.postgresql.cnpg.io", name, "-n", namespace)
            assert pooler["spec"]["cluster"] == {"name": "shop-pg"}
            assert pooler["spec"]["type"] == kind
        sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
        read = sp["status"]["budget"]["read"]
        assert read["maxConnections"] == 200  # read from the Cluster
        ro = kube.get_json(
            kubectl, "poolers.postgresql.cnpg.io", f"{NAME}-pooler-ro", "-n", namespace
        )
        assert ro["spec"]["pgbouncer"]["parameters"]["max_db_connections"] == str(
            read["maxDbConnections"]
        )
        pooler_cond = next(c for c in sp["status"]["conditions"] if c["type"] == "PoolerReady")
        assert pooler_cond["reason"] == "WaitingForCNPG"  # nobody runs CNPG here
        assert not _owned(kubectl, namespace, "deployment", "pooler-ro")
        # the Cluster's own exporter is scraped: Headroom runs no postgres_exporter
        assert not _owned(kubectl, namespace, "deployment", "pg-metrics")
        metrics = next(c for c in sp["status"]["conditions"] if c["type"] == "DatabaseMetrics")
        assert metrics["reason"] == "CloudNativePGMetrics"
    finally:
        kube.uninstall_crds(kubectl, names)

    # CNPG gone: Headroom's own PgBouncer in front of the Cluster's Services
    sp = _wait_ready(kubectl, namespace)
    message = next(c for c in sp["status"]["conditions"] if c["type"] == "ReadPoolerReady")
    assert "CloudNativePG is not installed" in message["message"]
    config = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-ro-config", "-n", namespace)
    assert f"shop-pg-ro.{namespace}.svc" in config["data"]["readpool.json"]
    # and its own postgres_exporter in front of the primary and the -ro Service
    exporters = kube.wait_for(
        lambda: _owned(kubectl, namespace, "deployment", "pg-metrics") or None,
        timeout=60,
        what="postgres_exporter Deployments without CNPG",
    )
    assert sorted(exporters) == [f"{NAME}-pg-metrics", f"{NAME}-pg-metrics-cnpg-ro"]


def test_two_profiles_read_pools_on_one_replica_share_it_a_third_is_refused_naming_both(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    pooler_agents: Any,
) -> None:
    """Two apps on their own primaries read from the same managed replica: its
    max_connections is divided like a primary's. The first read pool takes what
    it needs there alone; the second is admitted beside it, and both read
    pools get their share, whose sum fits the replica. A third whose guaranteed
    minimum no longer fits beside theirs is refused at admission, naming both
    with their numbers and by how much to lower; lowered by that, it is admitted.
    The first's read pool shrinks by RELOAD in its running pods (their agents,
    ``pooler_agents``), and the second's grows only once they have confirmed it."""
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    replica = profiles.external_replicas({"host": "ro-shared.db.example.com"})

    def reader(name: str, primary: str, **read: Any) -> dict[str, Any]:
        body = profiles.base(name=name, namespace=namespace, **{"database.readLimits": False})
        body["spec"]["database"]["host"] = primary
        body["spec"]["database"]["readReplicas"] = {**replica, **read}
        return body

    kube.apply(kubectl, reader(NAME, "db-one"), namespace=namespace)
    sp = _wait_ready(kubectl, namespace)
    # 100 - 3 superuser - 5 reserved - 4 lag probes - 3 postgres_exporter = 85:
    # 3 read-pooler pods x 28
    assert sp["status"]["budget"]["read"]["serverConnections"] == 84
    pods_before = shared_server.read_pooler_pods(kubectl, namespace, NAME)
    with shared_server.ReadOrder(kubectl, namespace, first=NAME, second="second") as order:
        kube.apply(kubectl, reader("second", "db-two"), namespace=namespace)
        kube.wait_for(
            lambda: order.seen_second, timeout=120, what="the second's read pooler applied"
        )
    # the first's read pool shrank in its running pods, confirmed before the second's grew
    order.check(limit=12)
    assert shared_server.read_pooler_pods(kubectl, namespace, NAME) == pods_before  # no roll

    def both_shared() -> dict[str, Any] | None:
        found = {
            sp["metadata"]["name"]: ((sp.get("status") or {}).get("budget") or {}).get("read")
            for sp in kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]
        }
        done = all(r and r.get("sharedWith") for r in found.values()) and len(found) == 2
        return found if done else None

    reads = kube.wait_for(both_shared, timeout=60, what="both read pools to share the replica")
    # 100 - 3 superuser - 2 x (5 reserved + 4 lag probes + 3 postgres_exporter) = 73:
    # 36 each (3 pods x 12)
    assert reads[NAME]["serverConnections"] == reads["second"]["serverConnections"] == 36
    (first,) = reads["second"]["sharedWith"]
    assert first == {"profile": f"{namespace}/{NAME}", "serverConnections": 36 + 12}
    kubectl(
        "wait", "--for=condition=Ready", "scalingprofile/second", f"scalingprofile/{NAME}",
        "-n", namespace, "--timeout=120s",
    )  # fmt: skip
    config = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-ro-config", "-n", namespace)
    assert "max_db_connections = 12\n" in config["data"]["pgbouncer.ini"]

    # a third keeps 80 for direct use there: 80 + 4 probes + 3 postgres_exporter + 3 (1 per
    # read-pooler pod) beside the two minimums, 2 x (12 kept + 3), is 23 more than the
    # replica's 97
    greedy = reader("greedy", "db-three", reservedConnections=80)
    refused = kube.create(kubectl, greedy, namespace=namespace, check=False)
    assert refused.returncode != 0
    message = refused.stderr
    assert "spec.database.readReplicas.pooler.instances: the guaranteed minimums on " in message
    assert "ro-shared.db.example.com:5432 do not fit: 97 connections there" in message
    for holder in (NAME, "second"):
        assert f"{namespace}/{holder} 15 (transaction mode" in message, message
    assert "spec.database.readReplicas.reservedConnections" in message, message
    assert "23 short. To fit: lower " in message and "(23 fewer in all)" in message, message
    # the change the message names: 23 fewer kept, and the three minimums fill the replica
    kube.create(kubectl, reader("greedy", "db-three", reservedConnections=57), namespace=namespace)

    def all_minimums() -> dict[str, Any] | None:
        found = {
            sp["metadata"]["name"]: ((sp.get("status") or {}).get("budget") or {}).get("read")
            for sp in kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]
        }
        done = len(found) == 3 and all(
            r and r.get("serverConnections") == 3 and len(r.get("sharedWith") or ()) == 2
            for r in found.values()
        )
        return found if done else None

    kube.wait_for(all_minimums, timeout=60, what="three read pools at their minimums")
    kube.wait_for(
        lambda: (
            "max_db_connections = 1\n"
            in kube.get_json(kubectl, "configmap", f"{NAME}-pooler-ro-config", "-n", namespace)[
                "data"
            ]["pgbouncer.ini"]
        ),
        timeout=60,
        what="the first read pool shrunk to its minimum",
    )
