"""The binding Secrets the app and its workers consume, following
servicebinding.io conventions.

Pure. The app's binding ``<profile>-binding``: ``type``/``provider``/``host``/
``port``/``database``/``username``/``password``/``uri`` (the Service Binding
spec's postgresql entries, pointing at the pooler) plus the environment-style
names apps already read, in the dialect of ``spec.app.client`` (docs/api.md,
"The binding"):

* ``generic`` (libpq: psycopg, SQLAlchemy, Django, asyncpg, pgx):
  ``DATABASE_URL_POOLED`` through the pooler, ``DATABASE_URL`` direct to the
  primary for migrations (spec.database.reservedConnections, never the
  pooler's budget), its ``sslmode`` as libpq reads it.
* ``prisma`` (Prisma 5, 6 and 7): ``DATABASE_URL`` through the pooler, the URL
  Prisma's docs read, with ``connection_limit`` (Prisma 5/6; Prisma 7's
  adapter-pg takes ``max`` from ``DATABASE_POOL_SIZE``) and ``pgbouncer=true``
  when the pooler cannot keep prepared statements; ``DIRECT_URL`` direct, for
  ``directUrl`` / ``prisma.config.ts``, its ``sslmode`` as Prisma reads it.
* ``node-postgres`` (pg, Knex, drizzle, TypeORM): as generic, with an
  ``sslmode`` node-postgres understands (it reads ``prefer``/``require`` as
  full verification).

With ``spec.database.serverCASecret``, every binding with database keys carries
the CA's PEM as ``DATABASE_CA_CERT``, and for sslMode verify-ca/verify-full the
direct URL names the file a pod mounts it as (:data:`CA_FILE`: ``sslrootcert``,
which libpq, asyncpg and node-postgres read; Prisma's ``sslcert``): Headroom
mounts it in the workers' pods, the app's Deployment mounts it from the binding
as docs/api.md shows.

``spec.app.bindingKeys`` renames keys to the names the app already reads
(seed 004's ``R2_*``), in every binding. Every dialect has
``DATABASE_POOL_SIZE`` (and ``DATABASE_READ_POOL_SIZE`` beside
``DATABASE_READ_URL``): the pool the budget counts for this consumer;
and ``DATABASE_PREPARED_STATEMENTS``, whether named prepared statements survive
the pooler (psycopg's ``prepare_threshold``).
Each queue's workers get a binding of their own,
``<profile>-worker-<queue>-binding``, with their queue's pool sizes, their
queue's Redis and its BullMQ name and prefix; a worker the plan gives no
database pool gets no database keys at all. Buckets add the S3 names
(:func:`headroom.builders.buckets.binding_entries`) to both; each bucket also
has its own ``type: s3`` binding Secret.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from headroom.builders import buckets, common, redis, revision
from headroom.planning import credentials, names, planner

COMPONENT = "binding"
SECRET_TYPE = "servicebinding.io/postgresql"  # noqa: S105 - a Secret type
# The primary's CA in the binding, and where a pod mounts it (the direct URL names it).
CA_KEY = "DATABASE_CA_CERT"
CA_DIR = "/etc/headroom/database-ca"
CA_FILE = f"{CA_DIR}/ca.crt"


@dataclass(frozen=True)
class Consumer:
    """Who reads a binding, with the pools the plan counts for one of its pods
    (0: none, and then no keys for that endpoint)."""

    pool_size: int
    read_pool_size: int
    queue: planner.QueuePlan | None = None


def app_consumer(plan: planner.Plan) -> Consumer:
    read = plan.read.pool_size_per_pod if plan.read is not None else 0
    return Consumer(pool_size=plan.app.pool_size_per_pod, read_pool_size=read)


def worker_consumer(queue: planner.QueuePlan) -> Consumer:
    return Consumer(
        pool_size=queue.database_pool_size,
        read_pool_size=queue.database_read_pool_size,
        queue=queue,
    )


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
    # "/" kept: a file path (sslrootcert) reads as one; every client decodes either
    return f"{uri}?{urlencode(query, safe='/')}" if query else uri


def keeps_prepared_statements(plan: planner.Plan) -> bool:
    """PgBouncer >= 1.21 with max_prepared_statements keeps a client's prepared
    statements across transactions; session mode never loses them."""
    if plan.pooler.pool_mode == "session":
        return True
    return plan.pooler.settings.get("max_prepared_statements", "0") not in ("", "0")


def _pooled_query(plan: planner.Plan, *, pool_size: int) -> dict[str, str]:
    if plan.app.client != "prisma":
        return {}
    query = {"connection_limit": str(pool_size)}
    if not keeps_prepared_statements(plan):
        query["pgbouncer"] = "true"
    return query


# Prisma knows disable/prefer/require; it verifies the server with sslaccept=strict.
_PRISMA_SSL = {
    "allow": {"sslmode": "prefer"},
    "verify-ca": {"sslmode": "require", "sslaccept": "strict"},
    "verify-full": {"sslmode": "require", "sslaccept": "strict"},
}
# node-postgres (pg-connection-string) reads prefer/require/verify-ca as
# verify-full and has no opportunistic TLS: plaintext is what works against a
# server with and without TLS (as libpq's prefer does), no-verify encrypts
# without verifying (libpq's require), verify-full checks the chain against
# Node's CAs plus NODE_EXTRA_CA_CERTS (a private CA's file) and the host name.
_NODE_POSTGRES_SSL: dict[str, dict[str, str]] = {
    "disable": {"sslmode": "disable"},
    "allow": {},
    "prefer": {},
    "require": {"sslmode": "no-verify"},
    "verify-ca": {"sslmode": "verify-full"},
    "verify-full": {"sslmode": "verify-full"},
}


def _direct_query(plan: planner.Plan) -> dict[str, str]:
    mode = plan.database.ssl_mode
    # verify-ca/verify-full check the chain against the profile's CA, as a file
    verify = mode in ("verify-ca", "verify-full") and carries_ca(plan)
    if plan.app.client == "prisma":
        return _PRISMA_SSL.get(mode, {"sslmode": mode}) | ({"sslcert": CA_FILE} if verify else {})
    if plan.app.client == "node-postgres":
        return _NODE_POSTGRES_SSL[mode] | ({"sslrootcert": CA_FILE} if verify else {})
    return {"sslmode": mode} | ({"sslrootcert": CA_FILE} if verify else {})


def carries_ca(plan: planner.Plan) -> bool:
    """Whether bindings with database keys carry CA_KEY (the profile names a CA)."""
    return plan.database.server_ca_secret is not None


def _database_entries(
    plan: planner.Plan, creds: credentials.Credentials, consumer: Consumer, *, omit: frozenset[str]
) -> dict[str, str]:
    """The direct URL, the pooled one and the pool size, in the app's dialect."""
    if not consumer.pool_size:
        return {}
    # a direct URL only where connections are kept for it: with none kept,
    # every connection the app opened on it would come out of the pooler's share
    direct = (
        postgres_uri(
            user=creds.username,
            password=creds.password,
            host=plan.database.host,
            port=plan.database.port,
            database=plan.database.name,
            query=_direct_query(plan),
        )
        if plan.database.reserved_connections
        else None
    )
    entries = {"DATABASE_URL": direct} if direct else {}
    entries["DATABASE_POOL_SIZE"] = str(consumer.pool_size)
    if direct and plan.app.client == "prisma":
        entries["DIRECT_URL"] = direct
    if carries_ca(plan):
        entries[CA_KEY] = creds.server_ca_pem or ""
    if "pooler" in omit:
        return entries
    host = plan.names.pooler_host
    pooler = functools.partial(
        postgres_uri,
        user=creds.username,
        password=creds.password,
        host=host,
        port=names.POOLER_SERVICE_PORT,
        database=plan.database.name,
    )
    pooled = pooler(query=_pooled_query(plan, pool_size=consumer.pool_size))
    entries |= {
        "type": "postgresql",
        "provider": "headroom",
        "host": host,
        "port": str(names.POOLER_SERVICE_PORT),
        "database": plan.database.name,
        "username": creds.username,
        "password": creds.password,
        "uri": pooler(),
        "DATABASE_URL_POOLED": pooled,
        # psycopg prepares named statements after 5 runs; through a pooler that
        # cannot keep them the app turns that off (prepare_threshold=None)
        "DATABASE_PREPARED_STATEMENTS": "true" if keeps_prepared_statements(plan) else "false",
    }
    if plan.app.client == "prisma":
        # What Prisma's docs and schema read; the direct URL stays DIRECT_URL.
        entries["DATABASE_URL"] = pooled
    return entries


def build(
    plan: planner.Plan, creds: credentials.Credentials, *, omit: frozenset[str] = frozenset()
) -> list[common.Obj]:
    """The app's binding and one per queue. ``omit``: components (``pooler``,
    ``redis/<name>``) the bindings must not point at (one of their objects
    belongs to somebody else)."""
    secrets = [
        _secret(
            plan,
            name=plan.names.binding,
            data=_entries(plan, creds, app_consumer(plan), omit=omit),
        )
    ]
    for queue in plan.queues:
        data = _entries(plan, creds, worker_consumer(queue), omit=omit)
        secrets.append(_secret(plan, name=plan.names.worker_binding(queue.name), data=data))
    return secrets


def worker_reads(
    plan: planner.Plan,
    creds: credentials.Credentials,
    queue: planner.QueuePlan,
    *,
    omit: frozenset[str],
    available: Mapping[str, str],
) -> dict[str, str]:
    """What a queue's workers read from their binding (as environment, at
    start): the revision of every source (builders.revision) whose value the
    binding holds, and ``binding``, a hash of the rest: the binding built with
    each secret replaced by a stand-in naming its source, so a new pool size,
    host or key name rolls them as a new password does."""
    stand_ins: dict[str, str] = {}

    def stand_in(source: str) -> str:
        # letters and digits (URLs keep them as they are); the trailing X keeps
        # one stand-in from being the start of another
        return stand_ins.setdefault(source, f"HEADROOMSOURCE{len(stand_ins)}X")

    def bucket_source(name: str) -> str:
        plan_of = next((b for b in plan.buckets if b.name == name), None)
        builtin = plan_of is not None and plan_of.builtin is not None
        return revision.S3_APP if builtin else revision.bucket(name)

    standing = dataclasses.replace(
        creds,
        password=stand_in(revision.LOGIN),
        redis_passwords={name: stand_in(revision.redis(name)) for name in creds.redis_passwords},
        buckets={
            name: dataclasses.replace(
                held,
                access_key_id=stand_in(bucket_source(name)),
                secret_access_key=stand_in(bucket_source(name)),
            )
            for name, held in creds.buckets.items()
        },
    )
    data = _entries(plan, standing, worker_consumer(queue), omit=omit)
    text = "\0".join(f"{key}={value}" for key, value in sorted(data.items()))
    reads = {revision.BINDING: common.content_hash(text)}
    for source, token in stand_ins.items():
        if token in text and source in available:
            reads[source] = available[source]
    return reads


def _entries(
    plan: planner.Plan, creds: credentials.Credentials, consumer: Consumer, *, omit: frozenset[str]
) -> dict[str, str]:
    data = _database_entries(plan, creds, consumer, omit=omit)
    data |= _read_entries(plan, creds, consumer, omit=omit)
    data |= _redis_entries(plan, creds, consumer, omit=omit)
    data |= _queue_entries(consumer)
    data |= buckets.binding_entries(plan, creds, omit=omit)
    return renamed(data, plan.app.binding_keys)


def renamed(data: dict[str, str], names: Mapping[str, str]) -> dict[str, str]:
    """spec.app.bindingKeys: a key under the name the app reads instead (the API
    keeps new names outside every name Headroom writes, so none collides)."""
    return {names.get(key, key): value for key, value in data.items()}


def _secret(plan: planner.Plan, *, name: str, data: dict[str, str]) -> common.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": common.metadata(
            plan,
            name=name,
            component=COMPONENT,
            app_name="headroom-binding",
            annotations={"headroom.dev/connection-budget": plan.budget.summary},
        ),
        "type": SECRET_TYPE,
        "data": common.secret_data(data),
    }


def queue_name_and_prefix(list_name: str) -> tuple[str, str]:
    """BullMQ keeps a queue's waiting jobs in ``<prefix>:<name>:wait`` and refuses
    a queue name with ``:``; any other list is its own name, without prefix."""
    prefix, _, rest = list_name.partition(":")
    name, _, suffix = rest.rpartition(":")
    if prefix and name and suffix == "wait" and ":" not in name:
        return name, prefix
    return list_name, ""


def _queue_entries(consumer: Consumer) -> dict[str, str]:
    """QUEUE_NAME and QUEUE_PREFIX (``new Worker(QUEUE_NAME, fn, {prefix})``)
    and QUEUE_LIST, the Redis list the workers scale on."""
    if consumer.queue is None:
        return {}
    name, prefix = queue_name_and_prefix(consumer.queue.list_name)
    entries = {"QUEUE_NAME": name, "QUEUE_LIST": consumer.queue.list_name}
    if prefix:
        entries["QUEUE_PREFIX"] = prefix
    return entries


def _read_entries(
    plan: planner.Plan, creds: credentials.Credentials, consumer: Consumer, *, omit: frozenset[str]
) -> dict[str, str]:
    """DATABASE_READ_URL: the read pooler (replicas in the read pool; the
    primary or a refusal when every replica is out, by whenAllLagging), and
    DATABASE_READ_POOL_SIZE, the per-pod read pool the read budget counts.
    Prisma's read-replicas extension reads DATABASE_READ_REPLICA_URL."""
    if plan.read is None or "pooler-ro" in omit or not consumer.read_pool_size:
        return {}
    size = consumer.read_pool_size
    url = postgres_uri(
        user=creds.username,
        password=creds.password,
        host=plan.names.read_pooler_host,
        port=names.POOLER_SERVICE_PORT,
        database=plan.database.name,
        query=_pooled_query(plan, pool_size=size),
    )
    entries = {"DATABASE_READ_URL": url, "DATABASE_READ_POOL_SIZE": str(size)}
    if plan.app.client == "prisma":
        entries["DATABASE_READ_REPLICA_URL"] = url
    return entries


def redis_url(plan: planner.Plan, instance: planner.RedisPlan, password: str) -> str:
    host = plan.names.redis_host(instance.name)
    if instance.sentinel_replicas:
        return (
            f"redis+sentinel://:{quote(password, safe='')}@{host}:{planner.SENTINEL_PORT}"
            f"/{redis.MASTER_SET}/0"
        )
    return f"redis://:{quote(password, safe='')}@{host}:{planner.REDIS_PORT}/0"


def _redis_entries(
    plan: planner.Plan, creds: credentials.Credentials, consumer: Consumer, *, omit: frozenset[str]
) -> dict[str, str]:
    """REDIS_CACHE_URL / REDIS_QUEUE_URL / REDIS_COUNTERS_URL for the instance of
    each use (the one named after it, else the first); REDIS_<NAME>_URL for
    every instance (the planner keeps the names "cache", "queue" and "counters"
    for instances of that use, so nothing collides); REDIS_URL, the one an app
    that reads a single URL uses: never an evicting instance when there is a
    queue (BullMQ on allkeys-lru loses jobs), so the queue instance then, else
    the cache, else the counters. Sentinel instances also get
    REDIS_<NAME>_SENTINELS and _MASTER. A worker gets its own queue's instance
    as REDIS_QUEUE_URL and REDIS_URL."""
    entries: dict[str, str] = {}
    instances = [r for r in plan.redis if f"redis/{r.name}" not in omit]
    urls = {r.name: redis_url(plan, r, creds.redis_passwords[r.name]) for r in instances}
    named_after_use = sorted(instances, key=lambda r: r.name != r.use)  # stable
    for instance in named_after_use:
        entries.setdefault(f"REDIS_{instance.use.upper()}_URL", urls[instance.name])
    if consumer.queue is not None and consumer.queue.redis in urls:
        entries["REDIS_QUEUE_URL"] = urls[consumer.queue.redis]
    for instance in instances:
        url = urls[instance.name]
        key = instance.name.upper().replace("-", "_")
        entries[f"REDIS_{key}_URL"] = url
        if instance.sentinel_replicas:
            host = plan.names.redis_host(instance.name)
            entries[f"REDIS_{key}_SENTINELS"] = f"{host}:{planner.SENTINEL_PORT}"
            entries[f"REDIS_{key}_MASTER"] = redis.MASTER_SET
    if instances:
        entries["REDIS_URL"] = next(
            entries[key]
            for key in ("REDIS_QUEUE_URL", "REDIS_CACHE_URL", "REDIS_COUNTERS_URL")
            if key in entries
        )
    return entries
