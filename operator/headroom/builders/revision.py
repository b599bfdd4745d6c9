"""What each pod Headroom runs reads when it starts, as a revision on its
template: a new value rolls exactly the pods that read it.

Pure; used by every builder of a workload, and by the apply phase
(:mod:`headroom.reconcile.rollout`), which keeps a template as it is when a
revision only gained a source (a release that covers one more value rolls no
pod whose values did not change).

A pod reads values from *sources*, each with a revision that changes when
the value does (:func:`sources`):

- ``login``: the app's login (spec.database.credentialsSecret), by the
  Secret's resourceVersion: a value the user chose is never hashed into an
  annotation, where a weak one could be guessed offline;
- ``monitor-login``: spec.database.metrics.credentialsSecret (the exporters'
  monitoring role), by resourceVersion;
- ``server-ca``: spec.database.serverCASecret, by resourceVersion;
- ``bucket/<name>``: a cosi/s3 bucket's credentials Secret, by resourceVersion;
- ``stats``, ``agent``, ``pooler-agent``, ``redis/<instance>``, ``s3-root``,
  ``s3-app``: values Headroom generated (192 bits or more), by a salted hash
  (:func:`headroom.builders.common.secret_revision`);
- ``pooler-config``: the settings of the write pooler's pgbouncer.ini that
  PgBouncer takes only at start (planning.pgbouncer_params.RESTART_SETTINGS),
  by a hash; every other setting reaches its pods by RELOAD (its agent);
- ``pooler-ro-config``: the same of the read pooler's pgbouncer.ini (its
  agent RELOADs every other setting);
- ``redis-config/<instance>``: the directives of an instance's redis.conf
  that Redis takes only at start (planning.redis_params.restart_settings),
  by a hash; every other setting reaches its pods by CONFIG SET (their agent);
- ``binding``: for a worker, everything else its binding holds (its pools,
  hosts, keys), as a hash of the binding with each secret replaced by its
  source's name (:func:`headroom.builders.binding.worker_reads`).

The template annotation :data:`INPUTS_REVISION` lists ``source=revision``
pairs; the workload's own :data:`INPUTS_HELD` says what its running pods hold
(changing it rolls nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from headroom.builders import common
from headroom.planning import credentials, planner, versitygw

INPUTS_REVISION = "headroom.dev/inputs-revision"  # the pod template's: rolls the pods
INPUTS_HELD = "headroom.dev/inputs-held"  # the workload's: what its pods hold now
# Template annotations of earlier releases, each covering one source; the
# apply phase keeps them on a template it does not need to roll.
# An earlier release's hash of a whole config on a template (today the Redis
# pods' of a release before their agent: reconcile.rollout keeps such pods).
WHOLE_CONFIG_HASH = common.CONFIG_HASH_ANNOTATION
LEGACY_REVISIONS = (
    "headroom.dev/auth-revision",
    "headroom.dev/server-ca-revision",
    "headroom.dev/redis-auth-revision",
    "headroom.dev/s3-root-revision",
    "headroom.dev/s3-app-revision",
)

LOGIN = "login"
MONITOR_LOGIN = "monitor-login"
SERVER_CA = "server-ca"
STATS = "stats"
AGENT = "agent"
POOLER_AGENT = "pooler-agent"
POOLER_CONFIG = "pooler-config"
READ_POOLER_CONFIG = "pooler-ro-config"
S3_ROOT = "s3-root"
S3_APP = "s3-app"
BINDING = "binding"


def redis(instance: str) -> str:
    return f"redis/{instance}"


def redis_config(instance: str) -> str:
    return f"redis-config/{instance}"


def bucket(name: str) -> str:
    return f"bucket/{name}"


def generated_revision(plan: planner.Plan, value: str, *, secret: str) -> str:
    """The revision of a value Headroom generated and keeps in its Secret ``secret``."""
    return common.secret_revision(value, salt=f"{plan.namespace}/{secret}")


def server_keys(plan: planner.Plan, keys: versitygw.ServerKeys) -> dict[str, str]:
    """The builtin S3 server's root and app keys (a pair is made anew together)."""
    secret = plan.names.s3_server
    return {
        S3_ROOT: generated_revision(plan, keys.root_secret_key, secret=secret),
        S3_APP: generated_revision(
            plan, keys.app_access_key + "\0" + keys.app_secret_key, secret=secret
        ),
    }


def sources(plan: planner.Plan, creds: credentials.Credentials) -> dict[str, str]:
    """Every source a pod of ``plan`` may read, with its revision."""
    names = plan.names

    def generated(value: str, secret: str) -> str:
        return generated_revision(plan, value, secret=secret)

    found = {
        LOGIN: creds.revision,
        STATS: generated(creds.stats_password, names.pooler_auth),
    }
    if plan.database.server_ca_secret is not None:
        found[SERVER_CA] = creds.server_ca_revision
    if creds.monitor_revision:
        found[MONITOR_LOGIN] = creds.monitor_revision
    if creds.agent_password:
        found[AGENT] = generated(creds.agent_password, names.read_pooler_auth)
    if creds.pooler_agent_password:
        found[POOLER_AGENT] = generated(creds.pooler_agent_password, names.pooler_auth)
    for instance, password in creds.redis_passwords.items():
        found[redis(instance)] = generated(password, names.redis_auth(instance))
    if creds.s3_server is not None:
        found |= server_keys(plan, creds.s3_server)
    for name, held in creds.buckets.items():
        if held.revision:
            found[bucket(name)] = held.revision
    return found


def of(available: Mapping[str, str], read: Iterable[str]) -> dict[str, str]:
    """The revisions of the sources ``read`` (those ``available``)."""
    return {source: available[source] for source in read if source in available}


def text(reads: Mapping[str, str]) -> str:
    """``source=revision`` pairs, sorted, comma-separated."""
    return ",".join(f"{source}={reads[source]}" for source in sorted(reads))


def parse(value: str | None) -> dict[str, str]:
    """The pairs of :func:`text` (nothing for a value that is not of its form)."""
    pairs: dict[str, str] = {}
    for part in (value or "").split(","):
        source, sep, revision = part.partition("=")
        if sep and source:
            pairs[source] = revision
    return pairs


def template_annotations(reads: Mapping[str, str]) -> dict[str, str]:
    """The pod template's annotation (none when the pods read no source)."""
    return {INPUTS_REVISION: text(reads)} if reads else {}


def stamp(workload: common.Obj, reads: Mapping[str, str]) -> common.Obj:
    """``workload`` (a Deployment or StatefulSet) with the revision of what its
    pods read on its template and, as held, on itself."""
    if not reads:
        return workload
    value = text(reads)
    meta = workload["metadata"]
    meta["annotations"] = {**(meta.get("annotations") or {}), INPUTS_HELD: value}
    template_meta = workload["spec"]["template"].setdefault("metadata", {})
    template_meta["annotations"] = {
        **(template_meta.get("annotations") or {}),
        INPUTS_REVISION: value,
    }
    return workload
