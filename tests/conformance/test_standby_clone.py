"""The standby clone script Headroom renders (builders.standby), run for real:
``/bin/sh`` with the environment the builder gives the init container, pointed
at a Postgres 15 primary on 127.0.0.1 with a replication role. It clones once,
the clone streams as a hot standby through its own slot, and running the
script again (a restarted pod) leaves the data alone. A second standby whose
slot already exists on the primary (its volume was lost) clones through it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers

from headroom.planning import names

pytestmark = pytest.mark.conformance

REPLICATOR, REPLICATOR_PASSWORD = "headroom_replicator", "repl-secret-7"


@pytest.fixture(scope="module")
def primary(tools: servers.Tools) -> Iterator[servers.Postgres]:
    server = servers.Postgres(tools)
    try:
        server.start()
        server.admin().rows(
            f"CREATE ROLE {REPLICATOR} LOGIN REPLICATION "  # noqa: S608 - constants, quoted
            f"PASSWORD {servers.quote_literal(REPLICATOR_PASSWORD)}; "
            "CREATE TABLE marker (note text); INSERT INTO marker VALUES ('from the primary')"
        )
        yield server
    finally:
        server.stop()


def _run_script(
    node: servers.Standby, *, password: str = REPLICATOR_PASSWORD
) -> subprocess.CompletedProcess[str]:
    return servers.run_clone_script(node, replication_user=REPLICATOR, password=password)


def _clone_with_script(node: servers.Standby) -> None:
    done = _run_script(node)
    assert done.returncode == 0, done.stderr
    assert "standby: cloned" in done.stdout, done.stdout


def test_the_script_clones_once_and_the_clone_streams_through_its_slot(
    primary: servers.Postgres,
) -> None:
    slot = names.ChildNames("shop", "default").slot(0)
    node = servers.Standby(primary, slot=slot, clone=_clone_with_script).start()
    try:
        assert node.admin().value("SELECT pg_is_in_recovery()") == "t"
        servers.wait_until(
            lambda: node.admin().value("SELECT count(*) FROM marker") == "1",
            timeout=30,
            what="the standby to replay the primary's data",
        )
        slots = primary.admin().rows(
            "SELECT active FROM pg_replication_slots "  # noqa: S608 - quoted literal
            f"WHERE slot_name = {servers.quote_literal(slot)}"
        )
        assert slots == [["t"]]
        # a restarted pod runs the init step again: the data stays as it is
        version_file = node.data / "PG_VERSION"
        before = version_file.stat().st_ino
        again = _run_script(node)
        assert again.returncode == 0, again.stderr
        assert "not cloning again" in again.stdout
        assert version_file.stat().st_ino == before
        assert not Path(f"{node.data}.partial").exists()
    finally:
        node.stop()


def test_a_standby_whose_slot_survived_clones_through_it(primary: servers.Postgres) -> None:
    slot = names.ChildNames("shop", "default").slot(1)
    primary.admin().rows(
        f"SELECT pg_create_physical_replication_slot({servers.quote_literal(slot)})"
    )
    node = servers.Standby(primary, slot=slot, clone=_clone_with_script).start()
    try:
        assert node.admin().value("SELECT pg_is_in_recovery()") == "t"
        count = primary.admin().value(
            "SELECT count(*) FROM pg_replication_slots "  # noqa: S608 - quoted literal
            f"WHERE slot_name = {servers.quote_literal(slot)}"
        )
        assert count == "1"
    finally:
        node.stop()


def test_a_wrong_password_fails_the_init_step_without_leaving_a_half_clone(
    primary: servers.Postgres,
) -> None:
    def wrong(node: servers.Standby) -> None:
        done = _run_script(node, password="not-it")
        assert done.returncode != 0
        assert "password authentication failed" in done.stderr
        assert not node.data.exists() and not Path(f"{node.data}.partial").exists()
        raise servers.ServerError("refused, as it should be")

    node = servers.Standby(primary, slot=names.ChildNames("shop", "default").slot(2), clone=wrong)
    with pytest.raises(servers.ServerError, match="refused, as it should be"):
        node.start()
    node.stop()
