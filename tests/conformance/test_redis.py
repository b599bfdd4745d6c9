"""The redis.conf, auth include and sentinel.conf Headroom renders, run in
Debian's redis-server and redis-sentinel 7.0 on 127.0.0.1.

These prove what the unit tests can only assume: that every rendered directive
and every allowed override is accepted by Redis 7.0 and takes effect, that the
generated password is required, that a cache instance evicts instead of failing
when full while a queue instance refuses writes and keeps every job, and that
an HA instance started by its rendered scripts (a master, two replicas, three
sentinels) fails over on kill -9 of the master without losing an acknowledged
write, and that a dead master's pod comes back as a replica of the new master.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis_servers
from redis_servers import HOST, RedisProcess, ReplyError, wait_until
from tests import profiles

from headroom.api import v1alpha1
from headroom.builders import desired, redis
from headroom.planning import planner, redis_params

pytestmark = pytest.mark.conformance

StartRedis = Callable[..., RedisProcess]

MEMORY = "32Mi"
VALUE_SIZE = 10 * 1024
BATCH = 100
# used_memory may pass maxmemory by about one command's worth before Redis evicts
# (or refuses) on the next one; allow that plus allocator rounding.
MEMORY_SLACK = 512 * 1024
OOM = "OOM command not allowed when used memory > 'maxmemory'"
FAILOVER_TIMEOUT = 60


def make_plan(*instances: dict[str, Any]) -> planner.Plan:
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
    return planner.plan(profile)


def instance(name: str = "cache", use: str = "cache", **extra: Any) -> planner.RedisPlan:
    plan = make_plan({"name": name, "use": use, "memory": MEMORY, **extra})
    assert plan.ok, [str(p) for p in plan.problems]
    return plan.redis_named(name)


def conf_for(inst: planner.RedisPlan, extra: str = "") -> Callable[[int, Path], str]:
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
    start_redis: StartRedis, inst: planner.RedisPlan, extra: str = ""
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


def _expected(key: str, value: str, got: str) -> bool:
    if redis_params.ALLOWED[key].kind == "flags":
        return set(got) == set(value)  # Redis reorders the flags ("Elg" -> "glE")
    return got == value


def test_every_allowed_override_is_accepted(start_redis: StartRedis) -> None:
    inst = instance(config=profiles.REDIS_SAMPLES)
    assert inst.settings == profiles.REDIS_SAMPLES
    server = start_instance(start_redis, inst)
    with server.client() as conn:
        got = {key: conn.config_get(key) for key in profiles.REDIS_SAMPLES}
        wrong = {
            k: (profiles.REDIS_SAMPLES[k], got[k])
            for k in profiles.REDIS_SAMPLES
            if not _expected(k, profiles.REDIS_SAMPLES[k], got[k])
        }
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


# 6. Sentinel HA: the very scripts and configs the builder renders, each pod's
# environment (host names, ports, mount paths) pointed at 127.0.0.1.

HA_REPLICAS = 2
# A start of the old master waits for the sentinels' failover (down-after 5 s).
POD_START_TIMEOUT = redis.FAILOVER_TIMEOUT_SECONDS + 30
WRITES_BEFORE_KILL = 2000


def localize(text: str, directives: dict[str, str]) -> str:
    """``text`` with the line of each directive (its leading words) replaced: what
    differs between a pod and this machine (addresses, ports, mounts). Each one
    must be there exactly once, so nothing else is changed by accident."""
    lines = text.splitlines()
    for directive, value in directives.items():
        hits = [n for n, line in enumerate(lines) if line.startswith(f"{directive} ")]
        assert len(hits) == 1, f"{directive!r} appears {len(hits)} times in\n{text}"
        lines[hits[0]] = f"{directive} {value}"
    return "\n".join(lines) + "\n"


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from the API>") for e in container["env"]}


class HaInstance:
    """An HA instance's rendered objects and the ports its pods get here."""

    def __init__(self, tools: redis_servers.RedisTools, *, password: str) -> None:
        self.tools = tools
        self.password = password
        self.plan = make_plan(
            {
                "name": "jobs",
                "use": "queue",
                "memory": MEMORY,
                "sentinel": {"replicas": HA_REPLICAS},
            }
        )
        assert self.plan.ok, [str(p) for p in self.plan.problems]
        self.inst = self.plan.redis_named("jobs")
        objects = {
            desired.key_of(obj): obj
            for obj in redis.build(self.plan, self.inst, password=password, app_pod_selector={})
        }
        base = self.plan.names.redis(self.inst.name)
        self.redis_conf = objects[f"ConfigMap/{base}-config"]["data"]["redis.conf"]
        secret = objects[f"Secret/{self.plan.names.redis_auth(self.inst.name)}"]["data"]
        self.secret_files = {k: base64.b64decode(v).decode() for k, v in secret.items()}
        pods = objects[f"StatefulSet/{base}"]["spec"]
        assert pods["replicas"] == 1 + HA_REPLICAS
        (self.redis_container,) = [
            c for c in pods["template"]["spec"]["containers"] if c["name"] == "redis"
        ]
        # its one init step copies the ConfigMap into the file the start script reads
        (self.redis_init,) = pods["template"]["spec"]["initContainers"]
        assert self.redis_init["command"][:3] == ["python", "-m", redis.AGENT_MODULE]
        sentinel_pods = objects[f"StatefulSet/{self.plan.names.sentinel(self.inst.name)}"]
        sentinel_spec = sentinel_pods["spec"]["template"]["spec"]
        (self.sentinel_init,) = sentinel_spec["initContainers"]
        (self.sentinel_container,) = sentinel_spec["containers"]
        self.redis_ports = [redis_servers.free_port() for _ in range(1 + HA_REPLICAS)]
        self.sentinel_ports = [redis_servers.free_port() for _ in range(redis.SENTINELS)]

    def redis_pod(self, ordinal: int) -> redis_servers.PodProcess:
        container = self.redis_container
        shell, flag, script = container["command"]
        assert (shell, flag) == ("sh", "-c")
        env = _container_env(container)
        # what the pod would have: its own name, the Services' names as 127.0.0.1 ports
        assert env["SENTINELS"].split() == [
            f"{host}:{planner.SENTINEL_PORT}" for host in redis.sentinel_hosts(self.plan, self.inst)
        ]
        assert env["INITIAL_MASTER"] == f"{self.plan.names.redis_pod_host(self.inst.name, 0)}:6379"

        def setup(port: int, workdir: Path) -> tuple[dict[str, str], dict[str, str]]:
            rendered = localize(
                self.redis_conf,
                {
                    "bind": HOST,
                    "port": str(port),
                    "dir": str(workdir),
                    "include": str(workdir / "auth.conf"),
                },
            )
            mounted = workdir / "configmap" / "redis.conf"
            mounted.parent.mkdir()
            mounted.write_text(rendered)
            paths = {
                f"{redis.CONFIG_DIR}/redis.conf": str(mounted),
                redis.START_FILE: str(workdir / "redis.rendered.conf"),
            }
            init = [sys.executable, *(paths.get(a, a) for a in self.redis_init["command"][1:])]
            subprocess.run(init, check=True, capture_output=True, timeout=60)
            assert env["REDIS_CONFIG"] == redis.START_FILE
            files = {
                "auth.conf": self.secret_files["auth.conf"],
                "password": self.secret_files["password"],
            }
            values = {
                **env,
                "POD_NAME": f"{self.plan.names.redis(self.inst.name)}-{ordinal}",
                "POD_FQDN": HOST,
                "REDIS_CONFIG": str(workdir / "redis.rendered.conf"),
                "REDIS_RUN_CONFIG": str(workdir / "redis.conf"),
                "REDIS_PASSWORD_FILE": str(workdir / "password"),
                "REDIS_PORT": str(port),
                "SENTINELS": " ".join(f"{HOST}:{p}" for p in self.sentinel_ports),
                "INITIAL_MASTER": f"{HOST}:{self.redis_ports[0]}",
            }
            return files, redis_servers.pod_env(env, values, tools=self.tools)

        return redis_servers.PodProcess(
            kind=f"redis-{ordinal}",
            port=self.redis_ports[ordinal],
            command=lambda _dir: ["sh", "-c", script],
            setup=setup,
            password=self.password,
            start_timeout=POD_START_TIMEOUT,
        )

    def sentinel(self, ordinal: int) -> redis_servers.PodProcess:
        shell, flag, script = self.sentinel_init["command"]
        assert (shell, flag) == ("sh", "-c")
        env = _container_env(self.sentinel_init)
        # the container runs what the init container wrote
        assert self.sentinel_container["command"] == ["redis-sentinel", env["SENTINEL_RUN_CONFIG"]]
        assert self.tools.sentinel is not None
        sentinel_binary = self.tools.sentinel

        def setup(port: int, workdir: Path) -> tuple[dict[str, str], dict[str, str]]:
            rendered = localize(
                self.secret_files["sentinel.conf"],
                {
                    "bind": HOST,
                    "port": str(port),
                    f"sentinel monitor {redis.MASTER_SET}": (
                        f"{HOST} {self.redis_ports[0]} {redis.SENTINEL_QUORUM}"
                    ),
                },
            )
            values = {
                **env,
                "POD_NAME": f"{self.plan.names.sentinel(self.inst.name)}-{ordinal}",
                "POD_FQDN": HOST,
                "SENTINEL_CONFIG": str(workdir / "sentinel.rendered.conf"),
                "SENTINEL_RUN_CONFIG": str(workdir / "sentinel.conf"),
            }
            files = {"sentinel.rendered.conf": rendered}
            return files, redis_servers.pod_env(env, values, tools=self.tools)

        return redis_servers.PodProcess(
            kind=f"sentinel-{ordinal}",
            port=self.sentinel_ports[ordinal],
            init=script,
            command=lambda workdir: [str(sentinel_binary), str(workdir / "sentinel.conf")],
            setup=setup,
            config_name="sentinel.conf",
            password=self.password,
        )


def _role(server: RedisProcess) -> list[Any]:
    with server.client(timeout=5) as conn:
        reply: list[Any] = conn.call("ROLE")
        return reply


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


def _replica_of(replica: RedisProcess, master: RedisProcess) -> bool:
    with replica.client(timeout=5) as conn:
        info = conn.info("replication")
    return info.get("role") == "slave" and info.get("master_port") == str(master.port)


class Writer(threading.Thread):
    """SETs keys one by one on ``server`` until a write fails (the master died);
    ``acked`` holds every key whose SET was answered OK."""

    def __init__(self, server: RedisProcess, prefix: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.prefix = prefix
        self.acked: list[str] = []
        self.failure = ""

    def run(self) -> None:
        try:
            with self.server.client(timeout=10) as conn:
                for n in itertools.count():
                    key = f"{self.prefix}:{n:07d}"
                    reply = conn.try_call("SET", key, n)
                    if reply != "OK":
                        self.failure = str(reply)
                        return
                    self.acked.append(key)
        except (OSError, redis_servers.ServerError) as err:
            self.failure = f"{type(err).__name__}: {err}"


def _kill_while_writing(master: RedisProcess, prefix: str) -> tuple[Writer, float]:
    """kill -9 ``master`` while a client writes to it, after WRITES_BEFORE_KILL acks."""
    writer = Writer(master, prefix)
    writer.start()
    wait_until(
        lambda: len(writer.acked) >= WRITES_BEFORE_KILL or not writer.is_alive(),
        timeout=30,
        what=f"{WRITES_BEFORE_KILL} acknowledged writes",
    )
    master.kill()
    killed = time.monotonic()
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert len(writer.acked) >= WRITES_BEFORE_KILL, writer.failure
    return writer, killed


def _missing_keys(server: RedisProcess, keys: list[str]) -> list[str]:
    missing = []
    with server.client() as conn:
        for first in range(0, len(keys), 1000):
            batch = keys[first : first + 1000]
            replies = conn.pipeline([["EXISTS", key] for key in batch])
            missing += [key for key, found in zip(batch, replies, strict=True) if found != 1]
    return missing


def _named_master(
    sentinels: list[RedisProcess], candidates: list[RedisProcess]
) -> RedisProcess | None:
    """The candidate every sentinel names as the master, if they agree on one."""
    named = {_master_addr(s) for s in sentinels}
    return next((c for c in candidates if named == {(HOST, c.port)}), None)


def _promotion(sentinels: list[RedisProcess], candidates: list[RedisProcess]) -> RedisProcess:
    """Wait for the sentinels to agree on one of ``candidates`` as the master."""
    deadline = time.monotonic() + FAILOVER_TIMEOUT
    while (promoted := _named_master(sentinels, candidates)) is None:
        if time.monotonic() >= deadline:
            named = [_master_addr(s) for s in sentinels]
            raise TimeoutError(f"no promotion of one of {[c.port for c in candidates]}: {named}")
        time.sleep(0.2)
    return promoted


@pytest.mark.usefixtures("need_sentinel")
def test_rendered_ha_fails_over_and_the_old_master_comes_back_as_a_replica(
    redis_tools: redis_servers.RedisTools,
    start_pod: Callable[[redis_servers.PodProcess], redis_servers.PodProcess],
) -> None:
    ha = HaInstance(redis_tools, password=secrets.token_hex(24))
    assert f"min-replicas-to-write {ha.inst.min_replicas_to_write}" in ha.redis_conf
    assert ha.inst.min_replicas_to_write == 1
    pods = [ha.redis_pod(n) for n in range(1 + HA_REPLICAS)]

    # A cold start: no sentinel answers yet, so pod 0 is the master, the others its replicas.
    start_pod(pods[0])
    assert _role(pods[0])[0] == "master"
    with pods[0].client() as conn:
        assert conn.config_get("min-replicas-to-write") == "1"
        assert conn.config_get("min-replicas-max-lag") == str(redis.MIN_REPLICAS_MAX_LAG_SECONDS)
        # with no replica connected the master refuses writes (a failover would lose them)
        refused = conn.try_call("SET", "alone", "1")
        assert isinstance(refused, ReplyError)
        assert str(refused).startswith("NOREPLICAS"), refused
    for pod in pods[1:]:
        start_pod(pod)
        wait_until(lambda pod=pod: _link_up(pod), timeout=30, what=f"{pod.kind} to sync")
        assert _replica_of(pod, pods[0])

    sentinels = [start_pod(ha.sentinel(n)) for n in range(redis.SENTINELS)]
    with sentinels[0].client(authenticated=False) as anonymous:
        reply = anonymous.try_call("SENTINEL", "get-master-addr-by-name", redis.MASTER_SET)
        assert isinstance(reply, ReplyError)
        assert str(reply).startswith("NOAUTH"), reply

    def discovered() -> bool:
        return all(
            (info := _sentinel_master(s))["num-other-sentinels"] == str(redis.SENTINELS - 1)
            and info["num-slaves"] == str(HA_REPLICAS)
            and info["quorum"] == str(redis.SENTINEL_QUORUM)
            and "s_down" not in info["flags"]
            for s in sentinels
        )

    # sentinels find each other through the master's hello channel (every 2 s)
    wait_until(discovered, timeout=30, what="the sentinels to find each other and the replicas")
    assert _named_master(sentinels, pods) is pods[0]

    # kill -9 the master in the middle of a stream of writes
    first, killed = _kill_while_writing(pods[0], "first")
    new_master = _promotion(sentinels, pods[1:])
    failover_seconds = time.monotonic() - killed
    wait_until(lambda: _role(new_master)[0] == "master", timeout=10, what="role master")
    with new_master.client(authenticated=False) as anonymous:
        reply = anonymous.try_call("SET", "x", "y")
        assert isinstance(reply, ReplyError)
        assert str(reply).startswith("NOAUTH"), reply
    lost_on_failover = _missing_keys(new_master, first.acked)
    assert not lost_on_failover, f"{len(lost_on_failover)} acknowledged writes lost"

    # The old master's pod starts again (its start script runs again): it asks the
    # sentinels and comes back as a replica of the new master, not as a second master.
    restarted = time.monotonic()
    pods[0].restart()
    rejoin_seconds = time.monotonic() - restarted
    assert _replica_of(pods[0], new_master)
    wait_until(lambda: _link_up(pods[0]), timeout=30, what="the old master to sync")
    masters = [pod for pod in pods if _role(pod)[0] == "master"]
    assert masters == [new_master]
    assert not _missing_keys(pods[0], first.acked)
    with new_master.client() as conn:
        assert conn.call("SET", "after-failover", "2") == "OK"
        assert conn.call("WAIT", HA_REPLICAS, 5000) == HA_REPLICAS

    # The master dies and its pod is back at once, before the sentinels noticed:
    # they still name it, so it waits for their failover instead of coming back
    # as an empty master that its replicas would copy.
    second, killed = _kill_while_writing(new_master, "second")
    new_master.restart()
    waited_seconds = time.monotonic() - killed
    third_master = _promotion(sentinels, [pod for pod in pods if pod is not new_master])
    assert _replica_of(new_master, third_master)
    assert "waiting for a failover" in new_master.log_text()
    wait_until(lambda: _link_up(new_master), timeout=30, what="the restarted master to sync")
    assert [pod for pod in pods if _role(pod)[0] == "master"] == [third_master]
    acked = first.acked + second.acked
    lost = _missing_keys(third_master, acked)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost"
    with third_master.client() as conn:
        assert conn.call("GET", "after-failover") == "2"
    print(
        f"\nfailover {failover_seconds:.1f}s after kill -9 of the master; "
        f"old master back as a replica in {rejoin_seconds:.1f}s; "
        f"a master restarted at once came back as a replica after {waited_seconds:.1f}s; "
        f"{len(acked)} acknowledged writes, 0 lost"
    )
