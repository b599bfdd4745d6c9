"""What the Python test apps share: a pool's worth of threads looping until
the test's deadline, every failure counted, and the one-line report the test
reads (``REPORT {json}``). Imported by app.py and worker.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
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

    def at_ceiling(self, size: int, until_ms: float, step: Callable[[], None]) -> None:
        """``size`` threads (the whole pool) run ``step`` until ``until_ms``."""

        def loop() -> None:
            while time.time() * 1000 < until_ms:
                try:
                    step()
                except Exception as err:
                    self.fail(err)

        threads = [threading.Thread(target=loop) for _ in range(size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def done(self) -> None:
        print("REPORT " + json.dumps(self.report), flush=True)
