"""The write pooler's agent (agent.pooler) with PgBouncer's console and the
report faked: when it writes and RELOADs, when it RECONNECTs, what it
reports, and that failures are retried without ending it. The real programs
run in tests/conformance/test_pooler_reload.py."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from headroom.agent import console, pooler
from headroom.kube import errors
from headroom.planning import agentfile, pooler_state

NO_STOP = threading.Event()


def _ini(max_db: int, *, port: int = 6432, pool: int = 10) -> str:
    return (
        "[databases]\nshop = host=db port=5432 dbname=shop\n\n[pgbouncer]\n"
        f"listen_port = {port}\nmax_db_connections = {max_db}\ndefault_pool_size = {pool}\n"
    )


class FakeBouncer:
    """A PgBouncer console: RELOAD reads the file; RECONNECT lets the server
    connections fall to the limit over ``drain_steps`` SHOW POOLS."""

    def __init__(self, path: Path, *, held: int) -> None:
        self.path = path
        self.limit = pooler_state_limit(path.read_text())
        self.held = held
        self.commands: list[str] = []
        self.fail_reload = 0
        self.drain_steps = 2
        self._draining: int | None = None
        self.transactions_per_second = 100.0  # at 20 ms each: 2 connections busy

    def run(self, command: str) -> list[dict[str, str]]:
        self.commands.append(command)
        if command == "RELOAD":
            if self.fail_reload:
                self.fail_reload -= 1
                raise console.ConsoleError("connection refused")
            self.limit = pooler_state_limit(self.path.read_text())
            return []
        if command == "RECONNECT":
            self._draining = self.drain_steps
            return []
        if command == "SHOW STATS":
            return [
                {
                    "database": "shop",
                    "avg_xact_count": str(self.transactions_per_second),
                    "avg_xact_time": "20000",
                },
                {"database": "pgbouncer", "avg_xact_count": "0", "avg_xact_time": "0"},
            ]
        if command == "SHOW CONFIG":
            return [{"key": "max_db_connections", "value": str(self.limit), "changeable": "yes"}]
        if command == "SHOW POOLS":
            if self._draining is not None:
                self._draining -= 1
                if self._draining <= 0:
                    self.held = min(self.held, self.limit)
                    self._draining = None
            return [
                {"database": "shop", "sv_active": str(self.held), "sv_idle": "0"},
                {"database": "pgbouncer", "sv_active": "0"},
            ]
        raise AssertionError(command)


def pooler_state_limit(text: str) -> int:
    return int(text.split("max_db_connections = ")[1].split("\n", maxsplit=1)[0])


class Reports:
    def __init__(self) -> None:
        self.written: list[pooler_state.Entry] = []
        self.fail = 0

    def __call__(self, entry: pooler_state.Entry) -> None:
        if self.fail:
            self.fail -= 1
            raise errors.ApiError(status=403, reason="Forbidden", message="no")
        self.written.append(entry)


def _agent(
    tmp_path: Path, *, held: int = 20, max_db: int = 30
) -> tuple[pooler.Agent, FakeBouncer, Reports]:
    output = tmp_path / "pgbouncer.ini"
    output.write_text(_ini(max_db))
    bouncer = FakeBouncer(output, held=held)
    reports = Reports()
    agent = pooler.Agent(output=output, console=bouncer, report=reports, shrink_seconds=5)
    agent.start()
    return agent, bouncer, reports


def test_the_start_is_reported_once_and_a_steady_pooler_writes_nothing(tmp_path: Path) -> None:
    agent, _, reports = _agent(tmp_path)
    agent.step(NO_STOP)
    (entry,) = reports.written
    assert entry.config == agentfile.content_hash(_ini(30))
    assert (entry.max_db_connections, entry.server_connections) == (30, 20)
    for _ in range(3):
        agent.next_check = 0  # checks that find nothing new
        agent.step(NO_STOP)
    assert len(reports.written) == 1
    parsed = json.loads(entry.text())
    assert set(parsed) == {"config", "maxDbConnections", "serverConnections", "at", "observed"}


def test_a_shrink_is_reloaded_reconnected_and_reported_within_the_new_limit(
    tmp_path: Path,
) -> None:
    agent, bouncer, reports = _agent(tmp_path, held=30)
    agent.step(NO_STOP)
    agent.offer(_ini(5, pool=4))
    agent.step(NO_STOP)
    assert (tmp_path / "pgbouncer.ini").read_text() == _ini(5, pool=4)
    assert bouncer.commands.count("RELOAD") == 1
    assert "RECONNECT" in bouncer.commands
    last = reports.written[-1]
    assert last.config == agentfile.content_hash(_ini(5, pool=4))
    assert (last.max_db_connections, last.server_connections) == (5, 5)
    assert last.confirmed_at(agentfile.content_hash(_ini(5, pool=4)))


def test_a_growth_is_reloaded_without_a_reconnect(tmp_path: Path) -> None:
    agent, bouncer, reports = _agent(tmp_path, held=20)
    agent.step(NO_STOP)
    agent.offer(_ini(40, pool=30))
    agent.step(NO_STOP)
    assert "RECONNECT" not in bouncer.commands
    assert reports.written[-1].max_db_connections == 40


def test_a_failed_reload_and_a_failed_report_are_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent, bouncer, reports = _agent(tmp_path, held=10)
    agent.step(NO_STOP)
    bouncer.fail_reload = 2
    reports.fail = 1
    agent.offer(_ini(20))
    with caplog.at_level(logging.INFO, logger="headroom.agent.pooler"):
        for _ in range(4):
            agent.step(NO_STOP)
    assert bouncer.commands.count("RELOAD") == 3
    assert reports.written[-1].max_db_connections == 20
    assert "retried" in caplog.text


def test_a_setting_taken_only_at_start_is_not_reloaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent, bouncer, reports = _agent(tmp_path)
    agent.step(NO_STOP)
    with caplog.at_level(logging.INFO, logger="headroom.agent.pooler"):
        agent.offer(_ini(30, port=6433))
        agent.step(NO_STOP)
    assert "RELOAD" not in bouncer.commands
    assert (tmp_path / "pgbouncer.ini").read_text() == _ini(30)
    assert "listen_port" in caplog.text
    assert len(reports.written) == 1


def test_a_pooler_still_over_its_limit_is_reported_and_reconnected_again(tmp_path: Path) -> None:
    agent, bouncer, reports = _agent(tmp_path, held=30)
    agent.shrink_seconds = 0  # the wait ends before the connections fall
    bouncer.drain_steps = 10_000
    agent.step(NO_STOP)
    agent.offer(_ini(5))
    agent.step(NO_STOP)
    assert not reports.written[-1].within_limit
    bouncer.held = 5  # they fell later: the next check reports it
    agent.next_check = 0
    agent.step(NO_STOP)
    assert reports.written[-1].within_limit
    assert len(reports.written) == 3


def test_the_loop_ends_when_stopped_and_a_step_that_raises_does_not_end_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, _, _ = _agent(tmp_path)
    stop = threading.Event()
    calls = []

    def broken(stop: threading.Event) -> None:
        calls.append(1)
        if len(calls) == 3:
            stop.set()
        raise RuntimeError("a bug")

    agent.step = broken  # type: ignore[method-assign]
    agent.report_pending = True  # so the loop ticks quickly
    monkeypatch.setattr(pooler, "TICK_SECONDS", 0.01)
    pooler.run(agent, stop=stop)
    assert len(calls) == 3


def test_entries_parse_what_the_agent_writes_and_nothing_else() -> None:
    entry = pooler_state.Entry(config="abc", max_db_connections=5, server_connections=3, at="x")
    assert pooler_state.Entry.parse(entry.text()) == entry
    assert pooler_state.entries({"pod-a": entry.text(), "pod-b": "{}", "pod-c": "nope"}) == {
        "pod-a": entry
    }
    assert (
        pooler_state.server_connections(
            [
                {
                    "database": "shop",
                    "sv_active": "2",
                    "sv_idle": "1",
                    "sv_used": "1",
                    "sv_tested": "0",
                    "sv_login": "1",
                },
                {"database": "pgbouncer", "sv_active": "9"},
            ]
        )
        == 5
    )


def test_a_change_undone_before_its_reload_goes_back_to_what_runs(tmp_path: Path) -> None:
    agent, bouncer, reports = _agent(tmp_path, held=10)
    agent.step(NO_STOP)
    bouncer.fail_reload = 1
    agent.offer(_ini(20))
    agent.step(NO_STOP)  # written, the RELOAD failed
    agent.offer(_ini(30))  # the ConfigMap is back where it was
    agent.step(NO_STOP)
    assert (tmp_path / "pgbouncer.ini").read_text() == _ini(30)
    assert agent.reload_pending is None
    assert reports.written[-1].max_db_connections == 30


def test_load_figures_are_reported_when_they_move_not_when_they_wobble(tmp_path: Path) -> None:
    agent, bouncer, reports = _agent(tmp_path)
    agent.step(NO_STOP)
    observed = reports.written[-1].observed
    assert observed is not None and observed["transactionsPerSecond"] == 100.0
    for tps, written in ((110.0, 1), (300.0, 2), (290.0, 2)):
        bouncer.transactions_per_second = tps
        agent.next_check = 0
        agent.step(NO_STOP)
        assert len(reports.written) == written, tps
    assert reports.written[-1].observed == {
        **observed,
        "transactionsPerSecond": 300.0,
    }
