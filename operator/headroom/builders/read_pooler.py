"""The read pooler (``<name>-pooler-ro``): PgBouncer in front of the read
replicas, with the agent that keeps lagging replicas out of its host list and
gives PgBouncer a new pgbouncer.ini by RELOAD.

Pure. The pod has three Headroom parts beside PgBouncer and its exporter:

- ``agent-init`` (init container) copies the mounted pgbouncer.ini into
  ``/run/headroom`` (an emptyDir, which PgBouncer starts from), measures
  every replica once and writes the read pool's ``[databases]`` entry there,
  so PgBouncer starts with a host list;
- ``agent`` (sidecar, ``headroom.agent.readpool``) measures again every
  ``pollSeconds`` and, when the set of replicas in the pool changes,
  rewrites that include file and RELOADs PgBouncer through its admin console
  on 127.0.0.1 (a RELOAD that changes the host list closes the affected
  server connections after their transaction); and, as the write pooler's
  agent does (headroom.agent.pooler), follows the ConfigMap's pgbouncer.ini
  through the API server with the pod's only token, RELOADs, RECONNECTs on a
  shrink and reports into ``<name>-pooler-ro-state``; it takes a new
  ``readpool.json`` from the ConfigMap too. Only a setting PgBouncer takes
  at start rolls the pods;
- ``readpool.json`` in the ConfigMap: the replicas, the lag bounds, and what
  to do when every replica is out. The agent is Headroom's own image.
"""

from __future__ import annotations

from headroom.builders import agent_pod, common, pgbouncer, revision
from headroom.planning import credentials, membership, planner

CONFIG_FILE = membership.CONFIG_FILE
AGENT_MODULE = "headroom.agent.readpool"


def render_agent_config(plan: planner.Plan, **kwargs: str) -> str:
    return membership.read_pool_config(plan, **kwargs).to_json()


def _agent_parts(plan: planner.Plan) -> tuple[list[str], list[common.Obj], list[common.Obj]]:
    """What both agent containers are given beside the write pooler agent's
    parts: ``--config readpool.json``, the database login they probe the
    replicas with (and the server CA), the console's agent password."""
    creds = plan.database.credentials_secret
    env: list[common.Obj] = [
        {
            "name": "PGUSER",
            "valueFrom": {"secretKeyRef": {"name": creds.name, "key": creds.username_key}},
        },
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": creds.name, "key": creds.password_key}},
        },
    ]
    mounts: list[common.Obj] = []
    if plan.database.server_ca_secret is not None:
        env.append({"name": "PGSSLROOTCERT", "value": f"{pgbouncer.CA_DIR}/ca.crt"})
        mounts.append(pgbouncer.SERVER_CA_MOUNT)
    return ["--config", f"{pgbouncer.READ_CONFIG_DIR}/{CONFIG_FILE}"], env, mounts


def build(
    plan: planner.Plan,
    creds: credentials.Credentials,
    *,
    app_pod_selector: common.Obj | None = None,
) -> list[common.Obj]:
    """The read pooler's objects; nothing when the profile has no read replicas."""
    if plan.read is None or plan.read_pooler is None:
        return []
    names = plan.names
    ini = pgbouncer.render_read_ini(plan)
    agent_json = render_agent_config(plan)
    args, env, mounts = _agent_parts(plan)
    _, sidecar_env, sidecar_mounts = _agent_parts(plan)  # objects of its own, not aliases
    password = {
        "name": "HEADROOM_AGENT_PASSWORD",
        "valueFrom": {
            "secretKeyRef": {"name": names.read_pooler_auth, "key": credentials.AGENT_PASSWORD_KEY}
        },
    }
    pool = pgbouncer.Pool(
        component=pgbouncer.READ_COMPONENT,
        pooler=plan.read_pooler,
        deployment=names.read_pooler,
        config=names.read_pooler_config,
        auth=names.read_pooler_auth,
        service=names.read_pooler_service,
        config_dir=pgbouncer.READ_CONFIG_DIR,
        config_data={"pgbouncer.ini": ini, CONFIG_FILE: agent_json},
        users={
            creds.username: creds.password,
            planner.STATS_USER: creds.stats_password,
            planner.AGENT_USER: creds.agent_password,
        },
        auth_data={
            credentials.STATS_PASSWORD_KEY: creds.stats_password,
            credentials.AGENT_PASSWORD_KEY: creds.agent_password,
        },
        init_containers=[
            agent_pod.copy_init(
                plan,
                module=AGENT_MODULE,
                config_dir=pgbouncer.READ_CONFIG_DIR,
                config_file="pgbouncer.ini",
                args=args,
                env=[*env, password],
                mounts=mounts,
            )
        ],
        sidecars=[
            agent_pod.sidecar(
                plan,
                module=AGENT_MODULE,
                args=[
                    *args,
                    *pgbouncer.online_args(
                        config_map=names.read_pooler_config, state=names.read_pooler_state
                    ),
                ],
                env=[*sidecar_env, *pgbouncer.agent_env(auth=names.read_pooler_auth)],
                mounts=[
                    {"name": "config", "mountPath": pgbouncer.READ_CONFIG_DIR, "readOnly": True},
                    *sidecar_mounts,
                ],
            )
        ],
        reads=(
            revision.LOGIN,
            revision.STATS,
            revision.AGENT,
            revision.SERVER_CA,
            revision.READ_POOLER_CONFIG,
        ),
        own_sources={revision.READ_POOLER_CONFIG: pgbouncer.restart_revision(ini)},
        start_file=pgbouncer.START_FILE,
        service_account=names.read_pooler_agent,
        extra_objects=pgbouncer.agent_objects(
            plan,
            component=pgbouncer.READ_COMPONENT,
            agent=names.read_pooler_agent,
            config=names.read_pooler_config,
            state=names.read_pooler_state,
        ),
    )
    return pgbouncer.pool_objects(plan, creds, pool, app_pod_selector=app_pod_selector)
