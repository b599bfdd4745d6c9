"""The read pooler (``<name>-pooler-ro``): PgBouncer in front of the read
replicas, with the lag agent that keeps lagging replicas out of its host list.

Pure. The pod has three Headroom parts beside PgBouncer and its exporter:

- ``agent-init`` (init container) measures every replica once and writes the
  read pool's ``[databases]`` entry into ``/run/headroom`` (an emptyDir), so
  PgBouncer starts with a host list;
- ``agent`` (sidecar) measures again every ``pollSeconds`` and, when the set
  of replicas in the pool changes, rewrites that file and RELOADs PgBouncer
  through its admin console on 127.0.0.1 (no restart; a RELOAD that changes
  the host list closes the affected server connections after their
  transaction);
- ``readpool.json`` in the ConfigMap: the replicas, the lag bounds, and what
  to do when every replica is out. The agent is Headroom's own image.
"""

from __future__ import annotations

from headroom.builders import agent_pod, common, pgbouncer, revision
from headroom.planning import credentials, membership, planner

CONFIG_FILE = "readpool.json"
AGENT_COMMAND = ("python", "-m", "headroom.agent.readpool")


def render_agent_config(plan: planner.Plan, **kwargs: str) -> str:
    return membership.read_pool_config(plan, **kwargs).to_json()


def _agent_container(plan: planner.Plan, *, name: str, once: bool, image: str) -> common.Obj:
    creds = plan.database.credentials_secret
    config = f"{pgbouncer.READ_CONFIG_DIR}/{CONFIG_FILE}"
    env: list[common.Obj] = [
        {
            "name": "PGUSER",
            "valueFrom": {"secretKeyRef": {"name": creds.name, "key": creds.username_key}},
        },
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": creds.name, "key": creds.password_key}},
        },
        {
            "name": "HEADROOM_AGENT_PASSWORD",
            "valueFrom": {
                "secretKeyRef": {
                    "name": plan.names.read_pooler_auth,
                    "key": credentials.AGENT_PASSWORD_KEY,
                }
            },
        },
    ]
    mounts = [
        {"name": "config", "mountPath": pgbouncer.READ_CONFIG_DIR, "readOnly": True},
        {"name": "run", "mountPath": agent_pod.RUN_DIR},
    ]
    if plan.database.server_ca_secret is not None:
        env.append({"name": "PGSSLROOTCERT", "value": f"{pgbouncer.CA_DIR}/ca.crt"})
        mounts.append(pgbouncer.SERVER_CA_MOUNT)
    return {
        "name": name,
        "image": image,
        "command": [*AGENT_COMMAND, "--config", config, *(["--once"] if once else [])],
        "env": env,
        "resources": agent_pod.resources(),
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
    }


def build(
    plan: planner.Plan,
    creds: credentials.Credentials,
    *,
    app_pod_selector: common.Obj | None = None,
) -> list[common.Obj]:
    """The read pooler's objects; nothing when the profile has no read replicas."""
    if plan.read is None or plan.read_pooler is None:
        return []
    image = plan.facts.agent_image
    pool = pgbouncer.Pool(
        component=pgbouncer.READ_COMPONENT,
        pooler=plan.read_pooler,
        deployment=plan.names.read_pooler,
        config=plan.names.read_pooler_config,
        auth=plan.names.read_pooler_auth,
        service=plan.names.read_pooler_service,
        config_dir=pgbouncer.READ_CONFIG_DIR,
        config_data={
            "pgbouncer.ini": pgbouncer.render_read_ini(plan),
            CONFIG_FILE: render_agent_config(plan),
        },
        users={
            creds.username: creds.password,
            planner.STATS_USER: creds.stats_password,
            planner.AGENT_USER: creds.agent_password,
        },
        auth_data={
            credentials.STATS_PASSWORD_KEY: creds.stats_password,
            credentials.AGENT_PASSWORD_KEY: creds.agent_password,
        },
        init_containers=[_agent_container(plan, name="agent-init", once=True, image=image)],
        sidecars=[_agent_container(plan, name="agent", once=False, image=image)],
        mounts=[agent_pod.run_mount()],
        volumes=[{"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        reads=(revision.LOGIN, revision.STATS, revision.AGENT, revision.SERVER_CA),
    )
    return pgbouncer.pool_objects(plan, creds, pool, app_pod_selector=app_pod_selector)
