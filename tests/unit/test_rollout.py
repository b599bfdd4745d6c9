"""Which pods a new credential rolls, and what an upgrade rolls.

The oracle of "who reads a value" is the pod specs themselves: a pod reads a
value when it references (volume, env, envFrom) a Secret whose content holds
it, or the user's Secret it comes from. Every source of every example is
rotated; exactly the workloads whose pods read it get a new template revision.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headroom.api import v1alpha1
from headroom.builders import common, desired, pgbouncer, read_pooler, revision
from headroom.planning import credentials, planner
from headroom.reconcile import rollout
from tests import profiles
from tests.unit import test_golden

Obj = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet")


def _plan(example: Path) -> planner.Plan:
    return test_golden._plan(example, planner.Facts(cosi="v1alpha1"))


def _with_revisions(
    planned: planner.Plan, creds: credentials.Credentials
) -> credentials.Credentials:
    """The golden credentials, each cosi/s3 bucket's Secret with a resourceVersion
    (a builtin bucket's keys are Headroom's own: they have none)."""
    read = {b.name for b in planned.buckets if b.builtin is None}
    buckets = {
        name: dataclasses.replace(held, revision="10") if name in read else held
        for name, held in creds.buckets.items()
    }
    return dataclasses.replace(creds, buckets=buckets)


def _rotated(
    planned: planner.Plan, creds: credentials.Credentials, source: str
) -> tuple[credentials.Credentials, set[str]]:
    """``creds`` with the value of ``source`` new, and the user's Secrets that changed."""
    if source == revision.LOGIN:
        secret = planned.database.credentials_secret.name
        changed = dataclasses.replace(creds, password=creds.password + "2", revision="43")
        return changed, {secret}
    if source == revision.SERVER_CA:
        assert planned.database.server_ca_secret is not None
        changed = dataclasses.replace(creds, server_ca_revision="8")
        return changed, {planned.database.server_ca_secret.name}
    if source == revision.STATS:
        return dataclasses.replace(creds, stats_password="new-stats-pw"), set()
    if source == revision.AGENT:
        return dataclasses.replace(creds, agent_password="new-agent-pw"), set()
    if source == revision.POOLER_AGENT:
        return dataclasses.replace(creds, pooler_agent_password="new-pooler-agent-pw"), set()
    if source.startswith("redis/"):
        name = source.split("/", 1)[1]
        passwords = {**creds.redis_passwords, name: "Z" * 24}
        return dataclasses.replace(creds, redis_passwords=passwords), set()
    if source in (revision.S3_ROOT, revision.S3_APP):
        assert creds.s3_server is not None
        keys = creds.s3_server
        if source == revision.S3_ROOT:
            keys = dataclasses.replace(keys, root_secret_key="r" * 40)
        else:
            keys = dataclasses.replace(keys, app_access_key="a" * 20, app_secret_key="s" * 40)
        buckets = dict(creds.buckets)
        for bucket in planned.buckets:
            if bucket.builtin is not None:
                buckets[bucket.name] = credentials.builtin_bucket(planned, bucket, keys=keys)
        return dataclasses.replace(creds, s3_server=keys, buckets=buckets), set()
    if source.startswith("bucket/"):
        name = source.split("/", 1)[1]
        held = creds.buckets[name]
        new = dataclasses.replace(held, secret_access_key="rotated", revision="11")
        plan_of = next(b for b in planned.buckets if b.name == name)
        changed = dataclasses.replace(creds, buckets={**creds.buckets, name: new})
        return changed, {plan_of.credentials_secret}
    raise AssertionError(f"no rotation for {source}")


def _secrets_referenced(workload: Obj) -> set[str]:
    spec = workload["spec"]["template"]["spec"]
    found = set()
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            found.add(volume["secret"]["secretName"])
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                found.add(source["secretRef"]["name"])
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                found.add(ref["name"])
    return found


def _revision_of(workload: Obj) -> str:
    annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
    return str(annotations.get(revision.INPUTS_REVISION, ""))


def _cases() -> Iterator[Any]:
    for example in test_golden.EXAMPLES:
        planned = _plan(example)
        if not planned.ok:
            continue
        creds = _with_revisions(planned, test_golden.fixed_credentials(planned))
        for source in sorted(revision.sources(planned, creds)):
            yield pytest.param(example, source, id=f"{example.stem}-{source}")


@pytest.mark.parametrize(("example", "source"), list(_cases()))
def test_a_new_value_rolls_exactly_the_pods_that_read_it(example: Path, source: str) -> None:
    planned = _plan(example)
    creds = _with_revisions(planned, test_golden.fixed_credentials(planned))
    before = desired.build(planned, creds, app_pod_selector=test_golden.APP_SELECTOR)
    changed_creds, user_secrets = _rotated(planned, creds, source)
    after = desired.build(planned, changed_creds, app_pod_selector=test_golden.APP_SELECTOR)
    changed_secrets = user_secrets | {
        obj["metadata"]["name"]
        for key, obj in after.items()
        if obj["kind"] == "Secret" and obj.get("data") != before[key].get("data")
    }
    workloads = [k for k, obj in after.items() if obj["kind"] in WORKLOADS]
    readers = {k for k in workloads if _secrets_referenced(after[k]) & changed_secrets}
    rolled = {k for k in workloads if _revision_of(after[k]) != _revision_of(before[k])}
    assert rolled == readers
    # nothing of a user's value is in an annotation: only its Secret's version
    for key in rolled:
        assert changed_creds.password not in str(after[key])


def _deployment(template: dict[str, str], held: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": "shop-pooler"}
    if held is not None:
        meta["annotations"] = held
    return {
        "kind": "Deployment",
        "metadata": meta,
        "spec": {"template": {"metadata": {"annotations": template}, "spec": {}}},
    }


def _built(reads: dict[str, str]) -> Obj:
    workload = _deployment({"headroom.dev/config-hash": "c1"})
    return revision.stamp(workload, reads)


def test_an_upgrade_that_covers_more_values_rolls_nothing() -> None:
    # a template of an earlier release: one source covered, by its own annotation
    live = _deployment({"headroom.dev/config-hash": "c1", "headroom.dev/auth-revision": "42"})
    wanted = _built({"login": "42", "stats": "aa"})
    applied = rollout.carry_over(wanted, live)
    template = applied["spec"]["template"]["metadata"]["annotations"]
    assert template == live["spec"]["template"]["metadata"]["annotations"]
    # what the pods hold is recorded on the Deployment itself (no roll)
    assert revision.parse(applied["metadata"]["annotations"][revision.INPUTS_HELD]) == {
        "login": "42",
        "stats": "aa",
    }
    # the next pass, on what was applied, is the same: converged
    assert rollout.carry_over(wanted, applied) == applied


def test_a_changed_value_rolls_after_the_upgrade() -> None:
    live = rollout.carry_over(
        _built({"login": "42", "stats": "aa"}),
        _deployment({"headroom.dev/config-hash": "c1", "headroom.dev/auth-revision": "42"}),
    )
    rotated = _built({"login": "42", "stats": "bb"})
    applied = rollout.carry_over(rotated, live)
    template = applied["spec"]["template"]["metadata"]["annotations"]
    assert template == {
        "headroom.dev/config-hash": "c1",
        revision.INPUTS_REVISION: "login=42,stats=bb",
    }
    # a source newly read (a bucket added) is recorded, not rolled for
    grown = _built({"login": "42", "stats": "bb", "bucket/files": "10"})
    assert rollout.carry_over(grown, applied)["spec"]["template"] == applied["spec"]["template"]


def test_a_new_workload_or_another_kind_is_applied_as_built() -> None:
    wanted = _built({"login": "42"})
    assert rollout.carry_over(wanted, None) == wanted
    config_map: Obj = {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}
    assert rollout.carry_over(config_map, {"kind": "ConfigMap", "metadata": {}}) == config_map


# -- a read pooler whose agent did not yet RELOAD pgbouncer.ini


def earlier_read_pooler(written: Obj, data: dict[str, str]) -> Obj:
    """The read pooler's Deployment as the release before its config loop
    wrote it (as the API server returns it): PgBouncer reading the mounted
    ConfigMap, the whole ConfigMap (``data``) hashed into the template, the
    agent with the lag loop only, no ServiceAccount, no token."""
    live = copy.deepcopy(written)
    template = live["spec"]["template"]
    template["metadata"]["creationTimestamp"] = None
    annotations = template["metadata"]["annotations"]
    annotations[revision.WHOLE_CONFIG_HASH] = common.content_hash(
        data["pgbouncer.ini"], data[read_pooler.CONFIG_FILE]
    )
    held = revision.parse(annotations[revision.INPUTS_REVISION])
    held.pop(revision.READ_POOLER_CONFIG)
    annotations[revision.INPUTS_REVISION] = revision.text(held)
    live["metadata"]["annotations"][revision.INPUTS_HELD] = revision.text(held)
    pod = template["spec"]
    pod.pop("serviceAccountName")
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "agent-token"]
    config = f"{pgbouncer.READ_CONFIG_DIR}/{read_pooler.CONFIG_FILE}"
    for container in [*pod["initContainers"], *pod["containers"]]:
        if "volumeMounts" not in container:
            continue
        mounts = [m for m in container["volumeMounts"] if m["name"] != "agent-token"]
        container["volumeMounts"] = mounts
        if container["name"] == "pgbouncer":
            container["command"] = ["pgbouncer", f"{pgbouncer.READ_CONFIG_DIR}/pgbouncer.ini"]
            container["volumeMounts"] = [
                {"name": "config", "mountPath": pgbouncer.READ_CONFIG_DIR, "readOnly": True},
                *mounts,
            ]
        elif container["name"] in ("agent", "agent-init"):
            once = ["--once"] if container["name"] == "agent-init" else []
            container["command"] = ["python", "-m", read_pooler.AGENT_MODULE, "--config", config]
            container["command"] += once
            container["env"] = [e for e in container["env"] if e["name"] != "POD_NAME"]
            container["volumeMounts"] = sorted(mounts, key=lambda m: m["name"] != "config")
    return live


READS = {"database.readReplicas": profiles.external_replicas({"host": "r1.example.com"})}
READ_CREDS = credentials.Credentials(
    username="app", password="p", stats_password="x", revision="7", agent_password="ag"
)


def _read_objects(**overrides: object) -> dict[str, Obj]:
    body = profiles.base(**{**READS, **overrides})
    body["metadata"]["uid"] = "uid-1"
    return desired.build(planner.plan(v1alpha1.parse_profile(body)), READ_CREDS)


def _read_rolls(objects: dict[str, Obj], live: Obj) -> list[str]:
    data = objects["ConfigMap/shop-pooler-ro-config"]["data"]
    return rollout.reloadless_read_pooler_rolls(
        objects["Deployment/shop-pooler-ro"], live, data=data
    )


def _earlier_of(objects: dict[str, Obj]) -> Obj:
    data = objects["ConfigMap/shop-pooler-ro-config"]["data"]
    return earlier_read_pooler(objects["Deployment/shop-pooler-ro"], data)


def test_an_earlier_read_pooler_keeps_its_pods_when_only_the_agents_new_loop_is_new() -> None:
    objects = _read_objects()
    live = _earlier_of(objects)
    assert rollout.is_reloadless_read_pooler(live)
    assert not rollout.is_reloadless_read_pooler(objects["Deployment/shop-pooler-ro"])
    assert _read_rolls(objects, live) == []
    kept = rollout.with_live_template(objects["Deployment/shop-pooler-ro"], live)
    assert kept["spec"]["template"]["spec"] == live["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"app.replicas": {"min": 2, "max": 4}}, "pgbouncer.ini or readpool.json"),
        (
            {"database.readReplicas": profiles.external_replicas({"host": "r2.example.com"})},
            "pgbouncer.ini or readpool.json",
        ),
        ({"pooler.image": "ghcr.io/cloudnative-pg/pgbouncer:1.26.1"}, "the PgBouncer image"),
    ],
)
def test_an_earlier_read_pooler_rolls_for_what_it_runs_and_gains_the_agent(
    change: dict[str, object], reason: str
) -> None:
    live = _earlier_of(_read_objects())
    assert any(r.startswith(reason) for r in _read_rolls(_read_objects(**change), live))


def test_an_earlier_read_pooler_rolls_for_a_new_credential() -> None:
    objects = _read_objects()
    live = _earlier_of(objects)
    held = revision.parse(live["metadata"]["annotations"][revision.INPUTS_HELD])
    live["metadata"]["annotations"][revision.INPUTS_HELD] = revision.text(held | {"login": "6"})
    assert _read_rolls(objects, live) == ["credentials"]
    text = rollout.reloadless_read_pooler_message(["credentials"])
    assert "read pooler" in text and "credentials" in text and "RELOAD" in text
