"""Redis takes its config online, for real: redis-server (the conformance
suite's, Debian's 7.0; the default image ships 7.2.5) started from the file
the Redis pod's init step writes (its command, as the StatefulSet Headroom
renders gives it), and the pod's agent (headroom.agent.redis, its loop and
its own RESP client) offered each new redis.conf of the instance's ConfigMap
as its watch would offer it; and once as its pod runs it, the sidecar's
command watching the ConfigMap on a real API server (the session's local
control plane, or $KUBECONFIG) with its ServiceAccount's token and Role.

A profile's eviction policy and memory (maxmemory, up to what the pod's
memory limit holds: more waits for the roll a larger limit brings), and its
allowed config settings, reach the running Redis by CONFIG SET: the same
process (run_id in INFO server, pid), every key kept. A setting removed from the config goes
back to Redis's default, online. A directive Redis takes only at start
(``dir``) is refused by CONFIG SET, and the agent leaves it to the pod's
roll. The classification the builder hashes into the pod template
(planning.redis_params.ONLINE_DEFAULTS) is held to this binary: every online
setting is accepted by CONFIG SET at the value Headroom renders, with the
default the binary reports, and every other directive is refused. Only
addresses differ from a pod's: the bind address, the port, the data dir and
the auth include's path.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import api_server
import pytest
from redis_servers import HOST, RedisProcess, ReplyError, wait_until
from tests import profiles
from tests.e2e import kube

from headroom.agent import configmap
from headroom.agent import redis as redis_agent
from headroom.api import v1alpha1
from headroom.builders import agent_pod, desired, redis
from headroom.planning import credentials, planner, redis_params

pytestmark = pytest.mark.conformance

StartRedis = Callable[..., RedisProcess]
KEYS = 500
DEADLINE = 10.0  # seconds from an offer to the setting in the running Redis
MEMORY = "64Mi"  # the pod's: its Redis container's memory limit
MEMORY_LIMIT = 64 * 1024**2


def _plan(**cache: Any) -> planner.Plan:
    body = profiles.cache_profile(uid="online", **{"memory": MEMORY, **cache})
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert planned.ok, planned.problem_text()
    return planned


def _conf(planned: planner.Plan, *, port: int, workdir: Path) -> str:
    """The instance's ConfigMap text with this machine's addresses."""
    return redis.render_conf(
        planned.redis_named("cache"),
        bind=HOST,
        port=port,
        data_dir=str(workdir),
        auth_file=str(workdir / "auth.conf"),
    )


def _built(planned: planner.Plan, password: str, namespace: str) -> dict[str, Any]:
    """The instance's objects by Kind/name, in ``namespace``, with no owner
    (the profile is not in the cluster: its garbage collector would take them)."""
    creds = credentials.Credentials(
        username="app",
        password="pw",
        stats_password="stats",
        revision="1",
        redis_passwords={"cache": password},
    )
    objs = desired.build(planned, creds, app_pod_selector=None)
    for obj in objs.values():
        obj["metadata"]["namespace"] = namespace
        obj["metadata"].pop("ownerReferences", None)
        for subject in obj.get("subjects") or []:
            subject["namespace"] = namespace
    return objs


def _container(objs: dict[str, Any], name: str) -> dict[str, Any]:
    spec = objs["StatefulSet/shop-redis-cache"]["spec"]["template"]["spec"]
    (found,) = [c for c in [*spec["initContainers"], *spec["containers"]] if c["name"] == name]
    assert found["command"][:3] == ["python", "-m", redis.AGENT_MODULE], found
    return found


def _command(container: dict[str, Any], paths: dict[str, str]) -> list[str]:
    """The container's command on this machine: this interpreter, and each
    path the pod has (a mount) at this test's place for it."""
    return [sys.executable, *(paths.get(arg, arg) for arg in container["command"][1:])]


class Pod:
    """redis-server started from the init step's file. ``on_config`` sees the
    ConfigMap's text (this port, this dir) before the init step copies it."""

    def __init__(
        self,
        start_redis: StartRedis,
        planned: planner.Plan,
        *,
        namespace: str = "default",
        on_config: Callable[[dict[str, Any]], None] = lambda _: None,
    ) -> None:
        self.password = secrets.token_hex(24)
        self.objects = _built(planned, self.password, namespace)
        self.config_map = self.objects["ConfigMap/shop-redis-cache-config"]

        def config(port: int, workdir: Path) -> str:
            self.config_map["data"] = {"redis.conf": _conf(planned, port=port, workdir=workdir)}
            on_config(self.config_map)
            # the init step copies the mounted ConfigMap into the file Redis runs
            mounted = workdir / "configmap" / "redis.conf"
            mounted.parent.mkdir()
            mounted.write_text(self.config_map["data"]["redis.conf"])
            paths = {
                f"{redis.CONFIG_DIR}/redis.conf": str(mounted),
                redis.START_FILE: str(workdir / "redis.conf"),
            }
            init = _command(_container(self.objects, "agent-init"), paths)
            subprocess.run(init, check=True, capture_output=True, timeout=60)
            return (workdir / "redis.conf").read_text()

        self.server = start_redis(
            config,
            files={"auth.conf": redis.render_auth(self.password), "password": self.password},
            password=self.password,
        )
        assert self.server.dir is not None
        self.workdir = self.server.dir
        self.stop = threading.Event()
        self.agent = redis_agent.Agent(
            output=self.server.conf_path,
            server=redis_agent.Local(port=self.server.port, password=self.password),
        )

    def run_agent(self) -> None:
        """The agent's loop in this process, offered texts by the test."""
        self.agent.start()
        self.loop = threading.Thread(
            target=configmap.run, args=(self.agent,), kwargs={"stop": self.stop}
        )
        self.loop.start()

    def text(self, planned: planner.Plan) -> str:
        """``planned``'s redis.conf with this pod's addresses."""
        return _conf(planned, port=self.server.port, workdir=self.workdir)

    def offer(self, planned: planner.Plan) -> str:
        text = self.text(planned)
        self.agent.offer(text)
        return text

    def get(self, key: str) -> str:
        with self.server.client() as conn:
            return conn.config_get(key)

    def wait_for(self, key: str, value: str) -> None:
        wait_until(lambda: self.get(key) == value, timeout=DEADLINE, what=f"{key} {value}")

    def identity(self) -> tuple[str, int | None]:
        with self.server.client() as conn:
            run_id = conn.info("server")["run_id"]
        assert self.server.proc is not None
        return run_id, self.server.proc.pid

    def halt(self) -> None:
        self.stop.set()
        self.agent.wake.set()
        self.loop.join(timeout=30)


@pytest.fixture
def pod(start_redis: StartRedis) -> Iterator[Pod]:
    running = Pod(start_redis, _plan())
    running.agent.memory_limit = MEMORY_LIMIT  # as kubelet's Downward API gives it
    running.run_agent()
    yield running
    running.halt()


def test_memory_policy_and_settings_change_online_in_the_same_redis(pod: Pod) -> None:
    planned = _plan()
    assert pod.get("maxmemory") == str(planned.redis_named("cache").maxmemory_bytes)
    assert pod.get("maxmemory-policy") == "allkeys-lru"
    with pod.server.client() as conn:
        conn.pipeline([["SET", f"key:{n}", "v" * 100] for n in range(KEYS)])
    before = pod.identity()

    smaller = _plan(memory="32Mi", evictionPolicy="allkeys-lfu", config={"hz": "50"})
    text = pod.offer(smaller)
    pod.wait_for("maxmemory", str(smaller.redis_named("cache").maxmemory_bytes))
    pod.wait_for("maxmemory-policy", "allkeys-lfu")
    pod.wait_for("hz", "50")
    assert pod.server.conf_path.read_text() == text  # what a restarted container would run

    pod.offer(_plan(evictionPolicy="allkeys-lfu"))  # back to the pod's size, hz removed
    pod.wait_for("maxmemory", str(planned.redis_named("cache").maxmemory_bytes))
    pod.wait_for("hz", redis_params.ONLINE_DEFAULTS["hz"])

    # more memory than this pod's limit holds: left for the roll a larger limit brings
    larger = pod.offer(_plan(memory="128Mi", evictionPolicy="allkeys-lfu", config={"hz": "20"}))
    pod.wait_for("hz", "20")
    assert pod.get("maxmemory") == str(planned.redis_named("cache").maxmemory_bytes)
    assert pod.server.conf_path.read_text() == larger  # the new pod starts with it

    assert pod.identity() == before  # the same process: nothing restarted
    with pod.server.client() as conn:
        assert conn.call("DBSIZE") == KEYS
        assert conn.call("GET", "key:7") == "v" * 100


def test_a_start_only_directive_is_refused_online_and_left_to_the_roll(pod: Pod) -> None:
    with pod.server.client() as conn:
        refused = conn.try_call("CONFIG", "SET", "dir", str(pod.workdir / "elsewhere"))
    assert isinstance(refused, ReplyError) and "protected config" in str(refused), refused
    running = pod.server.conf_path.read_text()
    moved = running.replace(f"dir {pod.workdir}", f"dir {pod.workdir}/elsewhere")
    moved = moved.replace("maxmemory-policy allkeys-lru", "maxmemory-policy allkeys-random")
    assert redis_params.restart_changes(running, moved) == ["dir"]
    pod.agent.offer(moved)
    wait_until(lambda: pod.agent.refused == moved, timeout=DEADLINE, what="the offer taken")
    assert pod.server.conf_path.read_text() == running  # left for the new pod's init step
    # the agent goes on with online changes
    pod.offer(_plan(config={"hz": "20"}))
    pod.wait_for("hz", "20")
    assert pod.get("dir") == str(pod.workdir)
    assert pod.get("maxmemory-policy") == "allkeys-lru"


def test_the_online_classification_holds_for_this_redis_server(
    start_redis: StartRedis, pod: Pod
) -> None:
    rendered = redis_params.conf_settings(pod.server.conf_path.read_text())
    with pod.server.client() as conn:
        for key, default in redis_params.ONLINE_DEFAULTS.items():
            value = rendered.get(key, default)
            reply = conn.try_call("CONFIG", "SET", key, value)
            assert reply == "OK", (key, value, reply)
        for key, value in redis_params.restart_settings(pod.server.conf_path.read_text()).items():
            reply = conn.try_call("CONFIG", "SET", key, value)
            assert isinstance(reply, ReplyError), (key, reply)
    # a server started without them reports Headroom's table of defaults
    bare = start_redis(lambda port, workdir: f"bind {HOST}\nport {port}\ndir {workdir}\n")
    with bare.client() as conn:
        found = {k: conn.config_get(k) for k in redis_params.ONLINE_DEFAULTS}
    expected = dict(redis_params.ONLINE_DEFAULTS)
    expected |= {"bind": HOST, "port": str(bare.port)}  # what this test had to choose
    assert found == expected


def test_the_agent_follows_its_configmap_through_the_api_server(
    start_redis: StartRedis, cluster: api_server.Cluster, namespace: str, tmp_path: Path
) -> None:
    """The sidecar as its pod runs it: its command line, its ServiceAccount's
    token bound by the Role Headroom renders (that one ConfigMap, get/list/
    watch), the auth Secret's password file; the ConfigMap changed by kubectl."""
    names = _plan().names
    pod = Pod(
        start_redis,
        _plan(),
        namespace=namespace,
        on_config=lambda config_map: kube.apply(cluster.kubectl, config_map),
    )
    agent_name = names.redis_agent("cache")
    identity = ("ServiceAccount", "Role", "RoleBinding")
    kube.apply(cluster.kubectl, *(pod.objects[f"{kind}/{agent_name}"] for kind in identity))
    token_dir = api_server.token_dir(
        cluster, service_account=agent_name, namespace=namespace, path=tmp_path / "token"
    )
    paths = {
        redis.START_FILE: str(pod.server.conf_path),
        agent_pod.TOKEN_DIR: str(token_dir),
        f"{redis.AUTH_DIR}/password": str(pod.workdir / "password"),
    }
    container = _container(pod.objects, "agent")
    # kubelet's Downward API: the Redis container's memory limit, in bytes
    (limit,) = container["env"]
    assert limit["valueFrom"]["resourceFieldRef"]["containerName"] == "redis"
    downward = {limit["name"]: str(MEMORY_LIMIT)}
    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        agent = subprocess.Popen(
            _command(container, paths),
            env={**os.environ, **api_server.agent_env(cluster), **downward},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "watching ConfigMap" in log_path.read_text(), timeout=30, what="the agent"
        )
        before = pod.identity()
        smaller = _plan(memory="32Mi", evictionPolicy="allkeys-lfu")
        pod.config_map["data"] = {"redis.conf": pod.text(smaller)}
        kube.apply(cluster.kubectl, pod.config_map)
        pod.wait_for("maxmemory", str(smaller.redis_named("cache").maxmemory_bytes))
        pod.wait_for("maxmemory-policy", "allkeys-lfu")
        assert pod.identity() == before
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    text = log_path.read_text()
    assert agent.returncode == 0, text
    assert "CONFIG SET maxmemory-policy 'allkeys-lfu'" in text, text
    assert pod.password not in text
