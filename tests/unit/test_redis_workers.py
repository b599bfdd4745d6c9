"""Redis, workers and app autoscaling: what the planner decides and the builders emit."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from headroom.api import v1alpha1
from headroom.builders import binding, common, desired, redis, revision
from headroom.planning import credentials, planner
from tests import profiles

QUEUE = {
    "name": "emails",
    "redis": "jobs",
    "listName": "bull:emails:wait",
    "image": "registry.example/worker:1",
    "replicas": {"min": 0, "max": 20},
    "databasePoolSize": 2,
}
CACHE = {
    "instances": [
        {"name": "cache", "use": "cache", "memory": "256Mi"},
        {"name": "jobs", "use": "queue", "memory": "128Mi", "persistence": {"size": "2Gi"}},
    ]
}
CREDS = credentials.Credentials(
    username="app",
    password="pw",
    stats_password="stats",
    revision="1",
    redis_passwords={"cache": "a" * 32, "jobs": "b" * 32, "ha": "c" * 32},
)


def _plan(*, keda: bool = False, **overrides: object) -> planner.Plan:
    body = profiles.base(**{"cache": CACHE, "queues": [QUEUE], **overrides})
    body["metadata"]["uid"] = "uid-1"
    planned = planner.plan(v1alpha1.parse_profile(body), facts=planner.Facts(keda=keda))
    assert planned.ok, planned.problem_text()
    return planned


def _objects(planned: planner.Plan) -> dict[str, common.Obj]:
    return desired.build(planned, CREDS, app_pod_selector={"matchLabels": {"app": "web"}})


def test_maxmemory_and_policy_by_use() -> None:
    planned = _plan()
    cache, jobs = planned.redis_named("cache"), planned.redis_named("jobs")
    assert cache.maxmemory_bytes == 256 * 1024**2 * 3 // 4
    assert (cache.eviction_policy, jobs.eviction_policy) == ("allkeys-lru", "noeviction")
    conf = redis.render_conf(jobs)
    assert "maxmemory-policy noeviction" in conf
    assert "appendonly yes" in conf  # persistence asked for
    assert "requirepass" not in conf  # the password lives in the auth Secret only


def test_workers_count_in_the_budget() -> None:
    planned = _plan()
    assert planned.budget.client_demand == 10 * 5 + 20 * 2


def test_keda_when_served_hpa_otherwise() -> None:
    with_keda = _objects(_plan(keda=True))
    without = _objects(_plan(keda=False))
    assert "ScaledObject/shop-worker-emails" in with_keda
    assert "TriggerAuthentication/shop-worker-emails-redis" in with_keda
    assert "HorizontalPodAutoscaler/shop-worker-emails" not in with_keda
    assert "HorizontalPodAutoscaler/shop-worker-emails" in without
    assert not any(k.startswith(("ScaledObject/", "TriggerAuthentication/")) for k in without)
    # An HPA cannot scale to zero: the fallback keeps at least one worker.
    assert without["HorizontalPodAutoscaler/shop-worker-emails"]["spec"]["minReplicas"] == 1
    assert with_keda["ScaledObject/shop-worker-emails"]["spec"]["minReplicaCount"] == 0


def test_trigger_points_at_the_queue_and_its_password() -> None:
    objs = _objects(_plan(keda=True))
    trigger = objs["ScaledObject/shop-worker-emails"]["spec"]["triggers"][0]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == "bull:emails:wait"
    assert trigger["metadata"]["address"] == "shop-redis-jobs.default.svc:6379"
    auth = objs["TriggerAuthentication/shop-worker-emails-redis"]["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "password", "name": "shop-redis-jobs-auth", "key": "password"}]


def test_worker_deployment_leaves_replicas_to_the_autoscaler() -> None:
    dep = _objects(_plan())["Deployment/shop-worker-emails"]
    assert "replicas" not in dep["spec"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 300
    # the queue's own binding, and nothing else: no env the plan does not count
    container = pod["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "shop-worker-emails-binding"}}]
    assert "env" not in container


def test_a_worker_binding_carries_its_queues_numbers_only() -> None:
    objs = _objects(_plan())
    app = profiles.secret_values(objs["Secret/shop-binding"])
    worker = profiles.secret_values(objs["Secret/shop-worker-emails-binding"])
    # BullMQ refuses a name with ':'; the prefix is an option of its own
    assert (worker["QUEUE_NAME"], worker["QUEUE_PREFIX"]) == ("emails", "bull")
    assert worker["QUEUE_LIST"] == "bull:emails:wait"
    assert worker["REDIS_URL"] == worker["REDIS_QUEUE_URL"] == app["REDIS_QUEUE_URL"]
    assert "QUEUE_NAME" not in app
    # the pool the budget counts for one worker pod, not the app's
    assert (app["DATABASE_POOL_SIZE"], worker["DATABASE_POOL_SIZE"]) == ("5", "2")


def test_a_prisma_worker_url_has_its_own_connection_limit() -> None:
    objs = _objects(_plan(**{"app.client": "prisma"}))
    worker = profiles.secret_values(objs["Secret/shop-worker-emails-binding"])
    assert "connection_limit=2" in worker["DATABASE_URL"]
    assert worker["DATABASE_URL"] == worker["DATABASE_URL_POOLED"]


def test_a_worker_without_a_database_pool_gets_no_database() -> None:
    objs = _objects(_plan(queues=[{**QUEUE, "databasePoolSize": 0}]))
    worker = profiles.secret_values(objs["Secret/shop-worker-emails-binding"])
    assert not [k for k in worker if k.startswith("DATABASE_") or k in ("uri", "password")]
    assert worker["QUEUE_NAME"] == "emails"


@pytest.mark.parametrize(
    ("listname", "name", "prefix"),
    [
        ("bull:emails:wait", "emails", "bull"),
        ("myapp:bull:emails:wait", "myapp:bull:emails:wait", ""),  # not BullMQ's layout
        ("jobs", "jobs", ""),
        ("bull:emails:active", "bull:emails:active", ""),
    ],
)
def test_queue_name_and_prefix(listname: str, name: str, prefix: str) -> None:
    assert binding.queue_name_and_prefix(listname) == (name, prefix)


def test_binding_has_redis_urls() -> None:
    data = profiles.secret_values(_objects(_plan())["Secret/shop-binding"])
    assert data["REDIS_CACHE_URL"] == f"redis://:{'a' * 32}@shop-redis-cache.default.svc:6379/0"
    assert data["REDIS_QUEUE_URL"] == f"redis://:{'b' * 32}@shop-redis-jobs.default.svc:6379/0"
    # with a queue, the one URL an app reads never evicts (BullMQ would lose jobs)
    assert data["REDIS_URL"] == data["REDIS_QUEUE_URL"]
    assert data["REDIS_JOBS_URL"] == data["REDIS_QUEUE_URL"]


def test_pvcs_retained_unless_the_profile_says_so() -> None:
    sts = _objects(_plan())["StatefulSet/shop-redis-jobs"]["spec"]
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    cache = {
        "instances": [
            {"name": "jobs", "use": "queue", "persistence": {"deleteWithProfile": True}},
            {"name": "cache", "use": "cache"},
        ]
    }
    sts = _objects(_plan(cache=cache))["StatefulSet/shop-redis-jobs"]["spec"]
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_network_policy_admits_app_and_workers_only() -> None:
    policy = _objects(_plan())["NetworkPolicy/shop-redis-jobs"]["spec"]
    sources = policy["ingress"][0]["from"]
    selectors = [s["podSelector"]["matchLabels"] for s in sources]
    assert {"app": "web"} in selectors
    assert any(s.get("app.kubernetes.io/component") == "worker" for s in selectors)
    # no other namespace: the HPA fallback needs no outside reader
    assert not any("namespaceSelector" in s for s in sources)


def test_network_policy_admits_the_keda_operator_when_keda_scales_the_queue() -> None:
    objs = _objects(_plan(keda=True))
    queue_sources = objs["NetworkPolicy/shop-redis-jobs"]["spec"]["ingress"][0]["from"]
    # only from KEDA's namespace (spec.network.kedaNamespace, default keda)
    keda = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
        "podSelector": {"matchLabels": {"app": "keda-operator"}},
    }
    assert keda in queue_sources
    # the cache instance has no queue on it: KEDA has no business there
    cache_sources = objs["NetworkPolicy/shop-redis-cache"]["spec"]["ingress"][0]["from"]
    assert keda not in cache_sources


def test_sentinel_ha_objects() -> None:
    cache = {"instances": [{"name": "ha", "use": "cache", "sentinel": {"replicas": 2}}]}
    objs = _objects(_plan(cache=cache, queues=[]))
    assert objs["StatefulSet/shop-redis-ha"]["spec"]["replicas"] == 3
    assert objs["StatefulSet/shop-redis-ha-sentinel"]["spec"]["replicas"] == 3
    service = objs["Service/shop-redis-ha"]["spec"]
    assert service["ports"][0]["port"] == 26379
    auth = profiles.secret_values(objs["Secret/shop-redis-ha-auth"])
    assert "sentinel monitor headroom" in auth["sentinel.conf"]
    assert "c" * 32 not in str(objs["ConfigMap/shop-redis-ha-config"])
    url = profiles.secret_values(objs["Secret/shop-binding"])["REDIS_URL"]
    assert url.startswith("redis+sentinel://")


HA_CACHE = {
    "instances": [{"name": "jobs", "use": "queue", "sentinel": {"replicas": 2}}],
}


def _container(obj: common.Obj, name: str, *, init: bool = False) -> common.Obj:
    spec = obj["spec"]["template"]["spec"]
    return next(c for c in spec["initContainers" if init else "containers"] if c["name"] == name)


def _env(container: common.Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_ha_redis_asks_the_sentinel_pods_through_their_headless_service() -> None:
    objs = _objects(_plan(cache=HA_CACHE))
    sentinels = objs["StatefulSet/shop-redis-jobs-sentinel"]["spec"]
    service = objs[f"Service/{sentinels['serviceName']}"]["spec"]
    assert service["clusterIP"] == "None"
    assert service["publishNotReadyAddresses"] is True  # answers before it is Ready
    assert service["selector"] == sentinels["selector"]["matchLabels"]
    redis_container = _container(objs["StatefulSet/shop-redis-jobs"], "redis")
    env = _env(redis_container)
    # every address is a sentinel pod under a Service the builder emits
    assert env["SENTINELS"].split() == [
        f"shop-redis-jobs-sentinel-{n}.{sentinels['serviceName']}.default.svc:26379"
        for n in range(sentinels["replicas"])
    ]
    assert env["INITIAL_MASTER"] == "shop-redis-jobs-0.shop-redis-jobs-headless.default.svc:6379"
    assert "Service/shop-redis-jobs-headless" in objs
    # the start script runs in the Redis container itself, so a restart in place asks too
    assert redis_container["command"][:2] == ["sh", "-c"]
    assert redis_container["command"][2] == redis.redis_start_script()
    # its only init step copies the config; the role is picked at every start
    init = objs["StatefulSet/shop-redis-jobs"]["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["agent-init"]
    assert env["REDIS_CONFIG"] == redis.START_FILE
    probe = redis_container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] > redis.FAILOVER_TIMEOUT_SECONDS


def test_ha_scripts_are_constants_the_kubelet_does_not_expand() -> None:
    objs = _objects(_plan(cache=HA_CACHE))
    containers = [
        _container(objs["StatefulSet/shop-redis-jobs"], "redis"),
        _container(objs["StatefulSet/shop-redis-jobs-sentinel"], "config", init=True),
    ]
    for container in containers:
        script = container["command"][2]
        assert script in (redis.redis_start_script(), redis.sentinel_init_script())
        # the kubelet expands $(NAME) of the container's env in a command and turns $$ into $
        assert "$$" not in script
        for name in _env(container):
            assert f"$({name})" not in script, name
        # no name of the profile is in a script: they reach it as environment
        assert "shop" not in script


def test_min_replicas_to_write_in_ha_only() -> None:
    ha = _plan(cache=HA_CACHE, queues=[]).redis_named("jobs")
    assert ha.min_replicas_to_write == 1
    conf = redis.render_conf(ha)
    assert "min-replicas-to-write 1\n" in conf
    assert f"min-replicas-max-lag {redis.MIN_REPLICAS_MAX_LAG_SECONDS}\n" in conf
    off = {"instances": [{"name": "jobs", "use": "queue", "sentinel": {"minReplicasToWrite": 0}}]}
    assert "min-replicas-to-write 0\n" in redis.render_conf(
        _plan(cache=off, queues=[]).redis_named("jobs")
    )
    assert "min-replicas" not in redis.render_conf(_plan().redis_named("jobs"))


def test_min_replicas_to_write_above_the_replicas_is_rejected() -> None:
    cache = {
        "instances": [
            {"name": "jobs", "use": "queue", "sentinel": {"replicas": 1, "minReplicasToWrite": 2}}
        ]
    }
    # the CRD's rule, and the model's: refused before any plan
    with pytest.raises(v1alpha1.ProfileError) as refused:
        v1alpha1.parse_profile(profiles.base(cache=cache))
    assert str(refused.value) == (
        "spec.cache.instances[0].sentinel.minReplicasToWrite: 2 must be <= "
        "spec.cache.instances[0].sentinel.replicas 1: the master would refuse every write"
    )


def _auth_revisions(objs: dict[str, common.Obj]) -> dict[str, str]:
    """The revision of the jobs instance's password on each pod template that reads it."""
    revisions = {}
    for key, obj in objs.items():
        template = obj.get("spec", {}).get("template", {})
        annotations = template.get("metadata", {}).get("annotations", {})
        reads = revision.parse(annotations.get(revision.INPUTS_REVISION))
        if revision.redis("jobs") in reads:
            revisions[key] = reads[revision.redis("jobs")]
    return revisions


def test_a_new_redis_password_rolls_every_pod_that_reads_it() -> None:
    cache = {"instances": [*HA_CACHE["instances"], {"name": "cache", "use": "cache"}]}
    planned = _plan(cache=cache)
    before = _auth_revisions(desired.build(planned, CREDS))
    assert set(before) == {
        "StatefulSet/shop-redis-jobs",
        "StatefulSet/shop-redis-jobs-sentinel",
        "Deployment/shop-worker-emails",  # REDIS_URL reaches the workers as environment
    }
    # the same passwords: nothing rolls
    assert _auth_revisions(desired.build(planned, CREDS)) == before
    # the auth Secret of jobs was deleted and Headroom generated a new password
    new_password = "e" * 48
    regenerated = dataclasses.replace(
        CREDS, redis_passwords={**CREDS.redis_passwords, "jobs": new_password}
    )
    objs = desired.build(planned, regenerated)
    after = _auth_revisions(objs)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {
        "StatefulSet/shop-redis-jobs",
        "StatefulSet/shop-redis-jobs-sentinel",
        "Deployment/shop-worker-emails",
    }
    # the annotation is a salted hash, never the password (nor its plain sha256)
    plain = hashlib.sha256(new_password.encode()).hexdigest()
    for key in changed:
        text = str(objs[key])
        assert new_password not in text and plain[:16] not in text, key
    assert len(after["StatefulSet/shop-redis-jobs"]) == 16


def test_app_hpa_and_pdb() -> None:
    objs = _objects(_plan())
    hpa = objs["HorizontalPodAutoscaler/shop-app"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 50
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    pdb = objs["PodDisruptionBudget/shop-app"]["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    off = _objects(_plan(**{"autoscaling": {"enabled": False}}))
    assert "HorizontalPodAutoscaler/shop-app" not in off


def test_render_conf_refuses_unsafe_settings() -> None:
    inst = dataclasses.replace(_plan().redis_named("cache"), settings={"timeout": "0\nsave x"})
    with pytest.raises(ValueError, match="unsafe"):
        redis.render_conf(inst)


def test_generated_passwords_are_checked() -> None:
    with pytest.raises(ValueError):
        redis.render_auth('bad"password-with-quote')


def test_binding_url_quotes_nothing_unsafe() -> None:
    planned = _plan()
    url = binding.redis_url(planned, planned.redis_named("cache"), "x" * 20)
    assert url == f"redis://:{'x' * 20}@shop-redis-cache.default.svc:6379/0"


def _label_values(obj: common.Obj) -> list[str]:
    meta_labels = obj["metadata"].get("labels", {})
    template = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    return [*meta_labels.values(), *template.values()]


def _longest_accepted(*, profile_name: str, sentinel: bool) -> tuple[planner.Plan, int]:
    """The plan with the longest instance/queue name the planner accepts."""
    accepted = None
    for length in range(1, 21):
        short = "q" * length
        instance: dict[str, object] = {"name": short, "use": "queue"}
        if sentinel:
            instance["sentinel"] = {"replicas": 1}
        body = profiles.base(
            name=profile_name,
            cache={"instances": [instance]},
            queues=[{**QUEUE, "name": short, "redis": short}],
        )
        planned = planner.plan(v1alpha1.parse_profile(body), facts=planner.Facts(keda=True))
        if not planned.ok:
            assert {p.field for p in planned.problems} <= {
                "spec.cache.instances[0].name",
                "spec.queues[0].name",
            }, planned.problem_text()
            if accepted is not None:  # one character past the longest accepted name
                assert "shorten metadata.name or this name by 1" in planned.problem_text()
            break
        accepted = (planned, length)
    assert accepted is not None
    return accepted


@pytest.mark.parametrize(
    ("profile_name", "sentinel"),
    [("shop", False), ("shop", True), ("a" * 30, True), ("b" * 40, False)],
)
def test_every_accepted_name_builds_valid_kubernetes_names(
    profile_name: str, sentinel: bool
) -> None:
    planned, _ = _longest_accepted(profile_name=profile_name, sentinel=sentinel)
    creds = dataclasses.replace(CREDS, redis_passwords={r.name: "d" * 32 for r in planned.redis})
    for key, obj in desired.build(
        planned, creds, app_pod_selector={"matchLabels": {"app": "web"}}
    ).items():
        limit = 52 if obj["kind"] == "StatefulSet" else 63 if obj["kind"] != "Secret" else 253
        assert len(obj["metadata"]["name"]) <= limit, key
        assert all(len(value) <= 63 for value in _label_values(obj)), key


def test_names_too_long_are_rejected_naming_the_field() -> None:
    body = profiles.base(
        name="a" * 40,
        cache={"instances": [{"name": "sessions-cache", "use": "cache", "sentinel": {}}]},
    )
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert [p.field for p in planned.problems] == ["spec.cache.instances[0].name"]
    text = planned.problem_text()
    assert "StatefulSet name" in text and "70 characters (limit 52)" in text
    assert "shorten metadata.name or this name by 18" in text


def test_a_long_app_deployment_name_is_not_put_in_a_label() -> None:
    planned = _plan(app={"deployment": "d" * 100, "replicas": {"min": 1, "max": 2}})
    for obj in _objects(planned).values():
        assert "app.kubernetes.io/part-of" not in obj["metadata"]["labels"]


def test_an_app_selected_by_expressions_gets_its_pdb_and_redis_access() -> None:
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}
    objs = desired.build(_plan(), CREDS, app_pod_selector=selector)
    assert objs["PodDisruptionBudget/shop-app"]["spec"]["selector"] == selector
    sources = objs["NetworkPolicy/shop-redis-cache"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": selector} in sources


def test_no_app_selector_means_no_app_pdb_and_no_open_policy() -> None:
    for selector in (None, {}, {"matchLabels": {}}):
        objs = desired.build(_plan(), CREDS, app_pod_selector=selector)
        assert "PodDisruptionBudget/shop-app" not in objs
        sources = objs["NetworkPolicy/shop-redis-cache"]["spec"]["ingress"][0]["from"]
        assert all(s["podSelector"] for s in sources)  # none matches every pod


def test_the_instance_named_after_its_use_is_the_use_url() -> None:
    cache = {
        "instances": [
            {"name": "hot", "use": "cache"},
            {"name": "cache", "use": "cache"},
            {"name": "jobs", "use": "queue"},
        ]
    }
    planned = _plan(cache=cache)
    creds = dataclasses.replace(CREDS, redis_passwords={"hot": "h" * 32, **CREDS.redis_passwords})
    entries = profiles.secret_values(desired.build(planned, creds)["Secret/shop-binding"])
    assert entries["REDIS_QUEUE_URL"] == entries["REDIS_URL"]
    assert "@shop-redis-cache." in entries["REDIS_CACHE_URL"]
    assert "@shop-redis-hot." in entries["REDIS_HOT_URL"]
    assert entries["REDIS_QUEUE_URL"] == entries["REDIS_JOBS_URL"]
    assert "@shop-redis-jobs." in entries["REDIS_QUEUE_URL"]


@pytest.mark.parametrize(("name", "use"), [("cache", "queue"), ("queue", "cache")])
def test_an_instance_named_after_the_other_use_is_rejected(name: str, use: str) -> None:
    body = profiles.base(cache={"instances": [{"name": name, "use": use}]})
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert [p.field for p in planned.problems] == ["spec.cache.instances[0].name"]
    assert f"REDIS_{name.upper()}_URL would point at a {use} instance" in planned.problem_text()


def test_workers_get_their_read_pool_or_no_read_endpoint() -> None:
    replicas = {**profiles.external_replicas({"host": "read-1.example"}), "readPoolSizePerPod": 4}
    readers = {**QUEUE, "databaseReadPoolSize": 1}
    planned = _plan(
        **{"database.readReplicas": replicas, "queues": [readers, {**QUEUE, "name": "pdf"}]}
    )
    # the read pooler's lag agent logs in with a password of its own
    objects = desired.build(planned, dataclasses.replace(CREDS, agent_password="agent"))
    app = profiles.secret_values(objects["Secret/shop-binding"])
    emails = profiles.secret_values(objects["Secret/shop-worker-emails-binding"])
    pdf = profiles.secret_values(objects["Secret/shop-worker-pdf-binding"])
    assert (app["DATABASE_READ_POOL_SIZE"], emails["DATABASE_READ_POOL_SIZE"]) == ("4", "1")
    assert emails["DATABASE_READ_URL"] == app["DATABASE_READ_URL"]
    # a queue the read budget counts nothing for gets no read endpoint
    assert "DATABASE_READ_URL" not in pdf and "DATABASE_READ_POOL_SIZE" not in pdf
