"""The secrets the builders place into Secrets, assembled by one pure function
every caller uses: the reconcile pass (values read from the cluster, generated
ones kept or made anew), ``headroom render`` (placeholders) and the golden
tests (fixed values).

:func:`assemble` takes the app's login (spec.database.credentialsSecret), the
server CA, what each bucket's Secret holds, and two lookups for the values
Headroom generates itself: ``kept`` (the value already in its Secret, by
Secret name and key) and ``new`` (a value made now). A pair of S3 keys is
made anew only together. Nothing here is ever logged, put into status or
an Event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from headroom.planning import object_storage, planner, versitygw

# Keys of the Secrets Headroom keeps its generated values in.
STATS_PASSWORD_KEY = "stats-password"  # noqa: S105 - a key name (the write pooler's auth Secret)
AGENT_PASSWORD_KEY = "agent-password"  # noqa: S105 - a key name (each pooler's auth Secret)
REDIS_PASSWORD_KEY = "password"  # noqa: S105 - a key name (each Redis instance's auth Secret)
ACCESS_KEY = "accessKeyId"  # the builtin S3 server's root and app key Secrets
SECRET_KEY = "secretAccessKey"  # noqa: S105 - a Secret key name

# (Secret name, key) -> a value; or None when there is none
Kept = Callable[[str, str], str | None]
New = Callable[[str, str], str]


@dataclass(frozen=True)
class Login:
    """The app's database login, from spec.database.credentialsSecret."""

    username: str
    password: str = field(repr=False)
    revision: str  # the Secret's resourceVersion


@dataclass(frozen=True)
class Credentials:
    """Secrets the builders place into Secrets (never into status, events or logs).

    ``revision`` changes whenever the source credentials change (the source
    Secret's resourceVersion), so pods that read them are rolled without any
    hash of a password appearing in an annotation. The values Headroom
    generates (kept in its Secrets, made anew when such a Secret is gone) have
    no source version: :func:`headroom.builders.revision.sources` stands in a
    salted hash for one.
    """

    username: str
    password: str
    stats_password: str
    revision: str
    # generated password of each Redis instance, by instance name
    redis_passwords: dict[str, str] = field(default_factory=dict)
    # resourceVersion of spec.database.serverCASecret (rolls the pooler when it changes)
    server_ca_revision: str = ""
    # its PEM, for the operator's own connection to the primary (not a secret)
    server_ca_pem: str | None = None
    # generated admin password of the read pooler's lag agent (read replicas only)
    agent_password: str = ""
    # generated admin password of the write pooler's agent (the assembled
    # credentials always have one; without it the pod's agent cannot log in)
    pooler_agent_password: str = ""
    # each bucket's endpoint and key, as read from its credentials Secret (a
    # bucket whose Secret is not there yet has no entry, nor binding keys)
    buckets: dict[str, object_storage.BucketCredentials] = field(default_factory=dict)
    # the builtin S3 server's generated root and app keys (builtin buckets only)
    s3_server: versitygw.ServerKeys | None = None
    # resourceVersion of spec.database.metrics.credentialsSecret (rolls the
    # exporters when it changes; its values are never read)
    monitor_revision: str = ""


def s3_endpoint(plan: planner.Plan) -> str:
    """The builtin S3 server's endpoint the app's binding names (in-cluster, plain HTTP)."""
    return f"http://{plan.names.s3_server_host}:{versitygw.S3_PORT}"


def builtin_bucket(
    plan: planner.Plan, bucket: object_storage.BucketPlan, *, keys: versitygw.ServerKeys
) -> object_storage.BucketCredentials:
    """What the binding carries for a builtin bucket: the app's keys, never root's."""
    return object_storage.BucketCredentials(
        endpoint=s3_endpoint(plan),
        region=versitygw.REGION,
        bucket=bucket.name,
        access_key_id=keys.app_access_key,
        secret_access_key=keys.app_secret_key,
        force_path_style=True,
    )


def _server_keys(plan: planner.Plan, *, kept: Kept, new: New) -> versitygw.ServerKeys | None:
    """The builtin S3 server's root and app keys: kept once made (a pair is
    made anew only together, when its Secret is gone)."""
    if not any(b.builtin is not None for b in plan.buckets):
        return None
    pairs = []
    for name in (plan.names.s3_root_keys, plan.names.s3_app_keys):
        access, secret = kept(name, ACCESS_KEY), kept(name, SECRET_KEY)
        if not access or not secret:
            access, secret = new(name, ACCESS_KEY), new(name, SECRET_KEY)
        pairs.append((access, secret))
    (root_access, root_secret), (app_access, app_secret) = pairs
    return versitygw.ServerKeys(
        root_access_key=root_access,
        root_secret_key=root_secret,
        app_access_key=app_access,
        app_secret_key=app_secret,
    )


def assemble(
    plan: planner.Plan,
    *,
    login: Login,
    kept: Kept,
    new: New,
    server_ca_pem: str | None = None,
    server_ca_revision: str = "",
    buckets: Mapping[str, object_storage.BucketCredentials] | None = None,
    monitor_revision: str = "",
) -> Credentials:
    """Everything the builders need of secrets for ``plan``. ``buckets``: the
    credentials read from each cosi/s3 bucket's Secret (a builtin bucket's
    are derived here from the server's keys)."""

    def generated(name: str, key: str) -> str:
        return kept(name, key) or new(name, key)

    names = plan.names
    s3_server = _server_keys(plan, kept=kept, new=new)
    read = buckets or {}
    found: dict[str, object_storage.BucketCredentials] = {}
    for bucket in plan.buckets:
        if bucket.builtin is not None and s3_server is not None:
            found[bucket.name] = builtin_bucket(plan, bucket, keys=s3_server)
        elif bucket.name in read:
            found[bucket.name] = read[bucket.name]
    return Credentials(
        username=login.username,
        password=login.password,
        stats_password=generated(names.pooler_auth, STATS_PASSWORD_KEY),
        revision=login.revision,
        redis_passwords={
            r.name: generated(names.redis_auth(r.name), REDIS_PASSWORD_KEY) for r in plan.redis
        },
        server_ca_revision=server_ca_revision,
        server_ca_pem=server_ca_pem,
        agent_password=generated(names.read_pooler_auth, AGENT_PASSWORD_KEY)
        if plan.read is not None
        else "",
        pooler_agent_password=generated(names.pooler_auth, AGENT_PASSWORD_KEY),
        buckets=found,
        s3_server=s3_server,
        monitor_revision=monitor_revision,
    )
