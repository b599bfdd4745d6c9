"""One periodic, time-limited probe of things outside the cluster, of which the
primary's limits (:mod:`.primary_limits`), the replicas' lag
(:mod:`.replica_lag`) and the buckets' check (:mod:`.bucket_check`) are
instances.

A probe reading is a fact observed on its own schedule, like a watch: the
first pass that needs a target reads it (once; again when the target
changed), later passes use the last answer, and the runtime calls
:meth:`PeriodicProbe.refresh_due` every few seconds, which reads every target
again once its answer is older than its TTL and reports the profiles whose
answer *changed* (they are queued). So a converged profile's pass never waits
on a server, and an unreachable one costs one attempt per TTL, not a pass per
resync. Every read runs in a thread (the clients block), a few at a time, and
is given up after ``time_limit_seconds`` (the instance says what a reading
that took too long means).

Readings are kept under a key the instance chooses (the primary's address and
credentials, shared by the profiles on it; a profile's own key for the
others), with the profiles (users) that rely on each; a user relies on one
reading per probe at a time. Called by the reconcile pass and the runtime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")  # what is read: a target
R = TypeVar("R")  # what a read gives

DEFAULT_CONCURRENCY = 4


@dataclass
class _Entry(Generic[T, R]):
    target: T
    result: R
    expires: float
    version: int = 1
    users: set[str] = field(default_factory=set)


def in_thread(read: Callable[[T], R], gate: asyncio.Semaphore) -> Callable[[T], Awaitable[R]]:
    """A blocking reader as a coroutine: in a thread, at most the gate's count at once."""

    async def run(target: T) -> R:
        async with gate:
            return await asyncio.to_thread(read, target)

    return run


class PeriodicProbe(Generic[T, R]):
    """The last reading of each target, read again every TTL."""

    def __init__(
        self,
        *,
        read: Callable[[T], Awaitable[R]],
        ttl_seconds: float,
        time_limit_seconds: float,
        on_timeout: Callable[[T], R],
        ttl_for: Callable[[R], float] | None = None,
        on_change: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._read_target = read
        self._ttl = ttl_seconds
        self._ttl_for = ttl_for
        self._time_limit = time_limit_seconds
        self._on_timeout = on_timeout
        self._entries: dict[Hashable, _Entry[T, R]] = {}
        self.on_change = on_change

    def _expires(self, result: R) -> float:
        ttl = self._ttl_for(result) if self._ttl_for is not None else self._ttl
        return time.monotonic() + ttl

    async def _read(self, target: T) -> R:
        try:
            return await asyncio.wait_for(self._read_target(target), self._time_limit)
        except TimeoutError:
            return self._on_timeout(target)

    def version(self, key: Hashable | None) -> int:
        """Changes whenever the reading under ``key`` does (0: none)."""
        entry = self._entries.get(key) if key is not None else None
        return entry.version if entry is not None else 0

    async def reading(self, key: Hashable, target: T, *, user: str) -> R:
        """The last reading of ``target`` (read now the first time, and when the
        target under ``key`` changed); ``user`` now relies on it."""
        entry = self._entries.get(key)
        if entry is None or entry.target != target:
            result = await self._read(target)
            entry = _Entry(
                target=target,
                result=result,
                expires=self._expires(result),
                version=entry.version + 1 if entry is not None else 1,
                users=entry.users if entry is not None else set(),
            )
            self._entries[key] = entry
        for other in self._entries.values():  # one reading per user at a time
            if other is not entry:
                other.users.discard(user)
        entry.users.add(user)
        return entry.result

    def release(self, user: str) -> None:
        """``user`` relies on no reading of this probe any more (its profile is
        gone, or has nothing of this kind to probe)."""
        for key in [k for k, e in self._entries.items() if user in e.users]:
            entry = self._entries[key]
            entry.users.discard(user)
            if not entry.users:
                del self._entries[key]

    async def refresh_due(self) -> None:
        """Read again every target whose reading is older than its TTL; report
        the users of those whose reading changed."""
        now = time.monotonic()
        due = [e for e in self._entries.values() if e.expires <= now and e.users]
        results = await asyncio.gather(*(self._read(e.target) for e in due))
        changed: set[str] = set()
        for entry, result in zip(due, results, strict=True):
            entry.expires = self._expires(result)
            if result != entry.result:
                entry.result = result
                entry.version += 1
                changed |= entry.users
        for key in [k for k, e in self._entries.items() if not e.users]:
            del self._entries[key]
        if changed and self.on_change is not None:
            self.on_change(changed)
