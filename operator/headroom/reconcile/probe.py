"""One periodic, time-limited probe of things outside the cluster, of which the
primary's limits (:mod:`.primary_limits`), the replicas' lag
(:mod:`.replica_lag`) and the buckets' check (:mod:`.bucket_check`) are
instances.

A probe reading is a fact observed on its own schedule, like a watch, and a
pass never waits for one: :meth:`PeriodicProbe.answers` returns at once with
the last answer for each target a profile needs (None while a target has
none yet) and starts reading a target it has not seen, in the background. A
new answer that differs from the last one calls ``on_change`` with the
profiles that rely on it (the runtime queues them), the first answer
included. The runtime calls :meth:`PeriodicProbe.refresh_due` every second;
it starts reading again every target whose next reading is due and returns.

Readings are kept per target under a key the instance chooses (a server's
address and the credentials that read it; a bucket), shared by every profile
that relies on it, so the cost of a target does not grow with the number of
profiles on it. Reads are non-blocking and at most :class:`Slots` of them run
at once (a slot is an open socket), a target's first reading ahead of
refreshes; each read is given up after ``time_limit_seconds``. A target is
read again after its TTL (jittered, so targets first read together spread
out), and one that keeps failing backs off exponentially. Called by the
reconcile pass (through the instances) and the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")  # what is read: a target
R = TypeVar("R")  # what a read gives

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 128
JITTER = 0.1  # a delay is stretched or shrunk by up to this share


class Slots:
    """At most ``count`` reads at once, over every probe of a process; a
    first reading (a profile waits for it) goes ahead of refreshes."""

    def __init__(self, count: int = DEFAULT_SLOTS) -> None:
        self._free = count
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, *, first: bool) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if first else 1, next(self._seq), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as it was cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    @contextlib.asynccontextmanager
    async def held(self, *, first: bool) -> AsyncIterator[None]:
        await self.acquire(first=first)
        try:
            yield
        finally:
            self.release()


@dataclass(frozen=True)
class Answer(Generic[R]):
    """The last answer for one target: ``result`` None while there is none
    yet; ``asked`` (the probe's clock) when it was first asked for."""

    result: R | None
    asked: float


@dataclass
class _Entry(Generic[T, R]):
    target: T
    asked: float
    result: R | None = None
    version: int = 0  # changes with every answer that differs (0: none yet)
    due: float = 0.0
    failures: int = 0  # failed answers in a row
    users: set[str] = field(default_factory=set)
    reading: asyncio.Task[None] | None = None


class PeriodicProbe(Generic[T, R]):
    """The last answer for each target, read again every TTL."""

    def __init__(
        self,
        *,
        read: Callable[[T], Awaitable[R]],
        ttl_seconds: float,
        time_limit_seconds: float,
        on_timeout: Callable[[T], R],
        failed: Callable[[R], bool] = lambda _: False,
        failure_ttl_seconds: float | None = None,
        max_backoff_seconds: float | None = None,
        slots: Slots | None = None,
        on_change: Callable[[set[str]], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._read_target = read
        self._ttl = ttl_seconds
        self._time_limit = time_limit_seconds
        self._on_timeout = on_timeout
        self._failed = failed
        self._failure_ttl = ttl_seconds if failure_ttl_seconds is None else failure_ttl_seconds
        self._max_backoff = (
            max(self._ttl, self._failure_ttl) * 4
            if max_backoff_seconds is None
            else max_backoff_seconds
        )
        self._slots = slots or Slots()
        self._clock = clock or time.monotonic
        self._random = random.Random()  # noqa: S311 - jitter, not a secret
        self._entries: dict[Hashable, _Entry[T, R]] = {}
        self._held: dict[str, tuple[Hashable, ...]] = {}  # user -> the keys it relies on
        self.on_change = on_change

    # -- what a pass calls: never waits ------------------------------------------

    def answers(self, user: str, wanted: Mapping[Hashable, T]) -> dict[Hashable, Answer[R]]:
        """The last answer for each target of ``wanted`` (key -> target);
        ``user`` now relies on exactly these. A key not seen before (or whose
        target changed) is read now, in the background."""
        now = self._clock()
        found: dict[Hashable, Answer[R]] = {}
        for key, target in wanted.items():
            entry = self._entries.get(key)
            if entry is None or entry.target != target:
                if entry is not None and entry.reading is not None:
                    entry.reading.cancel()  # of a target nobody wants any more
                entry = _Entry(
                    target=target,
                    asked=now,
                    version=entry.version + 1 if entry is not None else 0,
                    users=entry.users if entry is not None else set(),
                )
                self._entries[key] = entry
                self._start(key, entry, first=True)
            entry.users.add(user)
            found[key] = Answer(entry.result, entry.asked)
        self._hold(user, tuple(wanted))
        return found

    def first_readings(self, user: str) -> list[asyncio.Task[None]]:
        """The reads in flight of targets ``user`` relies on that have no answer
        yet (to be awaited, never cancelled, by whoever waits for them)."""
        entries = (self._entries.get(k) for k in self._held.get(user, ()))
        return [
            e.reading
            for e in entries
            if e is not None and e.result is None and e.reading is not None
        ]

    def release(self, user: str) -> None:
        """``user`` relies on no target of this probe any more (its profile is
        gone, or has nothing of this kind to probe)."""
        self._hold(user, ())
        self._held.pop(user, None)

    def version(self, user: str) -> tuple[int, ...]:
        """Changes whenever an answer ``user`` relies on does."""
        return tuple(
            self._entries[k].version for k in self._held.get(user, ()) if k in self._entries
        )

    def _hold(self, user: str, keys: tuple[Hashable, ...]) -> None:
        for key in set(self._held.get(user, ())) - set(keys):
            entry = self._entries.get(key)
            if entry is None:
                continue
            entry.users.discard(user)
            if not entry.users:
                if entry.reading is not None:
                    entry.reading.cancel()
                del self._entries[key]
        self._held[user] = keys

    # -- what the runtime calls ---------------------------------------------------

    def refresh_due(self) -> int:
        """Start reading every target whose next reading is due; how many."""
        now = self._clock()
        started = 0
        for key, entry in list(self._entries.items()):
            if entry.reading is None and entry.due <= now and entry.users:
                self._start(key, entry, first=entry.result is None)
                started += 1
        return started

    async def close(self) -> None:
        """Stop every read in flight (the process stops)."""
        tasks = [e.reading for e in self._entries.values() if e.reading is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Wait until no read is in flight (tests, and a clean stop)."""
        while tasks := [e.reading for e in self._entries.values() if e.reading is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- reading --------------------------------------------------------------------

    def _start(self, key: Hashable, entry: _Entry[T, R], *, first: bool) -> None:
        entry.reading = asyncio.get_running_loop().create_task(
            self._read(key, entry, first=first), name=f"probe {key!r}"[:200]
        )

    async def _read(self, key: Hashable, entry: _Entry[T, R], *, first: bool) -> None:
        try:
            async with self._slots.held(first=first):
                try:
                    result = await asyncio.wait_for(
                        self._read_target(entry.target), self._time_limit
                    )
                except TimeoutError:
                    result = self._on_timeout(entry.target)
        except asyncio.CancelledError:
            raise
        except Exception:  # a reader's bug must not stop the probe: try again later
            log.exception("probe of %r failed", key)
            entry.due = self._clock() + self._jittered(self._failure_ttl)
            return
        finally:
            entry.reading = None
        if self._entries.get(key) is not entry:
            return  # released, or its target changed meanwhile
        if self._failed(result):
            entry.failures += 1
            delay = min(self._failure_ttl * 2 ** (entry.failures - 1), self._max_backoff)
        else:
            entry.failures = 0
            delay = self._ttl
        entry.due = self._clock() + self._jittered(delay)
        if entry.result is None or result != entry.result:
            entry.result = result
            entry.version += 1
            if self.on_change is not None and entry.users:
                self.on_change(set(entry.users))

    def _jittered(self, delay: float) -> float:
        return delay * self._random.uniform(1 - JITTER, 1 + JITTER)
