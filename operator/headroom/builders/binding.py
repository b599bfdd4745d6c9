"""The binding Secret the app consumes, following servicebinding.io conventions.

Pure. Keys: ``type``/``provider``/``host``/``port``/``database``/``username``/
``password``/``uri`` (the Service Binding spec's postgresql entries, pointing at
the pooler) plus the environment-style names apps already read:
``DATABASE_URL_POOLED`` (through the pooler), ``DATABASE_URL`` (direct to the
primary, for migrations: it uses spec.database.reservedConnections, never the
pooler's budget), ``DATABASE_POOL_SIZE`` (the per-pod pool the budget counts).
``spec.app.client: prisma`` puts that pool size and, when the pooler cannot
keep prepared statements, ``pgbouncer=true`` into the pooled URL, and adds
``DIRECT_URL`` (Prisma's ``directUrl``). Buckets add the S3 names
(:func:`headroom.builders.buckets.binding_entries`); each bucket also has its
own ``type: s3`` binding Secret.
"""

from __future__ import annotations

import functools
from urllib.parse import quote, urlencode

from headroom.builders import buckets, common, pgbouncer, redis
from headroom.planning import plan as plan_mod

COMPONENT = "binding"
SECRET_TYPE = "servicebinding.io/postgresql"  # noqa: S105 - a Secret type


def postgres_uri(
    *,
    user: str,
    password: str,
    host: str,
    port: int,
    database: str,
    query: dict[str, str] | None = None,
) -> str:
    uri = (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@{host}:{port}/{quote(database, safe='')}"
    )
    return f"{uri}?{urlencode(query)}" if query else uri


def keeps_prepared_statements(plan: plan_mod.Plan) -> bool:
    """PgBouncer >= 1.21 with max_prepared_statements keeps a client's prepared
    statements across transactions; session mode never loses them."""
    if plan.pooler.pool_mode == "session":
        return True
    return plan.pooler.settings.get("max_prepared_statements", "0") not in ("", "0")


def _pooled_query(plan: plan_mod.Plan, *, pool_size: int | None = None) -> dict[str, str]:
    if plan.app.client != "prisma":
        return {}
    query = {"connection_limit": str(pool_size or plan.app.pool_size_per_pod)}
    if not keeps_prepared_statements(plan):
        query["pgbouncer"] = "true"
    return query


# Prisma knows disable/prefer/require; it verifies the server with sslaccept=strict.
_PRISMA_SSL = {
    "allow": {"sslmode": "prefer"},
    "verify-ca": {"sslmode": "require", "sslaccept": "strict"},
    "verify-full": {"sslmode": "require", "sslaccept": "strict"},
}


def _direct_query(plan: plan_mod.Plan) -> dict[str, str]:
    mode = plan.database.ssl_mode
    if plan.app.client == "prisma":
        return _PRISMA_SSL.get(mode, {"sslmode": mode})
    return {"sslmode": mode}


def _database_entries(plan: plan_mod.Plan, creds: common.Credentials) -> dict[str, str]:
    """What does not depend on the pooler: the direct URL and the pool size."""
    direct = postgres_uri(
        user=creds.username,
        password=creds.password,
        host=plan.database.host,
        port=plan.database.port,
        database=plan.database.name,
        query=_direct_query(plan),
    )
    entries = {"DATABASE_URL": direct, "DATABASE_POOL_SIZE": str(plan.app.pool_size_per_pod)}
    if plan.app.client == "prisma":
        entries["DIRECT_URL"] = direct
    return entries


def build(
    plan: plan_mod.Plan, creds: common.Credentials, *, omit: frozenset[str] = frozenset()
) -> list[common.Obj]:
    """``omit``: components (``pooler``, ``redis/<name>``) the binding must not
    point the app at (one of their objects belongs to somebody else)."""
    data = _database_entries(plan, creds)
    if "pooler" not in omit:
        host = plan.names.pooler_host
        pooler = functools.partial(
            postgres_uri,
            user=creds.username,
            password=creds.password,
            host=host,
            port=pgbouncer.SERVICE_PORT,
            database=plan.database.name,
        )
        uri = pooler()
        data |= {
            "type": "postgresql",
            "provider": "headroom",
            "host": host,
            "port": str(pgbouncer.SERVICE_PORT),
            "database": plan.database.name,
            "username": creds.username,
            "password": creds.password,
            "uri": uri,
            "DATABASE_URL_POOLED": pooler(query=_pooled_query(plan)),
        }
    data |= _read_entries(plan, creds, omit=omit)
    data |= _redis_entries(plan, creds, omit=omit)
    data |= buckets.binding_entries(plan, creds, omit=omit)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": common.metadata(
            plan,
            name=plan.names.binding,
            component=COMPONENT,
            app_name="headroom-binding",
            annotations={"headroom.dev/connection-budget": plan.budget.summary},
        ),
        "type": SECRET_TYPE,
        "data": common.secret_data(data),
    }
    return [secret]


def _read_entries(
    plan: plan_mod.Plan, creds: common.Credentials, *, omit: frozenset[str]
) -> dict[str, str]:
    """DATABASE_READ_URL: the read pooler (replicas in the read pool; the
    primary or a refusal when every replica is out, by whenAllLagging), and
    DATABASE_READ_POOL_SIZE, the per-pod read pool the read budget counts.
    Prisma's read-replicas extension reads DATABASE_READ_REPLICA_URL."""
    if plan.read is None or "pooler-ro" in omit:
        return {}
    size = plan.read.pool_size_per_pod
    url = postgres_uri(
        user=creds.username,
        password=creds.password,
        host=plan.names.read_pooler_host,
        port=pgbouncer.SERVICE_PORT,
        database=plan.database.name,
        query=_pooled_query(plan, pool_size=size),
    )
    entries = {"DATABASE_READ_URL": url, "DATABASE_READ_POOL_SIZE": str(size)}
    if plan.app.client == "prisma":
        entries["DATABASE_READ_REPLICA_URL"] = url
    return entries


def redis_url(plan: plan_mod.Plan, instance: plan_mod.RedisPlan, password: str) -> str:
    host = plan.names.redis_host(instance.name)
    if instance.sentinel_replicas:
        return (
            f"redis+sentinel://:{quote(password, safe='')}@{host}:{plan_mod.SENTINEL_PORT}"
            f"/{redis.MASTER_SET}/0"
        )
    return f"redis://:{quote(password, safe='')}@{host}:{plan_mod.REDIS_PORT}/0"


def _redis_entries(
    plan: plan_mod.Plan, creds: common.Credentials, *, omit: frozenset[str]
) -> dict[str, str]:
    """REDIS_URL (the cache instance, else the queue instance); REDIS_CACHE_URL /
    REDIS_QUEUE_URL for the instance of each use (the one named after it, else
    the first); and REDIS_<NAME>_URL for every instance (the planner keeps the
    names "cache" and "queue" for instances of that use, so nothing collides).
    Sentinel instances also get REDIS_<NAME>_SENTINELS and _MASTER."""
    entries: dict[str, str] = {}
    instances = [r for r in plan.redis if f"redis/{r.name}" not in omit]
    urls = {r.name: redis_url(plan, r, creds.redis_passwords[r.name]) for r in instances}
    named_after_use = sorted(instances, key=lambda r: r.name != r.use)  # stable
    for instance in named_after_use:
        entries.setdefault(f"REDIS_{instance.use.upper()}_URL", urls[instance.name])
    for instance in instances:
        url = urls[instance.name]
        key = instance.name.upper().replace("-", "_")
        entries[f"REDIS_{key}_URL"] = url
        if instance.sentinel_replicas:
            host = plan.names.redis_host(instance.name)
            entries[f"REDIS_{key}_SENTINELS"] = f"{host}:{plan_mod.SENTINEL_PORT}"
            entries[f"REDIS_{key}_MASTER"] = redis.MASTER_SET
    if instances:
        entries["REDIS_URL"] = entries.get("REDIS_CACHE_URL") or entries["REDIS_QUEUE_URL"]
    return entries
