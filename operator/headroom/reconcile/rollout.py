"""Does a workload's pod template roll for what its pods read? (pure)

A workload's template carries the revision of every source its pods read at
start (:mod:`headroom.builders.revision`), and the workload itself what its
running pods hold. A template only rolls when a value its pods hold changed:

- a source whose revision differs from what the pods hold: the pods roll
  (the desired template as built);
- a source the pods were not known to hold (a release that covers one more
  value, or a template written by an earlier release that covered fewer):
  nothing rolls; the template keeps the revision annotations it has, and the
  workload records what the pods hold from now on.

So a release that adds coverage restarts nothing, and the next change of any
covered value rolls exactly the pods that read it. Kubernetes' own controllers
take the same care: a change to a Deployment's metadata never rolls its pods,
only a change to its template does. Called by :mod:`headroom.reconcile.apply`
before a workload is compared with the cache.

Both poolers' pods take every pgbouncer.ini change by RELOAD (their
agent) except a setting PgBouncer reads only at start;
:func:`restart_settings_changed` names those a new pgbouncer.ini changes, for
the Event that says why its pods roll (:mod:`headroom.reconcile.reconciler`).
Redis pods take every redis.conf change by CONFIG SET (their agent) except a
directive Redis reads only at start: :func:`redis_restart_changed` names those.

A read pooler whose agent did not yet follow its ConfigMap
(:func:`is_reloadless_read_pooler`) keeps its template the same way, until a
change of its pgbouncer.ini (which its pods could only take by a roll) or of
what it runs (:func:`reloadless_read_pooler_rolls`).

Redis pods started by a release without that agent keep their template
(:func:`agentless_redis_rolls`, :func:`with_live_template`) as long as it
would roll for nothing: their image, memory, credentials and whole redis.conf
unchanged. The first change that restarts them anyway brings the agent; from
then on config goes online.
A cache's pods restart only when what Redis runs changes, never because a
release added a sidecar (a cache without persistence would start empty).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from headroom.builders import agent_pod, revision
from headroom.planning import agentfile, membership, pgbouncer_params, redis_params
from headroom.reconcile import compare

Obj = dict[str, Any]
PGBOUNCER_INI = "pgbouncer.ini"
REDIS_CONF = "redis.conf"
READ_POOLER_FILES = (PGBOUNCER_INI, membership.CONFIG_FILE)  # the read pooler's ConfigMap
WORKLOADS = frozenset({"Deployment", "StatefulSet"})
_TEMPLATE_REVISIONS = (revision.INPUTS_REVISION, *revision.LEGACY_REVISIONS)


def _template_annotations(obj: Obj) -> dict[str, str]:
    template = (obj.get("spec") or {}).get("template") or {}
    found = (template.get("metadata") or {}).get("annotations") or {}
    return dict(found) if isinstance(found, dict) else {}


def held(live: Obj) -> dict[str, str]:
    """What the running pods of ``live`` are known to hold: the workload's
    record, else its template's revision; nothing for an earlier release's."""
    annotations = live["metadata"].get("annotations") or {}
    recorded = annotations.get(revision.INPUTS_HELD)
    if recorded is None:
        recorded = _template_annotations(live).get(revision.INPUTS_REVISION)
    return revision.parse(recorded)


def must_roll(desired: Obj, live: Obj) -> bool:
    """Whether a value the pods of ``live`` hold has a new revision."""
    wanted = revision.parse(_template_annotations(desired).get(revision.INPUTS_REVISION))
    holding = held(live)
    return any(source in holding and holding[source] != rev for source, rev in wanted.items())


def carry_over(desired: Obj, live: Obj | None) -> Obj:
    """``desired`` as it should be applied over ``live``: with the live
    template's revision annotations unless a value its pods hold changed."""
    if desired.get("kind") not in WORKLOADS or live is None:
        return desired
    if revision.INPUTS_REVISION not in _template_annotations(desired):
        return desired
    if must_roll(desired, live):
        return desired
    kept = copy.deepcopy(desired)
    annotations = kept["spec"]["template"]["metadata"]["annotations"]
    for name in _TEMPLATE_REVISIONS:
        annotations.pop(name, None)
    live_annotations = _template_annotations(live)
    for name in _TEMPLATE_REVISIONS:
        if name in live_annotations:
            annotations[name] = live_annotations[name]
    return kept


def _start_only_changes(
    desired: Obj, live: Obj | None, *, key: str, changes: Callable[[str, str], list[str]]
) -> list[str]:
    """``changes`` of the config file ``key`` from the live ConfigMap to the
    desired one (none when it is new or holds no such file)."""
    if live is None:
        return []
    new = (desired.get("data") or {}).get(key)
    old = (live.get("data") or {}).get(key)
    if not isinstance(new, str) or not isinstance(old, str):
        return []
    return changes(old, new)


def restart_settings_changed(desired: Obj, live: Obj | None) -> list[str]:
    """The settings PgBouncer takes only at start whose value the desired
    pgbouncer.ini ConfigMap changes over the live one (none when it is new)."""
    return _start_only_changes(
        desired, live, key=PGBOUNCER_INI, changes=pgbouncer_params.restart_changes
    )


def restart_message(settings: list[str], *, which: str = "write") -> str:
    """The Event's text: ``which`` pooler (write, read) rolls for ``settings``."""
    return (
        f"pgbouncer.ini changes {', '.join(settings)}, which PgBouncer takes only at start "
        f"(SHOW CONFIG: changeable no): the {which} pooler's pods roll; every other setting "
        "is taken by RELOAD"
    )


def redis_restart_changed(desired: Obj, live: Obj | None) -> list[str]:
    """The directives Redis takes only at start whose value the desired
    redis.conf ConfigMap changes over the live one (none when it is new)."""
    return _start_only_changes(desired, live, key=REDIS_CONF, changes=redis_params.restart_changes)


def redis_restart_message(instance: str, settings: list[str]) -> str:
    return (
        f"redis.conf of instance {instance} changes {', '.join(settings)}, which Redis takes "
        "only at start (CONFIG SET refuses it): its Redis pods roll; every other setting "
        "is taken by CONFIG SET"
    )


# what a container runs and reads: a change of any rolls its pod
_RUNS = ("image", "command", "args", "env", "volumeMounts")


def _containers(workload: Obj) -> dict[str, Obj]:
    spec = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {c["name"]: c for c in spec.get("containers") or [] if isinstance(c, dict)}


def _runs_sentinel_start(container: Obj | None) -> bool:
    """Whether a Redis container runs the HA start script (not redis-server)."""
    return container is not None and (container.get("command") or [""])[0] != "redis-server"


def _memory(container: Obj) -> str:
    return str(((container.get("resources") or {}).get("limits") or {}).get("memory", ""))


def _redis_changes(want: Obj, running: Obj) -> list[str]:
    """What of the Redis container itself, part of the pod, changes: its image,
    its memory (the container's limit), each ``from -> to``."""
    found = []
    if not compare.covers(running.get("image"), want.get("image")):
        found.append(f"the Redis image {running.get('image')} -> {want.get('image')}")
    if not compare.covers(running.get("resources"), want.get("resources")):
        found.append(f"memory {_memory(running)} -> {_memory(want)}")
    return found


def redis_pod_changes(desired: Obj, live: Obj | None) -> list[str]:
    """Why the Redis pods of ``live`` (with their agent) roll for the Redis
    container itself, which no CONFIG SET changes: its image and its memory."""
    if live is None:
        return []
    running = _containers(live).get("redis")
    want = _containers(desired).get("redis")
    return _redis_changes(want, running) if running and want else []


def redis_pod_message(instance: str, changes: list[str]) -> str:
    return (
        f"Redis pods of instance {instance} roll for {', '.join(changes)}: the container "
        "itself changes, which CONFIG SET cannot; redis.conf settings are taken online"
    )


def agentless_redis_rolls(desired: Obj, live: Obj, *, data: dict[str, str]) -> list[str]:
    """Why the Redis pods of ``live``, written by a release without the
    Redis agent, must roll now (nothing: they would roll for the agent alone).
    ``data``: the desired ConfigMap's (its redis.conf); the earlier template
    carries the hash of the whole redis.conf its pods read at start. Beside
    Redis (whose start command and mounts the agent changes) a container
    rolls them for anything it runs or reads: the exporter's keys follow the
    queues."""
    reasons = _earlier_rolls(
        desired,
        live,
        config_hash=agentfile.content_hash(data.get(REDIS_CONF, "")),
        config_name="redis.conf",
        own={"redis": _redis_changes},
    )
    wanted, running = _containers(desired), _containers(live)
    if _runs_sentinel_start(wanted.get("redis")) != _runs_sentinel_start(running.get("redis")):
        reasons.append("high availability")
    return reasons


def _earlier_rolls(
    desired: Obj,
    live: Obj,
    *,
    config_hash: str,
    config_name: str,
    own: dict[str, Callable[[Obj, Obj], list[str]]],
) -> list[str]:
    """Why the pods of ``live``, written by a release whose pods read their
    whole config at start (its hash on the template), must roll now: that
    config changed (``config_hash`` is the desired one's), a container ``own``
    names changed as its function says (``want``, ``running``: the program
    itself, whose start command and mounts the agent changes), any other
    container changed what it runs or reads, or a credential changed."""
    wanted, running = _containers(desired), _containers(live)
    reasons = []
    if _template_annotations(live).get(revision.WHOLE_CONFIG_HASH) != config_hash:
        reasons.append(config_name)
    for name, container in running.items():
        want = wanted.get(name) or {}
        if name in own:
            reasons += own[name](want, container)
        elif not compare.covers(container, {k: want.get(k) for k in _RUNS}):
            reasons.append(f"its {name} container")
    if must_roll(desired, live):
        reasons.append("credentials")
    return reasons


def _image_change(what: str) -> Callable[[Obj, Obj], list[str]]:
    def changes(want: Obj, running: Obj) -> list[str]:
        if compare.covers(running.get("image"), want.get("image")):
            return []
        return [f"{what} {running.get('image')} -> {want.get('image')}"]

    return changes


def _pgbouncer_changes(want: Obj, running: Obj) -> list[str]:
    found = _image_change("the PgBouncer image")(want, running)
    if not compare.covers(running.get("resources"), want.get("resources")):
        found.append("PgBouncer's resources")
    return found


def is_reloadless_read_pooler(live: Obj) -> bool:
    """Whether ``live`` is a read-pooler Deployment of a release whose agent
    did not follow its ConfigMap: PgBouncer read the mounted pgbouncer.ini,
    and the pods rolled for any change of it."""
    agent = _containers(live).get(agent_pod.SIDECAR)
    return (
        live.get("kind") == "Deployment"
        and agent is not None
        and "--config-map" not in (agent.get("command") or [])
    )


def reloadless_read_pooler_rolls(desired: Obj, live: Obj, *, data: dict[str, str]) -> list[str]:
    """Why the read-pooler pods of ``live`` (:func:`is_reloadless_read_pooler`)
    must roll now; nothing when they would roll for the agent's new loop
    alone. ``data``: the desired ConfigMap's (pgbouncer.ini and readpool.json,
    whose hash the earlier template carries)."""
    return _earlier_rolls(
        desired,
        live,
        # in the order the earlier release hashed them
        config_hash=agentfile.content_hash(*(data.get(key, "") for key in READ_POOLER_FILES)),
        config_name="pgbouncer.ini or readpool.json",
        own={"pgbouncer": _pgbouncer_changes, agent_pod.SIDECAR: _image_change("the agent image")},
    )


def reloadless_read_pooler_message(reasons: list[str]) -> str:
    return (
        f"the read pooler's pods, started by a release whose agent did not RELOAD "
        f"pgbouncer.ini, roll for {', '.join(reasons)}; they come back with the agent that "
        "does, and from now on pool sizes and limits are taken by RELOAD"
    )


def is_agentless_redis(live: Obj) -> bool:
    """Whether ``live`` is a Redis StatefulSet of a release without the agent."""
    containers = _containers(live)
    return (
        live.get("kind") == "StatefulSet"
        and "redis" in containers
        and (agent_pod.SIDECAR not in containers)
    )


def with_live_template(desired: Obj, live: Obj) -> Obj:
    """``desired`` keeping the pod template ``live`` runs (its pods stay)."""
    kept = copy.deepcopy(desired)
    template = copy.deepcopy(live["spec"]["template"])
    template.get("metadata", {}).pop("creationTimestamp", None)
    kept["spec"]["template"] = template
    return kept


def agentless_redis_message(instance: str, reasons: list[str]) -> str:
    return (
        f"Redis pods of instance {instance}, started by a release without the config agent, "
        f"roll for {', '.join(reasons)}; they come back with the agent, and from now on "
        "redis.conf changes are taken by CONFIG SET"
    )
