"""The standby start-up's inputs (builders.standby): only checked values reach
the script's environment, the password only by Secret reference."""

from __future__ import annotations

from typing import Any

import pytest

from headroom.builders import standby
from headroom.planning import names

GOOD: dict[str, Any] = {
    "primary_host": "shop-db.shop.svc",
    "primary_port": 5432,
    "replication_user": "replicator",
    "slot": "headroom_shop_0",
    "pgdata": "/var/lib/postgresql/data/pgdata",
    "password_secret": {"name": "shop-replication", "key": "password"},
}


def test_the_environment_carries_checked_values_and_the_password_by_reference() -> None:
    env = {e["name"]: e for e in standby.clone_env(**GOOD)}
    assert env["PRIMARY_HOST"] == {"name": "PRIMARY_HOST", "value": "shop-db.shop.svc"}
    assert env["PRIMARY_PORT"]["value"] == "5432"
    assert env["PGPASSWORD"] == {
        "name": "PGPASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "shop-replication", "key": "password"}},
    }
    # the script reads every one of them and embeds none of the values
    for name in ("PGDATA", "PRIMARY_HOST", "PRIMARY_PORT", "REPLICATION_USER", "SLOT_NAME"):
        assert f'"${name}' in standby.CLONE_SCRIPT or f"${name}" in standby.CLONE_SCRIPT


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("primary_host", "db\nrm -rf /"),
        ("primary_host", "db;reboot"),
        ("replication_user", "repl user"),
        ("slot", "Slot-0"),
        ("pgdata", "relative/path"),
        ("pgdata", "/data/$(id)"),
        ("primary_port", 0),
    ],
)
def test_a_value_that_could_become_shell_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=r"not allowed|out of range"):
        standby.clone_env(**{**GOOD, field: value})


def test_slot_names_follow_postgres_rules() -> None:
    assert names.ChildNames("shop-web", "default").slot(1) == "headroom_shop_web_1"
    with pytest.raises(ValueError, match="slot name"):
        names.ChildNames("x" * 60, "default").slot(0)
