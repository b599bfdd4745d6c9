"""The redis.conf, auth include and sentinel.conf Headroom renders, run in
Debian's redis-server and redis-sentinel 7.0 on 127.0.0.1.

These prove what the unit tests can only assume: that every rendered directive
and every allowed override is accepted by Redis 7.0 and takes effect, that the
generated password is required, that a cache instance evicts instead of failing
when full while a queue instance refuses writes and keeps every job, and that
three sentinels from the rendered config promote the replica when the master dies.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis_servers
from redis_servers import HOST, Redis, RedisProcess, ReplyError, wait_until

from headroom.api import v1alpha1
from headroom.builders import redis
from headroom.planning import plan as plan_mod
from headroom.planning import redis_params

pytestmark = pytest.mark.conformance

StartRedis = Callable[..., RedisProcess]

MEMORY = "32Mi"
VALUE_SIZE = 10 * 1024
BATCH = 100
# used_memory may pass maxmemory by about one command's worth before Redis evicts
# (or refuses) on the next one; allow that plus allocator rounding.
MEMORY_SLACK = 512 * 1024
OOM = "OOM command not allowed when used memory > 'maxmemory'"
# One valid sample value for every allowed override, chosen to differ from Redis's
# defaults and from what Headroom renders (timeout 0, tcp-keepalive 60), so that a
# CONFIG GET equal to it proves the override took effect.
SAMPLES = {
    "timeout": "300",
    "tcp-keepalive": "120",
    "hz": "25",
    "maxclients": "500",
    "maxmemory-samples": "10",
    "appendfsync": "always",
    "slowlog-log-slower-than": "5000",
    "slowlog-max-len": "256",
    "latency-monitor-threshold": "100",
    "lazyfree-lazy-eviction": "yes",
    "lazyfree-lazy-expire": "yes",
    "lazyfree-lazy-user-del": "yes",
    # Debian's redis-server is linked against the system jemalloc and refuses
    # "activedefrag yes" (see test_activedefrag_yes); "no" still proves the key parses.
    "activedefrag": "no",
    "notify-keyspace-events": "Elg",
}
FAILOVER_TIMEOUT = 60


def make_plan(*instances: dict[str, Any]) -> plan_mod.Plan:
    profile = v1alpha1.parse_profile(
        {
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ScalingProfile",
            "metadata": {"name": "conf", "namespace": "default", "uid": "conformance"},
            "spec": {
                "app": {"deployment": "web", "replicas": {"min": 1, "max": 2}},
                "database": {"host": HOST, "name": "app", "credentialsSecret": {"name": "db"}},
                "cache": {"instances": list(instances)},
            },
        }
    )
    return plan_mod.plan(profile)


def instance(name: str = "cache", use: str = "cache", **extra: Any) -> plan_mod.RedisPlan:
    plan = make_plan({"name": name, "use": use, "memory": MEMORY, **extra})
    assert plan.ok, [str(p) for p in plan.problems]
    return plan.redis_named(name)


def conf_for(inst: plan_mod.RedisPlan, extra: str = "") -> Callable[[int, Path], str]:
    """render_conf for the port and private dir the fixture picks (plus raw ``extra``)."""

    def render(port: int, workdir: Path) -> str:
        conf = redis.render_conf(
            inst,
            bind=HOST,
            port=port,
            data_dir=str(workdir),
            auth_file=str(workdir / "auth.conf"),
        )
        return conf + extra.format(port=port)

    return render


def start_instance(
    start_redis: StartRedis, inst: plan_mod.RedisPlan, extra: str = ""
) -> RedisProcess:
    password = secrets.token_hex(24)
    return start_redis(
        conf_for(inst, extra), files={"auth.conf": redis.render_auth(password)}, password=password
    )


def set_commands(first: int, count: int, value: bytes) -> list[list[str | bytes | int]]:
    return [["SET", f"key:{n:06d}", value] for n in range(first, first + count)]


# 1. auth, maxmemory and policy


@pytest.mark.parametrize(
    ("use", "policy"), [("cache", "allkeys-lru"), ("queue", "noeviction")], ids=["cache", "queue"]
)
def test_password_maxmemory_and_policy(start_redis: StartRedis, use: str, policy: str) -> None:
    inst = instance(name=use, use=use)
    assert inst.maxmemory_bytes == 32 * 1024 * 1024 * 3 // 4
    server = start_instance(start_redis, inst)

    with server.client(authenticated=False) as anonymous:
        for command in (["SET", "k", "v"], ["GET", "k"], ["PING"], ["CONFIG", "GET", "*"]):
            reply = anonymous.try_call(*command)
            assert isinstance(reply, ReplyError), (command, reply)
            assert str(reply).startswith("NOAUTH"), (command, reply)
        wrong = anonymous.try_call("AUTH", "not-the-password")
        assert isinstance(wrong, ReplyError)
        assert str(wrong).startswith("WRONGPASS"), wrong
        assert anonymous.call("AUTH", server.password) == "OK"
        assert anonymous.call("SET", "k", "v") == "OK"

    with server.client() as conn:
        assert conn.call("GET", "k") == "v"
        assert conn.config_get("maxmemory") == str(inst.maxmemory_bytes)
        assert conn.config_get("maxmemory-policy") == policy
        assert conn.config_get("bind") == HOST
        assert conn.config_get("protected-mode") == "yes"
        assert conn.config_get("appendonly") == "no"
        assert conn.config_get("save") == ""
        assert conn.config_get("masterauth") == server.password


# 2. a cache instance evicts when full


def test_cache_instance_evicts_instead_of_failing(start_redis: StartRedis) -> None:
    inst = instance(use="cache")
    server = start_instance(start_redis, inst)
    value = b"c" * VALUE_SIZE
    written = 3 * inst.maxmemory_bytes // VALUE_SIZE
    with server.client() as conn:
        for first in range(0, written, BATCH):
            replies = conn.pipeline(set_commands(first, min(BATCH, written - first), value))
            errors = [r for r in replies if r != "OK"]
            assert not errors, f"SET failed on a cache instance after {first} keys: {errors[0]}"
        # one transaction: every command evicts first, so separate calls would disagree
        *queued, (keys, stats, memory) = conn.pipeline(
            [["MULTI"], ["DBSIZE"], ["INFO", "stats"], ["INFO", "memory"], ["EXEC"]]
        )
        assert queued == ["OK", "QUEUED", "QUEUED", "QUEUED"], queued
        evicted = int(redis_servers.parse_info(stats)["evicted_keys"])
        used = int(redis_servers.parse_info(memory)["used_memory"])
        assert evicted > 0
        assert keys < written
        assert keys + evicted == written
        assert used <= inst.maxmemory_bytes + MEMORY_SLACK, (used, inst.maxmemory_bytes)
        # LRU: the key written last is still there
        assert conn.call("GET", f"key:{written - 1:06d}", raw=True) == value


# 3. a queue instance refuses writes when full and loses nothing


def test_queue_instance_refuses_writes_and_keeps_every_job(start_redis: StartRedis) -> None:
    inst = instance(name="jobs", use="queue")
    server = start_instance(start_redis, inst)
    limit = 3 * inst.maxmemory_bytes // VALUE_SIZE
    pushed = 0
    errors: list[str] = []
    with server.client() as conn:
        while not errors:
            assert pushed < limit, f"{pushed} pushes of {VALUE_SIZE} bytes and no OOM"
            batch = [
                ["RPUSH", "queue:jobs", b"%08d" % n + b"j" * (VALUE_SIZE - 8)]
                for n in range(pushed, pushed + BATCH)
            ]
            for reply in conn.pipeline(batch):
                if isinstance(reply, ReplyError):
                    errors.append(str(reply))
                else:
                    # RPUSH returns the new length: no push was lost on the way
                    assert reply == pushed + 1
                    pushed += 1
        assert errors[0].startswith(OOM), errors[0]
        assert all(e.startswith("OOM") for e in errors), set(errors)
        assert pushed * VALUE_SIZE >= inst.maxmemory_bytes // 2
        assert conn.call("LLEN", "queue:jobs") == pushed
        assert int(conn.info("stats")["evicted_keys"]) == 0
        first = conn.call("LINDEX", "queue:jobs", 0, raw=True)
        last = conn.call("LINDEX", "queue:jobs", -1, raw=True)
        assert first[:8] == b"00000000"
        assert last[:8] == b"%08d" % (pushed - 1)
        # still full: a new job is refused, never silently dropped
        refused = conn.try_call("RPUSH", "queue:jobs", "x" * VALUE_SIZE)
        assert isinstance(refused, ReplyError)
        assert str(refused).startswith(OOM)
        # workers draining the queue make room again
        popped = conn.call("LPOP", "queue:jobs", 200)
        assert len(popped) == 200
        assert conn.call("RPUSH", "queue:jobs", "again") == pushed - 200 + 1


# 4. every allowed override, and persistence


def test_samples_cover_every_allowed_setting() -> None:
    assert set(SAMPLES) == set(redis_params.ALLOWED)
    for key, value in SAMPLES.items():
        assert redis_params.check(key, value) is None, key


def _expected(key: str, value: str, got: str) -> bool:
    if redis_params.ALLOWED[key].kind == "flags":
        return set(got) == set(value)  # Redis reorders the flags ("Elg" -> "glE")
    return got == value


def test_every_allowed_override_is_accepted(start_redis: StartRedis) -> None:
    inst = instance(config=SAMPLES)
    assert inst.settings == SAMPLES
    server = start_instance(start_redis, inst)
    with server.client() as conn:
        got = {key: conn.config_get(key) for key in SAMPLES}
        wrong = {k: (SAMPLES[k], got[k]) for k in SAMPLES if not _expected(k, SAMPLES[k], got[k])}
        assert not wrong, f"(rendered, CONFIG GET) differ: {wrong}"
        # the managed settings are untouched by the overrides
        assert conn.config_get("maxmemory") == str(inst.maxmemory_bytes)
        assert conn.config_get("maxmemory-policy") == "allkeys-lru"


def test_empty_keyspace_events_override_is_accepted(start_redis: StartRedis) -> None:
    """The planner accepts notify-keyspace-events "" (no events, Redis's default)."""
    inst = instance(config={"notify-keyspace-events": ""})
    server = start_instance(start_redis, inst)
    with server.client() as conn:
        assert conn.config_get("notify-keyspace-events") == ""


def test_activedefrag_yes(start_redis: StartRedis) -> None:
    """activedefrag yes needs Redis's own jemalloc (as in the redis image Headroom
    deploys); Debian's build is linked against the system jemalloc and refuses it."""
    inst = instance(config={"activedefrag": "yes"})
    try:
        server = start_instance(start_redis, inst)
    except redis_servers.ServerError as err:
        if "compiled with a modified Jemalloc" in str(err):
            pytest.skip("this redis-server is built without active defrag support (Debian)")
        raise
    with server.client() as conn:
        assert conn.config_get("activedefrag") == "yes"


def test_persistence_on(start_redis: StartRedis) -> None:
    inst = instance(persistence={"size": "1Gi"})
    server = start_instance(start_redis, inst)
    with server.client() as conn:
        assert conn.config_get("appendonly") == "yes"
        assert conn.config_get("save") == "3600 1 300 100 60 10000"
        assert conn.config_get("dir") == str(server.dir)
        assert conn.call("SET", "kept", "across restarts") == "OK"
    assert server.dir is not None
    assert (server.dir / "appendonlydir").is_dir()
    server.restart()
    with server.client() as conn:
        assert conn.call("GET", "kept") == "across restarts"


# 5. injection and unsafe policies are planner problems


@pytest.mark.parametrize("key", sorted(redis_params.ALLOWED))
@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n"], ids=["lf", "cr", "crlf"])
def test_multiline_override_is_a_planner_problem(key: str, breaker: str) -> None:
    plan = make_plan(
        {
            "name": "cache",
            "use": "cache",
            "memory": MEMORY,
            "config": {key: f"{SAMPLES[key]}{breaker}requirepass x{breaker}"},
        }
    )
    assert not plan.ok
    fields = [p.field for p in plan.problems]
    assert fields == [f"spec.cache.instances[0].config.{key}"], fields
    assert key not in plan.redis_named("cache").settings


EVICTING = [
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


@pytest.mark.parametrize("policy", EVICTING)
def test_evicting_queue_is_a_planner_problem(policy: str) -> None:
    plan = make_plan(
        {"name": "cache", "use": "cache", "memory": MEMORY},
        {"name": "jobs", "use": "queue", "memory": MEMORY, "evictionPolicy": policy},
    )
    assert not plan.ok
    fields = [p.field for p in plan.problems]
    assert fields == ["spec.cache.instances[1].evictionPolicy"], fields


def test_queue_with_noeviction_is_fine() -> None:
    plan = make_plan({"name": "jobs", "use": "queue", "evictionPolicy": "noeviction"})
    assert plan.ok, [str(p) for p in plan.problems]
    assert plan.redis_named("jobs").eviction_policy == "noeviction"


# 6. Sentinel failover


def _replica_extra(master_port: int) -> str:
    # what the pick-master init container appends (with pod FQDNs there)
    return f"replicaof {HOST} {master_port}\nreplica-announce-ip {HOST}\n"


def _sentinel_conf(master_port: int, password: str) -> Callable[[int, Path], str]:
    def render(port: int, workdir: Path) -> str:
        conf = redis.render_sentinel_conf(
            master_host=HOST, master_port=master_port, port=port, password=password
        )
        # announce-ip is what the sentinel init container appends; bind is ours:
        # the rendered sentinel.conf has none, so it would listen on every address.
        return conf + f"sentinel announce-ip {HOST}\nbind {HOST}\n"

    return render


def _master_addr(sentinel: RedisProcess) -> tuple[str, int] | None:
    try:
        with sentinel.client(timeout=5) as conn:
            reply = conn.try_call("SENTINEL", "get-master-addr-by-name", redis.MASTER_SET)
    except (OSError, redis_servers.ServerError):
        return None
    if not isinstance(reply, list) or len(reply) != 2:
        return None
    return reply[0], int(reply[1])


def _sentinel_master(sentinel: RedisProcess) -> dict[str, str]:
    with sentinel.client(timeout=5) as conn:
        reply = conn.call("SENTINEL", "master", redis.MASTER_SET)
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _link_up(replica: RedisProcess) -> bool:
    with replica.client(timeout=5) as conn:
        return conn.info("replication").get("master_link_status") == "up"


@pytest.mark.usefixtures("need_sentinel")
def test_sentinels_fail_over_to_the_replica(start_redis: StartRedis) -> None:
    inst = instance(name="jobs", use="queue", sentinel={"replicas": 1})
    assert inst.sentinel_replicas == 1
    password = secrets.token_hex(24)
    files = {"auth.conf": redis.render_auth(password)}
    master = start_redis(conf_for(inst), files=files, password=password)
    replica = start_redis(
        conf_for(inst, _replica_extra(master.port)), files=files, password=password
    )
    wait_until(lambda: _link_up(replica), timeout=30, what="the replica to sync (masterauth)")
    with master.client() as conn:
        assert conn.call("SET", "before-failover", "1") == "OK"
        assert conn.call("WAIT", 1, 5000) == 1

    sentinels = [
        start_redis(_sentinel_conf(master.port, password), password=password, sentinel=True)
        for _ in range(redis.SENTINELS)
    ]
    with sentinels[0].client(authenticated=False) as anonymous:
        reply = anonymous.try_call("SENTINEL", "get-master-addr-by-name", redis.MASTER_SET)
        assert isinstance(reply, ReplyError)
        assert str(reply).startswith("NOAUTH"), reply

    def discovered() -> bool:
        return all(
            (info := _sentinel_master(s))["num-other-sentinels"] == str(redis.SENTINELS - 1)
            and info["num-slaves"] == "1"
            and info["quorum"] == str(redis.SENTINEL_QUORUM)
            and "s_down" not in info["flags"]
            for s in sentinels
        )

    # sentinels find each other through the master's hello channel (every 2 s)
    wait_until(discovered, timeout=30, what="the sentinels to find each other and the replica")
    for sentinel in sentinels:
        assert _master_addr(sentinel) == (HOST, master.port)

    master.kill()
    killed = time.monotonic()

    def promoted() -> bool:
        return all(_master_addr(s) == (HOST, replica.port) for s in sentinels)

    wait_until(
        promoted,
        timeout=FAILOVER_TIMEOUT,
        what=f"the sentinels to promote the replica on port {replica.port}",
        interval=0.2,
    )
    failover_seconds = time.monotonic() - killed

    def is_master() -> bool:
        with replica.client(timeout=5) as conn:
            return conn.call("ROLE")[0] == "master"

    wait_until(is_master, timeout=10, what="the promoted replica to report role master")
    with replica.client() as conn:
        assert conn.call("GET", "before-failover") == "1"
        # min-replicas-to-write 1: alone, the new master refuses writes a failover would lose
        refused = conn.try_call("SET", "after-failover", "2")
        assert isinstance(refused, ReplyError)
        assert str(refused).startswith("NOREPLICAS"), refused
    with Redis(replica.port) as anonymous:
        reply = anonymous.try_call("SET", "x", "y")
        assert isinstance(reply, ReplyError)
        assert str(reply).startswith("NOAUTH")
    print(f"failover took {failover_seconds:.1f}s after SIGKILL of the master")
