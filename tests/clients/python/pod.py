"""What the Python test apps share: the start signal (``READY`` once set up,
then ``GO <deadline>`` on stdin, so every pod's load starts at once however long
each took to start), a pool's worth of threads looping until the deadline, every
failure counted, and the one-line report the test reads (``REPORT {json}``).
Imported by app.py and worker.py; asyncio apps run their tasks with
``at_ceiling_async``."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any


class Pod:
    def __init__(self, name: str, **fields: Any) -> None:
        self.report: dict[str, Any] = {
            "pod": name,
            "queries": 0,
            "errors": 0,
            "firstErrors": [],
            **fields,
        }
        self._lock = threading.Lock()

    def count(self, field: str) -> None:
        with self._lock:
            self.report[field] += 1

    def fail(self, err: Exception) -> None:
        with self._lock:
            self.report["errors"] += 1
            if len(self.report["firstErrors"]) < 5:
                self.report["firstErrors"].append(str(err))

    @staticmethod
    def ready() -> tuple[float, float]:
        """Say READY; the end of the load and of a worker's draining (epoch ms) the
        test sends with GO."""
        print("READY", flush=True)
        for line in sys.stdin:
            word, *times = line.split()
            if word == "GO":
                return float(times[0]), float(times[1])
        raise RuntimeError("stdin closed before GO")

    def at_ceiling(
        self, size: int, step: Callable[[], None], *, busy: Callable[[], bool] | None = None
    ) -> None:
        """``size`` threads (the whole pool) run ``step`` from GO until the end of the
        load, and on while ``busy()`` (a worker's queue not empty) until the drain ends."""
        until_ms, drain_ms = self.ready()

        def going() -> bool:
            now = time.time() * 1000
            return now < until_ms or (busy is not None and now < drain_ms and busy())

        def loop() -> None:
            while going():
                try:
                    step()
                except Exception as err:
                    self.fail(err)

        threads = [threading.Thread(target=loop) for _ in range(size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    async def at_ceiling_async(self, size: int, step: Callable[[], Awaitable[None]]) -> None:
        """``size`` tasks (the whole pool) run ``step`` from GO until the end of the load."""
        until_ms, _ = self.ready()

        async def loop() -> None:
            while time.time() * 1000 < until_ms:
                try:
                    await step()
                except Exception as err:
                    self.fail(err)

        await asyncio.gather(*(loop() for _ in range(size)))

    def done(self) -> None:
        print("REPORT " + json.dumps(self.report), flush=True)
