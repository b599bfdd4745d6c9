"""How far a read replica is behind its primary, for the read pool's membership
(issue 10: a replica further behind than spec.database.readReplicas.maxLagSeconds
leaves the read pool until it catches up).

:func:`position` reads one server (a replica or the primary) with one
read-only query; :func:`lag` compares a replica's replay position with the
primary's current one. Bytes are exact (LSN arithmetic). Seconds are the age
of the last transaction the replica replayed, and only when it is behind in
bytes: an idle primary writes nothing, so an old replay timestamp alone is not
lag, and a caught-up receive position alone is not "caught up" either (a
replica cut off from the primary receives nothing and would look current).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from headroom.postgres import server_limits

POSITION_QUERY = (
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    " ELSE pg_current_wal_flush_lsn() END::text,"
    " CASE WHEN pg_is_in_recovery()"
    " THEN EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END,"
    " CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END"
)


@dataclass(frozen=True)
class Position:
    in_recovery: bool  # a standby
    # replayed up to (a standby), flushed up to (the primary): a standby is
    # sent flushed WAL only, and WAL that no commit flushes (a running-xacts
    # record on an idle primary) may stay written but unflushed for long,
    # which would show a caught-up standby as behind by its last replay's age
    lsn: int
    replay_age_seconds: float | None  # of the last replayed transaction; None: none yet
    replay_paused: bool


@dataclass(frozen=True)
class Lag:
    bytes: int
    seconds: float  # inf when the replica is behind and has replayed nothing yet

    def within(self, max_seconds: float) -> bool:
        return self.seconds <= max_seconds


def parse_lsn(text: str) -> int:
    """``16/B374D848`` -> its byte position (Postgres' pg_lsn)."""
    high, _, low = text.partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r}") from None


def position(target: server_limits.Target, *, timeout_seconds: int = 3) -> Position | str:
    """Where ``target`` is, or a one-line reason it could not be read."""
    rows = server_limits.query(target, POSITION_QUERY, timeout_seconds=timeout_seconds)
    return rows if isinstance(rows, str) else position_from(rows)


def position_from(rows: Sequence[tuple[Any, ...]]) -> Position | str:
    """The position in the rows of :data:`POSITION_QUERY`."""
    ((in_recovery, lsn, age, paused),) = rows
    if lsn is None:
        return "the server reports no WAL position (a standby that has not replayed yet)"
    return Position(
        in_recovery=bool(in_recovery),
        lsn=parse_lsn(str(lsn)),
        replay_age_seconds=None if age is None else float(age),
        replay_paused=bool(paused),
    )


def lag(primary: Position, replica: Position) -> Lag:
    """How far ``replica`` is behind ``primary`` (read a moment before it)."""
    behind = max(0, primary.lsn - replica.lsn)
    if behind == 0:
        return Lag(bytes=0, seconds=0.0)
    age = replica.replay_age_seconds
    return Lag(bytes=behind, seconds=float("inf") if age is None else max(0.0, age))
