"""The read-pool agent's loop (agent.readpool) with probes and RELOADs faked:
what it writes, when it reloads, what it logs, and that nothing ends it."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from headroom.agent import readpool
from headroom.planning import membership
from headroom.postgres import lag, server_limits

SECRET = "app-secret-that-never-shows"
PRIMARY = lag.Position(in_recovery=False, lsn=10_000, replay_age_seconds=None, replay_paused=False)


def _standby(lsn: int, age: float = 1.0) -> lag.Position:
    return lag.Position(in_recovery=True, lsn=lsn, replay_age_seconds=age, replay_paused=False)


def _config(output: Path, *, fallback: bool = True) -> membership.ReadPoolConfig:
    return membership.ReadPoolConfig.model_validate(
        {
            "database": "shop",
            "dbname": "shop",
            "replicas": [{"name": "r0", "host": "h0"}, {"name": "r1", "host": "h1"}],
            "primary": {"host": "primary", "port": 5432},
            "fallback": {"host": "db", "port": 5432} if fallback else None,
            "maxLagSeconds": 10,
            "pollSeconds": 0.01,
            "output": str(output),
        }
    )


class Servers:
    """What each host answers, changeable between polls."""

    def __init__(self) -> None:
        self.answers: dict[str, lag.Position | str | Exception] = {
            "primary": PRIMARY,
            "h0": _standby(10_000),
            "h1": _standby(10_000),
        }
        self.reloads = 0
        self.reload_error: str | None = None

    def probe(self, target: server_limits.Target) -> lag.Position | str:
        assert target.password == SECRET and target.database == "shop"
        answer = self.answers[target.host]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def reload(self) -> str | None:
        self.reloads += 1
        return self.reload_error


CREDS = readpool.Credentials(user="app", password=SECRET, admin_password="admin-" + SECRET)


def _agent(tmp_path: Path, servers: Servers, **config: bool) -> readpool.Agent:
    return readpool.Agent(
        config=_config(tmp_path / "readpool-databases.ini", **config),
        creds=CREDS,
        probe=servers.probe,
        reload=servers.reload,
    )


def _entry(tmp_path: Path) -> str:
    return (tmp_path / "readpool-databases.ini").read_text().splitlines()[-1]


def test_it_writes_and_reloads_only_when_the_membership_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    servers = Servers()
    agent = _agent(tmp_path, servers)
    agent.step()
    assert _entry(tmp_path) == "shop = host=h0,h1 port=5432 dbname=shop"
    assert servers.reloads == 1
    inode = (tmp_path / "readpool-databases.ini").stat().st_ino
    agent.step()
    assert servers.reloads == 1
    assert (tmp_path / "readpool-databases.ini").stat().st_ino == inode
    servers.answers["h1"] = _standby(4_000, age=12.5)  # replay stalled 12.5 s ago
    found = agent.step()
    assert found.members == ("r0",)
    assert _entry(tmp_path) == "shop = host=h0 port=5432 dbname=shop"
    assert servers.reloads == 2
    assert "replica r1 leaves: lag 12.5 s, 6000 bytes: over maxLagSeconds 10" in caplog.text
    assert SECRET not in caplog.text
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_reload_is_retried_at_the_next_poll(tmp_path: Path) -> None:
    servers = Servers()
    servers.reload_error = "OperationalError: connection refused"
    agent = _agent(tmp_path, servers)
    agent.step()
    agent.step()
    assert servers.reloads == 2 and agent.reload_pending
    servers.reload_error = None
    agent.step()
    agent.step()
    assert servers.reloads == 3 and not agent.reload_pending


def test_a_probe_that_raises_counts_as_unreachable_and_the_loop_goes_on(tmp_path: Path) -> None:
    servers = Servers()
    servers.answers["h0"] = RuntimeError(f"boom {SECRET}")
    agent = _agent(tmp_path, servers)
    found = agent.step()
    assert found.members == ("r1",)
    assert found.verdicts[0].reason == "unreachable: probe failed: RuntimeError"


def test_every_replica_lost_points_the_entry_at_the_fallback_or_removes_it(
    tmp_path: Path,
) -> None:
    servers = Servers()
    servers.answers["h0"] = servers.answers["h1"] = "OperationalError: no route"
    _agent(tmp_path, servers).step()
    assert _entry(tmp_path) == "shop = host=db port=5432 dbname=shop"
    _agent(tmp_path, servers, fallback=False).step()
    assert "shop =" not in (tmp_path / "readpool-databases.ini").read_text()


def test_an_unreadable_primary_keeps_every_replica_where_it_was(tmp_path: Path) -> None:
    servers = Servers()
    agent = _agent(tmp_path, servers)
    servers.answers["h1"] = _standby(1_000, age=60)
    assert agent.step().members == ("r0",)
    servers.answers["primary"] = "OperationalError: timeout"
    servers.answers["h1"] = _standby(1_000, age=0.1)
    found = agent.step()
    assert found.members == ("r0",)
    assert "lag unknown" in found.verdicts[1].reason


def test_the_loop_stops_when_told(tmp_path: Path) -> None:
    servers = Servers()
    agent = _agent(tmp_path, servers)
    stop = threading.Event()
    rounds = []

    def probe(target: server_limits.Target) -> lag.Position | str:
        if target.host == "primary":
            rounds.append(1)
            if len(rounds) >= 6:  # three polls of two replicas
                stop.set()
        return servers.probe(target)

    agent.probe = probe
    runner = threading.Thread(target=readpool.run, args=(agent,), kwargs={"stop": stop})
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert len(rounds) == 6


def test_the_init_step_writes_the_file_and_exits_0_whatever_the_probes_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "readpool.json"
    config_file.write_text(_config(tmp_path / "out.ini").to_json())
    monkeypatch.setenv("PGUSER", "app")
    monkeypatch.setenv("PGPASSWORD", SECRET)
    monkeypatch.setenv("HEADROOM_AGENT_PASSWORD", "admin")

    def unreachable(target: server_limits.Target, *, timeout_seconds: int) -> str:
        assert timeout_seconds == 3
        return "OperationalError: connection refused"

    monkeypatch.setattr(lag, "position", unreachable)
    (tmp_path / "mounted.ini").write_text("[pgbouncer]\nlisten_port = 6432\n")
    started = tmp_path / "pgbouncer.ini"
    argv = ["--config", str(config_file), "--once", "--source", str(tmp_path / "mounted.ini")]
    assert readpool.main([*argv, "--output", str(started)]) == 0
    assert started.read_text() == "[pgbouncer]\nlisten_port = 6432\n"  # what PgBouncer starts from
    assert (tmp_path / "out.ini").read_text().splitlines()[-1] == (
        "shop = host=db port=5432 dbname=shop"
    )


def test_missing_credentials_stop_the_agent_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "readpool.json"
    config_file.write_text(_config(tmp_path / "out.ini").to_json())
    for name in ("PGUSER", "PGPASSWORD", "HEADROOM_AGENT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match="PGUSER, PGPASSWORD, HEADROOM_AGENT_PASSWORD"):
        readpool.main(
            [
                *("--config", str(config_file), "--config-map", "shop-pooler-ro-config"),
                *("--state", "shop-pooler-ro-state", "--output", str(tmp_path / "pgbouncer.ini")),
            ]
        )


def test_a_new_readpool_json_from_the_configmap_is_taken_at_the_next_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch offers the ConfigMap's readpool.json: a replica fewer and a
    tighter bound apply at once, without a restart; a text that does not parse,
    or one that would move the include file, is refused and the running one kept."""
    caplog.set_level(logging.INFO)
    servers = Servers()
    agent = _agent(tmp_path, servers)
    agent.step()
    assert _entry(tmp_path) == "shop = host=h0,h1 port=5432 dbname=shop"
    running = agent.config
    agent.offer("{not json")
    agent.step()
    assert agent.config == running and "readpool.json refused" in caplog.text
    moved = running.model_copy(update={"output": str(tmp_path / "elsewhere.ini")})
    agent.offer(moved.to_json())
    agent.step()
    assert agent.config == running and "not applied" in caplog.text
    fewer = running.model_copy(update={"replicas": running.replicas[:1], "max_lag_seconds": 5})
    agent.offer(fewer.to_json())
    found = agent.step()
    assert agent.config == fewer
    assert found.members == ("r0",)
    assert _entry(tmp_path) == "shop = host=h0 port=5432 dbname=shop"
    assert servers.reloads == 2  # the new include RELOADed, no restart
    assert "readpool.json changed: 1 replicas, maxLagSeconds 5" in caplog.text
