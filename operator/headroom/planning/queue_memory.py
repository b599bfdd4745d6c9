"""``spec.queues[].load.redis`` -> the Redis memory a queue instance needs at peak.

A BullMQ job is a hash (its data, options, timestamps, return value or failure reason
and stack trace) whose id sits in the wait list, the active list or the completed or
failed sorted set; a running job also has a lock key; every step of a job is an entry of
the queue's events stream, which BullMQ trims to about ``streams.events.maxLen``. At
peak an instance holds, for each queue on it:

- the jobs waiting: Erlang C's expected queue length ``Lq = C x a / (s - a)`` for the
  queue's slots (replicas.max x concurrencyPerPod) against its offered load;
- the jobs running: every slot (a job waits only when every slot is busy);
- the completed and failed jobs the app keeps (removeOnComplete, removeOnFail);
- the events stream at its length, a quarter of its entries carrying a return value
  (each job writes added, waiting, active and completed);

plus what Redis holds with no job (itself, BullMQ's Lua scripts, its clients' buffers).

The estimate is meant as an upper bound: a queue's Redis never evicts, so one too small
refuses new jobs. Its constants were measured on redis-server 7.0 (jemalloc) with
BullMQ 6.7 (tests/conformance/test_queue_memory.py holds them to it): each value counted
at 5/4 of its bytes (jemalloc's size classes are four to a doubling, so an allocation
rounds up by at most a quarter), each job at BullMQ's per-job cost in the hashtable
encoding Redis gives a hash once a value passes 64 bytes (the compact listpack one below).

Pure: called by the planner (the check at admission) and load_report (``headroom plan``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from headroom.api import v1alpha1
from headroom.planning import queueing

# a value's allocation over its bytes, at most (jemalloc: four size classes a doubling)
ALLOCATION = 1.25
# BullMQ's per-job cost beyond its data and return value: the hash's key and its dozen
# fields (name, opts, timestamps, attempts), and the id in a list or sorted set. Measured
# 620 bytes (waiting) and about 980 (completed, failed) in the hashtable encoding, 440 in
# the listpack one.
JOB_BYTES = 1024
COMPACT_JOB_BYTES = 512
# Redis keeps a hash compact while every value is at most this (hash-max-listpack-value)
COMPACT_VALUE_MAX = 64
# A failed job's failure reason and stack trace (a Node Error's stack, ten frames: about
# 1.2 KiB measured)
FAILURE_BYTES = 2048
# A running job's lock key (its worker's token) and its place in the stalled check
LOCK_BYTES = 128
# One event in the stream without a return value (measured 47)
EVENT_BYTES = 64
# Approximate trimming (MAXLEN ~) removes whole nodes of the stream: it may keep up to
# one node (stream-node-max-entries, 100) more than maxLen
EVENTS_SLACK = 100
# added, waiting, active, completed: at most one event in four carries a return value
EVENTS_PER_JOB = 4
# Redis with no job: itself, BullMQ's Lua scripts and its clients' buffers (2 MB measured
# after a BullMQ queue's first jobs, keys flushed)
INSTANCE_BYTES = 4 * 1024**2
# Bisection steps for the largest load an instance's memory carries
_LIMIT_STEPS = 30
# Above this many slots Erlang C's recurrence is too long to run 30 times at admission;
# the largest load is then bounded with Lq <= a / (s - a) (C <= 1), which understates it
_EXACT_SLOTS_MAX = 20_000


@dataclass(frozen=True)
class QueueJobs:
    """One queue's jobs in Redis at peak, and what each costs."""

    queue: str
    index: int  # in spec.queues
    memory: v1alpha1.QueueMemory
    jobs_per_second: float
    seconds_per_job: float
    slots: int  # replicas.max x concurrencyPerPod

    def waiting(self, *, factor: float = 1.0) -> float:
        """Erlang C's expected number of jobs waiting at ``factor`` x the peak
        (infinite when the slots cannot keep up)."""
        if factor == 1.0:
            return self._waiting_at_peak
        return mean_waiting(
            slots=self.slots, offered_load=factor * self.jobs_per_second * self.seconds_per_job
        )

    @functools.cached_property
    def _waiting_at_peak(self) -> float:
        # Erlang C's recurrence runs over every slot: once per plan, not once per line
        return mean_waiting(
            slots=self.slots, offered_load=self.jobs_per_second * self.seconds_per_job
        )

    def bytes(self, *, factor: float = 1.0) -> float:
        """What the queue holds at ``factor`` x its peak."""
        return job_bytes(
            memory=self.memory,
            waiting=self.waiting(factor=factor),
            active=self.slots,
            completed=self.memory.kept_completed,
            failed=self.memory.kept_failed,
        ) + events_bytes(self.memory)

    def text(self) -> str:
        m = self.memory
        return (
            f"{self.queue}: {_count(self.waiting())} waiting (Erlang C) + {self.slots} running "
            f"x {size_text(per_job(m, kept=False))}, {m.kept_completed} completed x "
            f"{size_text(per_job(m, kept=True))} and {m.kept_failed} failed x "
            f"{size_text(failed_job(m))} kept, events stream {m.events_max_len} "
            f"({size_text(events_bytes(m))}) = {size_text(self.bytes())}"
        )

    def fewer_kept(self, excess: float) -> str | None:
        """The kept counts that would take ``excess`` bytes off, each alone (None: neither)."""
        m, where = self.memory, f"spec.queues[{self.index}].load.redis"
        found = []
        for field, kept, each in (
            ("keptFailed", m.kept_failed, failed_job(m)),
            ("keptCompleted", m.kept_completed, per_job(m, kept=True)),
        ):
            fewer = math.ceil(excess / each)
            if fewer <= kept:
                found.append(f"{where}.{field} {kept - fewer}")
        return " or ".join(found) or None


def mean_waiting(*, slots: int, offered_load: float) -> float:
    """Erlang C's expected queue length ``C x a / (s - a)``."""
    if offered_load <= 0:
        return 0.0
    if slots <= offered_load:
        return math.inf
    # past what Erlang C is computed for (the workers' check refuses such a load), the
    # bound C <= 1
    waiting = (
        queueing.erlang_c(servers=slots, offered_load=offered_load)
        if offered_load <= queueing.MAX_OFFERED_LOAD
        else 1.0
    )
    return waiting * offered_load / (slots - offered_load)


def _compact(memory: v1alpha1.QueueMemory) -> bool:
    return max(memory.bytes_per_job, memory.return_bytes_per_job) <= COMPACT_VALUE_MAX


def per_job(memory: v1alpha1.QueueMemory, *, kept: bool) -> float:
    """One job waiting or running (``kept``: completed, with its return value)."""
    overhead = COMPACT_JOB_BYTES if _compact(memory) else JOB_BYTES
    values = memory.bytes_per_job + (memory.return_bytes_per_job if kept else 0)
    return ALLOCATION * values + overhead


def failed_job(memory: v1alpha1.QueueMemory) -> float:
    """One failed job kept: its data, failure reason and stack trace (never compact)."""
    return ALLOCATION * (memory.bytes_per_job + FAILURE_BYTES) + JOB_BYTES


def job_bytes(
    *, memory: v1alpha1.QueueMemory, waiting: float, active: int, completed: int, failed: int
) -> float:
    """The jobs' hashes, ids and locks: ``waiting`` and ``active`` with their data,
    ``completed`` with their return value too, ``failed`` with a failure reason and
    stack trace."""
    return (
        (waiting + active) * per_job(memory, kept=False)
        + active * LOCK_BYTES
        + completed * per_job(memory, kept=True)
        + failed * failed_job(memory)
    )


def events_bytes(memory: v1alpha1.QueueMemory) -> float:
    """The events stream at its length (plus what approximate trimming leaves)."""
    if memory.events_max_len == 0:
        return 0.0
    entries = memory.events_max_len + EVENTS_SLACK
    carrying = math.ceil(entries / EVENTS_PER_JOB)
    return entries * EVENT_BYTES + carrying * ALLOCATION * memory.return_bytes_per_job


@dataclass(frozen=True)
class InstanceCheck:
    """A queue instance's maxmemory against the queues on it that declare their jobs."""

    name: str  # spec.cache.instances[].name
    index: int  # in spec.cache.instances
    maxmemory_bytes: int
    memory: str  # spec.cache.instances[].memory, as given
    limit_bytes: int  # that memory, the container's limit maxmemory is a share of
    queues: tuple[QueueJobs, ...]
    undeclared: tuple[str, ...]  # queues on it without load.redis

    def needed(self, *, factor: float = 1.0) -> float:
        return INSTANCE_BYTES + sum(q.bytes(factor=factor) for q in self.queues)

    @property
    def fits(self) -> bool:
        return self.needed() <= self.maxmemory_bytes

    @property
    def jobs_per_second(self) -> float:
        return sum(q.jobs_per_second for q in self.queues)

    def memory_needed(self) -> str:
        """The smallest spec.cache.instances[].memory whose maxmemory holds the peak, in Mi."""
        bytes_needed = math.ceil(self.needed() * self.limit_bytes / self.maxmemory_bytes)
        return f"{-(-bytes_needed // 1024**2)}Mi"

    def limit_factor(self) -> float:
        """How far the queues' jobs may grow (all together) before the memory is full:
        only the waiting jobs grow with the load, without bound as it nears the slots."""
        if not self.fits:
            return 0.0
        # the load at which some queue's slots are all busy: the waiting grow without bound
        saturation = min(
            (q.slots / (q.jobs_per_second * q.seconds_per_job) for q in self.queues),
            default=math.inf,
        )
        low, high = 1.0, saturation
        exact = all(q.slots <= _EXACT_SLOTS_MAX for q in self.queues)
        for _ in range(_LIMIT_STEPS):
            middle = (low + high) / 2
            if self._needed_at(middle, exact=exact) <= self.maxmemory_bytes:
                low = middle
            else:
                high = middle
        return low

    def _needed_at(self, factor: float, *, exact: bool) -> float:
        if exact:
            return self.needed(factor=factor)
        total = float(INSTANCE_BYTES)
        for q in self.queues:
            busy = factor * q.jobs_per_second * q.seconds_per_job
            bound = busy / (q.slots - busy) if busy < q.slots else math.inf
            total += job_bytes(
                memory=q.memory,
                waiting=bound,
                active=q.slots,
                completed=q.memory.kept_completed,
                failed=q.memory.kept_failed,
            ) + events_bytes(q.memory)
        return total

    def text(self) -> str:
        needed = self.needed()
        head = f"{self.name} (maxmemory {size_text(self.maxmemory_bytes)}, noeviction): "
        body = "; ".join(q.text() for q in self.queues)
        share = needed / self.maxmemory_bytes
        text = (
            f"{head}{body}; + {size_text(INSTANCE_BYTES)} for Redis itself = "
            f"{size_text(needed)}, {share:.0%} of maxmemory"
        )
        if self.undeclared:
            text += f"; {', '.join(self.undeclared)}: no spec.queues[].load.redis declared"
        return text

    def shortfall(self) -> str:
        """Why the instance cannot hold its queues' jobs, and what would."""
        needed = self.needed()
        excess = needed - self.maxmemory_bytes
        fewer = [f for q in self.queues if (f := q.fewer_kept(excess)) is not None]
        return (
            f"its queues need {size_text(needed)} at peak ("
            + "; ".join(q.text() for q in self.queues)
            + f"; + {size_text(INSTANCE_BYTES)} for Redis itself), "
            f"{size_text(excess)} more than its maxmemory {size_text(self.maxmemory_bytes)} "
            f"(of memory {self.memory}): memory {self.memory_needed()} would hold them"
            + (f", or keeping fewer jobs: {' or '.join(fewer)}" if fewer else "")
            + "; a queue's Redis never evicts, it refuses new jobs when full"
        )


def size_text(value: float) -> str:
    """Bytes as plan prints them: "640 B", "12 KiB", "3.4 MiB", "1.2 GiB"."""
    if math.isinf(value):
        return "unbounded"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def _count(value: float) -> str:
    if math.isinf(value):
        return "unbounded"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"
