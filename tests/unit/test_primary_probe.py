"""The periodic probes are facts read on their own schedule: a pass never waits
for one (a probe that hangs delays no pass), a new profile waits at most
FIRST_ANSWER_SECONDS for the limits its plan depends on, one reading serves
every profile on a target, failing targets back off, names are looked up once
per host per TTL, and first readings go ahead of refreshes."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from headroom.api import v1alpha1
from headroom.planning import credentials, planner
from headroom.postgres import server_limits
from headroom.reconcile import (
    bucket_check,
    live_checks,
    primary_limits,
    probe,
    reconciler,
    replica_lag,
    resolver,
    telemetry,
)
from tests import profiles
from tests.unit import fake_cluster
from tests.unit.test_engine import KEY, _cluster, _conditions

LIMITS = planner.PrimaryLimits(max_connections=100, superuser_reserved_connections=3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Hanging:
    """A reader that answers only when told to (a server behind a firewall
    that drops packets, for as long as the test wants)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.answer: asyncio.Future[Any] | None = None
        self.reads = 0

    async def __call__(self, target: Any) -> Any:
        self.reads += 1
        self.answer = asyncio.get_running_loop().create_future()
        self.called.set()
        return await self.answer


def _engine(
    cluster: fake_cluster.FakeCluster,
    clock: Clock,
    *,
    primary: Any = None,
    replicas: Any = None,
    buckets: Any = None,
) -> reconciler.Reconciler:
    """An engine whose probes read with the readers given (the primary's
    host resolves when it has one; without, no name resolves)."""
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    names = resolver.Resolver(lookup=lambda host: ["192.0.2.10"] if primary else [])
    eng.probes = live_checks.Probes(
        primary_limits=primary_limits.PrimaryLimitsProbe(
            clock=clock, reader=primary, resolve=names
        ),
        replica_lag=replica_lag.ReplicaProbe(clock=clock, read=replicas),
        bucket_check=bucket_check.BucketProbe(clock=clock, checker=buckets),
        clock=clock,
    )
    return eng


def _applied(cluster: fake_cluster.FakeCluster) -> list[str]:
    return [key for verb, key in cluster.writes() if verb == "apply" and "/status" not in key]


def test_a_probe_that_hangs_delays_no_pass_and_a_new_profile_waits_a_bounded_time() -> None:
    cluster = _cluster(profiles.base())
    clock = Clock()
    hanging = Hanging()
    eng = _engine(cluster, clock, primary=hanging)
    queued: list[set[str]] = []
    eng.probes.primary_limits.on_change = queued.append

    async def run() -> None:
        # The first pass does not wait for the primary past IN_PASS_SECONDS: it
        # ends, applies nothing its limits could refuse, and says when to look again.
        first = await asyncio.wait_for(eng.reconcile(KEY), timeout=30)
        assert first is not None and first.recheck_seconds == live_checks.FIRST_ANSWER_SECONDS
        # nothing but in-use protection's finalizer on the profile itself
        assert cluster.writes() == [("patch", "ScalingProfile/shop")]
        await asyncio.wait_for(hanging.called.wait(), timeout=30)  # the read is under way
        # Within the bound, a pass (any trigger) still waits for the answer...
        clock.now += live_checks.FIRST_ANSWER_SECONDS - 1
        again = await eng.reconcile(KEY)
        assert again is not None and again.recheck_seconds == pytest.approx(1.0)
        # ...past it, the plan goes ahead on the declared limits, the read still hanging.
        clock.now += 1
        planned = await eng.reconcile(KEY)
        assert planned is not None and planned.recheck_seconds is None
        assert "Deployment/shop-pooler" in _applied(cluster)
        limits = _conditions(cluster)["PrimaryLimits"]
        assert (limits["status"], limits["reason"]) == ("Unknown", "NotReadYet")
        assert hanging.answer is not None and not hanging.answer.done()
        assert hanging.reads == 1
        # The answer comes as a trigger of its own, and the next pass uses it.
        hanging.answer.set_result(LIMITS)
        await eng.probes.primary_limits.settle()
        assert queued == [{KEY}]
        assert await eng.reconcile(KEY) is not None
        assert _conditions(cluster)["PrimaryLimits"]["reason"] == "LimitsRead"

    asyncio.run(run())


def test_a_primary_that_answers_at_once_is_used_by_the_first_pass() -> None:
    cluster = _cluster(profiles.base())
    clock = Clock()

    async def answers(target: Any) -> Any:
        await asyncio.sleep(0.01)  # a round trip
        return LIMITS

    eng = _engine(cluster, clock, primary=answers)

    async def run() -> None:
        first = await asyncio.wait_for(eng.reconcile(KEY), timeout=30)
        assert first is not None and first.recheck_seconds is None  # no second pass needed
        assert "Deployment/shop-pooler" in _applied(cluster)
        assert _conditions(cluster)["PrimaryLimits"]["reason"] == "LimitsRead"

    asyncio.run(run())


def test_buckets_and_replicas_that_hang_do_not_hold_a_pass_past_the_bound() -> None:
    body = profiles.base(
        **{
            "database.readReplicas": profiles.external_replicas({"host": "ro-1.example.com"}),
            "storage": profiles.buckets(profiles.s3_bucket("files")),
        }
    )
    cluster = _cluster(body)
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "r2-credentials", "namespace": "default"},
            "data": {"AWS_ACCESS_KEY_ID": "UjJLRVk=", "AWS_SECRET_ACCESS_KEY": "UjJTSw=="},
        }
    )
    clock = Clock()
    replicas, buckets = Hanging(), Hanging()
    eng = _engine(cluster, clock, replicas=replicas, buckets=buckets)

    async def run() -> None:
        first = await asyncio.wait_for(eng.reconcile(KEY), timeout=30)
        assert first is not None and first.recheck_seconds is not None
        await eng.probes.primary_limits.settle()  # "unreachable" at once: no name resolves
        clock.now += live_checks.FIRST_ANSWER_SECONDS
        done = await asyncio.wait_for(eng.reconcile(KEY), timeout=30)
        assert done is not None and done.recheck_seconds is None
        assert "Deployment/shop-pooler-ro" in _applied(cluster)
        assert replicas.reads == 1 and buckets.reads == 1  # both still hanging
        assert _conditions(cluster)["StorageReady"]["status"] == "True"  # never waited for

    asyncio.run(run())


def test_one_reading_per_primary_and_only_a_changed_answer_queues() -> None:
    answers: list[Any] = ["OperationalError: connection refused"]
    reads: list[str] = []

    async def read(target: server_limits.Target) -> Any:
        reads.append(target.host)
        return answers[-1]

    clock = Clock()
    changed: list[set[str]] = []
    probe_ = primary_limits.PrimaryLimitsProbe(
        ttl_seconds=100.0,
        reader=read,
        on_change=changed.append,
        clock=clock,
        resolve=resolver.Resolver(lookup=lambda host: ["192.0.2.10"]),
    )
    shop, admin = (_plan(name) for name in ("shop", "admin"))
    creds = credentials.Credentials(username="u", password="p", stats_password="s", revision="1")

    async def run() -> None:
        assert probe_.check(shop, creds, user="default/shop").result is None
        assert probe_.check(admin, creds, user="default/admin").result is None
        await probe_.settle()
        assert reads == ["db.default.svc"]  # one read for both
        assert changed == [{"default/shop", "default/admin"}]
        clock.now += 23  # a failure is read again after a fifth of the TTL (+-10 %)
        probe_.refresh_due()
        await probe_.settle()
        assert len(reads) == 2 and len(changed) == 1  # the same answer: nobody queued
        answers.append(LIMITS)
        clock.now += 200
        probe_.refresh_due()
        await probe_.settle()
        assert changed[-1] == {"default/shop", "default/admin"}
        assert probe_.check(shop, creds, user="default/shop").result == LIMITS
        probe_.release("default/shop")
        probe_.release("default/admin")
        clock.now += 200
        assert probe_.refresh_due() == 0  # nobody relies on it: not read any more

    asyncio.run(run())


def _plan(name: str) -> planner.Plan:
    body = profiles.base(name)
    body["metadata"]["uid"] = f"uid-{name}"
    return planner.plan(v1alpha1.parse_profile(body))


def test_a_target_that_keeps_failing_is_read_less_and_less_often() -> None:
    reads: list[float] = []
    clock = Clock()

    async def read(_: str) -> str:
        reads.append(clock.now)
        return "unreachable"

    failing = probe.PeriodicProbe[str, str](
        read=read,
        ttl_seconds=100.0,
        failure_ttl_seconds=10.0,
        max_backoff_seconds=100.0,
        failed=lambda answer: answer == "unreachable",
        time_limit_seconds=5.0,
        on_timeout=lambda _: "timeout",
        clock=clock,
    )

    async def run() -> list[float]:
        failing.answers("ns/a", {"replica": "ro-1"})
        await failing.settle()
        start = clock.now
        while clock.now - start < 400:
            clock.now += 1
            failing.refresh_due()
            await failing.settle()
        return [b - a for a, b in itertools.pairwise(reads)]

    gaps = asyncio.run(run())
    # 10, 20, 40, 80, then the cap of 100 s, each within the jitter of +-10 %
    for gap, expected in zip(gaps, (10, 20, 40, 80, 100, 100), strict=False):
        assert expected * 0.9 <= gap <= expected * 1.1 + 1
    assert len(gaps) >= 6


def test_a_name_is_looked_up_once_per_ttl_however_many_ask() -> None:
    clock = Clock()
    looked_up: list[str] = []

    def lookup(host: str) -> list[str]:
        looked_up.append(host)
        if host == "gone.example.com":
            raise OSError("Name or service not known")
        return ["192.0.2.7"]

    names = resolver.Resolver(lookup=lookup, ttl_seconds=30.0, clock=clock)

    async def run() -> None:
        found = await asyncio.gather(
            *(names.resolve(h) for h in ["ro.example.com", "gone.example.com"] * 200)
        )
        assert found[0] == ("192.0.2.7",)
        assert "does not resolve" in str(found[1])
        assert sorted(looked_up) == ["gone.example.com", "ro.example.com"]
        assert await names.resolve("192.0.2.99") == ("192.0.2.99",)  # a literal is its own
        clock.now += 31
        await names.resolve("ro.example.com")
        assert looked_up.count("ro.example.com") == 2

    asyncio.run(run())
    names.close()


def test_first_readings_go_ahead_of_refreshes() -> None:
    async def run() -> list[str]:
        slots = probe.Slots(1)
        await slots.acquire(first=False)
        order: list[str] = []

        async def wait(name: str, *, first: bool) -> None:
            async with slots.held(first=first):
                order.append(name)

        waiters = [
            asyncio.ensure_future(wait("refresh-1", first=False)),
            asyncio.ensure_future(wait("refresh-2", first=False)),
            asyncio.ensure_future(wait("first", first=True)),
        ]
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*waiters)
        return order

    assert asyncio.run(run()) == ["first", "refresh-1", "refresh-2"]
