"""A coalescing, fair work queue of profile keys (client-go's workqueue, with
priorities that age).

- Any number of triggers for one key collapse into one pending item; it keeps
  the set of every trigger.
- A key is handed to one worker at a time; triggers that arrive while it is
  being processed make it pending again once that worker is done.
- Priorities without starvation: each trigger has an *allowance*
  (:data:`ALLOWANCE`), how long work of that kind may let more urgent work
  that arrives after it go first. An item is due at the time of its trigger
  plus that allowance (the earliest, over its triggers), and the earliest due
  item is served first. So a spec change goes ahead of drift repair, status
  refreshes and the resync that were triggered at about the same time, but a
  status refresh triggered at ``t`` goes ahead of every spec change triggered
  after ``t + ALLOWANCE[STATUS]``: however many creates keep arriving, a
  profile whose children became ready is served within that allowance plus
  the time to drain what was due before it. With a short queue the allowance
  delays nothing (it orders, it does not wait).
- A failed key comes back after an exponential backoff (per key), not at once.

Who goes first is decided by the triggers alone: a caller that needs another
order (after a restart, say) adds a :class:`Trigger` with its allowance.
Pure asyncio; used by the runtime's workers.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Trigger(enum.IntEnum):
    """Why a pass runs; lower is more urgent (a smaller allowance)."""

    SPEC = 0  # the profile was created or its spec changed
    DRIFT = 1  # a child or an input changed or vanished; an engine came or went
    PROBE = 2  # a periodic probe's answer changed (a server's limits, a replica's lag)
    RETRY = 3  # an earlier pass failed
    STATUS = 4  # only a child's status changed (pods became ready)
    CONFIRM = 5  # a restarted operator confirms a profile its status says converged
    RESYNC = 6  # the periodic safety net


# Seconds work of each kind lets more urgent work that arrives later go first.
ALLOWANCE: dict[Trigger, float] = {
    Trigger.SPEC: 0.0,
    Trigger.DRIFT: 0.5,
    Trigger.PROBE: 1.0,
    Trigger.RETRY: 1.0,  # it has waited out its backoff already
    Trigger.STATUS: 2.0,
    # After the profiles a restart left unconverged, and before the work their
    # first passes bring at once (a server's first answer, a recheck: PROBE's
    # allowance, triggered later): every profile gets a pass before any gets a
    # second, so a process that leads a few seconds confirms every converged one.
    Trigger.CONFIRM: 1.0,
    Trigger.RESYNC: 30.0,
}


@dataclass
class _Pending:
    due: float  # served in order of this: the earliest trigger time + allowance
    triggers: set[Trigger]
    since: float  # when it first became pending (queue wait is measured from here)


@dataclass
class Item:
    key: str
    triggers: frozenset[Trigger]
    waited: float  # seconds between the first trigger and the start of the pass

    @property
    def trigger(self) -> Trigger:
        return min(self.triggers)


@dataclass
class WorkQueue:
    base_backoff: float = 1.0
    max_backoff: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _heap: list[tuple[float, int, str]] = field(default_factory=list)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _processing: set[str] = field(default_factory=set)
    _dirty: dict[str, _Pending] = field(default_factory=dict)  # re-triggered while processing
    _failures: dict[str, int] = field(default_factory=dict)
    _delayed: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    # one token per push: a worker waiting for work wakes up (spurious wake-ups
    # are harmless: it looks again and waits again)
    _tokens: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    _closed: bool = False

    # -- producers --------------------------------------------------------------

    def add(self, key: str, trigger: Trigger) -> None:
        """Make ``key`` pending (or more urgent) for ``trigger``."""
        if self._closed:
            return
        now = self.clock()
        due = now + ALLOWANCE[trigger]
        target = self._dirty if key in self._processing else self._pending
        pending = target.get(key)
        if pending is None:
            target[key] = _Pending(due, {trigger}, now)
            if target is self._pending:
                self._push(key, due)
            return
        pending.triggers.add(trigger)
        if due < pending.due:
            pending.due = due
            if target is self._pending:
                self._push(key, due)  # the older heap entry is skipped later

    def add_after(self, key: str, trigger: Trigger, delay: float) -> None:
        if key in self._delayed or self._closed:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._delayed.pop(key, None)
            self.add(key, trigger)

        self._delayed[key] = loop.call_later(delay, fire)

    def _push(self, key: str, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._tokens.put_nowait(None)

    # -- consumers --------------------------------------------------------------

    def _pop(self) -> Item | None:
        while self._heap:
            due, _, key = heapq.heappop(self._heap)
            pending = self._pending.get(key)
            if pending is None or pending.due != due:
                continue  # stale heap entry (coalesced or made more urgent)
            del self._pending[key]
            self._processing.add(key)
            return Item(key, frozenset(pending.triggers), self.clock() - pending.since)
        return None

    async def get(self) -> Item:
        """The pending key due first (waits for one); CancelledError once closed."""
        while True:
            if self._closed:
                raise asyncio.CancelledError
            item = self._pop()
            if item is not None:
                return item
            await self._tokens.get()

    def done(self, key: str, *, failed: bool = False) -> float | None:
        """The pass of ``key`` ended. A failed one comes back after a backoff
        (returned, in seconds); triggers that came meanwhile make it pending now."""
        self._processing.discard(key)
        delay = None
        if failed:
            count = self._failures.get(key, 0)
            self._failures[key] = count + 1
            delay = min(self.base_backoff * 2**count, self.max_backoff)
        else:
            self._failures.pop(key, None)
        dirty = self._dirty.pop(key, None)
        if dirty is not None and (not failed or Trigger.SPEC in dirty.triggers):
            # a new spec may well fix what failed: no reason to wait for it
            self._pending[key] = dirty
            self._push(key, dirty.due)
            return None
        if delay is not None:
            self.add_after(key, Trigger.RETRY, delay)
        return delay

    def retry_now(self) -> int:
        """Every key waiting out a backoff becomes pending now (the API server
        is back after an outage); their failure counts stay. How many."""
        delayed = list(self._delayed.items())
        self._delayed.clear()
        for key, handle in delayed:
            handle.cancel()
            self.add(key, Trigger.RETRY)
        return len(delayed)

    def forget(self, key: str) -> None:
        """The profile is gone: drop its pending work and backoff."""
        self._pending.pop(key, None)
        self._dirty.pop(key, None)
        self._failures.pop(key, None)
        handle = self._delayed.pop(key, None)
        if handle is not None:
            handle.cancel()

    def close(self) -> None:
        self._closed = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        for _ in range(64):  # wake every waiting worker
            self._tokens.put_nowait(None)

    # -- introspection ------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._processing)

    def pending(self, key: str) -> bool:
        return key in self._pending or key in self._dirty
