"""The reconcile engine against a fake of the kube layer: what a pass writes,
what it leaves alone, and what the profile's status says afterwards."""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from headroom.api import conditions
from headroom.builders import revision
from headroom.kube import errors
from headroom.planning import names, object_storage, pooler_state, queueing, recommendations
from headroom.reconcile import compare, outcome, reconciler, telemetry
from headroom.runtime import events, work_queue
from tests import certs, profiles
from tests.unit import fake_cluster, passes, test_redis_online

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = "default/shop"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _cluster(profile: dict[str, Any], *, keda: bool = False) -> fake_cluster.FakeCluster:
    cluster = fake_cluster.FakeCluster(keda=keda)
    profile = {**profile, "metadata": {**profile["metadata"], "namespace": "default"}}
    profile["metadata"].update(uid="profile-uid", generation=1)
    cluster.put(profile)
    app = profile["spec"]["app"]["deployment"]
    cluster.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": app, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": app}}},
        }
    )
    secret = profile["spec"]["database"]["credentialsSecret"]["name"]
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": "default"},
            "data": {"username": _b64("shop_app"), "password": _b64("s3cret")},
        }
    )
    return cluster


def _scaled() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / "shop-scaled.yaml").read_text())
    return body


def _run(
    cluster: fake_cluster.FakeCluster, **kwargs: Any
) -> tuple[reconciler.Reconciler, outcome.Outcome]:
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    outcome = passes.run(eng, KEY, **kwargs)
    assert outcome is not None
    return eng, outcome


def _again(eng: reconciler.Reconciler, **kwargs: Any) -> outcome.Outcome:
    outcome = passes.run(eng, KEY, **kwargs)
    assert outcome is not None
    return outcome


def _conditions(cluster: fake_cluster.FakeCluster) -> dict[str, dict[str, Any]]:
    profile = cluster.profile("default", "shop")
    assert profile is not None
    return {c["type"]: c for c in profile["status"]["conditions"]}


def _secret(cluster: fake_cluster.FakeCluster, name: str) -> dict[str, str]:
    found = cluster.find("Secret", name)
    assert found is not None
    return profiles.secret_values(found)


def test_first_pass_creates_every_child_then_a_pass_writes_nothing() -> None:
    cluster = _cluster(_scaled())
    eng, first = _run(cluster)
    applied = [key for verb, key in cluster.writes() if verb == "apply" and "/status" not in key]
    assert sorted(applied) == sorted(cluster.children("profile-uid"))
    # shop-scaled without KEDA, its app Deployment found; alert rules and dashboard,
    # the database exporter (Deployment, NetworkPolicy)
    # the worker binding, the pooler agent's four objects and each Redis agent's three included
    assert len(applied) == 40
    assert first.writes == 41  # and the status
    cluster.log.clear()
    # The pass's own writes changed its inputs: one more pass changes no child
    # and leaves what it read in status (status.converged, for a restart)...
    settled = _again(eng)
    assert not settled.skipped and settled.writes == 1
    assert cluster.writes() == [("apply", "ScalingProfile/shop/status")]
    cluster.log.clear()
    # ...the next finds nothing to do at all...
    assert _again(eng).writes == 0
    # ...and from then on, with nothing changed, a trigger is skipped without any work
    assert _again(eng).skipped
    # ...and a forced pass compares every child and writes none of them.
    forced = _again(eng, force=True)
    assert not forced.skipped
    assert forced.writes == 0
    assert cluster.writes() == []


def test_a_child_that_changes_during_a_pass_is_looked_at_again() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng)
    pooler = cluster.find("Deployment", "shop-pooler")
    assert pooler is not None
    changed = False

    async def late_status(*_: Any, **__: Any) -> None:
        nonlocal changed
        if not changed:  # the Deployment's pods become ready after the pass observed it
            assert pooler is not None
            pooler["status"] = {"readyReplicas": 2, "replicas": 2, "updatedReplicas": 2}
            cluster.put(pooler)
            changed = True

    profile = cluster.profile("default", "shop")
    assert profile is not None
    profile["spec"]["app"]["replicas"]["max"] = 9
    profile["metadata"]["generation"] = 2
    cluster.put(profile)
    cluster.post_event = late_status  # type: ignore[method-assign]
    _again(eng)
    assert changed
    assert not _again(eng).skipped  # the new status is observed
    assert _conditions(cluster)["PoolerReady"]["status"] == "True"


def test_drift_on_one_child_rewrites_only_that_child() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    service = cluster.find("Service", "shop-pooler-rw")
    assert service is not None
    service["spec"]["ports"][0]["port"] = 6543  # somebody edits a field we own
    cluster.put(service)
    cluster.log.clear()
    outcome = _again(eng)
    assert cluster.writes() == [("apply", "Service/shop-pooler-rw")]
    assert outcome.writes == 1
    repaired = cluster.find("Service", "shop-pooler-rw")
    assert repaired is not None and repaired["spec"]["ports"][0]["port"] == 5432


def test_a_field_another_manager_adds_is_not_drift() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    deployment = cluster.find("Deployment", "shop-worker-emails")
    assert deployment is not None
    deployment["spec"]["replicas"] = 7  # the HPA scaled it
    deployment["status"] = {"readyReplicas": 7}
    cluster.put(deployment)
    cluster.log.clear()
    outcome = _again(eng)
    assert not outcome.skipped  # the child's version changed: looked at again
    assert [k for _, k in cluster.writes() if not k.endswith("/status")] == []


def test_the_pooler_agents_reports_are_theirs_not_drift() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    state = cluster.find("ConfigMap", "shop-pooler-state")
    assert state is not None and not state.get("data")
    report = '{"config":"abc","maxDbConnections":29,"serverConnections":3,"at":"x"}'
    state["data"] = {"shop-pooler-6d5f-abcde": report}  # an agent's merge patch
    cluster.put(state)
    cluster.log.clear()
    _again(eng)
    assert [k for _, k in cluster.writes() if not k.endswith("/status")] == []
    kept = cluster.find("ConfigMap", "shop-pooler-state")
    assert kept is not None and kept["data"] == {"shop-pooler-6d5f-abcde": report}


def _pooler_pod(cluster: fake_cluster.FakeCluster, name: str) -> None:
    deployment = cluster.find("Deployment", "shop-pooler")
    assert deployment is not None
    labels = deployment["spec"]["selector"]["matchLabels"]
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": dict(labels)},
        }
    )


def test_the_reports_of_pooler_pods_that_are_gone_are_removed_by_a_merge_patch() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng)
    deployment = cluster.find("Deployment", "shop-pooler")
    assert deployment is not None
    pods = pooler_state.pods_of(deployment)
    report = '{"config":"abc","maxDbConnections":29,"serverConnections":3,"at":"x"}'
    now = [f"shop-pooler-new-{i}" for i in range(pods)]
    for name in now:
        _pooler_pod(cluster, name)
    # another profile's pod with a name the ConfigMap could hold: never counted as ours
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "shop-pooler-old-0", "namespace": "default", "labels": {}},
        }
    )
    state = cluster.find("ConfigMap", "shop-pooler-state")
    assert state is not None
    # as many keys as pods: nothing is listed, nothing written (a steady pooler)
    state["data"] = {name: report for name in now[:-1]} | {"shop-pooler-old-0": report}
    cluster.put(state)
    cluster.log.clear()
    _again(eng)
    assert ("list", "Pod") not in cluster.log
    assert [k for _, k in cluster.writes() if not k.endswith("/status")] == []
    # a rollout: the last new pod reports beside the old one's key
    state = cluster.find("ConfigMap", "shop-pooler-state")
    assert state is not None
    # (one more old pod still terminating: gone too, nothing triggers a pass when it goes)
    _pooler_pod(cluster, "shop-pooler-old-2")
    terminating = cluster.find("Pod", "shop-pooler-old-2")
    assert terminating is not None
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cluster.put(terminating)
    state["data"] = {
        **state["data"],
        now[-1]: report,
        "shop-pooler-old-1": "not json",
        "shop-pooler-old-2": report,
    }
    cluster.put(state)
    cluster.log.clear()
    _again(eng)
    assert cluster.log.count(("list", "Pod")) == 1
    assert [k for _, k in cluster.writes() if not k.endswith("/status")] == [
        "ConfigMap/shop-pooler-state"
    ]
    kept = cluster.find("ConfigMap", "shop-pooler-state")
    assert kept is not None and sorted(kept["data"]) == now
    # and then it is steady again: no list, no write
    _again(eng)
    cluster.log.clear()
    _again(eng)
    assert ("list", "Pod") not in cluster.log and cluster.writes() == []


def _pool_size(cluster: fake_cluster.FakeCluster) -> int:
    config = cluster.find("ConfigMap", "shop-pooler-config")
    assert config is not None
    (line,) = [
        x for x in config["data"]["pgbouncer.ini"].splitlines() if x.startswith("default_pool_size")
    ]
    return int(line.split("=")[1])


def _report(
    cluster: fake_cluster.FakeCluster,
    *,
    per_second: float,
    seconds: float,
    pooler: str = "shop-pooler",
) -> None:
    """The write pooler's agents (or ``pooler``'s) report a load (each pod the same
    share of it)."""
    state = cluster.find("ConfigMap", f"{pooler}-state")
    assert state is not None
    figures = recommendations.PoolFigures(
        transactions_per_second=per_second,
        seconds_per_transaction=seconds,
        clients_waiting=0,
        max_wait_seconds=0.0,
        servers_active=1,
        servers_idle=3,
    )
    state["data"] = {
        pod: pooler_state.Entry(
            config="abc",
            max_db_connections=29,
            server_connections=4,
            at="x",
            observed=figures.report(),
        ).text()
        for pod in (f"{pooler}-6d5f-abcde", f"{pooler}-6d5f-fghij")
    }
    cluster.put(state)


def test_auto_tune_applies_the_recommendation_once_then_writes_nothing() -> None:
    body = _scaled()
    body["spec"]["pooler"]["autoTune"] = {"enabled": True}
    cluster = _cluster(body)
    eng, _ = _run(cluster)
    filled = _pool_size(cluster)
    # 20 transactions/s x 0.1 s = 2 busy per pod: 5 meet the default 5 %
    needed, _ = queueing.servers_needed(offered_load=2.0, target_wait_probability=0.05)
    assert filled >= 2 * needed
    _report(cluster, per_second=20.0, seconds=0.1)
    cluster.log.clear()
    tuned = _again(eng)
    # with a quarter of headroom (the agent's reporting band), at least one
    size = needed + max(1, round(recommendations.TUNE_HEADROOM * needed))
    assert _pool_size(cluster) == size
    (event,) = [e for e in tuned.events if e.reason == "PoolTuned"]
    assert f"default_pool_size {filled} -> {size}" in event.message
    assert "20 transactions/s x 0.1 s" in event.message
    profile = cluster.profile("default", "shop")
    assert profile is not None
    tuning = profile["status"]["tuning"]
    assert tuning["defaultPoolSize"] == size and len(tuning["changes"]) == 1
    # the load is what the pool is now sized for: no recommendation, no change, no write
    assert "recommendations" not in profile["status"]
    _again(eng)  # the pass that changes nothing records status.converged
    cluster.log.clear()
    steady = _again(eng)
    assert [k for _, k in cluster.writes()] == [] and steady.writes == 0
    # the same figures wobbling inside the band: still nothing
    _report(cluster, per_second=21.0, seconds=0.1)
    cluster.log.clear()
    _again(eng)
    assert [k for _, k in cluster.writes() if not k.endswith("/status")] == []
    assert _pool_size(cluster) == size
    # off again: back to the plan's size, status.tuning gone
    profile = cluster.profile("default", "shop")
    assert profile is not None
    profile["spec"]["pooler"]["autoTune"] = {"enabled": False}
    profile["metadata"]["generation"] = 2
    cluster.put(profile)
    _again(eng)
    assert _pool_size(cluster) == filled
    profile = cluster.profile("default", "shop")
    assert profile is not None and "tuning" not in profile["status"]


def test_auto_tune_is_bound_by_changes_per_hour() -> None:
    body = _scaled()
    body["spec"]["pooler"]["autoTune"] = {"enabled": True, "maxChangesPerHour": 1}
    cluster = _cluster(body)
    eng, _ = _run(cluster)
    _report(cluster, per_second=20.0, seconds=0.1)
    _again(eng)
    first = _pool_size(cluster)
    # the load doubles within the hour: recommended, not applied
    _report(cluster, per_second=80.0, seconds=0.1)
    later = _again(eng)
    assert _pool_size(cluster) == first
    assert not [e for e in later.events if e.reason == "PoolTuned"]
    profile = cluster.profile("default", "shop")
    assert profile is not None
    (entry,) = profile["status"]["recommendations"]
    assert entry["recommended"] > first


def test_the_read_poolers_report_reaches_status() -> None:
    """The pass reads the read pooler's state ConfigMap (a child, cached like the
    rest) and status.recommendations says what the read figures call for; the same
    figures wobbling inside their band leave the entry as it is (its figures too) and
    write no child."""
    body = _scaled()
    body["spec"]["database"]["readReplicas"] = {
        "mode": "external",
        "hosts": [{"host": "shop-replica.default.svc", "maxConnections": 40}],
        "readPoolSizePerPod": 20,
    }
    cluster = _cluster(body)
    eng, _ = _run(cluster)

    # 100 reads/s x 0.1 s = 10 busy on each read-pooler pod: more than the replica's
    # room per pod (40 max_connections) gives
    _report(cluster, per_second=100.0, seconds=0.1, pooler="shop-pooler-ro")
    _again(eng)
    profile = cluster.profile("default", "shop")
    assert profile is not None
    (entry,) = [
        e for e in profile["status"]["recommendations"] if e["kind"] == "ReadPoolOverBudget"
    ]
    assert entry["field"] == "spec.database.readReplicas.hosts[0].maxConnections"
    assert entry["current"] == 40 and entry["recommended"] > 40
    _report(cluster, per_second=104.0, seconds=0.1, pooler="shop-pooler-ro")
    cluster.log.clear()
    _again(eng)
    assert [k for _, k in cluster.writes() if not k.endswith("/status")] == []
    profile = cluster.profile("default", "shop")
    assert profile is not None
    assert entry in profile["status"]["recommendations"]


def test_a_spec_change_writes_only_what_it_changes() -> None:
    body = _scaled()
    cluster = _cluster(body)
    eng, _ = _run(cluster)
    profile = cluster.profile("default", "shop")
    assert profile is not None
    profile["spec"]["queues"][0]["backlogPerWorker"] = 50
    profile["metadata"]["generation"] = 2
    cluster.put(profile)
    cluster.log.clear()
    _again(eng)
    children = sorted(k for v, k in cluster.writes() if "/status" not in k)
    # without KEDA the backlog target is in no workload: only the alert on the
    # backlog the workers' ceiling drains, and its dashboard panel, change
    assert children == ["ConfigMap/shop-alert-rules", "ConfigMap/shop-dashboard"]
    profile = cluster.profile("default", "shop")
    assert profile is not None
    profile["spec"]["app"]["replicas"]["max"] = 8
    profile["metadata"]["generation"] = 3
    cluster.put(profile)
    cluster.log.clear()
    _again(eng)
    children = sorted(k for v, k in cluster.writes() if "/status" not in k)
    assert "HorizontalPodAutoscaler/shop-app" in children
    assert "Deployment/shop-worker-emails" not in children


def test_a_refused_child_does_not_stop_the_others_and_status_names_it() -> None:
    cluster = _cluster(_scaled())
    refused = errors.ApiError(
        status=422, reason="Invalid", message='StatefulSet "shop-redis-jobs" is invalid: spec'
    )
    cluster.fail["StatefulSet/shop-redis-jobs"] = refused
    _, outcome = _run(cluster)
    assert cluster.find("Deployment", "shop-pooler") is not None
    assert cluster.find("HorizontalPodAutoscaler", "shop-app") is not None
    assert cluster.find("StatefulSet", "shop-redis-cache") is not None
    assert cluster.find("StatefulSet", "shop-redis-jobs") is None
    applied = _conditions(cluster)[conditions.CHILDREN_APPLIED]
    assert applied["status"] == "False" and applied["reason"] == "ApplyFailed"
    assert "StatefulSet/shop-redis-jobs: 422 Invalid" in applied["message"]
    assert _conditions(cluster)["Ready"]["status"] == "False"
    assert not outcome.retry  # 422 is not transient: the next change retries


def test_a_transient_failure_asks_for_a_retry() -> None:
    cluster = _cluster(_scaled())
    cluster.fail["ConfigMap/shop-pooler-config"] = errors.UnavailableError("timed out")
    eng, outcome = _run(cluster)
    assert outcome.retry
    del cluster.fail["ConfigMap/shop-pooler-config"]
    # the memo is not clean: an unchanged fingerprint does not skip the retry
    again = _again(eng)
    assert not again.skipped
    assert cluster.find("ConfigMap", "shop-pooler-config") is not None
    assert _conditions(cluster)[conditions.CHILDREN_APPLIED]["status"] == "True"


def test_a_foreign_object_contains_its_component_and_the_binding_skips_it() -> None:
    cluster = _cluster(_scaled())
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shop-pooler-config", "namespace": "default"},
            "data": {"pgbouncer.ini": "[databases]\n* = host=attacker.example\n"},
        }
    )
    _run(cluster)
    # nothing of the pooler is applied, the foreign object is untouched
    assert cluster.find("Deployment", "shop-pooler") is None
    assert cluster.find("Secret", "shop-pooler-auth") is None
    foreign = cluster.find("ConfigMap", "shop-pooler-config")
    assert foreign is not None and "attacker" in foreign["data"]["pgbouncer.ini"]
    # the rest is applied, and the binding does not point the app at the pooler
    assert cluster.find("StatefulSet", "shop-redis-cache") is not None
    binding = _secret(cluster, "shop-binding")
    assert "DATABASE_URL_POOLED" not in binding and "uri" not in binding
    assert binding["REDIS_CACHE_URL"].startswith("redis://")
    # the workers read the binding's database URL... which is not there: they
    # still run (their queue is in Redis); the pooler condition says why
    pooler = _conditions(cluster)["PoolerReady"]
    assert pooler["reason"] == "NameConflict"
    assert "ConfigMap/shop-pooler-config" in pooler["message"]


def _foreign(kind: str, name: str, *, marks: bool) -> dict[str, Any]:
    """Somebody else's object with one of our children's names; ``marks``: it
    carries our labels and the retain annotation (which anyone can write)."""
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if marks:
        meta["labels"] = names.labels(
            "shop", app_deployment="shop-web", component="pooler", app_name="pgbouncer"
        )
        meta["annotations"] = {object_storage.RETAIN_ANNOTATION: "true"}
    data = {"pgbouncer.ini": "[databases]\n* = host=attacker.example\n"}
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, "data": data}


def test_our_labels_and_the_retain_annotation_do_not_make_an_object_ours() -> None:
    cluster = _cluster(_scaled())
    cluster.put(_foreign("ConfigMap", "shop-pooler-config", marks=True))
    _run(cluster)
    foreign = cluster.find("ConfigMap", "shop-pooler-config")
    assert foreign is not None and "attacker" in foreign["data"]["pgbouncer.ini"]
    assert "ownerReferences" not in foreign["metadata"]
    assert cluster.find("Deployment", "shop-pooler") is None
    assert _conditions(cluster)["PoolerReady"]["reason"] == "NameConflict"
    assert "DATABASE_URL_POOLED" not in _secret(cluster, "shop-binding")


def test_a_child_replaced_after_convergence_contains_its_whole_component() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng)
    assert cluster.find("Deployment", "shop-pooler") is not None
    workers_before = _pod_annotations(cluster, "Deployment", "shop-worker-emails")
    # while the operator was away, the pooler's config became somebody else's
    ours = cluster.find("ConfigMap", "shop-pooler-config")
    assert ours is not None
    asyncio.run(cluster.delete(ours))
    cluster.put(_foreign("ConfigMap", "shop-pooler-config", marks=True))
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())  # a restarted operator
    _again(eng)
    # no pod of ours mounts it: the pooler's Deployment is gone, nothing of it applied
    assert cluster.find("Deployment", "shop-pooler") is None
    foreign = cluster.find("ConfigMap", "shop-pooler-config")
    assert foreign is not None and "attacker" in foreign["data"]["pgbouncer.ini"]
    found = _conditions(cluster)
    assert found["PoolerReady"]["reason"] == "NameConflict"
    assert found[conditions.CHILDREN_OWNED]["reason"] == "NameConflict"
    assert found["Ready"]["status"] == "False"
    binding = _secret(cluster, "shop-binding")
    assert "DATABASE_URL_POOLED" not in binding and "uri" not in binding
    # the workers read the binding as environment: they roll onto the new one
    workers_after = _pod_annotations(cluster, "Deployment", "shop-worker-emails")
    assert workers_after[revision.INPUTS_REVISION] != workers_before[revision.INPUTS_REVISION]
    # once the other object is gone, the component comes back whole
    asyncio.run(cluster.delete(foreign))
    _again(eng)
    _again(eng)
    assert cluster.find("Deployment", "shop-pooler") is not None
    assert _conditions(cluster)["PoolerReady"]["reason"] != "NameConflict"


def test_a_replaced_redis_config_scales_its_statefulset_away_and_contains_its_queue() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    ours = cluster.find("ConfigMap", "shop-redis-jobs-config")
    assert ours is not None
    asyncio.run(cluster.delete(ours))
    cluster.put(_foreign("ConfigMap", "shop-redis-jobs-config", marks=False))
    _again(eng)
    redis = cluster.find("StatefulSet", "shop-redis-jobs")
    assert redis is not None and redis["spec"]["replicas"] == 0  # its volumes stay
    assert cluster.find("Deployment", "shop-worker-emails") is None  # its queue's workers
    found = _conditions(cluster)
    assert found["CacheReady"]["reason"] == "NameConflict"
    assert found["WorkersReady"]["reason"] == "NameConflict"
    assert "REDIS_JOBS_URL" not in _secret(cluster, "shop-binding")


def test_a_foreign_redis_secret_contains_the_queue_that_needs_it() -> None:
    cluster = _cluster(_scaled())
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-redis-jobs-auth", "namespace": "default"},
            "data": {"password": _b64("theirs")},
        }
    )
    _run(cluster)
    assert cluster.find("StatefulSet", "shop-redis-jobs") is None
    assert cluster.find("Deployment", "shop-worker-emails") is None  # depends on redis/jobs
    assert cluster.find("StatefulSet", "shop-redis-cache") is not None
    binding = _secret(cluster, "shop-binding")
    assert "REDIS_JOBS_URL" not in binding and "REDIS_QUEUE_URL" not in binding
    owned = _conditions(cluster)[conditions.CHILDREN_OWNED]
    assert owned["status"] == "False"
    assert "queue/emails" in owned["message"] and "redis/jobs" in owned["message"]


def test_keys_removed_from_a_secret_disappear() -> None:
    body = _scaled()
    cluster = _cluster(body)
    eng, _ = _run(cluster)
    assert "REDIS_JOBS_URL" in _secret(cluster, "shop-binding")
    profile = cluster.profile("default", "shop")
    assert profile is not None
    del profile["spec"]["cache"]
    del profile["spec"]["queues"]
    profile["metadata"]["generation"] = 2
    cluster.put(profile)
    _again(eng)
    binding = _secret(cluster, "shop-binding")
    assert not [k for k in binding if k.startswith("REDIS_")]
    assert ("patch", "Secret/shop-binding") in cluster.writes()
    # the Redis children are pruned, the pooler stays
    assert cluster.find("StatefulSet", "shop-redis-jobs") is None
    assert cluster.find("Deployment", "shop-pooler") is not None


def test_failure_paths_keep_the_last_known_status() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    before = cluster.profile("default", "shop")
    assert before is not None
    del cluster.objects[("Secret", "default", "shop-db")]
    _again(eng)
    after = cluster.profile("default", "shop")
    assert after is not None
    assert after["status"]["pooler"] == before["status"]["pooler"]
    assert after["status"]["binding"] == before["status"]["binding"]
    conditions = {c["type"]: c for c in after["status"]["conditions"]}
    assert conditions["PoolerReady"]["reason"] == "CredentialsNotFound"
    assert "CacheReady" in conditions and "WorkersReady" in conditions  # kept
    assert conditions["Ready"]["status"] == "False"
    # nothing was pruned or applied on the way
    assert cluster.find("Deployment", "shop-pooler") is not None


def test_status_is_written_only_when_it_changes() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng, force=True)  # changes no child: status.converged
    cluster.log.clear()
    _again(eng, force=True)
    _again(eng, force=True)
    assert [k for _, k in cluster.writes() if k.endswith("/status")] == []


def test_a_normalised_field_is_applied_once_not_forever() -> None:
    cluster = _cluster(_scaled())

    def drop_service_links(obj: dict[str, Any]) -> None:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is not None:
            pod.pop("enableServiceLinks", None)  # a server that rewrites a field

    cluster.normalise = drop_service_links
    eng, _ = _run(cluster)
    _again(eng, force=True)  # changes no child: status.converged
    cluster.log.clear()
    _again(eng, force=True)
    assert cluster.writes() == []


def test_keda_arriving_prunes_the_hpa_before_applying_the_scaledobject() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    assert cluster.find("HorizontalPodAutoscaler", "shop-worker-emails") is not None
    cluster.keda = True
    cluster.log.clear()
    _again(eng)
    order = [k for _, k in cluster.writes()]
    hpa = order.index("HorizontalPodAutoscaler/shop-worker-emails")
    scaled = order.index("ScaledObject/shop-worker-emails")
    assert cluster.writes()[hpa][0] == "delete"
    assert hpa < scaled
    assert cluster.find("HorizontalPodAutoscaler", "shop-worker-emails") is None


def test_a_composed_kind_that_vanishes_mid_pass_is_retried() -> None:
    cluster = _cluster(_scaled(), keda=True)
    cluster.fail["ScaledObject/shop-worker-emails"] = errors.NotServedError(
        "ScaledObject.keda.sh/v1alpha1 is no longer served by the API server"
    )
    _, outcome = _run(cluster)
    assert outcome.retry
    applied = _conditions(cluster)[conditions.CHILDREN_APPLIED]
    assert "ScaledObject/shop-worker-emails" in applied["message"]


def test_an_impossible_profile_changes_nothing() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    profile = cluster.profile("default", "shop")
    assert profile is not None
    profile["spec"]["pooler"]["parameters"] = {"default_pool_size": "90"}  # 3 pods x 90 > 92
    profile["metadata"]["generation"] = 2
    cluster.put(profile)
    cluster.log.clear()
    _again(eng)
    assert [k for _, k in cluster.writes()] == ["ScalingProfile/shop/status"]
    assert _conditions(cluster)["ConnectionBudget"]["reason"] == "BudgetExceeded"


def test_a_deleted_profile_releases_its_input_watches() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    assert cluster.inputs_used[KEY] == {
        ("Deployment", "default", "shop-web"),
        ("Secret", "default", "shop-db"),
    }
    del cluster.objects[("ScalingProfile", "default", "shop")]
    assert passes.run(eng, KEY) is None
    assert cluster.inputs_used[KEY] == set()


def test_the_legacy_finalizer_is_removed() -> None:
    body = _scaled()
    body["metadata"]["finalizers"] = ["headroom.dev/finalizer"]
    cluster = _cluster(body)
    _run(cluster)
    profile = cluster.profile("default", "shop")
    assert profile is not None
    assert profile["metadata"]["finalizers"] == ["headroom.dev/in-use-protection"]


def test_generated_passwords_are_kept_and_never_in_status_or_events() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    password = _secret(cluster, "shop-redis-cache-auth")["password"]
    profile = cluster.profile("default", "shop")
    assert profile is not None
    profile["spec"]["app"]["replicas"]["max"] = 9
    profile["metadata"]["generation"] = 2
    cluster.put(profile)
    _again(eng)
    assert _secret(cluster, "shop-redis-cache-auth")["password"] == password
    shown = repr(cluster.profile("default", "shop")) + repr(cluster.events)
    assert password not in shown and "s3cret" not in shown


def _pod_annotations(cluster: fake_cluster.FakeCluster, kind: str, name: str) -> dict[str, str]:
    found = cluster.find(kind, name)
    assert found is not None
    annotations: dict[str, str] = found["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_a_regenerated_redis_password_rolls_the_redis_pods_and_the_workers() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng)
    password = _secret(cluster, "shop-redis-jobs-auth")["password"]
    pods = [("StatefulSet", "shop-redis-jobs"), ("Deployment", "shop-worker-emails")]
    before = [_pod_annotations(cluster, *pod) for pod in pods]
    secret = cluster.find("Secret", "shop-redis-jobs-auth")
    assert secret is not None
    asyncio.run(cluster.delete(secret))
    cluster.log.clear()
    _again(eng, force=True)
    new_password = _secret(cluster, "shop-redis-jobs-auth")["password"]
    assert new_password != password
    for pod, old in zip(pods, before, strict=True):
        annotations = _pod_annotations(cluster, *pod)
        key = revision.INPUTS_REVISION
        assert (
            revision.parse(annotations[key])[revision.redis("jobs")]
            != (revision.parse(old[key])[revision.redis("jobs")])
        ), pod
        assert new_password not in repr(cluster.find(*pod))
    # the other instance kept its password, so its pods stay as they are
    assert ("apply", "StatefulSet/shop-redis-cache") not in cluster.writes()


@pytest.mark.parametrize("kind", ["Secret", "ConfigMap"])
def test_desired_hash_leaves_secret_values_out(kind: str) -> None:
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}, "data": {"k": "djE="}}
    changed = {**obj, "data": {"k": "djI="}}
    same = compare.desired_hash(obj) == compare.desired_hash(changed)
    assert same is (kind == "Secret")


def _two_on_one_server(order: tuple[str, str]) -> fake_cluster.FakeCluster:
    """shop (examples/shop-scaled.yaml) and admin on shop-db, passes in ``order``."""
    cluster = _cluster(_scaled())
    newer = _scaled()
    newer["metadata"] = {"name": "admin", "namespace": "default", "uid": "admin-uid"}
    newer["metadata"].update(creationTimestamp="2999-01-01T00:00:00Z", generation=1)
    cluster.put(newer)
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    for _ in range(2):  # the second round: what the first one's statuses changed
        for key in order:
            passes.run(eng, f"default/{key}")
    return cluster


def test_two_profiles_on_one_server_share_it_whatever_order_the_passes_run_in() -> None:
    budgets = []
    for order in (("shop", "admin"), ("admin", "shop")):
        cluster = _two_on_one_server(order)
        found = {}
        for name in ("shop", "admin"):
            body = cluster.profile("default", name)
            assert body is not None
            conditions = {c["type"]: c for c in body["status"]["conditions"]}
            assert conditions["ConnectionBudget"]["status"] == "True", conditions
            budget = body["status"]["budget"]
            found[name] = (budget["serverConnections"], budget["sharedWith"], budget["held"])
        budgets.append(found)
    assert budgets[0] == budgets[1]
    shop, admin = budgets[0]["shop"], budgets[0]["admin"]
    # both within the server's 97 beside what each keeps: 5 for direct use and 3 for
    # its postgres_exporter
    assert shop[0] + admin[0] + 2 * (5 + 3) <= 97
    assert shop[1] == [{"profile": "default/admin", "serverConnections": admin[0] + 5 + 3}]
    # what it holds there: its pool and what it keeps
    assert shop[2] == [
        {"server": "shop-db.default.svc:5432", "connections": shop[0] + 5 + 3, "pooled": shop[0]}
    ]


def test_a_profile_whose_minimum_does_not_fit_is_refused_and_applies_nothing() -> None:
    cluster = _cluster(_scaled())  # shop: 1 server connection per pooler pod guaranteed
    newer = _scaled()
    newer["metadata"] = {"name": "admin", "namespace": "default", "uid": "admin-uid"}
    newer["metadata"].update(creationTimestamp="2999-01-01T00:00:00Z", generation=1)
    # 55 sessions: 28 per pod, 3 at peak (84, and 8 kept), beside shop's minimum in 97;
    # alone they would fit the 89 the server leaves it
    newer["spec"]["pooler"]["poolMode"] = "session"
    newer["spec"]["app"]["replicas"]["max"] = 5
    newer["spec"]["app"]["poolSizePerPod"] = 11
    del newer["spec"]["cache"]
    newer["spec"]["queues"] = []
    cluster.put(newer)
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    passes.run(eng, "default/shop")
    passes.run(eng, "default/admin")
    admin = cluster.profile("default", "admin")
    assert admin is not None
    budget = {c["type"]: c for c in admin["status"]["conditions"]}["ConnectionBudget"]
    assert budget["reason"] == "BudgetExceeded" and "default/shop" in budget["message"]
    assert "do not fit" in budget["message"]
    assert cluster.children("admin-uid") == {}  # nothing of it was applied
    shop = cluster.profile("default", "shop")
    assert shop is not None and _conditions(cluster)["ConnectionBudget"]["status"] == "True"
    assert shop["status"]["budget"]["server"] == "shop-db.default.svc:5432"


def _claim(name: str, *, phase: str, storage_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"]}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
        "status": {"phase": phase},
    }


@pytest.mark.parametrize(
    ("storage_class", "class_exists", "needle"),
    [
        ("fast", False, "StorageClass fast does not exist (spec.cache.instances[1].persistence"),
        ("standard", True, "waiting for StorageClass standard to provision a volume"),
        (None, False, "names no StorageClass and the cluster has no default one: set "
         "spec.cache.instances[1].persistence.storageClassName"),
    ],
)  # fmt: skip
def test_a_pending_data_claim_is_named_in_cache_ready(
    storage_class: str | None, class_exists: bool, needle: str
) -> None:
    cluster = _cluster(_scaled())
    cluster.put(_claim("data-shop-redis-jobs-0", phase="Pending", storage_class=storage_class))
    if class_exists:
        cluster.put(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": storage_class, "namespace": ""},
            }
        )
    _run(cluster)
    cache = _conditions(cluster)["CacheReady"]
    assert (cache["status"], cache["reason"]) == ("False", "ClaimPending")
    assert "PersistentVolumeClaim data-shop-redis-jobs-0 is Pending: " in cache["message"]
    assert needle in cache["message"]


def test_a_bound_claim_or_a_ready_statefulset_reads_no_claim() -> None:
    cluster = _cluster(_scaled())
    cluster.put(_claim("data-shop-redis-jobs-0", phase="Bound", storage_class="standard"))
    _run(cluster)
    assert _conditions(cluster)["CacheReady"]["reason"] == "PodsNotReady"
    assert ("get", "PersistentVolumeClaim/data-shop-redis-jobs-0") in cluster.log
    # the cache instance has no persistence: its claims are never asked for
    assert not any("data-shop-redis-cache" in entry for _, entry in cluster.log)


def _with_ca(pem: str) -> fake_cluster.FakeCluster:
    body = _scaled()
    body["spec"]["database"]["sslMode"] = "verify-full"
    body["spec"]["database"]["serverCASecret"] = {"name": "db-ca"}
    cluster = _cluster(body)
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db-ca", "namespace": "default", "resourceVersion": "3"},
            "data": {"ca.crt": base64.b64encode(pem.encode()).decode()},
        }
    )
    return cluster


_DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("pem", "needle"),
    [
        ("not a certificate", "no PEM certificate"),
        # the PEM marker alone is not a certificate
        ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "not a valid PEM"),
        (certs.pem(certs.ca("old", not_before=-3 * _DAY, not_after=-_DAY)[1]), "has expired"),
        (certs.pem(certs.ca("new", not_before=_DAY, not_after=3 * _DAY)[1]), "valid yet"),
    ],
)
def test_a_server_ca_that_is_not_a_usable_certificate_stops_the_pooler(
    pem: str, needle: str
) -> None:
    cluster = _with_ca(pem)
    _run(cluster)
    pooler = _conditions(cluster)["PoolerReady"]
    assert (pooler["status"], pooler["reason"]) == ("False", "ServerCAInvalid")
    assert "Secret db-ca key 'ca.crt' (spec.database.serverCASecret): " in pooler["message"]
    assert needle in pooler["message"]
    assert cluster.find("Deployment", "shop-pooler") is None


def test_a_valid_server_ca_is_mounted() -> None:
    cluster = _with_ca(certs.pem(certs.ca("db CA")[1]))
    _run(cluster)
    assert _conditions(cluster)["PoolerReady"]["reason"] != "ServerCAInvalid"
    assert cluster.find("Deployment", "shop-pooler") is not None


def _prometheus(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": "k8s", "namespace": "monitoring"},
        "spec": spec,
    }


_SELECTS_ALL_NAMESPACES = {
    "ruleNamespaceSelector": {},
    "podMonitorNamespaceSelector": {},
    "serviceMonitorNamespaceSelector": {},
}


def test_with_prometheus_operator_rules_and_monitors_are_labelled_for_the_prometheus() -> None:
    cluster = _cluster(_scaled())
    cluster.monitoring = True
    cluster.put(
        _prometheus(
            ruleSelector={"matchLabels": {"role": "alert-rules"}},
            podMonitorSelector={"matchLabels": {"release": "kps"}},
            serviceMonitorSelector={"matchLabels": {"release": "kps"}},
            **_SELECTS_ALL_NAMESPACES,
        )
    )
    eng, _ = _run(cluster)
    rule = cluster.find("PrometheusRule", "shop-alerts")
    assert rule is not None and rule["metadata"]["labels"]["role"] == "alert-rules"
    monitor = cluster.find("ServiceMonitor", "shop-pooler-rw")
    assert monitor is not None and monitor["metadata"]["labels"]["release"] == "kps"
    assert cluster.find("PodMonitor", "shop-app") is not None
    assert cluster.find("ConfigMap", "shop-alert-rules") is None
    selected = _conditions(cluster)["AlertsSelected"]
    assert (selected["status"], selected["reason"]) == ("True", "Selected")
    assert "Prometheus monitoring/k8s" in selected["message"]
    _again(eng)  # its own writes: one more pass, then silence
    cluster.log.clear()
    assert _again(eng, force=True).writes == 0 and cluster.writes() == []

    # the Prometheus changes its rule selector: the rule is relabelled, nothing else
    prom = cluster.find("Prometheus", "k8s", namespace="monitoring")
    assert prom is not None
    prom["spec"]["ruleSelector"] = {"matchLabels": {"role": "other"}}
    cluster.put(prom)
    assert not _again(eng).skipped
    children = sorted(k for _, k in cluster.writes() if "/status" not in k)
    assert children == ["PrometheusRule/shop-alerts"]
    relabelled = cluster.find("PrometheusRule", "shop-alerts")
    assert relabelled is not None and relabelled["metadata"]["labels"]["role"] == "other"


def test_alerts_not_selected_when_the_namespace_is_not_admitted() -> None:
    cluster = _cluster(_scaled())
    cluster.monitoring = True
    admits_labelled = {"matchLabels": {"monitoring": "on"}}
    cluster.put(
        _prometheus(
            ruleSelector={},
            ruleNamespaceSelector=admits_labelled,
            podMonitorSelector={},
            podMonitorNamespaceSelector=admits_labelled,
            serviceMonitorSelector={},
            serviceMonitorNamespaceSelector=admits_labelled,
        )
    )
    cluster.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    eng, _ = _run(cluster)
    selected = _conditions(cluster)["AlertsSelected"]
    assert (selected["status"], selected["reason"]) == ("False", "NotSelected")
    assert "does not admit namespace default" in selected["message"]
    assert cluster.find("PrometheusRule", "shop-alerts") is not None  # applied all the same
    assert ("Namespace", "", "default") in cluster.inputs_used[KEY]
    # the namespace gets the label: the namespace's watch brings the pass that selects it
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "default", "labels": {"monitoring": "on"}},
        }
    )
    _again(eng)
    assert _conditions(cluster)["AlertsSelected"]["status"] == "True"


def test_without_prometheus_operator_the_configmap_and_its_condition() -> None:
    cluster = _cluster(_scaled())
    _run(cluster)
    assert cluster.find("ConfigMap", "shop-alert-rules") is not None
    assert cluster.find("ConfigMap", "shop-dashboard") is not None
    selected = _conditions(cluster)["AlertsSelected"]
    assert (selected["status"], selected["reason"]) == ("False", "NoPrometheusOperator")
    assert _conditions(cluster)["Ready"]["reason"] != "AlertsSelected"  # informational


def _builtin() -> dict[str, Any]:
    return profiles.base(
        storage=profiles.buckets(
            profiles.builtin_bucket("avatars", builtin={"storage": {"size": "20Gi"}}),
            profiles.builtin_bucket("meal-photos"),
        )
    )


def test_the_builtin_servers_keys_are_kept_and_only_the_app_pair_reaches_the_binding() -> None:
    cluster = _cluster(_builtin())
    eng, _ = _run(cluster)
    root = _secret(cluster, "shop-s3-root")
    app = _secret(cluster, "shop-s3-app")
    assert root["accessKeyId"] != app["accessKeyId"]
    annotations = _pod_annotations(cluster, "StatefulSet", "shop-s3")
    cluster.log.clear()
    _again(eng, force=True)
    assert [w for w in cluster.writes() if "s3" in w[1] or "binding" in w[1]] == []
    assert _secret(cluster, "shop-s3-root") == root
    assert _secret(cluster, "shop-s3-app") == app
    assert _pod_annotations(cluster, "StatefulSet", "shop-s3") == annotations
    binding = _secret(cluster, "shop-binding")
    assert binding["AWS_ACCESS_KEY_ID"] == app["accessKeyId"]
    assert not set(root.values()) & set(binding.values())
    shown = repr(cluster.profile("default", "shop")) + repr(cluster.events)
    for value in (*root.values(), *app.values()):
        assert value not in shown


def test_a_deleted_app_secret_makes_a_new_pair_and_rolls_the_server_pod() -> None:
    cluster = _cluster(_builtin())
    eng, _ = _run(cluster)
    root = _secret(cluster, "shop-s3-root")
    app = _secret(cluster, "shop-s3-app")
    before = _pod_annotations(cluster, "StatefulSet", "shop-s3")
    secret = cluster.find("Secret", "shop-s3-app")
    assert secret is not None
    asyncio.run(cluster.delete(secret))
    _again(eng, force=True)
    new_app = _secret(cluster, "shop-s3-app")
    assert new_app["accessKeyId"] != app["accessKeyId"]
    assert new_app["secretAccessKey"] != app["secretAccessKey"]
    assert _secret(cluster, "shop-s3-root") == root
    assert _secret(cluster, "shop-binding")["AWS_SECRET_ACCESS_KEY"] == new_app["secretAccessKey"]
    after = revision.parse(
        _pod_annotations(cluster, "StatefulSet", "shop-s3")[revision.INPUTS_REVISION]
    )
    old = revision.parse(before[revision.INPUTS_REVISION])
    assert after[revision.S3_APP] != old[revision.S3_APP]
    assert after[revision.S3_ROOT] == old[revision.S3_ROOT]


def _progress(cluster: fake_cluster.FakeCluster) -> dict[str, tuple[str, str]]:
    return {
        kind: (c["status"], c["reason"])
        for kind, c in _conditions(cluster).items()
        if kind in conditions.PROGRESS_TYPES
    }


def test_a_rollout_reads_reconciling_and_a_refusal_stalled() -> None:
    """kstatus' two conditions: the first pass leaves children rolling out
    (Reconciling); an impossible change needs a person (Stalled), and either
    pass decided on its generation."""
    cluster = _cluster(profiles.base())
    eng, _ = _run(cluster)
    assert _progress(cluster) == {"Reconciling": ("True", "RollingOut")}
    assert _conditions(cluster)["Reconciling"]["message"].startswith("PoolerReady: ")
    profile = cluster.profile("default", "shop")
    assert profile is not None and profile["status"]["observedGeneration"] == 1
    profile["spec"]["pooler"]["parameters"] = {"default_pool_size": "90"}  # 3 pods x 90 > 92
    profile["metadata"]["generation"] = 2
    cluster.put(profile)
    _again(eng)
    assert _progress(cluster) == {"Stalled": ("True", "BudgetExceeded")}
    stalled = _conditions(cluster)["Stalled"]
    assert stalled["message"].startswith("ConnectionBudget: ")
    profile = cluster.profile("default", "shop")
    assert profile is not None and profile["status"]["observedGeneration"] == 2


def test_a_missing_app_stalls_and_its_arrival_clears_it() -> None:
    cluster = _cluster(profiles.base())
    del cluster.objects[("Deployment", "default", "web")]
    eng, _ = _run(cluster)
    assert _progress(cluster) == {"Stalled": ("True", "AppDeploymentNotFound")}
    cluster.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
        }
    )
    _again(eng)
    assert "Stalled" not in _progress(cluster)


@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (KeyError("spec"), False),  # an operator bug on this profile: retrying will not cure it
        (errors.UnavailableError("the API server did not answer"), True),
        (TimeoutError(), True),  # the pass timeout
    ],
)
def test_a_pass_that_raises_still_says_so(error: Exception, retriable: bool) -> None:
    """A profile whose every pass fails must not read as healthy (no status at
    all is what kstatus calls Current)."""
    cluster = _cluster(profiles.base())
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    asyncio.run(eng.report_failure(KEY, error))
    profile = cluster.profile("default", "shop")
    assert profile is not None
    status = profile["status"]
    by_type = {c["type"]: c for c in status["conditions"]}
    if retriable:  # on its way: observedGeneration stays behind, Reconciling says why
        assert status["observedGeneration"] == 0
        assert (by_type["Reconciling"]["status"], by_type["Reconciling"]["reason"]) == (
            "True",
            "RetryingAfterError",
        )
        assert "Stalled" not in by_type
    else:  # a verdict on this generation: Failed for kstatus
        assert status["observedGeneration"] == 1
        for kind in ("Ready", "Stalled"):
            assert by_type[kind]["reason"] == "ReconcileFailed"
        assert by_type["Ready"]["status"] == "False" and by_type["Stalled"]["status"] == "True"
        assert type(error).__name__ in by_type["Stalled"]["message"]
        assert "spec" not in by_type["Stalled"]["message"]  # the error's text stays in the log
    # the same failure again writes nothing more
    cluster.log.clear()
    asyncio.run(eng.report_failure(KEY, error))
    assert cluster.writes() == []


def test_a_failed_pass_keeps_the_rest_of_the_status_and_a_good_pass_clears_it() -> None:
    cluster = _cluster(profiles.base())
    eng, _ = _run(cluster)
    before = cluster.profile("default", "shop")
    assert before is not None
    budget = before["status"]["budget"]
    asyncio.run(eng.report_failure(KEY, ValueError("boom")))
    failed = cluster.profile("default", "shop")
    assert failed is not None and failed["status"]["budget"] == budget
    kinds = {c["type"] for c in before["status"]["conditions"]} - conditions.PROGRESS_TYPES
    assert kinds <= {c["type"] for c in failed["status"]["conditions"]}
    _again(eng, force=True)
    assert "Stalled" not in _progress(cluster)


def _converged_cluster() -> tuple[fake_cluster.FakeCluster, reconciler.Reconciler]:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    for _ in range(3):  # until a pass changes no child
        _again(eng, force=True)
    profile = cluster.profile("default", "shop")
    assert profile is not None and profile["status"].get("converged")
    return cluster, eng


def test_a_restarted_operator_confirms_a_converged_profile_without_a_pass() -> None:
    cluster, _ = _converged_cluster()
    cluster.log.clear()
    restarted = reconciler.Reconciler(cluster, telemetry.Metrics())
    confirmed = _again(restarted)
    assert confirmed.confirmed and confirmed.writes == 0
    assert cluster.writes() == [] and not [e for e in cluster.log if e[0] == "get"]
    assert cluster.inputs_used[KEY]  # its inputs' changes still queue it
    # the next pass (the resync's) is a full one: it reads the probes again
    later = _again(restarted)
    assert not later.confirmed and not later.skipped


@pytest.mark.parametrize("change", ["login", "child", "spec"])
def test_a_profile_that_changed_while_the_operator_was_down_is_passed(change: str) -> None:
    cluster, _ = _converged_cluster()
    if change == "login":  # the app's password rotated
        secret = cluster.find("Secret", "shop-db")
        assert secret is not None
        secret["data"]["password"] = _b64("rotated")
        cluster.put(secret)
    elif change == "child":  # somebody edited a child
        config = cluster.find("ConfigMap", "shop-pooler-config")
        assert config is not None
        config["data"]["pgbouncer.ini"] += "\n; edited\n"
        cluster.put(config)
    else:  # a new generation of the spec
        profile = cluster.profile("default", "shop")
        assert profile is not None
        profile["metadata"]["generation"] = 2
        cluster.put(profile)
    restarted = reconciler.Reconciler(cluster, telemetry.Metrics())
    result = _again(restarted)
    assert not result.confirmed and not result.skipped


def test_after_a_restart_unconverged_profiles_go_first() -> None:
    def body(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
        return {"metadata": {"generation": generation}, **({"status": status} if status else {})}

    def ready(value: str, at: str, *, converged: bool) -> dict[str, Any]:
        return {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": value, "lastTransitionTime": at}],
            **({"converged": {"fingerprint": "f", "inputs": []}} if converged else {}),
        }

    ranked = sorted(
        (*events.resume_rank(b), name)
        for name, b in {
            "converged": body(1, ready("True", "2026-01-01T00:00:00Z", converged=True)),
            "new": body(1, None),
            "changed-spec": body(2, ready("True", "2026-01-01T00:00:00Z", converged=True)),
            "rolling-recent": body(1, ready("False", "2026-01-02T00:00:00Z", converged=False)),
            "rolling-old": body(1, ready("False", "2026-01-01T00:00:00Z", converged=False)),
            "ready-unsettled": body(1, ready("True", "2026-01-03T00:00:00Z", converged=False)),
        }.items()
    )
    assert [name for *_, name in ranked] == [
        "changed-spec",
        "new",
        "rolling-old",
        "rolling-recent",
        "ready-unsettled",
        "converged",
    ]
    assert ranked[-1][0] == work_queue.Trigger.CONFIRM


def _pooler_change(
    eng: reconciler.Reconciler, cluster: fake_cluster.FakeCluster, **params: str
) -> None:
    profile = cluster.profile("default", "shop")
    assert profile is not None
    profile["spec"]["pooler"].setdefault("parameters", {}).update(params)
    profile["metadata"]["generation"] = int(profile["metadata"].get("generation", 1)) + 1
    cluster.put(profile)
    cluster.log.clear()
    cluster.events.clear()
    _again(eng)


def test_pool_sizes_change_by_reload_and_a_restart_setting_rolls_the_pooler_saying_why() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng)
    template = copy.deepcopy(_pooler_template(cluster))
    # smaller pools and limits: the ConfigMap the agent watches changes, the pods do not
    _pooler_change(eng, cluster, default_pool_size="10", max_db_connections="12")
    assert ("apply", "ConfigMap/shop-pooler-config") in cluster.writes()
    assert _pooler_template(cluster) == template
    assert not [e for e in cluster.events if e[1] == outcome.POOLER_RESTART]
    # a setting PgBouncer reads only at start: the pods roll, and an Event says why
    _pooler_change(eng, cluster, pkt_buf="8192")
    assert _pooler_template(cluster) != template
    (event,) = [e for e in cluster.events if e[1] == outcome.POOLER_RESTART]
    assert "pkt_buf" in event[2] and "only at start" in event[2], event


def _pooler_template(cluster: fake_cluster.FakeCluster) -> dict[str, Any]:
    found = cluster.find("Deployment", "shop-pooler")
    assert found is not None
    template: dict[str, Any] = found["spec"]["template"]
    return template


def _cache_change(
    eng: reconciler.Reconciler, cluster: fake_cluster.FakeCluster, **fields: Any
) -> None:
    profile = cluster.profile("default", "shop")
    assert profile is not None
    (cache,) = [i for i in profile["spec"]["cache"]["instances"] if i["name"] == "cache"]
    cache.update(fields)
    profile["metadata"]["generation"] = int(profile["metadata"].get("generation", 1)) + 1
    cluster.put(profile)
    cluster.log.clear()
    cluster.events.clear()
    _again(eng)


def _redis_template(cluster: fake_cluster.FakeCluster) -> dict[str, Any]:
    found = cluster.find("StatefulSet", "shop-redis-cache")
    assert found is not None
    template: dict[str, Any] = found["spec"]["template"]
    return template


def test_redis_config_changes_reach_the_configmap_and_roll_no_redis_pod() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng)
    template = copy.deepcopy(_redis_template(cluster))
    # eviction policy and allowed settings: the ConfigMap its agent watches changes,
    # the pods do not (their agent CONFIG SETs them)
    _cache_change(eng, cluster, evictionPolicy="allkeys-lfu", config={"hz": "50"})
    assert ("apply", "ConfigMap/shop-redis-cache-config") in cluster.writes()
    conf = (cluster.find("ConfigMap", "shop-redis-cache-config") or {})["data"]["redis.conf"]
    assert "maxmemory-policy allkeys-lfu" in conf and "hz 50" in conf
    assert _redis_template(cluster) == template
    # a setting removed again goes back online too
    _cache_change(eng, cluster, config={})
    assert _redis_template(cluster) == template
    assert not [e for e in cluster.events if e[1] == outcome.REDIS_RESTART]


def test_a_memory_change_rolls_the_redis_pods_with_an_event_saying_why() -> None:
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng)
    template = copy.deepcopy(_redis_template(cluster))
    _cache_change(eng, cluster, memory="1Gi")
    assert _redis_template(cluster) != template
    (event,) = [e for e in cluster.events if e[1] == outcome.REDIS_RESTART]
    assert "memory" in event[2] and "-> 1Gi" in event[2], event


def test_redis_pods_of_an_earlier_release_keep_their_template_until_a_change_restarts_them() -> (
    None
):
    cluster = _cluster(_scaled())
    eng, _ = _run(cluster)
    _again(eng)
    conf = (cluster.find("ConfigMap", "shop-redis-cache-config") or {})["data"]["redis.conf"]
    written = cluster.find("StatefulSet", "shop-redis-cache")
    assert written is not None
    cluster.put(test_redis_online.earlier(written, conf))
    before = copy.deepcopy(_redis_template(cluster))
    before["metadata"].pop("creationTimestamp")

    def running() -> dict[str, Any]:
        template = copy.deepcopy(_redis_template(cluster))
        template["metadata"].pop("creationTimestamp", None)  # the server's, null
        return template

    # passes that change nothing Redis runs: its pods stay, without the agent
    _again(eng)
    _cache_change(eng, cluster)
    assert running() == before
    assert not [e for e in cluster.events if e[1] == outcome.REDIS_RESTART]
    # a change the earlier pods can only take by a restart: they roll, with the agent
    _cache_change(eng, cluster, evictionPolicy="allkeys-lfu")
    containers = _redis_template(cluster)["spec"]["containers"]
    assert "agent" in [c["name"] for c in containers]
    (event,) = [e for e in cluster.events if e[1] == outcome.REDIS_RESTART]
    assert "without the config agent" in event[2] and "redis.conf" in event[2], event
