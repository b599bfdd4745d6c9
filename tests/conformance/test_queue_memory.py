"""The Redis memory a queue's jobs take (planning.queue_memory), measured: Debian's
redis-server 7.0 run with the redis.conf Headroom renders for a queue instance
(noeviction, its maxmemory), and the real BullMQ client (the lockfile's, on ioredis)
connected by the binding's REDIS_QUEUE_URL, bringing a queue to a declared state: jobs
of the declared size processed with the declared removeOnComplete/removeOnFail counts
(more than that many, so the sets are trimmed), some held running and some waiting
behind them, the events stream past its maxLen.

What is compared is ``INFO memory``'s used_memory, less its clients' buffers
(mem_clients_normal: the app's connections, not its jobs), before and after, with the
planner's estimate for the same counts. The estimate is meant as an upper bound (a queue's
Redis never evicts: one sized too small refuses jobs), so the test holds it at or above
what Redis reports and within MARGIN of it: the rounding the estimate takes on purpose
(every value at 5/4 of its bytes for jemalloc's size classes, each job's fields at the
hashtable encoding's cost, a quarter of the stream carrying return values) stays within a
half of what Redis uses; more, and the estimate would size instances needlessly large.
The warm-up's used_memory with no key (Redis, BullMQ's scripts) is held within the
estimate's allowance for Redis itself.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis_servers
import test_redis
from redis_servers import HOST, RedisProcess
from test_clients import node_dir
from tests import profiles

from headroom.api import v1alpha1
from headroom.builders import binding, redis
from headroom.planning import planner, queue_memory

pytestmark = pytest.mark.conformance

__all__ = ["node_dir"]  # the Node packages of the lockfile: a fixture of test_clients

# the estimate may exceed what Redis reports by at most half of it
MARGIN = 1.5
# the app's own deadline for reaching its state is 120 s
APP_TIMEOUT = 300

# (data bytes, return bytes, kept completed, kept failed, processed ok, failing,
#  running, waiting): a queue of 1 KiB jobs with a short return value; one of 5 KB jobs
# keeping as many failed as completed; one of small jobs whose hash Redis keeps compact
CASES = {
    "kilobyte-jobs": (1000, 100, 2000, 500, 3000, 800, 50, 1000),
    "five-kilobyte-jobs": (5000, 2000, 1000, 1000, 1500, 1500, 20, 500),
    "compact-jobs": (40, 8, 3000, 0, 3500, 10, 5, 100),
}


def _plan() -> tuple[planner.Plan, planner.RedisPlan]:
    body = profiles.base(cache=profiles.instance(memory="256Mi"))
    plan = planner.plan(v1alpha1.parse_profile(body))
    assert plan.ok, plan.problem_text()
    return plan, plan.redis_named("jobs")


@pytest.fixture(scope="module")
def queue_redis(
    redis_tools: redis_servers.RedisTools,
) -> Iterator[tuple[RedisProcess, str]]:
    """A queue instance as Headroom renders it, and its binding URL on 127.0.0.1."""
    plan, instance = _plan()
    password = "conformance-" + "q" * 24

    server = RedisProcess(
        redis_tools.server,
        test_redis.conf_for(instance),
        files={"auth.conf": redis.render_auth(password)},
        password=password,
    )
    server.start()
    try:
        url = binding.redis_url(plan, instance, password)
        host = f"{plan.names.redis_host(instance.name)}:{planner.REDIS_PORT}"
        yield server, url.replace(host, f"{HOST}:{server.port}")
    finally:
        server.stop()


def _used(server: RedisProcess) -> int:
    """used_memory without the clients' buffers."""
    with server.client() as client:
        info = client.info("memory")
    return int(info["used_memory"]) - int(info["mem_clients_normal"])


def _flush(server: RedisProcess) -> None:
    with server.client() as client:
        # SYNC: the keys' memory is freed before the next measurement (FLUSHALL keeps
        # the scripts BullMQ loaded: they are Redis's own allowance, not the jobs')
        assert client.call("FLUSHALL", "SYNC") == "OK"


def _fill(
    node: Path, url: str, *, queue: str, shape: tuple[int, ...], events: int
) -> tuple[dict[str, int], Callable[[], None]]:
    """Run bullmq-memory.ts to its state; its counts, and how to let it go."""
    data, returned, kept_ok, kept_failed, ok, failing, running, waiting = shape
    argv = ["node", "--import", "tsx", str(node / "apps" / "bullmq-memory.ts"), "--queue", queue]
    flags = {
        "data-bytes": data,
        "return-bytes": returned,
        "kept-completed": kept_ok,
        "kept-failed": kept_failed,
        "completed": ok,
        "failed": failing,
        "active": running,
        "waiting": waiting,
        "events-max-len": events,
    }
    for flag, value in flags.items():
        argv += [f"--{flag}", str(value)]
    env = {"REDIS_QUEUE_URL": url, "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(node)}
    proc = subprocess.Popen(
        argv, cwd=node, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if not line.startswith("REPORT "):
        proc.kill()
        pytest.fail(f"bullmq-memory exited {proc.wait(30)} before its state: {line!r}")

    def release() -> None:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(APP_TIMEOUT) == 0

    counts: dict[str, int] = json.loads(line.removeprefix("REPORT "))
    return counts, release


@pytest.fixture(scope="module")
def warm(node_dir: Path, queue_redis: tuple[RedisProcess, str]) -> int:
    """Redis with BullMQ's scripts loaded and no key: what it uses with no job."""
    server, url = queue_redis
    _, release = _fill(node_dir, url, queue="warm", shape=(100, 10, 1, 1, 3, 3, 1, 1), events=100)
    release()
    _flush(server)
    return _used(server)


def test_redis_with_no_job_is_within_its_allowance(warm: int) -> None:
    print(f"no job: Redis used {warm} bytes, allowed {queue_memory.INSTANCE_BYTES}")
    assert warm <= queue_memory.INSTANCE_BYTES, warm


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_estimate_holds_what_bullmq_keeps_in_redis(
    case: str, node_dir: Path, queue_redis: tuple[RedisProcess, str], warm: int
) -> None:
    server, url = queue_redis
    shape = CASES[case]
    data, returned, kept_ok, kept_failed = shape[:4]
    memory = v1alpha1.QueueMemory(
        bytes_per_job=data,
        return_bytes_per_job=returned,
        kept_completed=kept_ok,
        kept_failed=kept_failed,
    )
    _flush(server)
    before = _used(server)
    counts, release = _fill(node_dir, url, queue=case, shape=shape, events=memory.events_max_len)
    try:
        used = _used(server) - before
    finally:
        release()
    # the state declared: the sets trimmed to the kept counts, the slots held, the
    # waiting behind them, the stream at its length
    assert (counts["completed"], counts["failed"]) == (kept_ok, kept_failed), counts
    assert (counts["active"], counts["wait"]) == shape[6:8], counts
    assert memory.events_max_len <= counts["events"] <= memory.events_max_len + 100, counts
    estimate = queue_memory.job_bytes(
        memory=memory,
        waiting=counts["wait"],
        active=counts["active"],
        completed=counts["completed"],
        failed=counts["failed"],
    ) + queue_memory.events_bytes(memory)
    print(f"{case}: Redis used {used} bytes, estimated {estimate:.0f} ({estimate / used:.2f}x)")
    assert used <= estimate <= MARGIN * used, (case, used, estimate)
