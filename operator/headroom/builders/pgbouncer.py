"""PgBouncer: pgbouncer.ini, the auth file, and the Deployment, Service and PDB
that run it in front of the app's primary.

Pure. ``render_ini`` and ``render_userlist`` are also what the conformance tests
run in Debian's pgbouncer; every value is checked against a charset before it
is written, so nothing from a profile can start a new line or directive.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from headroom.builders import common
from headroom.planning import plan as plan_mod

COMPONENT = "pooler"
APP_NAME = "pgbouncer"
RUN_AS = 70  # the postgres uid in Debian/Alpine images; any non-root uid works
CONFIG_DIR = "/etc/pgbouncer"
AUTH_DIR = "/etc/pgbouncer-auth"
CA_DIR = "/etc/pgbouncer-server-ca"
SERVICE_PORT = 5432
# The generated stats password is kept in the auth Secret so later passes reuse it.
STATS_PASSWORD_KEY = "stats-password"  # noqa: S105 - a key name

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_ ,.:;()=*'/$-]*$")
_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def deployment_name(plan: plan_mod.Plan) -> str:
    return f"{plan.name}-pooler"


def config_name(plan: plan_mod.Plan) -> str:
    return f"{plan.name}-pooler-config"


def auth_secret_name(plan: plan_mod.Plan) -> str:
    return f"{plan.name}-pooler-auth"


def service_name(plan: plan_mod.Plan) -> str:
    return f"{plan.name}-pooler-rw"


def service_host(plan: plan_mod.Plan) -> str:
    return f"{service_name(plan)}.{plan.namespace}.svc"


def _line(key: str, value: str) -> str:
    if not _SAFE_KEY.match(key) or not _SAFE_VALUE.match(value):
        raise ValueError(f"refusing to render unsafe pgbouncer.ini entry {key!r}")
    return f"{key} = {value}" if value else f"{key} ="


def render_ini(
    plan: plan_mod.Plan,
    *,
    listen_addr: str = "0.0.0.0",  # noqa: S104 - a pod listens on its own interfaces
    listen_port: int = plan_mod.POOLER_PORT,
    auth_file: str = f"{AUTH_DIR}/userlist.txt",
    server_ca_file: str = f"{CA_DIR}/ca.crt",
) -> str:
    """The whole pgbouncer.ini for ``plan``."""
    db = plan.database
    target = f"host={db.host} port={db.port} dbname={db.name}"
    lines = [
        f";; Rendered by Headroom for ScalingProfile {plan.namespace}/{plan.name}.",
        ";; Managed: manual edits are reverted. Tune it through spec.pooler.parameters.",
        "[databases]",
        _line(db.name, target),
        "",
        "[pgbouncer]",
        _line("listen_addr", listen_addr),
        _line("listen_port", str(listen_port)),
        _line("unix_socket_dir", ""),
        _line("auth_type", "scram-sha-256"),
        _line("auth_file", auth_file),
        _line("stats_users", plan_mod.STATS_USER),
    ]
    if db.server_ca_secret is not None:
        lines.append(_line("server_tls_ca_file", server_ca_file))
    lines += [_line(key, value) for key, value in plan.pooler.settings.items()]
    return "\n".join(lines) + "\n"


def _quote(text: str, *, what: str) -> str:
    if not text or _CONTROL.search(text):
        raise ValueError(f"{what} must be non-empty and have no control characters")
    return '"' + text.replace('"', '""') + '"'


def render_userlist(users: dict[str, str], *, source: str = "") -> str:
    """auth_file contents: one quoted ``"user" "password"`` line per user."""
    rows = []
    for user, password in users.items():
        rows.append(
            _quote(user, what=f"username {source}".strip())
            + " "
            + _quote(password, what=f"password {source}".strip())
        )
    return "\n".join(rows) + "\n"


def exporter_dsn(password: str) -> str:
    return (
        f"postgres://{plan_mod.STATS_USER}:{quote(password, safe='')}"
        f"@127.0.0.1:{plan_mod.POOLER_PORT}/pgbouncer?sslmode=disable"
    )


def build(
    plan: plan_mod.Plan, creds: common.Credentials, *, app_pod_selector: common.Obj | None = None
) -> list[common.Obj]:
    """ConfigMap, auth Secret, Deployment, Service, PDB and NetworkPolicy of the
    pooler. ``app_pod_selector``: the app's pods (usable_selector), admitted
    with the workers on the PgBouncer port; None admits only the workers."""
    ini = render_ini(plan)
    userlist = render_userlist(
        {creds.username: creds.password, plan_mod.STATS_USER: creds.stats_password},
        source="in spec.database.credentialsSecret",
    )
    selector = common.selector_labels(plan, component=COMPONENT, name=APP_NAME)

    def meta(name: str) -> common.Obj:
        return common.metadata(plan, name=name, component=COMPONENT, app_name=APP_NAME)

    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(config_name(plan)),
        "data": {"pgbouncer.ini": ini},
    }
    auth = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(auth_secret_name(plan)),
        "type": "Opaque",
        "data": common.secret_data(
            {
                "userlist.txt": userlist,
                "exporter-dsn": exporter_dsn(creds.stats_password),
                STATS_PASSWORD_KEY: creds.stats_password,
            }
        ),
    }
    pod_annotations = {
        common.CONFIG_HASH_ANNOTATION: common.content_hash(ini),
        common.AUTH_REVISION_ANNOTATION: creds.revision,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(plan_mod.EXPORTER_PORT),
    }
    server_ca = plan.database.server_ca_secret
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
    ]
    volumes: list[common.Obj] = [
        {"name": "config", "configMap": {"name": config_name(plan)}},
        {
            "name": "auth",
            "secret": {
                "secretName": auth_secret_name(plan),
                "items": [{"key": "userlist.txt", "path": "userlist.txt"}],
            },
        },
    ]
    if server_ca is not None:
        pod_annotations[common.CA_REVISION_ANNOTATION] = creds.server_ca_revision
        mounts.append({"name": "server-ca", "mountPath": CA_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "server-ca",
                "secret": {
                    "secretName": server_ca.name,
                    "items": [{"key": server_ca.key, "path": "ca.crt"}],
                },
            }
        )
    pgbouncer_container = {
        "name": "pgbouncer",
        "image": plan.pooler.image,
        "command": ["pgbouncer", f"{CONFIG_DIR}/pgbouncer.ini"],
        "ports": [{"name": "pgbouncer", "containerPort": plan_mod.POOLER_PORT}],
        "readinessProbe": {
            "tcpSocket": {"port": "pgbouncer"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "pgbouncer"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
    }
    exporter_container = {
        "name": "exporter",
        "image": plan.pooler.exporter_image,
        "args": [
            "--pgBouncer.connectionString=$(PGBOUNCER_DSN)",
            f"--web.listen-address=:{plan_mod.EXPORTER_PORT}",
        ],
        "env": [
            {
                "name": "PGBOUNCER_DSN",
                "valueFrom": {
                    "secretKeyRef": {"name": auth_secret_name(plan), "key": "exporter-dsn"}
                },
            }
        ],
        "ports": [{"name": "metrics", "containerPort": plan_mod.EXPORTER_PORT}],
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}},
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"},
        },
        "securityContext": common.container_security_context(),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(deployment_name(plan)),
        "spec": {
            "replicas": plan.pooler.instances,
            "selector": {"matchLabels": selector},
            # Longer than the grace period: the next old pod is stopped only when
            # the previous one has let go of its server connections.
            "minReadySeconds": plan.pooler.min_ready_seconds,
            "strategy": {
                "type": "RollingUpdate",
                # Never more pooler pods than the budget counted (see planning.budget).
                "rollingUpdate": {
                    "maxSurge": plan.pooler.max_surge,
                    "maxUnavailable": plan.pooler.max_unavailable,
                },
            },
            "template": {
                "metadata": {
                    "labels": common.labels(plan, component=COMPONENT, name=APP_NAME),
                    "annotations": pod_annotations,
                },
                "spec": common.pod_spec(
                    uid=RUN_AS,
                    selector=selector,
                    grace_seconds=plan.pooler.grace_seconds,
                    containers=[pgbouncer_container, exporter_container],
                    volumes=volumes,
                ),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(service_name(plan)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": "postgres",
                    "port": SERVICE_PORT,
                    "targetPort": "pgbouncer",
                    "protocol": "TCP",
                },
                {"name": "metrics", "port": plan_mod.EXPORTER_PORT, "targetPort": "metrics"},
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(deployment_name(plan)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(deployment_name(plan)),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": common.client_peers(plan, app_pod_selector),
                    "ports": [{"port": plan_mod.POOLER_PORT}],
                },
                {
                    "from": [common.metrics_peer(plan)],
                    "ports": [{"port": plan_mod.EXPORTER_PORT}],
                },
            ],
        },
    }
    return [config_map, auth, deployment, service, pdb, network_policy]
