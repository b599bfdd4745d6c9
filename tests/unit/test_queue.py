"""The work queue: coalescing, priorities that age (no starvation), one pass
per key, backoff."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from headroom.runtime import events, share_table
from headroom.runtime.work_queue import ALLOWANCE, Trigger, WorkQueue


async def _take(queue: WorkQueue, count: int) -> list[str]:
    """The keys of the next ``count`` passes, each done at once."""
    order = []
    for _ in range(count):
        item = await queue.get()
        order.append(item.key)
        queue.done(item.key)
    return order


def _drain(queue: WorkQueue) -> list[tuple[str, frozenset[Trigger]]]:
    async def run() -> list[tuple[str, frozenset[Trigger]]]:
        taken = []
        while queue.depth:
            item = await queue.get()
            taken.append((item.key, item.triggers))
            queue.done(item.key)
        return taken

    return asyncio.run(run())


def test_many_triggers_of_one_key_make_one_item() -> None:
    async def run() -> None:
        queue = WorkQueue()
        for _ in range(100):
            queue.add("ns/a", Trigger.STATUS)
        queue.add("ns/a", Trigger.DRIFT)
        assert queue.depth == 1
        item = await queue.get()
        assert item.key == "ns/a"
        assert item.triggers == {Trigger.STATUS, Trigger.DRIFT}
        assert item.trigger is Trigger.DRIFT
        queue.done(item.key)
        assert queue.depth == 0

    asyncio.run(run())


def test_spec_changes_go_ahead_of_resync_work() -> None:
    async def run() -> list[str]:
        queue = WorkQueue()
        for i in range(50):
            queue.add(f"ns/r{i}", Trigger.RESYNC)
        queue.add("ns/status", Trigger.STATUS)
        queue.add("ns/spec", Trigger.SPEC)
        queue.add("ns/r7", Trigger.SPEC)  # made more urgent while pending
        return await _take(queue, 3)

    assert asyncio.run(run()) == ["ns/spec", "ns/r7", "ns/status"]


def test_a_key_is_never_handed_out_twice_at_once() -> None:
    async def run() -> None:
        queue = WorkQueue()
        queue.add("ns/a", Trigger.SPEC)
        first = await queue.get()
        queue.add("ns/a", Trigger.DRIFT)  # arrives while the pass runs
        queue.add("ns/b", Trigger.RESYNC)
        second = await queue.get()
        assert second.key == "ns/b"  # not ns/a again
        queue.done(second.key)
        assert queue.pending("ns/a")
        queue.done(first.key)  # now ns/a comes back, once
        again = await queue.get()
        assert again.key == "ns/a" and again.triggers == {Trigger.DRIFT}

    asyncio.run(run())


def test_a_failed_key_comes_back_after_a_growing_backoff() -> None:
    async def run() -> None:
        queue = WorkQueue(base_backoff=0.01, max_backoff=0.04)
        delays = []
        queue.add("ns/a", Trigger.DRIFT)
        item = await queue.get()
        for _ in range(4):  # the pass keeps failing
            delays.append(queue.done(item.key, failed=True))
            item = await asyncio.wait_for(queue.get(), timeout=1)
            assert item.triggers == {Trigger.RETRY}
        assert delays == [0.01, 0.02, 0.04, 0.04]
        queue.done(item.key)
        queue.add("ns/b", Trigger.DRIFT)
        item = await queue.get()
        assert queue.done(item.key) is None  # success: no retry, backoff reset

    asyncio.run(run())


def test_a_spec_change_during_a_failing_pass_does_not_wait_for_the_backoff() -> None:
    async def run() -> None:
        queue = WorkQueue(base_backoff=60)
        queue.add("ns/a", Trigger.DRIFT)
        item = await queue.get()
        queue.add("ns/a", Trigger.SPEC)
        assert queue.done(item.key, failed=True) is None
        again = await asyncio.wait_for(queue.get(), timeout=1)
        assert Trigger.SPEC in again.triggers

    asyncio.run(run())


def test_forget_drops_pending_work_and_close_stops_waiting_workers() -> None:
    async def run() -> None:
        queue = WorkQueue()
        queue.add("ns/a", Trigger.DRIFT)
        queue.forget("ns/a")
        assert queue.depth == 0
        waiter = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        queue.close()
        try:
            await asyncio.wait_for(waiter, timeout=1)
        except asyncio.CancelledError:
            return
        raise AssertionError("a closed queue handed out work")

    asyncio.run(run())


def test_drain_in_priority_order() -> None:
    queue = WorkQueue()

    async def fill() -> None:
        queue.add("ns/resync", Trigger.RESYNC)
        queue.add("ns/drift", Trigger.DRIFT)

    asyncio.run(fill())
    assert [k for k, _ in _drain(queue)] == ["ns/drift", "ns/resync"]


def test_retry_now_ends_every_backoff() -> None:
    async def run() -> None:
        queue = WorkQueue(base_backoff=600)
        for key in ("ns/a", "ns/b"):
            queue.add(key, Trigger.DRIFT)
            item = await queue.get()
            queue.done(item.key, failed=True)
        assert queue.depth == 0
        assert queue.retry_now() == 2
        taken = {(await queue.get()).key, (await queue.get()).key}
        assert taken == {"ns/a", "ns/b"}

    asyncio.run(run())


def test_a_status_refresh_is_served_while_spec_changes_keep_arriving() -> None:
    """Creates arrive faster than they are served (the backlog grows without
    end): a status refresh still gets its turn, after exactly the work that was
    due before it; no spec change triggered more than its allowance after it
    goes first."""
    now = [0.0]
    queue = WorkQueue(clock=lambda: now[0])
    triggered: dict[str, float] = {}

    def add(key: str, trigger: Trigger) -> None:
        triggered[key] = now[0]
        queue.add(key, trigger)

    async def run() -> list[str]:
        for i in range(100):
            add(f"ns/backlog-{i}", Trigger.SPEC)
        add("ns/ready", Trigger.STATUS)
        served: list[str] = []
        for step in range(10_000):
            now[0] += 0.125  # one pass takes 0.125 s; two creates arrive meanwhile
            add(f"ns/new-{step}-a", Trigger.SPEC)
            add(f"ns/new-{step}-b", Trigger.SPEC)
            item = await queue.get()
            queue.done(item.key)
            if item.key == "ns/ready":
                return served
            served.append(item.key)
        raise AssertionError("the status refresh was never served")

    served = asyncio.run(run())
    bound = ALLOWANCE[Trigger.STATUS]
    assert all(triggered[key] <= bound for key in served)
    # (a spec change triggered exactly at the bound is due with it, and queued later)
    assert served == [k for k, t in triggered.items() if k != "ns/ready" and t < bound]
    assert queue.depth > 100  # the creates did keep arriving


def test_the_resync_ages_too() -> None:
    now = [0.0]
    queue = WorkQueue(clock=lambda: now[0])

    async def run() -> str:
        queue.add("ns/resync", Trigger.RESYNC)
        now[0] = ALLOWANCE[Trigger.RESYNC] + 1
        queue.add("ns/status", Trigger.STATUS)
        queue.add("ns/spec", Trigger.SPEC)
        return (await queue.get()).key

    assert asyncio.run(run()) == "ns/resync"


def test_a_more_urgent_trigger_brings_a_pending_item_forward() -> None:
    now = [0.0]
    queue = WorkQueue(clock=lambda: now[0])

    async def run() -> list[str]:
        queue.add("ns/a", Trigger.STATUS)
        queue.add("ns/b", Trigger.DRIFT)
        now[0] = 0.1
        queue.add("ns/a", Trigger.SPEC)  # due at 0.1 now, before ns/b's 0.5
        return await _take(queue, 2)

    assert asyncio.run(run()) == ["ns/a", "ns/b"]


@dataclass
class _Entry:
    """What runtime.events.Events.resume reads of a cached profile."""

    namespace: str
    name: str
    body: dict[str, Any]

    def object(self) -> dict[str, Any]:
        return self.body


@dataclass
class _Profiles:
    entries: list[_Entry]

    def profile_entries(self) -> list[_Entry]:
        return self.entries


def _resumed(observed: int | None, *, converged: bool) -> dict[str, Any]:
    """A profile at generation 1 as a restart finds it: never passed at it
    (``observed`` None), rolling out, or converged and Ready."""
    ready = {
        "type": "Ready",
        "status": str(converged),
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    status: dict[str, Any] = {"conditions": [ready]}
    if observed is not None:
        status["observedGeneration"] = observed
    if converged:
        status["converged"] = {"fingerprint": "f", "inputs": []}
    return {"metadata": {"generation": 1}, "status": status}


def test_after_a_restart_every_profile_is_passed_before_any_is_passed_again() -> None:
    """A restarted operator queues every profile (Events.resume): the new and
    unconverged ones first, the converged ones (confirmed from the caches) last.
    The first pass of an unconverged profile brings more work for it at once (a
    server's first answer, the recheck of a pass that waited for it); none of it
    may go ahead of a profile not passed yet, or a process that leads a few
    seconds works on the same profiles again while the converged ones get
    nothing (every restart alike: they starve)."""
    now = [0.0]
    queue = WorkQueue(clock=lambda: now[0])
    found = {"new": (10, None, False), "rolling": (40, 1, False), "converged": (50, 1, True)}
    entries = [
        _Entry(f"{kind}-{i}", "p", _resumed(observed, converged=converged))
        for kind, (count, observed, converged) in found.items()
        for i in range(count)
    ]
    ev = events.Events(queue, share_table.SharedBudgets(), publish=lambda _: None)
    ev.cache = _Profiles(entries)  # type: ignore[assignment]

    async def run() -> list[str]:
        ev.resume()
        served: list[str] = []
        while len(served) < len(entries):
            item = await queue.get()
            now[0] += 0.05  # the pass
            if item.key not in served and Trigger.CONFIRM not in item.triggers:
                queue.add(item.key, Trigger.PROBE)  # its server answered meanwhile
            queue.done(item.key)
            served.append(item.key)
        return served

    served = asyncio.run(run())
    assert len(set(served)) == len(entries), [k for k in served if served.count(k) > 1][:5]
    # and in the order the restart ranked them: new, unconverged, converged
    kinds = [key.split("-", 1)[0] for key in served]
    assert kinds == ["new"] * 10 + ["rolling"] * 40 + ["converged"] * 50
