"""postgres_exporter in front of each database server a profile uses: a
Deployment (one pod) and a NetworkPolicy per server, the primary's and each
read replica's (:mod:`headroom.planning.database_metrics` decides which).

Pure. The exporter logs in with the Secret the plan names (a monitoring role's,
or the app's): the credentials reach the pod through ``secretKeyRef`` only and
never leave that Secret. Its pod has no API token and runs under the
restricted Pod Security Standard; only the scrapers of spec.network reach it.

What it collects is chosen for the rules (:mod:`headroom.builders.alert_rules`):
its defaults (pg_stat_activity by state, user and application, pg_settings,
pg_stat_database, replication lag), pg_stat_statements only through a
monitoring role, and not the per-table collectors (a series per table) nor
the WAL directory's (a privilege the app's role lacks).
"""

from __future__ import annotations

from headroom.builders import common, revision
from headroom.planning import credentials, database_metrics, planner

COMPONENT = "pg-metrics"
APP_NAME = "postgres-exporter"
SERVER_LABEL = "headroom.dev/server"
RUN_AS = 65534  # nobody, as the upstream image runs
CA_DIR = "/etc/postgres-exporter-ca"
LISTEN_FLAG = "--web.listen-address"
# lib/pq (the exporter's driver) knows disable, require, verify-ca and
# verify-full; allow and prefer connect in plain text, which works with a
# server with and without TLS (as the binding's node-postgres URLs do).
_SSL_MODES = {"allow": "disable", "prefer": "disable"}
_OFF = ("stat_user_tables", "statio_user_tables", "wal")


def ssl_mode(mode: str) -> str:
    """The sslmode lib/pq gets for spec.database.sslMode."""
    return _SSL_MODES.get(mode, mode)


def data_source_uri(plan: planner.Plan, server: database_metrics.Server) -> str:
    """DATA_SOURCE_URI (the exporter prefixes ``postgresql://user:password@``)."""
    db = plan.database
    query = f"sslmode={ssl_mode(db.ssl_mode)}"
    if db.server_ca_secret is not None and db.ssl_mode.startswith("verify-"):
        query += f"&sslrootcert={CA_DIR}/ca.crt"
    return f"{server.host}:{server.port}/{db.name}?{query}"


def args(metrics: database_metrics.DatabaseMetricsPlan) -> list[str]:
    found = [f"{LISTEN_FLAG}=:{database_metrics.EXPORTER_PORT}"]
    if metrics.statements:
        found.append("--collector.stat_statements")
    return found + [f"--no-collector.{name}" for name in _OFF]


def pod_selector(plan: planner.Plan, server: database_metrics.Server) -> dict[str, str]:
    return {
        **common.selector_labels(plan, component=COMPONENT, name=APP_NAME),
        SERVER_LABEL: server.name,
    }


def build(plan: planner.Plan, creds: credentials.Credentials) -> list[common.Obj]:
    """The exporters' Deployments and NetworkPolicies (none with CloudNativePG's
    metrics, or with spec.database.metrics off)."""
    metrics = plan.database_metrics
    if metrics is None or metrics.source != database_metrics.EXPORTER:
        return []
    objects: list[common.Obj] = []
    for server in metrics.servers:
        objects += _server(plan, creds, metrics, server)
    return objects


def _server(
    plan: planner.Plan,
    creds: credentials.Credentials,
    metrics: database_metrics.DatabaseMetricsPlan,
    server: database_metrics.Server,
) -> list[common.Obj]:
    name = plan.names.pg_metrics(server.name)
    selector = pod_selector(plan, server)
    labels = {**common.labels(plan, component=COMPONENT, name=APP_NAME), SERVER_LABEL: server.name}

    def meta() -> common.Obj:
        found = common.metadata(plan, name=name, component=COMPONENT, app_name=APP_NAME)
        found["labels"][SERVER_LABEL] = server.name
        return found

    login = metrics.credentials
    container: common.Obj = {
        "name": "exporter",
        "image": metrics.image,
        "args": args(metrics),
        "env": [
            {"name": "DATA_SOURCE_URI", "value": data_source_uri(plan, server)},
            {
                "name": "DATA_SOURCE_USER",
                "valueFrom": {"secretKeyRef": {"name": login.name, "key": login.username_key}},
            },
            {
                "name": "DATA_SOURCE_PASS",
                "valueFrom": {"secretKeyRef": {"name": login.name, "key": login.password_key}},
            },
        ],
        "ports": [{"name": "metrics", "containerPort": database_metrics.EXPORTER_PORT}],
        # a TCP check: every GET /metrics queries the server (a connection of its own)
        "readinessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        },
        "securityContext": common.container_security_context(),
    }
    volumes: list[common.Obj] = []
    reads = [revision.MONITOR_LOGIN if metrics.monitoring_role else revision.LOGIN]
    ca = plan.database.server_ca_secret
    if ca is not None and plan.database.ssl_mode.startswith("verify-"):
        container["volumeMounts"] = [{"name": "server-ca", "mountPath": CA_DIR, "readOnly": True}]
        volumes.append(
            {
                "name": "server-ca",
                "secret": {"secretName": ca.name, "items": [{"key": ca.key, "path": "ca.crt"}]},
            }
        )
        reads.append(revision.SERVER_CA)
    deployment: common.Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            # never two pods at once: each holds its connections on the server
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(database_metrics.EXPORTER_PORT),
                    },
                },
                "spec": common.pod_spec(
                    uid=RUN_AS, selector=selector, containers=[container], volumes=volumes
                ),
            },
        },
    }
    revision.stamp(deployment, revision.of(revision.sources(plan, creds), reads))
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [common.metrics_peer(plan)],
                    "ports": [{"port": database_metrics.EXPORTER_PORT}],
                }
            ],
        },
    }
    return [deployment, network_policy]
