"""The webhook process's copy of the shared-server table changes only on its
event loop, the thread its reviews read it on: an update arriving while a
review iterated the table used to fail that review (HTTP 500) and, with the
webhook's failurePolicy, refuse the create (seen at 500 profiles)."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

from headroom.runtime.admission import server


class _Recording(dict[str, Any]):
    """A table that records the thread of every change."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        self.threads.add(threading.get_ident())
        super().__setitem__(key, value)

    def pop(self, key: str, *default: Any) -> Any:
        self.threads.add(threading.get_ident())
        return super().pop(key, *default)


def test_updates_are_applied_on_the_event_loop_in_order() -> None:
    table = _Recording()
    tables: queue.SimpleQueue[Any] = queue.SimpleQueue()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        follower = threading.Thread(target=server._follow, args=(tables, table, loop))
        follower.start()
        tables.put({"db-1:5432": ["a"], "db-2:5432": ["b"]})
        tables.put({"db-1:5432": []})  # the server is gone
        tables.put({"db-2:5432": ["b", "c"]})
        tables.put(None)
        while follower.is_alive():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # the callbacks the follower scheduled last
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert dict(table) == {"db-2:5432": ["b", "c"]}
    assert table.threads == {loop_thread}
