"""The primary's limits as a fact read on its own schedule: passes use the last
answer, and only a changed answer queues the profiles that use it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from headroom.api import v1alpha1
from headroom.planning import credentials, planner
from headroom.reconcile import primary_limits
from tests import profiles

CREDS = credentials.Credentials(username="u", password="p", stats_password="s", revision="1")


def _plan() -> planner.Plan:
    body = profiles.base()
    body["metadata"]["uid"] = "uid-1"
    return planner.plan(v1alpha1.parse_profile(body))


def test_a_pass_reads_once_and_only_a_changed_answer_queues_its_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: list[Any] = ["OperationalError: connection refused"]
    reads: list[str] = []

    def read(target: Any) -> Any:
        reads.append(target.host)
        return answers[-1]

    monkeypatch.setattr(primary_limits.server_limits, "read", read)
    changed: list[set[str]] = []
    probe = primary_limits.PrimaryLimitsProbe(ttl_seconds=0.0, on_change=changed.append)

    async def run() -> None:
        live, condition = await probe.check(_plan(), CREDS, user="default/shop")
        assert live is None and condition.reason == "PrimaryUnreachable"
        key = probe.key(_plan(), CREDS)
        assert probe.version(key) == 1
        await probe.refresh_due()  # same answer: nobody is queued
        assert changed == [] and probe.version(key) == 1
        answers.append(planner.PrimaryLimits(max_connections=50, superuser_reserved_connections=3))
        await probe.refresh_due()
        assert changed == [{"default/shop"}] and probe.version(key) == 2
        live, condition = await probe.check(_plan(), CREDS, user="default/shop")
        assert live is not None and live.max_connections == 50
        assert condition.reason == "LimitsRead"
        probe.release("default/shop")
        await probe.refresh_due()  # released: not read any more
        assert probe.version(key) == 0

    asyncio.run(run())
    assert len(reads) == 3  # the first pass, and two refreshes; no read after release
