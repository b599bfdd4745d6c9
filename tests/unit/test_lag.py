"""Replica lag arithmetic (postgres.lag), the read pool's membership rule."""

from __future__ import annotations

import math

import pytest

from headroom.postgres import lag


@pytest.mark.parametrize(
    ("text", "value"),
    [("0/0", 0), ("0/3000060", 0x3000060), ("16/B374D848", (0x16 << 32) | 0xB374D848)],
)
def test_lsn_text_is_a_byte_position(text: str, value: int) -> None:
    assert lag.parse_lsn(text) == value


@pytest.mark.parametrize("bad", ["", "16", "/1", "x/1"])
def test_a_malformed_lsn_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="LSN"):
        lag.parse_lsn(bad)


def _at(lsn: int, age: float | None = 3.0, *, standby: bool = True) -> lag.Position:
    return lag.Position(in_recovery=standby, lsn=lsn, replay_age_seconds=age, replay_paused=False)


def test_a_caught_up_replica_has_no_lag_whatever_its_last_replay_age() -> None:
    # an idle primary: the last transaction is an hour old, nothing to replay
    found = lag.lag(_at(5000, standby=False), _at(5000, age=3600.0))
    assert (found.bytes, found.seconds) == (0, 0.0)
    assert found.within(1)


def test_a_replica_behind_in_bytes_lags_by_its_replay_age() -> None:
    found = lag.lag(_at(9000, standby=False), _at(5000, age=42.5))
    assert (found.bytes, found.seconds) == (4000, 42.5)
    assert found.within(60) and not found.within(30)


def test_a_replica_ahead_of_an_older_primary_reading_is_not_behind() -> None:
    # the primary was read a moment before the replica
    assert lag.lag(_at(5000, standby=False), _at(5100)).bytes == 0


def test_a_replica_behind_that_never_replayed_is_infinitely_behind() -> None:
    found = lag.lag(_at(9000, standby=False), _at(5000, age=None))
    assert math.isinf(found.seconds) and not found.within(10**9)
