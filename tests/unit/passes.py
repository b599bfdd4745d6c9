"""Passes of the engine in unit tests as the runtime runs them: a pass never
waits for a server, and a probe's answer queues the next pass of the profiles
that rely on it. :func:`run` does that in one call: a pass, then, while the
pass waited for a first answer or an answer it relied on changed meanwhile,
another once the probes' reads are done."""

from __future__ import annotations

import asyncio
from typing import Any

from headroom.reconcile import outcome, reconciler


async def settled(eng: reconciler.Reconciler, key: str, **kwargs: Any) -> outcome.Outcome | None:
    """The last pass of ``key`` once the probes have answered what it asked."""
    for _ in range(10):
        result = await eng.reconcile(key, **kwargs)
        asked = eng.probes.version(key)
        for probe in eng.probes.all():
            await probe.settle()
        if result is None or (result.recheck_seconds is None and eng.probes.version(key) == asked):
            return result
    raise AssertionError(f"the passes of {key} did not settle")


def run(eng: reconciler.Reconciler, key: str, **kwargs: Any) -> outcome.Outcome | None:
    return asyncio.run(settled(eng, key, **kwargs))


async def refreshed(eng: reconciler.Reconciler) -> None:
    """Every probe reading that is due, read (the runtime starts them every second)."""
    eng.probes.refresh_due()
    for probe in eng.probes.all():
        await probe.settle()
