"""Redis takes its config online: which redis.conf directives it takes by
CONFIG SET (planning.redis_params), what rolls the Redis pods (only those it
takes at start, the image and the password), the pod the builder emits for
it (the agent, its token and Role), the Event, and the agent's steps with
Redis faked. The real redis-server runs in
tests/conformance/test_redis_online.py."""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from headroom.agent import redis as redis_agent
from headroom.api import v1alpha1
from headroom.builders import agent_pod, common, desired, redis, revision
from headroom.planning import credentials, planner, redis_params
from headroom.reconcile import rollout
from tests import profiles

NO_STOP = threading.Event()
PASSWORD = "p" * 32
CREDS = credentials.Credentials(
    username="app",
    password="pw",
    stats_password="stats",
    revision="1",
    redis_passwords={"cache": PASSWORD},
)


def _plan(**cache: Any) -> planner.Plan:
    body = profiles.cache_profile(uid="uid-1", **cache)
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert planned.ok, planned.problem_text()
    return planned


def _objects(planned: planner.Plan) -> dict[str, common.Obj]:
    return desired.build(planned, CREDS, app_pod_selector={"matchLabels": {"app": "web"}})


def _template(objs: dict[str, common.Obj]) -> common.Obj:
    template: common.Obj = objs["StatefulSet/shop-redis-cache"]["spec"]["template"]
    return template


# -- the classification


def test_every_setting_a_profile_may_give_is_taken_online() -> None:
    assert set(redis_params.ALLOWED) <= set(redis_params.ONLINE_DEFAULTS)


@pytest.mark.parametrize("ha", [False, True])
def test_every_rendered_directive_is_online_but_the_data_dir_and_the_auth_include(
    ha: bool,
) -> None:
    planned = _plan(**({"sentinel": {"replicas": 2}} if ha else {}))
    conf = redis.render_conf(planned.redis_named("cache"))
    settings = redis_params.conf_settings(conf)
    assert set(redis_params.restart_settings(conf)) == {"dir", "include"}
    assert {"maxmemory", "maxmemory-policy"} <= set(settings) - {"dir", "include"}
    if ha:
        assert "min-replicas-to-write" in settings


def test_changes_are_the_online_settings_that_differ_and_removed_ones_go_to_the_default() -> None:
    before = 'port 6379\nmaxmemory 100\nmaxmemory-policy allkeys-lru\nhz 50\nsave ""\ndir /data\n'
    after = "port 6379\nmaxmemory 200\nmaxmemory-policy allkeys-lru\ndir /data\ntimeout 0\n"
    assert redis_params.online_changes(before, after) == {
        "maxmemory": "200",
        "hz": "10",  # removed: Redis's default
        "save": "3600 1 300 100 60 10000",  # removed: Redis's default
    }
    assert redis_params.restart_changes(before, after) == []
    assert redis_params.restart_changes(before, before.replace("/data", "/other")) == ["dir"]
    # the last of a repeated setting wins, as in Redis
    assert redis_params.conf_settings("timeout 0\ntimeout 300\n") == {"timeout": "300"}
    assert redis_params.conf_settings('bind * -::*\nnotify-keyspace-events ""\n') == {
        "bind": "* -::*",
        "notify-keyspace-events": "",
    }


# -- the builder


def test_the_redis_pod_runs_its_agent_with_the_only_token_and_a_role_on_its_configmap() -> None:
    objs = _objects(_plan())
    pod = _template(objs)["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "shop-redis-cache"
    containers = {c["name"]: c for c in pod["containers"]}
    (init,) = pod["initContainers"]
    assert init["command"][:4] == ["python", "-m", "headroom.agent.redis", "--once"]
    assert containers["redis"]["command"] == ["redis-server", redis.START_FILE]
    agent = containers["agent"]
    assert agent["command"][:3] == ["python", "-m", "headroom.agent.redis"]
    assert "--config-map" in agent["command"] and "shop-redis-cache-config" in agent["command"]
    with_token = [
        c["name"]
        for c in [*pod["containers"], *pod["initContainers"]]
        if any(m["mountPath"] == agent_pod.TOKEN_DIR for m in c.get("volumeMounts", []))
    ]
    assert with_token == ["agent"]
    for container in [*pod["containers"], *pod["initContainers"]]:
        assert container["securityContext"] == common.container_security_context()
    role = objs["Role/shop-redis-cache"]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["shop-redis-cache-config"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert objs["RoleBinding/shop-redis-cache"]["subjects"][0]["name"] == "shop-redis-cache"
    assert objs["ServiceAccount/shop-redis-cache"]["automountServiceAccountToken"] is False
    assert common.CONFIG_HASH_ANNOTATION not in _template(objs)["metadata"]["annotations"]


def test_eviction_and_allowed_settings_change_the_configmap_not_the_pod_template() -> None:
    base = _objects(_plan())
    changed = _objects(_plan(evictionPolicy="allkeys-lfu", config={"hz": "50", "timeout": "60"}))
    assert changed["ConfigMap/shop-redis-cache-config"] != base["ConfigMap/shop-redis-cache-config"]
    assert _template(changed) == _template(base)
    assert changed["StatefulSet/shop-redis-cache"] == base["StatefulSet/shop-redis-cache"]


def test_the_memory_limit_is_the_pods_own_so_a_memory_change_rolls() -> None:
    base, larger = _objects(_plan()), _objects(_plan(memory="512Mi"))
    containers = _template(larger)["spec"]["containers"]
    (redis_container,) = [c for c in containers if c["name"] == "redis"]
    assert redis_container["resources"]["limits"]["memory"] == "512Mi"
    assert _template(larger) != _template(base)


def test_only_start_only_directives_and_the_password_are_revisions_of_the_redis_pods() -> None:
    planned = _plan()
    inst = planned.redis_named("cache")
    conf = redis.render_conf(inst)
    reads = redis.config_reads(inst, conf)
    assert reads == redis.config_reads(inst, conf.replace("hz 10", "hz 20") + "timeout 9\n")
    assert reads != redis.config_reads(inst, conf.replace("dir /data", "dir /elsewhere"))
    template = _objects(planned)["StatefulSet/shop-redis-cache"]["spec"]["template"]
    held = revision.parse(template["metadata"]["annotations"][revision.INPUTS_REVISION])
    assert set(held) == {revision.redis("cache"), revision.redis_config("cache")}


def test_a_start_only_directive_is_named_in_the_event_why_the_pods_roll() -> None:
    objs = _objects(_plan())
    wanted = objs["ConfigMap/shop-redis-cache-config"]
    live = copy.deepcopy(wanted)
    assert rollout.redis_restart_changed(wanted, live) == []
    assert rollout.redis_restart_changed(wanted, None) == []
    live["data"]["redis.conf"] = live["data"]["redis.conf"].replace("dir /data", "dir /old")
    changed = rollout.redis_restart_changed(wanted, live)
    assert changed == ["dir"]
    text = rollout.redis_restart_message("cache", changed)
    assert "dir" in text and "only at start" in text and "cache" in text


def test_the_redis_container_itself_rolls_its_pods_with_an_event_saying_what_changed() -> None:
    objs = _objects(_plan())
    live = objs["StatefulSet/shop-redis-cache"]
    assert rollout.redis_pod_changes(live, live) == []
    assert rollout.redis_pod_changes(live, None) == []
    larger = _objects(_plan(memory="512Mi", image="docker.io/library/redis:7.2.6"))
    changes = rollout.redis_pod_changes(larger["StatefulSet/shop-redis-cache"], live)
    assert changes == [
        f"the Redis image {v1alpha1.REDIS_IMAGE} -> docker.io/library/redis:7.2.6",
        "memory 256Mi -> 512Mi",
    ]
    text = rollout.redis_pod_message("cache", changes)
    assert "cache" in text and "memory 256Mi -> 512Mi" in text and "CONFIG SET" in text
    # settings Redis takes online change no pod
    tuned = _objects(_plan(evictionPolicy="allkeys-lfu", config={"hz": "50"}))
    assert rollout.redis_pod_changes(tuned["StatefulSet/shop-redis-cache"], live) == []


# -- pods an earlier release started without the agent


def earlier(statefulset: common.Obj, conf: str) -> common.Obj:
    """A Redis StatefulSet as a release without the agent wrote it (as the API
    server returns it): redis-server reading the mounted ConfigMap, the whole
    redis.conf (``conf``) hashed into the template, no init container, no token."""
    live = copy.deepcopy(statefulset)
    template = live["spec"]["template"]
    template["metadata"]["creationTimestamp"] = None
    pod = template["spec"]
    pod.pop("initContainers")
    pod.pop("serviceAccountName")
    pod["containers"] = [c for c in pod["containers"] if c["name"] != agent_pod.SIDECAR]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] in ("config", "auth", "tmp", "data")]
    (server,) = [c for c in pod["containers"] if c["name"] == "redis"]
    server["command"] = ["redis-server", f"{redis.CONFIG_DIR}/redis.conf"]
    server["volumeMounts"] = [
        {"name": "config", "mountPath": redis.CONFIG_DIR, "readOnly": True},
        *(m for m in server["volumeMounts"] if m["name"] != "run"),
    ]
    template["metadata"]["annotations"][revision.WHOLE_CONFIG_HASH] = common.content_hash(conf)
    return live


def _earlier(objs: dict[str, common.Obj]) -> common.Obj:
    conf = objs["ConfigMap/shop-redis-cache-config"]["data"]["redis.conf"]
    live = earlier(objs["StatefulSet/shop-redis-cache"], conf)
    (server,) = [c for c in live["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"]
    server["resources"]["limits"]["memory"] = "0.25Gi"  # as the API server may write 256Mi
    return live


def _rolls(objs: dict[str, common.Obj], live: common.Obj) -> list[str]:
    data = objs["ConfigMap/shop-redis-cache-config"]["data"]
    return rollout.agentless_redis_rolls(objs["StatefulSet/shop-redis-cache"], live, data=data)


def test_an_earlier_releases_redis_keeps_its_pods_when_only_the_agent_is_new() -> None:
    objs = _objects(_plan())
    live = _earlier(objs)
    assert rollout.is_agentless_redis(live)
    assert not rollout.is_agentless_redis(objs["StatefulSet/shop-redis-cache"])
    assert _rolls(objs, live) == []
    kept = rollout.with_live_template(objs["StatefulSet/shop-redis-cache"], live)
    assert kept["spec"]["template"]["spec"] == live["spec"]["template"]["spec"]
    assert "creationTimestamp" not in kept["spec"]["template"]["metadata"]
    # everything but the template is this release's (the held record, the replicas)
    wanted = objs["StatefulSet/shop-redis-cache"]
    assert kept["metadata"] == wanted["metadata"]
    assert kept["spec"]["replicas"] == wanted["spec"]["replicas"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"evictionPolicy": "allkeys-lfu"}, "redis.conf"),
        ({"config": {"hz": "50"}}, "redis.conf"),
        ({"image": "docker.io/library/redis:7.2.6"}, "the Redis image"),
    ],
)
def test_an_earlier_releases_redis_rolls_for_what_it_runs_and_gains_the_agent(
    change: dict[str, Any], reason: str
) -> None:
    live = _earlier(_objects(_plan()))
    assert any(found.startswith(reason) for found in _rolls(_objects(_plan(**change)), live))


def test_an_earlier_releases_redis_rolls_when_its_exporter_reads_new_keys() -> None:
    objs = _objects(_plan())
    live = _earlier(objs)
    template = objs["StatefulSet/shop-redis-cache"]["spec"]["template"]
    (exporter,) = [c for c in template["spec"]["containers"] if c["name"] == "exporter"]
    exporter["env"].append({"name": "REDIS_EXPORTER_CHECK_SINGLE_KEYS", "value": "db0=mail"})
    assert _rolls(objs, live) == ["its exporter container"]


def test_an_earlier_releases_redis_rolls_for_its_memory_and_its_password() -> None:
    live = _earlier(_objects(_plan()))
    larger = _objects(_plan(memory="512Mi"))
    assert "memory 0.25Gi -> 512Mi" in _rolls(larger, live)
    live["metadata"]["annotations"][revision.INPUTS_HELD] = revision.text(
        {revision.redis("cache"): "an-older-password"}
    )
    assert _rolls(_objects(_plan()), live) == ["credentials"]
    text = rollout.agentless_redis_message("cache", ["credentials"])
    assert "cache" in text and "credentials" in text and "CONFIG SET" in text


# -- the agent, Redis faked


class FakeRedis:
    """CONFIG GET/SET on a dict; ``refuse`` answers like Redis for those keys,
    ``down`` like a Redis that is not listening."""

    def __init__(self, running: dict[str, str]) -> None:
        self.running = dict(running)
        self.sets: list[dict[str, str]] = []
        self.refuse: dict[str, str] = {}
        self.down = False

    def config_get(self, key: str) -> str:
        if self.down:
            raise redis_agent.RedisError("connection refused")
        return self.running.get(key, redis_params.ONLINE_DEFAULTS[key])

    def config_set(self, settings: dict[str, str]) -> dict[str, str]:
        if self.down:
            raise redis_agent.RedisError("connection refused")
        self.sets.append(dict(settings))
        refused = {k: self.refuse[k] for k in settings if k in self.refuse}
        self.running |= {k: v for k, v in settings.items() if k not in refused}
        return refused


CONF = "port 6379\ndir /data\nmaxmemory 1000\nmaxmemory-policy allkeys-lru\ninclude /a.conf\n"


def _agent(tmp_path: Path, server: FakeRedis, conf: str = CONF) -> redis_agent.Agent:
    output = tmp_path / "redis.conf"
    output.write_text(conf)
    agent = redis_agent.Agent(output=output, server=server)
    agent.start()
    return agent


def _running(conf: str) -> dict[str, str]:
    return redis_params.online_changes("", conf)


def test_the_agent_sets_what_changed_and_writes_the_file(tmp_path: Path) -> None:
    server = FakeRedis(_running(CONF))
    agent = _agent(tmp_path, server)
    agent.step(NO_STOP)
    assert server.sets == [] and agent.checked  # Redis runs the file already
    new = CONF.replace("maxmemory 1000", "maxmemory 2000") + "hz 50\n"
    agent.offer(new)
    agent.step(NO_STOP)
    assert server.sets == [{"maxmemory": "2000", "hz": "50"}]
    assert agent.output.read_text() == new
    agent.offer(CONF)  # hz removed: back to Redis's default
    agent.step(NO_STOP)
    assert server.sets[-1] == {"maxmemory": "1000", "hz": "10"}
    assert agent.next_wait() == redis_agent.IDLE_SECONDS


def test_the_agent_leaves_a_start_only_change_to_the_pods_roll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeRedis(_running(CONF))
    agent = _agent(tmp_path, server)
    moved = CONF.replace("dir /data", "dir /other").replace("maxmemory 1000", "maxmemory 5")
    with caplog.at_level(logging.INFO, logger="headroom.agent.redis"):
        for _ in range(3):
            agent.offer(moved)
            agent.step(NO_STOP)
    assert server.sets == [] and agent.output.read_text() == CONF
    assert [r.message for r in caplog.records if "not applied" in r.message] == [
        "not applied: dir taken only at start (the pod rolls for it)"
    ]


def test_the_agent_retries_while_redis_is_down_and_logs_a_refusal_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeRedis({})
    server.down = True
    agent = _agent(tmp_path, server)
    agent.step(NO_STOP)
    assert not agent.checked and agent.next_wait() == redis_agent.TICK_SECONDS
    server.down = False
    server.refuse = {"maxmemory-policy": "ERR not today"}
    with caplog.at_level(logging.INFO, logger="headroom.agent.redis"):
        agent.step(NO_STOP)  # compared with the file: everything differs
        agent.step(NO_STOP)
    assert server.running["maxmemory"] == "1000"
    assert server.sets[0] == {"maxmemory": "1000", "maxmemory-policy": "allkeys-lru"}
    assert len(server.sets) == 1  # a refusal is not retried on a timer
    refusals = [r.message for r in caplog.records if "refused" in r.message]
    assert refusals == ["CONFIG SET maxmemory-policy 'allkeys-lru' refused: ERR not today"]


def test_the_password_is_in_no_log_line_or_repr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = redis_agent.Local(port=1, password=PASSWORD)  # nothing listens on port 1
    assert PASSWORD not in repr(local)
    with pytest.raises(redis_agent.RedisError) as failed:
        local.config_get("maxmemory")
    assert PASSWORD not in str(failed.value)


def test_a_maxmemory_the_pods_limit_cannot_hold_waits_for_the_roll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeRedis(_running(CONF))
    output = tmp_path / "redis.conf"
    output.write_text(CONF)
    agent = redis_agent.Agent(output=output, server=server, memory_limit=2000)  # room: 1500
    agent.start()
    agent.step(NO_STOP)
    grown = CONF.replace("maxmemory 1000", "maxmemory 3000").replace("allkeys-lru", "allkeys-lfu")
    with caplog.at_level(logging.INFO, logger="headroom.agent.redis"):
        agent.offer(grown)
        agent.step(NO_STOP)
    assert server.sets == [{"maxmemory-policy": "allkeys-lfu"}]
    assert output.read_text() == grown  # the new pod starts with it
    assert any("left for the pod's roll" in r.message for r in caplog.records)
    agent.offer(CONF.replace("maxmemory 1000", "maxmemory 800"))  # a shrink fits: online
    agent.step(NO_STOP)
    assert server.sets[-1] == {"maxmemory": "800", "maxmemory-policy": "allkeys-lru"}


def test_the_agent_reads_its_containers_memory_limit_from_the_downward_api() -> None:
    pod = _template(_objects(_plan()))["spec"]
    (agent,) = [c for c in pod["containers"] if c["name"] == "agent"]
    (env,) = agent["env"]
    assert env["name"] == redis_agent.MEMORY_LIMIT_ENV
    assert env["valueFrom"]["resourceFieldRef"] == {
        "containerName": "redis",
        "resource": "limits.memory",
    }


def test_the_upgrade_rolls_redis_once_for_its_agent_and_then_never_for_the_new_revision() -> None:
    """A StatefulSet of the previous layout: the whole redis.conf hashed on its
    template, only the password's revision held. The new template differs
    (the agent): it rolls once; the revision it newly covers is recorded, not
    rolled for, and the next pass over what was applied changes nothing."""
    wanted = _objects(_plan())["StatefulSet/shop-redis-cache"]
    password_only = revision.text(
        {
            k: v
            for k, v in revision.parse(
                wanted["metadata"]["annotations"][revision.INPUTS_HELD]
            ).items()
            if k == revision.redis("cache")
        }
    )
    live = copy.deepcopy(wanted)
    live["metadata"]["annotations"][revision.INPUTS_HELD] = password_only
    live["spec"]["template"]["metadata"]["annotations"] = {
        common.CONFIG_HASH_ANNOTATION: "0123456789abcdef",
        revision.INPUTS_REVISION: password_only,
    }
    applied = rollout.carry_over(wanted, live)
    annotations = applied["spec"]["template"]["metadata"]["annotations"]
    assert annotations[revision.INPUTS_REVISION] == password_only  # kept: no roll for it
    assert revision.parse(applied["metadata"]["annotations"][revision.INPUTS_HELD]) == (
        revision.parse(wanted["metadata"]["annotations"][revision.INPUTS_HELD])
    )
    assert rollout.carry_over(wanted, applied) == applied  # converged: no second roll


def test_a_restarted_agent_also_leaves_a_maxmemory_beyond_the_limit(tmp_path: Path) -> None:
    server = FakeRedis(_running(CONF))
    output = tmp_path / "redis.conf"
    output.write_text(CONF.replace("maxmemory 1000", "maxmemory 3000"))  # written, held back
    agent = redis_agent.Agent(output=output, server=server, memory_limit=2000)
    agent.start()
    agent.step(NO_STOP)
    assert server.sets == [] and agent.checked
