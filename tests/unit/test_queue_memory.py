"""The Redis memory a queue instance needs at peak (spec.queues[].load.redis,
planning.queue_memory): the estimate's parts, the refusal naming the instance's memory
and what would fit, headroom plan's row and bottleneck, the API's bounds, and the
estimate growing with the load and with the kept jobs."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom.api import crd, v1alpha1
from headroom.planning import load_report, planner, queue_memory, queueing
from headroom.reconcile import outcome
from tests import profiles

KiB, MiB = 1024, 1024**2
# 50 jobs/s x 0.2 s = 10 slots busy on 14 slots (7 pods of 2): Erlang C 17.41 %
JOBS = {"peakJobsPerSecond": 50, "secondsPerJob": 0.2, "concurrencyPerPod": 2}
MEMORY = {"bytesPerJob": 2000, "returnBytesPerJob": 100, "keptCompleted": 1000, "keptFailed": 100}


def _plan(*, memory: str = "128Mi", **redis: Any) -> planner.Plan:
    body = profiles.base(**profiles.queue_with_load(**JOBS, redis={**MEMORY, **redis}, most=7))
    body["spec"]["cache"]["instances"][0]["memory"] = memory
    body["spec"]["load"] = {"peakRequestsPerSecond": 10, "databaseSecondsPerRequest": 0.01}
    body["spec"]["load"]["waitProbability"] = 0.2
    return planner.plan(v1alpha1.parse_profile(body))


def _memory(**fields: Any) -> v1alpha1.QueueMemory:
    return v1alpha1.QueueMemory.model_validate({**MEMORY, **fields})


def test_the_estimate_is_each_part_at_its_count() -> None:
    plan = _plan()
    assert plan.ok, plan.problem_text()
    (check,) = plan.queue_memory
    (jobs,) = check.queues
    # Erlang C's expected queue: C x a / (s - a) = 0.1741 x 10 / 4
    waiting = queueing.erlang_c(servers=14, offered_load=10) * 10 / 4
    assert jobs.waiting() == pytest.approx(waiting) and jobs.waiting() == pytest.approx(0.435, 0.01)
    # a job in the hashtable encoding (2000 bytes > 64): 5/4 of its values + 1 KiB
    waiting_job, completed_job = 1.25 * 2000 + 1024, 1.25 * 2100 + 1024
    failed_job = 1.25 * (2000 + 2048) + 1024
    events = (10_000 + 100) * 64 + math.ceil(10_100 / 4) * 1.25 * 100
    expected = (
        (waiting + 14) * waiting_job
        + 14 * 128  # the running jobs' locks
        + 1000 * completed_job
        + 100 * failed_job
        + events
    )
    assert jobs.bytes() == pytest.approx(expected)
    assert check.needed() == pytest.approx(4 * MiB + expected)
    assert check.maxmemory_bytes == 96 * MiB and check.fits


@pytest.mark.parametrize(
    ("redis", "per_job"),
    [
        # every value within 64 bytes: Redis keeps the hash compact (listpack)
        ({"bytesPerJob": 64, "returnBytesPerJob": 64}, 1.25 * 64 + 512),
        # one value past it: the hashtable encoding
        ({"bytesPerJob": 65, "returnBytesPerJob": 0}, 1.25 * 65 + 1024),
        ({"bytesPerJob": 10, "returnBytesPerJob": 65}, 1.25 * 10 + 1024),
        ({"bytesPerJob": 1 * MiB}, 1.25 * MiB + 1024),
    ],
)
def test_a_job_waiting_costs_its_data_and_bullmqs_fields(
    redis: dict[str, int], per_job: float
) -> None:
    memory = _memory(**redis)
    assert queue_memory.per_job(memory, kept=False) == pytest.approx(per_job)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (0, 0.0),
        # BullMQ's default: 10,000 entries (+100 left by approximate trimming), a quarter
        # carrying the 100-byte return value
        (10_000, 10_100 * 64 + 2525 * 125.0),
        (1, 101 * 64 + 26 * 125.0),
    ],
)
def test_the_events_stream_is_its_length_and_the_return_values_it_carries(
    events: int, expected: float
) -> None:
    assert queue_memory.events_bytes(_memory(eventsMaxLen=events)) == pytest.approx(expected)


def test_a_queue_instance_too_small_is_refused_naming_its_memory_and_what_would_fit() -> None:
    plan = _plan(memory="32Mi", keptFailed=5000)
    assert [p.field for p in plan.problems] == ["spec.cache.instances[0].memory"]
    (check,) = plan.queue_memory
    text = plan.problem_text()
    needed, excess = check.needed(), check.needed() - 24 * MiB
    assert text.startswith(
        f"spec.cache.instances[0].memory: its queues need {needed / MiB:.3g} MiB"
    )
    assert f"{excess / MiB:.3g} MiB more than its maxmemory 24 MiB (of memory 32Mi)" in text
    # the memory whose three quarters hold it, in whole Mi
    fitting = math.ceil(math.ceil(needed * 32 / 24) / MiB)
    assert f"memory {fitting}Mi would hold them" in text
    # and the kept failed jobs that would: each costs 1.25 x (2000 + 2048) + 1024 bytes
    fewer = 5000 - math.ceil(excess / (1.25 * 4048 + 1024))
    assert f"spec.queues[0].load.redis.keptFailed {fewer}" in text
    assert _plan(memory="32Mi", keptFailed=fewer).ok
    assert not _plan(memory="32Mi", keptFailed=fewer + 1).ok
    assert _plan(memory=f"{fitting}Mi", keptFailed=5000).ok
    assert not _plan(memory=f"{fitting - 1}Mi", keptFailed=5000).ok


def test_plan_shows_the_memory_and_ranks_it_among_the_bottlenecks() -> None:
    plan = _plan(memory="32Mi", keptFailed=2000)
    assert plan.ok, plan.problem_text()
    rows = dict(load_report.rows(plan))
    (check,) = plan.queue_memory
    assert rows["redis memory"].startswith(
        "jobs (maxmemory 24 MiB, noeviction): mail: 0.435 waiting (Erlang C) + 14 running x "
        "3.44 KiB, 1000 completed x 3.56 KiB and 2000 failed x 5.94 KiB kept, events stream "
        "10000 ("
    )
    assert rows["redis memory"].endswith(
        f"= {check.needed() / MiB:.3g} MiB, {check.needed() / (24 * MiB):.0%} of maxmemory"
    )
    found = rows["first bottleneck"].split("; then ")
    memory = next(f for f in found if f.startswith("Redis jobs memory"))
    factor = check.limit_factor()
    assert memory == (
        "Redis jobs memory (spec.cache.instances[0].memory 32Mi: maxmemory 24 MiB): up to "
        f"{50 * factor:.0f} jobs/s ({factor:.2f}x the peak) at 20%"
    )
    # the memory is full at that factor of the peak, and not below it
    assert check.needed(factor=factor) <= check.maxmemory_bytes
    assert check.needed(factor=factor * 1.001) > check.maxmemory_bytes
    assert 1 < factor < 14 / 10
    factors = [float(f.split("(")[-1].split("x the peak")[0]) for f in found]
    assert factors == sorted(factors)
    assert outcome.budget_status(plan, since="")["load"]["redisMemory"] == rows["redis memory"]


def test_queues_without_load_redis_are_listed_as_not_declared() -> None:
    body = profiles.base(**profiles.queue_with_load(**JOBS, most=7))
    plan = planner.plan(v1alpha1.parse_profile(body))
    assert plan.queue_memory == ()
    assert dict(load_report.rows(plan))["redis memory"] == (
        "not declared (no spec.queues[].load.redis on it): jobs (queue: maxmemory 96Mi, "
        "noeviction when full)"
    )


def test_a_backlog_without_bound_is_the_workers_refusal_not_the_memorys() -> None:
    body = profiles.base(**profiles.queue_with_load(**JOBS, redis=MEMORY, most=5))
    plan = planner.plan(v1alpha1.parse_profile(body))
    # 10 slots for 10 busy: the backlog grows without bound
    assert [p.field for p in plan.problems] == ["spec.queues[0].replicas.max"]
    (check,) = plan.queue_memory
    assert math.isinf(check.needed()) and check.limit_factor() == 0.0
    assert "unbounded waiting" in dict(load_report.rows(plan))["redis memory"]


@pytest.mark.parametrize(
    ("redis", "field"),
    [
        ({"bytesPerJob": 0}, "bytesPerJob"),
        ({"bytesPerJob": 536_870_913}, "bytesPerJob"),
        ({"returnBytesPerJob": -1}, "returnBytesPerJob"),
        ({"keptCompleted": -1}, "keptCompleted"),
        ({"keptFailed": 100_000_001}, "keptFailed"),
        ({"eventsMaxLen": -1}, "eventsMaxLen"),
        ({"keptFailed": None}, "keptFailed"),
    ],
)
def test_the_model_refuses_out_of_bounds_naming_the_field(
    redis: dict[str, Any], field: str
) -> None:
    fields = {k: v for k, v in {**MEMORY, **redis}.items() if v is not None}
    body = profiles.base(**profiles.queue_with_load(**JOBS, redis=fields, most=7))
    with pytest.raises(v1alpha1.ProfileError) as err:
        v1alpha1.parse_profile(body)
    assert str(err.value).startswith(f"spec.queues[0].load.redis.{field}: "), err.value


def test_the_crd_carries_the_bounds_the_api_server_enforces() -> None:
    version = crd.build_crd()["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    schema = spec["properties"]["queues"]["items"]
    redis = schema["properties"]["load"]["properties"]["redis"]
    assert set(redis["required"]) == {"bytesPerJob", "keptCompleted", "keptFailed"}
    fields = redis["properties"]
    assert (fields["bytesPerJob"]["minimum"], fields["bytesPerJob"]["maximum"]) == (1, 512 * MiB)
    assert fields["eventsMaxLen"]["default"] == 10_000
    for name in ("returnBytesPerJob", "keptCompleted", "keptFailed", "eventsMaxLen"):
        assert fields[name]["minimum"] == 0, name


def _instance(
    *, jobs: float, kept: int, failed: int, slots: int = 20
) -> queue_memory.InstanceCheck:
    return queue_memory.InstanceCheck(
        name="jobs",
        index=0,
        maxmemory_bytes=96 * MiB,
        memory="128Mi",
        limit_bytes=128 * MiB,
        queues=(
            queue_memory.QueueJobs(
                queue="q",
                index=0,
                memory=_memory(keptCompleted=kept, keptFailed=failed),
                jobs_per_second=jobs,
                seconds_per_job=0.5,
                slots=slots,
            ),
        ),
        undeclared=(),
    )


@settings(max_examples=150, deadline=None)
@given(
    jobs=st.floats(min_value=0.01, max_value=39.9, allow_nan=False),
    more_jobs=st.floats(min_value=0, max_value=10, allow_nan=False),
    kept=st.integers(0, 1_000_000),
    more_kept=st.integers(0, 1_000_000),
    failed=st.integers(0, 100_000),
    more_failed=st.integers(0, 100_000),
)
def test_the_estimate_grows_with_the_load_and_with_the_kept_jobs(
    jobs: float, more_jobs: float, kept: int, more_kept: int, failed: int, more_failed: int
) -> None:
    base = _instance(jobs=jobs, kept=kept, failed=failed)
    heavier = _instance(jobs=min(jobs + more_jobs, 39.99), kept=kept, failed=failed)
    keeping = _instance(jobs=jobs, kept=kept + more_kept, failed=failed + more_failed)
    assert heavier.needed() >= base.needed()
    assert keeping.needed() >= base.needed()
    if more_kept or more_failed:
        assert keeping.needed() > base.needed()
    # an instance that fits at the peak fits up to its limit factor, and the more it
    # keeps the less the load may grow
    if keeping.fits:
        assert base.fits and keeping.limit_factor() <= base.limit_factor() * (1 + 1e-6)
