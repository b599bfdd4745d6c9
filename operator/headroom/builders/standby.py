"""The start-up of a streaming standby Headroom runs (read replicas, mode
``streaming``; groundwork for issue 10): the init script that clones the primary
once, and the environment it reads.

Pure. The script is a constant: every value it uses comes from environment
variables that :func:`clone_env` builds from checked data, so nothing a
profile says can become shell. What it does, in an init container of each
standby pod, on the pod's own volume:

- ``$PGDATA`` already holds a cluster (``PG_VERSION``): nothing, a restarted
  pod never clones again (its data and its place in the WAL stream stay);
- otherwise ``pg_basebackup -R -C -S $SLOT_NAME -X stream`` into
  ``$PGDATA.partial``, renamed to ``$PGDATA`` only when complete, so an
  interrupted clone is never mistaken for a finished one. ``-C`` makes the
  standby's physical replication slot on the primary; when the slot exists
  already (the volume was lost, the slot was not) the clone reuses it.

A slot keeps WAL on the primary for as long as its standby is away: the
primary's ``max_slot_wal_keep_size`` bounds that (documented for users; a
deleted standby's slot is dropped by the operator).
"""

from __future__ import annotations

import re

from headroom.builders import common
from headroom.planning import names, planner, read_plan

_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")  # Postgres: lower case, digits, underscore
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PATH = re.compile(r"^/[A-Za-z0-9_./-]{1,200}$")

CLONE_SCRIPT = """\
#!/bin/sh
# Clone the primary once into this standby's volume (Headroom; see builders/standby.py).
set -eu
# In a StatefulSet every pod has its own slot: the prefix and its ordinal.
SLOT_NAME="${SLOT_NAME:-${SLOT_PREFIX:-}${POD_NAME##*-}}"
if [ -s "$PGDATA/PG_VERSION" ]; then
  echo "standby: $PGDATA holds a cluster already: not cloning again"
  exit 0
fi
partial="$PGDATA.partial"
rm -rf "$partial"
clone() {
  pg_basebackup --host="$PRIMARY_HOST" --port="$PRIMARY_PORT" \\
    --username="$REPLICATION_USER" --no-password --pgdata="$partial" \\
    --write-recovery-conf --slot="$SLOT_NAME" --wal-method=stream \\
    --checkpoint=fast --progress "$@"
}
if ! clone --create-slot 2>"$partial.err"; then
  if grep -q "already exists" "$partial.err"; then
    echo "standby: slot $SLOT_NAME exists on the primary: cloning through it"
    rm -rf "$partial"
    clone
  else
    cat "$partial.err" >&2
    rm -rf "$partial" "$partial.err"
    exit 1
  fi
fi
rm -f "$partial.err"
chmod 0700 "$partial"
if [ -d "$PGDATA" ]; then
  # an empty mount point may stand there; anything else is not ours to replace
  rmdir "$PGDATA" 2>/dev/null || {
    echo "standby: $PGDATA is not empty and holds no cluster: not overwriting it" >&2
    exit 1
  }
fi
mv "$partial" "$PGDATA"
echo "standby: cloned $PRIMARY_HOST:$PRIMARY_PORT through slot $SLOT_NAME"
"""


def clone_env(
    *,
    primary_host: str,
    primary_port: int,
    replication_user: str | common.Obj,
    slot: str,
    pgdata: str,
    password_secret: common.Obj,
    prefix: str = "",
) -> list[common.Obj]:
    """The init container's environment. ``password_secret``: the
    ``secretKeyRef`` of the replication role's password (PGPASSWORD, read by
    libpq; never in the script, the pod spec or the logs)."""
    user: common.Obj
    if isinstance(replication_user, str):
        if not _USER.match(replication_user):
            raise ValueError(f"replication user {replication_user!r} is not allowed")
        user = {"name": "REPLICATION_USER", "value": replication_user}
    else:  # a secretKeyRef: libpq takes the value, no shell ever sees it
        user = {"name": "REPLICATION_USER", "valueFrom": {"secretKeyRef": dict(replication_user)}}
    checks = (
        ("primary host", primary_host, _HOST),
        ("slot", slot or f"{prefix}0", _SLOT),
        ("PGDATA", pgdata, _PATH),
    )
    for what, value, pattern in checks:
        if not pattern.match(value):
            raise ValueError(f"{what} {value!r} is not allowed in a standby's start-up")
    if not 1 <= primary_port <= 65535:
        raise ValueError(f"primary port {primary_port} is out of range")
    slot_env: list[common.Obj] = [{"name": "SLOT_NAME", "value": slot}] if slot else []
    if prefix:
        slot_env += [
            {"name": "SLOT_PREFIX", "value": prefix},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]
    return [
        {"name": "PGDATA", "value": pgdata},
        {"name": "PRIMARY_HOST", "value": primary_host},
        {"name": "PRIMARY_PORT", "value": str(primary_port)},
        user,
        *slot_env,
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": dict(password_secret)}},
    ]


# -- the standbys' StatefulSet (mode streaming) ---------------------------------

COMPONENT = "standby"
APP_NAME = "postgres"
RUN_AS = 999  # the postgres uid of the official postgres images
CONFIG_DIR = "/etc/headroom-standby"
DATA_MOUNT = "/var/lib/postgresql/data"
PGDATA = f"{DATA_MOUNT}/pgdata"  # a subdirectory: a fresh volume's lost+found is no cluster
SOCKET_DIR = "/var/run/postgresql"


def render_conf(standby: read_plan.StandbyPlan) -> str:
    """postgresql.conf of a standby, given as config_file (a clone of a
    Debian-layout primary holds none). pg_basebackup -R leaves
    primary_conninfo and standby.signal in the data directory."""
    return "\n".join(
        [
            "# Rendered by Headroom: a hot standby of the profile's primary.",
            "listen_addresses = '*'",
            f"port = {read_plan.STANDBY_PORT}",
            f"unix_socket_directories = '{SOCKET_DIR}'",
            f"hba_file = '{CONFIG_DIR}/pg_hba.conf'",
            "hot_standby = on",
            # Postgres refuses a hot standby whose max_connections is below the primary's.
            f"max_connections = {int(standby.max_connections)}",
            # The primary keeps rows a standby's queries still read (no cancelled reads)...
            "hot_standby_feedback = on",
            # ...and replay waits at most this long for a conflicting query.
            "max_standby_streaming_delay = 30s",
            "",
        ]
    )


HBA = """\
# Rendered by Headroom. Inside the pod: the socket; from the read pooler (and
# what the NetworkPolicy admits): password (SCRAM, the primary's roles).
local all all peer
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
"""


def build(plan: planner.Plan) -> list[common.Obj]:
    """ConfigMap, headless Service, StatefulSet, PDB and NetworkPolicy of the
    hot standbys; nothing unless spec.database.readReplicas.mode is streaming."""
    read = plan.read
    if read is None or read.standby is None:
        return []
    standby = read.standby
    name = plan.names.standbys
    selector = common.selector_labels(plan, component=COMPONENT, name=APP_NAME)

    def meta(obj_name: str) -> common.Obj:
        return common.metadata(plan, name=obj_name, component=COMPONENT, app_name=APP_NAME)

    files = {"clone.sh": CLONE_SCRIPT, "postgresql.conf": render_conf(standby), "pg_hba.conf": HBA}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(plan.names.standby_config),
        "data": files,
    }
    secret = standby.replication_secret
    env = clone_env(
        primary_host=plan.database.host,
        primary_port=plan.database.port,
        replication_user={"name": secret.name, "key": secret.username_key},
        slot="",
        prefix=plan.names.slot_prefix,
        pgdata=PGDATA,
        password_secret={"name": secret.name, "key": secret.password_key},
    )
    env.append({"name": "PGSSLMODE", "value": plan.database.ssl_mode})
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": names.DATA_VOLUME, "mountPath": DATA_MOUNT},
        {"name": "run", "mountPath": SOCKET_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - pod-local scratch
    ]
    resources: common.Obj = {
        "requests": {"cpu": "100m", "memory": "256Mi", **standby.requests},
        "limits": {"memory": "1Gi", **standby.limits},
    }
    probe = {
        "exec": {"command": ["pg_isready", "-h", SOCKET_DIR, "-p", str(read_plan.STANDBY_PORT)]}
    }
    clone = {
        "name": "clone",
        "image": standby.image,
        "command": ["sh", f"{CONFIG_DIR}/clone.sh"],
        "env": env,
        "resources": resources,
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
    }
    postgres = {
        "name": "postgres",
        "image": standby.image,
        "command": ["postgres", "-D", PGDATA, "-c", f"config_file={CONFIG_DIR}/postgresql.conf"],
        "ports": [{"name": "postgres", "containerPort": read_plan.STANDBY_PORT}],
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {
            **probe,
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": resources,
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(name),
        "spec": {
            "serviceName": name,
            "replicas": standby.standbys,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": common.labels(plan, component=COMPONENT, name=APP_NAME),
                    "annotations": {
                        common.CONFIG_HASH_ANNOTATION: common.content_hash(*files.values())
                    },
                },
                "spec": common.pod_spec(
                    uid=RUN_AS,
                    selector=selector,
                    grace_seconds=60,
                    init_containers=[clone],
                    containers=[postgres],
                    volumes=[
                        {"name": "config", "configMap": {"name": plan.names.standby_config}},
                        {"name": "run", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                ),
            },
            **common.claim_templates(
                volume=names.DATA_VOLUME, labels=selector, claim=standby.storage
            ),
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name),
        "spec": {
            "clusterIP": "None",
            "selector": selector,
            "ports": [
                {"name": "postgres", "port": read_plan.STANDBY_PORT, "targetPort": "postgres"}
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    readers = common.selector_labels(plan, component="pooler-ro", name="pgbouncer")
    peers: list[common.Obj] = [{"podSelector": {"matchLabels": readers}}]
    if plan.facts.operator_namespace:
        peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": plan.facts.operator_namespace}
                }
            }
        )
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"port": read_plan.STANDBY_PORT}]}],
        },
    }
    return [config_map, service, statefulset, pdb, network_policy]
