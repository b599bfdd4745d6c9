"""The work queue: coalescing, priorities, one pass per key, backoff."""

from __future__ import annotations

import asyncio

from headroom.runtime.work_queue import Trigger, WorkQueue


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
        order = []
        for _ in range(3):
            item = await queue.get()
            order.append(item.key)
            queue.done(item.key)
        return order

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
