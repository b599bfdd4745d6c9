"""PgBouncer: pgbouncer.ini, the auth file, and the Deployment, Service and PDB
that run it in front of the app's primary.

Pure. ``render_ini`` and ``render_userlist`` are also what the conformance tests
run in Debian's pgbouncer; every value is checked against a charset before it
is written, so nothing from a profile can start a new line or directive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

from headroom.builders import agent_pod, common, revision
from headroom.planning import credentials, names, pgbouncer_params, planner

COMPONENT = "pooler"
APP_NAME = "pgbouncer"
RUN_AS = 70  # the postgres uid in Debian/Alpine images; any non-root uid works
CONFIG_DIR = "/etc/pgbouncer"
AUTH_DIR = "/etc/pgbouncer-auth"
CA_DIR = "/etc/pgbouncer-server-ca"
SERVER_CA_MOUNT = {"name": "server-ca", "mountPath": CA_DIR, "readOnly": True}

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_ ,.:;()=*'/$-]*$")
_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PATH = re.compile(r"^/[A-Za-z0-9_./-]+$")

# The read pooler (read replicas): its pod runs the read pool's agent beside
# PgBouncer (the lag loop and, as in the write pooler's pod, the config loop).
READ_COMPONENT = "pooler-ro"
READ_CONFIG_DIR = "/etc/headroom-readpool"
READ_DATABASES_FILE = f"{agent_pod.RUN_DIR}/readpool-databases.ini"

# The write pooler's agent (headroom.agent.pooler; the read pooler's runs it
# too): its init step copies the mounted pgbouncer.ini to START_FILE, which
# PgBouncer runs from; the sidecar keeps that file as the ConfigMap says,
# through the API server, and RELOADs.
AGENT_MODULE = "headroom.agent.pooler"
START_FILE = f"{agent_pod.RUN_DIR}/pgbouncer.ini"


def _line(key: str, value: str) -> str:
    if not _SAFE_KEY.match(key) or not _SAFE_VALUE.match(value):
        raise ValueError(f"refusing to render unsafe pgbouncer.ini entry {key!r}")
    return f"{key} = {value}" if value else f"{key} ="


def _pgbouncer_lines(
    plan: planner.Plan,
    pooler: planner.PoolerPlan,
    *,
    listen_addr: str,
    listen_port: int,
    auth_file: str,
    server_ca_file: str,
) -> list[str]:
    lines = [
        "[pgbouncer]",
        _line("listen_addr", listen_addr),
        _line("listen_port", str(listen_port)),
        _line("unix_socket_dir", ""),
        _line("auth_type", "scram-sha-256"),
        _line("auth_file", auth_file),
        _line("stats_users", planner.STATS_USER),
    ]
    if plan.database.server_ca_secret is not None:
        lines.append(_line("server_tls_ca_file", server_ca_file))
    return lines + [_line(key, value) for key, value in pooler.settings.items()]


def _header(plan: planner.Plan) -> list[str]:
    return [
        f";; Rendered by Headroom for ScalingProfile {plan.namespace}/{plan.name}.",
        ";; Managed: manual edits are reverted. Tune it through spec.pooler.parameters.",
    ]


def render_ini(
    plan: planner.Plan,
    *,
    listen_addr: str = "0.0.0.0",  # noqa: S104 - a pod listens on its own interfaces
    listen_port: int = planner.POOLER_PORT,
    auth_file: str = f"{AUTH_DIR}/userlist.txt",
    server_ca_file: str = f"{CA_DIR}/ca.crt",
) -> str:
    """The whole pgbouncer.ini of the write pooler for ``plan``."""
    db = plan.database
    target = f"host={db.host} port={db.port} dbname={db.name}"
    lines = [
        *_header(plan),
        "[databases]",
        _line(db.name, target),
        "",
        *_pgbouncer_lines(
            plan,
            plan.pooler,
            listen_addr=listen_addr,
            listen_port=listen_port,
            auth_file=auth_file,
            server_ca_file=server_ca_file,
        ),
        _line("admin_users", planner.AGENT_USER),
    ]
    return "\n".join(lines) + "\n"


def render_read_ini(
    plan: planner.Plan,
    *,
    listen_addr: str = "0.0.0.0",  # noqa: S104 - a pod listens on its own interfaces
    listen_port: int = planner.POOLER_PORT,
    auth_file: str = f"{AUTH_DIR}/userlist.txt",
    server_ca_file: str = f"{CA_DIR}/ca.crt",
    include_file: str = READ_DATABASES_FILE,
) -> str:
    """pgbouncer.ini of the read pooler: no [databases] entry of its own; the
    lag agent writes it into ``include_file`` (the replicas in the read pool,
    see headroom.agent) and RELOADs through the admin console."""
    assert plan.read_pooler is not None
    lines = [
        *_header(plan),
        ";; [databases] is written by the lag agent: the replicas that are in the read pool.",
        *_pgbouncer_lines(
            plan,
            plan.read_pooler,
            listen_addr=listen_addr,
            listen_port=listen_port,
            auth_file=auth_file,
            server_ca_file=server_ca_file,
        ),
        _line("admin_users", planner.AGENT_USER),
        "",
        f"%include {include_file}",
    ]
    if not _PATH.match(include_file):
        raise ValueError(f"refusing to include {include_file!r}")
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
        f"postgres://{planner.STATS_USER}:{quote(password, safe='')}"
        f"@127.0.0.1:{planner.POOLER_PORT}/pgbouncer?sslmode=disable"
    )


@dataclass(frozen=True)
class Pool:
    """What differs between the write pooler and the read pooler."""

    component: str
    pooler: planner.PoolerPlan
    deployment: str
    config: str
    auth: str
    service: str
    config_dir: str
    config_data: dict[str, str]
    users: dict[str, str]
    auth_data: dict[str, str]
    init_containers: list[common.Obj] = field(default_factory=list)
    sidecars: list[common.Obj] = field(default_factory=list)
    # what its pods read at start (builders.revision): the userlist, the
    # exporter's DSN, the server CA, the agent's logins
    reads: tuple[str, ...] = (revision.LOGIN, revision.STATS, revision.SERVER_CA)
    # sources of this pool's own (a revision by source name)
    own_sources: dict[str, str] = field(default_factory=dict)
    # where PgBouncer reads pgbouncer.ini when an agent writes it (not the
    # mounted ConfigMap): the pod gets the agent's run dir and token, and the
    # template carries no hash of the whole file
    start_file: str | None = None
    service_account: str | None = None
    extra_objects: list[common.Obj] = field(default_factory=list)


def build(
    plan: planner.Plan,
    creds: credentials.Credentials,
    *,
    app_pod_selector: common.Obj | None = None,
) -> list[common.Obj]:
    """ConfigMap, auth Secret, Deployment, Service, PDB and NetworkPolicy of the
    write pooler, and what its agent needs (ServiceAccount, Role, RoleBinding,
    the state ConfigMap it reports into). ``app_pod_selector``: the app's pods
    (usable_selector), admitted with the workers on the PgBouncer port; None
    admits only the workers."""
    ini = render_ini(plan)
    users = {creds.username: creds.password, planner.STATS_USER: creds.stats_password}
    auth_data = {credentials.STATS_PASSWORD_KEY: creds.stats_password}
    if creds.pooler_agent_password:
        users[planner.AGENT_USER] = creds.pooler_agent_password
        auth_data[credentials.AGENT_PASSWORD_KEY] = creds.pooler_agent_password
    pool = Pool(
        component=COMPONENT,
        pooler=plan.pooler,
        deployment=plan.names.pooler,
        config=plan.names.pooler_config,
        auth=plan.names.pooler_auth,
        service=plan.names.pooler_service,
        config_dir=CONFIG_DIR,
        config_data={"pgbouncer.ini": ini},
        users=users,
        auth_data=auth_data,
        init_containers=[
            agent_pod.copy_init(
                plan, module=AGENT_MODULE, config_dir=CONFIG_DIR, config_file="pgbouncer.ini"
            )
        ],
        sidecars=[
            agent_pod.sidecar(
                plan,
                module=AGENT_MODULE,
                args=online_args(
                    config_map=plan.names.pooler_config, state=plan.names.pooler_state
                ),
                env=agent_env(auth=plan.names.pooler_auth),
            )
        ],
        reads=(
            revision.LOGIN,
            revision.STATS,
            revision.SERVER_CA,
            revision.POOLER_AGENT,
            revision.POOLER_CONFIG,
        ),
        own_sources={revision.POOLER_CONFIG: restart_revision(ini)},
        start_file=START_FILE,
        service_account=plan.names.pooler_agent,
        extra_objects=agent_objects(
            plan,
            component=COMPONENT,
            agent=plan.names.pooler_agent,
            config=plan.names.pooler_config,
            state=plan.names.pooler_state,
        ),
    )
    return pool_objects(plan, creds, pool, app_pod_selector=app_pod_selector)


def restart_revision(ini: str) -> str:
    """The revision of the settings of ``ini`` PgBouncer takes only at start
    (a pooler whose agent RELOADs rolls only when it changes)."""
    restart = pgbouncer_params.restart_settings(ini)
    return common.content_hash(*(f"{key}={restart[key]}" for key in sorted(restart)))


def online_args(*, config_map: str, state: str) -> list[str]:
    """The sidecar's arguments that make it follow ``config_map``'s
    pgbouncer.ini into START_FILE, RELOAD, and report into ``state``."""
    return ["--config-map", config_map, "--state", state, "--output", START_FILE]


def agent_env(*, auth: str) -> list[common.Obj]:
    """What a pooler's agent reports as (its pod's name) and logs in to the
    admin console with (the agent password of the pooler's auth Secret)."""
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "HEADROOM_AGENT_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": auth, "key": credentials.AGENT_PASSWORD_KEY}},
        },
    ]


def agent_objects(
    plan: planner.Plan, *, component: str, agent: str, config: str, state: str
) -> list[common.Obj]:
    """A pooler agent's ServiceAccount ``agent``, its Role (the pooler's
    ConfigMap ``config`` read and watched by name, its ``state`` ConfigMap
    patched by name) and RoleBinding, and the state ConfigMap, created
    empty: the agents write its data, the operator never applies any."""

    def meta(name: str) -> common.Obj:
        return common.metadata(plan, name=name, component=component, app_name=APP_NAME)

    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(state)},
        *agent_pod.reader_objects(
            plan,
            name=agent,
            config_map=config,
            meta=meta,
            more_rules=[
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [state],
                    "verbs": ["get", "patch"],
                }
            ],
        ),
    ]


def pool_objects(
    plan: planner.Plan,
    creds: credentials.Credentials,
    pool: Pool,
    *,
    app_pod_selector: common.Obj | None,
) -> list[common.Obj]:
    userlist = render_userlist(pool.users, source="in spec.database.credentialsSecret")
    selector = common.selector_labels(plan, component=pool.component, name=APP_NAME)

    def meta(name: str) -> common.Obj:
        return common.metadata(plan, name=name, component=pool.component, app_name=APP_NAME)

    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(pool.config),
        "data": pool.config_data,
    }
    auth = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(pool.auth),
        "type": "Opaque",
        "data": common.secret_data(
            {
                "userlist.txt": userlist,
                "exporter-dsn": exporter_dsn(creds.stats_password),
                **pool.auth_data,
            }
        ),
    }
    # PgBouncer reading the mounted file rolls for any change of it; one that
    # reads its agent's file rolls only for a restart setting (pool.own_sources)
    pod_annotations = (
        {common.CONFIG_HASH_ANNOTATION: common.content_hash(*pool.config_data.values())}
        if pool.start_file is None
        else {}
    )
    pod_annotations |= {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(planner.EXPORTER_PORT),
    }
    server_ca = plan.database.server_ca_secret
    mounts = [
        *(
            [{"name": "config", "mountPath": pool.config_dir, "readOnly": True}]
            if pool.start_file is None
            else []
        ),
        {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
        *([] if pool.start_file is None else [agent_pod.run_mount()]),
    ]
    volumes: list[common.Obj] = [
        {"name": "config", "configMap": {"name": pool.config}},
        {
            "name": "auth",
            "secret": {
                "secretName": pool.auth,
                "items": [{"key": "userlist.txt", "path": "userlist.txt"}],
            },
        },
        *([] if pool.start_file is None else agent_pod.volumes()),
    ]
    if server_ca is not None:
        mounts.append(SERVER_CA_MOUNT)
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
        "image": pool.pooler.image,
        "command": ["pgbouncer", pool.start_file or f"{pool.config_dir}/pgbouncer.ini"],
        "ports": [{"name": "pgbouncer", "containerPort": planner.POOLER_PORT}],
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
        "image": pool.pooler.exporter_image,
        "args": [
            "--pgBouncer.connectionString=$(PGBOUNCER_DSN)",
            f"--web.listen-address=:{planner.EXPORTER_PORT}",
        ],
        "env": [
            {
                "name": "PGBOUNCER_DSN",
                "valueFrom": {"secretKeyRef": {"name": pool.auth, "key": "exporter-dsn"}},
            }
        ],
        "ports": [{"name": "metrics", "containerPort": planner.EXPORTER_PORT}],
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}},
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"},
        },
        "securityContext": common.container_security_context(),
    }
    pod = common.pod_spec(
        uid=RUN_AS,
        selector=selector,
        grace_seconds=pool.pooler.grace_seconds,
        containers=[pgbouncer_container, exporter_container, *pool.sidecars],
        volumes=volumes,
        init_containers=pool.init_containers,
    )
    if pool.service_account is not None:
        pod["serviceAccountName"] = pool.service_account
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(pool.deployment),
        "spec": {
            "replicas": pool.pooler.instances,
            "selector": {"matchLabels": selector},
            # Longer than the grace period: the next old pod is stopped only when
            # the previous one has let go of its server connections.
            "minReadySeconds": pool.pooler.min_ready_seconds,
            "strategy": {
                "type": "RollingUpdate",
                # Never more pooler pods than the budget counted (see planning.budget).
                "rollingUpdate": {
                    "maxSurge": pool.pooler.max_surge,
                    "maxUnavailable": pool.pooler.max_unavailable,
                },
            },
            "template": {
                "metadata": {
                    "labels": common.labels(plan, component=pool.component, name=APP_NAME),
                    "annotations": pod_annotations,
                },
                "spec": pod,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(pool.service),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": "postgres",
                    "port": names.POOLER_SERVICE_PORT,
                    "targetPort": "pgbouncer",
                    "protocol": "TCP",
                },
                {"name": "metrics", "port": planner.EXPORTER_PORT, "targetPort": "metrics"},
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(pool.deployment),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(pool.deployment),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": common.client_peers(plan, app_pod_selector),
                    "ports": [{"port": planner.POOLER_PORT}],
                },
                {
                    "from": [common.metrics_peer(plan)],
                    "ports": [{"port": planner.EXPORTER_PORT}],
                },
            ],
        },
    }
    available = {**revision.sources(plan, creds), **pool.own_sources}
    revision.stamp(deployment, revision.of(available, pool.reads))
    return [config_map, auth, *pool.extra_objects, deployment, service, pdb, network_policy]
