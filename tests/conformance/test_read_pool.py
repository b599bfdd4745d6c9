"""The read pool, for real: a Postgres 15 primary, two hot standbys cloned by
the init script Headroom renders (builders.standby.CLONE_SCRIPT), the write
pooler (builders.pgbouncer) beside it, and the read pooler as the pod
runs it: PgBouncer whose pgbouncer.ini ends in ``%include`` of the file the
read-pool agent writes, the agent's init step (``--once``) before PgBouncer
starts, then the agent process (``python -m headroom.agent.readpool``)
beside it, RELOADing through the admin console.

PgBouncer's host list takes one port, so the two standbys listen on the same
port, each on a UNIX socket in its own directory (``host=/dir0,/dir1``); the
agent probes them through the same paths. Everything else is on 127.0.0.1.

The read pooler's pgbouncer.ini and readpool.json are what Headroom renders
(builders.readpool) for a profile with two external replicas; only the
addresses are this machine's (the socket directories for the replicas' hosts,
the test's ports), as a cluster's DNS would give them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import servers

from headroom.api import v1alpha1
from headroom.builders import pgbouncer, standby
from headroom.planning import membership, names, planner, read_plan

pytestmark = pytest.mark.conformance

USER, PASSWORD, DBNAME = "shop_app", "shop-app-secret-9", "shop"
REPLICATOR, REPLICATOR_PASSWORD = "headroom_replicator", "repl-secret-11"
AGENT_PASSWORD, STATS_PASSWORD = "agent-secret-13", "stats-secret-17"
STANDBY_PORT = 5432  # shared: each standby listens on it in its own socket dir
MAX_LAG_SECONDS, POLL_SECONDS = 3, 1
# probes and the RELOAD take a moment on 2 shared cores
SLACK_SECONDS = 1.5
WHERE = "SELECT pg_is_in_recovery(), current_setting('unix_socket_directories')"


@dataclass
class ReadPool:
    primary: servers.Postgres
    standbys: list[servers.Standby]
    write_pooler: servers.PgBouncer
    read_pooler: servers.PgBouncer
    agent: subprocess.Popen[bytes]
    run_dir: Path

    @property
    def agent_log(self) -> str:
        return (self.run_dir / "agent.log").read_text(errors="replace")

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=servers.HOST,
            port=self.read_pooler.port,
            dbname=DBNAME,
            user=USER,
            password=PASSWORD,
            sslmode="disable",
            connect_timeout=5,
            autocommit=True,
            prepare_threshold=None,  # transaction pooling: no server-side prepared statements
        )

    def where_reads_go(self, clients: int = 6) -> list[tuple[bool, str]]:
        """``clients`` transactions open at once, so PgBouncer opens (or reuses)
        that many server connections: (in recovery, socket dir) of each."""
        conns = [self.connect() for _ in range(clients)]
        try:
            found = []
            for conn in conns:
                conn.execute("BEGIN")
                row = conn.execute(WHERE).fetchone()
                assert row is not None
                found.append((bool(row[0]), str(row[1])))
            return found
        finally:
            for conn in conns:
                conn.close()

    def hosts_reading(self, clients: int = 6) -> set[str]:
        return {where for _, where in self.where_reads_go(clients)}

    def wait_for_log(self, text: str, *, timeout: float) -> float:
        """Seconds until the agent logged ``text``."""
        started = time.monotonic()
        try:
            servers.wait_until(lambda: text in self.agent_log, timeout=timeout, what=repr(text))
        except TimeoutError as err:
            replication = self.primary.admin().rows(
                "SELECT application_name, state, sent_lsn, replay_lsn, pg_current_wal_flush_lsn()"
                " FROM pg_stat_replication"
            )
            raise AssertionError(
                f"{err}; replication {replication}; the agent logged:\n{self.agent_log}"
            ) from None
        return time.monotonic() - started


def _read_ini(plan: planner.Plan, *, port: int, auth_file: Path, include: Path) -> str:
    """The read pooler's pgbouncer.ini as Headroom renders it, on HOST:``port``."""
    return pgbouncer.render_read_ini(
        plan,
        listen_addr=servers.HOST,
        listen_port=port,
        auth_file=str(auth_file),
        include_file=str(include),
    )


# Where a standby pod listens is the pod's business; here it is the test's.
_ADDRESSING = ("listen_addresses", "port", "unix_socket_directories", "hba_file")


def rendered_standby_settings(primary: servers.Postgres) -> str:
    """The postgresql.conf Headroom renders for its standbys (mode streaming),
    without the addressing lines: hot_standby, max_connections (the primary's),
    hot_standby_feedback, max_standby_streaming_delay."""
    plan = read_plan.StandbyPlan(
        standbys=2,
        image=v1alpha1.POSTGRES_IMAGE,
        max_connections=primary.max_connections,
        replication_secret=v1alpha1.SecretKeyRef(name="replication"),
        storage=v1alpha1.StandbyStorage(),
        requests={},
        limits={},
    )
    lines = standby.render_conf(plan).splitlines(keepends=True)
    kept = "".join(line for line in lines if not line.startswith(_ADDRESSING))
    assert "hot_standby = on" in kept and "hot_standby_feedback = on" in kept
    return kept


def _agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGUSER=USER, PGPASSWORD=PASSWORD, HEADROOM_AGENT_PASSWORD=AGENT_PASSWORD)
    return env


def _clone(node: servers.Standby) -> None:
    done = servers.run_clone_script(node, replication_user=REPLICATOR, password=REPLICATOR_PASSWORD)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def pool(tools: servers.Tools) -> Iterator[ReadPool]:
    with launch(tools) as found:
        yield found


@contextlib.contextmanager
def launch(
    tools: servers.Tools,
    *,
    max_lag_seconds: int = MAX_LAG_SECONDS,
    poll_seconds: int = POLL_SECONDS,
    scale: int = 1,
) -> Iterator[ReadPool]:
    """The whole read pool, started; stopped and removed on exit (also what
    bench/readpool_bench.py runs)."""
    started: list[servers.ServerProcess] = []
    agent: subprocess.Popen[bytes] | None = None
    run_dir = servers.private_dir("headroom-readpool-", tools.owner)
    try:
        primary = servers.Postgres(tools)
        started.append(primary)
        primary.start()
        primary.create_app(USER, PASSWORD, DBNAME, scale=scale)
        primary.admin(DBNAME).rows(
            f"CREATE ROLE {REPLICATOR} LOGIN REPLICATION "
            f"PASSWORD {servers.quote_literal(REPLICATOR_PASSWORD)}; "
            # the test reads which standby answered: its socket dir
            f"GRANT pg_read_all_settings TO {USER}; "
            f"CREATE TABLE ticks (at timestamptz DEFAULT now()); GRANT INSERT ON ticks TO {USER}"
        )
        standbys = []
        for ordinal in range(2):
            node = servers.Standby(
                primary,
                slot=names.ChildNames("shop", "default").slot(ordinal),
                clone=_clone,
                socket_port=STANDBY_PORT,
                settings=rendered_standby_settings(primary),
            )
            started.append(node)
            standbys.append(node.start())
        write_plan = servers.pooler_plan(
            name="shop", uid="uid-readpool", port=primary.port, dbname=DBNAME,
            max_replicas=2, pool_per_pod=5, max_connections=100,
            superuser_reserved_connections=3, version="1.18.0",
            read_replicas={
                "mode": "external",
                "hosts": [{"host": f"standby-{i}.example"} for i in range(len(standbys))],
                "maxLagSeconds": max_lag_seconds,
                "pollSeconds": poll_seconds,
            },
        )  # fmt: skip
        userlist = pgbouncer_userlist()
        write_pooler = servers.PgBouncer(tools, servers.ini_for(write_plan), userlist)
        started.append(write_pooler)
        write_pooler.start()

        read_port = servers.free_port()
        include = run_dir / "readpool-databases.ini"
        rendered = membership.read_pool_config(write_plan, output=str(include))
        config = rendered.model_copy(
            update={
                "port": STANDBY_PORT,
                "replicas": tuple(
                    membership.Replica(name=r.name, host=node.host)
                    for r, node in zip(rendered.replicas, standbys, strict=True)
                ),
                "connect_timeout_seconds": 2,
                "admin": rendered.admin.model_copy(update={"port": read_port}),
            }
        )
        config_file = run_dir / "readpool.json"
        config_file.write_text(config.to_json())
        command = [sys.executable, "-m", "headroom.agent.readpool", "--config", str(config_file)]
        # the init container: the include file exists before PgBouncer starts
        init = subprocess.run(
            [*command, "--once"],
            env=_agent_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert init.returncode == 0, init.stderr
        assert f"host={standbys[0].host},{standbys[1].host}" in include.read_text()
        if tools.owner is not None:
            os.chown(include, *tools.owner)
        bouncer = ReadPoolBouncer(tools, write_plan, read_port, include, userlist)
        started.append(bouncer)
        bouncer.start()
        with (run_dir / "agent.log").open("ab") as log:
            agent = subprocess.Popen(command, env=_agent_env(), stdout=log, stderr=log)
        found = ReadPool(primary, standbys, write_pooler, bouncer, agent, run_dir)
        found.wait_for_log("membership: reads go to replica-0, replica-1", timeout=30)
        yield found
    finally:
        if agent is not None:
            agent.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(timeout=10)
            if agent.poll() is None:
                agent.kill()
        for process in reversed(started):
            process.stop()
        with contextlib.suppress(OSError):
            for leftover in run_dir.iterdir():
                leftover.unlink()
            run_dir.rmdir()


def pgbouncer_userlist() -> str:
    return servers.pgbouncer.render_userlist(
        {USER: PASSWORD, planner.STATS_USER: STATS_PASSWORD, membership.AGENT_USER: AGENT_PASSWORD}
    )


class ReadPoolBouncer(servers.PgBouncer):
    def __init__(
        self, tools: servers.Tools, plan: planner.Plan, port: int, include: Path, userlist: str
    ) -> None:
        super().__init__(
            tools,
            lambda _port, auth: _read_ini(plan, port=port, auth_file=Path(auth), include=include),
            userlist,
        )
        self.fixed_port = port

    def _launch(self) -> None:
        super()._launch()
        self.port = self.fixed_port


class Writer:
    """Inserts on the primary every 20 ms on a thread, so the WAL moves."""

    def __init__(self, primary: servers.Postgres) -> None:
        self._primary = primary
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(
            host=servers.HOST, port=self._primary.port, dbname=DBNAME, user=USER,
            password=PASSWORD, sslmode="disable", autocommit=True,
        ) as conn:  # fmt: skip
            while not self._stop.is_set():
                conn.execute("INSERT INTO ticks DEFAULT VALUES")
                self._stop.wait(0.02)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_reads_through_the_pool_reach_both_standbys(pool: ReadPool) -> None:
    found = pool.where_reads_go(6)
    assert all(in_recovery for in_recovery, _ in found), found
    assert {where for _, where in found} == {node.host for node in pool.standbys}
    # a restarted standby pod runs its init step again: it does not clone again
    again = servers.run_clone_script(
        pool.standbys[0], replication_user=REPLICATOR, password=REPLICATOR_PASSWORD
    )
    assert again.returncode == 0 and "not cloning again" in again.stdout, again.stderr


def test_a_paused_standby_leaves_within_the_bound_and_comes_back(pool: ReadPool) -> None:
    paused, other = pool.standbys
    try:
        with Writer(pool.primary):
            time.sleep(0.5)  # the standby replays fresh transactions up to the pause
            paused.admin().rows("SELECT pg_wal_replay_pause()")
            # replay stops now: its last replayed transaction ages from here
            started = time.monotonic()
            left = pool.wait_for_log(
                "replica replica-0 leaves", timeout=MAX_LAG_SECONDS + POLL_SECONDS + 10
            )
            deadline = started + MAX_LAG_SECONDS + POLL_SECONDS + SLACK_SECONDS
            time.sleep(max(0.0, deadline - time.monotonic()))
            for _ in range(5):
                assert pool.hosts_reading(6) == {other.host}
            assert "over maxLagSeconds 3" in pool.agent_log
            # not before the bound, not later than the bound and a poll
            assert MAX_LAG_SECONDS <= left <= MAX_LAG_SECONDS + POLL_SECONDS + SLACK_SECONDS, left
    finally:
        paused.admin().rows("SELECT pg_wal_replay_resume()")
    pool.wait_for_log("replica replica-0 joins", timeout=30)
    servers.wait_until(
        lambda: pool.hosts_reading(6) == {node.host for node in pool.standbys},
        timeout=10,
        what="reads on both standbys again",
    )
    assert PASSWORD not in pool.agent_log and AGENT_PASSWORD not in pool.agent_log


class ReconnectingClient:
    """One client on a thread, a query at a time, as an app with a retrying
    driver: a connect that fails is retried; a query whose connection the
    pooler closed is retried on a new connection, up to ``ATTEMPTS`` times.
    ``failed``: queries that got no answer that way; ``errors``: every error
    seen on the way (reported, not hidden)."""

    ATTEMPTS = 5

    def __init__(self, pool: ReadPool) -> None:
        self._pool = pool
        self._stop = threading.Event()
        self.answers: list[tuple[float, str]] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            last = ""
            for _ in range(self.ATTEMPTS):
                try:
                    if conn is None:
                        conn = self._pool.connect()
                    row = conn.execute(WHERE).fetchone()
                    assert row is not None
                    self.answers.append((time.monotonic(), str(row[1])))
                    break
                except psycopg.Error as err:
                    last = str(err).strip()
                    self.errors.append(last)
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.2)
            else:
                self.failed.append(last)
            self._stop.wait(0.01)
        if conn is not None:
            conn.close()

    def __enter__(self) -> ReconnectingClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_killed_standby_leaves_and_reads_go_on_through_the_other(pool: ReadPool) -> None:
    lost, other = pool.standbys
    assert pool.hosts_reading(6) == {lost.host, other.host}
    with ReconnectingClient(pool) as client, ReconnectingClient(pool) as client2:
        time.sleep(0.5)
        killed = time.monotonic()
        lost.halt()
        pool.wait_for_log("replica replica-0 leaves: unreachable", timeout=POLL_SECONDS + 10)
        time.sleep(POLL_SECONDS + 1)
    assert client.failed + client2.failed == [], (client.failed, client2.failed)
    # on the way, retried on a new connection and answered: a read in flight on
    # the standby as it died, and PgBouncer refusing a query or two after its
    # connect to the dead standby failed (server_login_retry)
    errors = client.errors + client2.errors
    expected = ("server conn crashed?", "server login has been failing")
    assert all(e.startswith(expected) for e in errors), errors
    after = [where for at, where in client.answers + client2.answers if at > killed + 0.1]
    assert after and set(after) == {other.host}
    for one in (client, client2):
        times = [at for at, _ in one.answers]
        longest = max(b - a for a, b in itertools.pairwise(times))
        assert longest < POLL_SECONDS + SLACK_SECONDS, f"reads stalled {longest:.1f} s"
    assert pool.hosts_reading(6) == {other.host}


def test_with_every_standby_out_reads_answer_from_the_primary(pool: ReadPool) -> None:
    for node in pool.standbys:
        node.halt()
    pool.wait_for_log("every replica is out: reads go to the primary", timeout=POLL_SECONDS + 10)
    found = pool.where_reads_go(2)
    assert [in_recovery for in_recovery, _ in found] == [False, False]
