"""Read the primary's connection limits, to check the limits a profile declares
(and, through :func:`query`, anything else a server reports: replica lag).

The operator's probes call :func:`read_async` and :func:`session_async`
(non-blocking: psycopg's async connections, at the address the probe resolved)
with the app's own credentials (the ones the pooler uses); :func:`query` is the
blocking twin the read-pool agent uses.
The limits are one read-only query on ``pg_settings``, which every role may
read; beside them, one row of ``pg_stat_statements`` says whether the app's
database has per-statement times. Nothing here raises for an unreachable or
refusing server: the failure comes back as text for a condition (no password
in it, ever).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headroom.planning import planner

LIMITS_QUERY = (
    "SELECT name, setting FROM pg_settings WHERE name IN "
    "('max_connections', 'superuser_reserved_connections', 'reserved_connections',"
    " 'max_slot_wal_keep_size')"
)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    database: str
    username: str
    password: str
    ssl_mode: str
    server_ca_pem: str | None = None  # verify-ca / verify-full trust this CA
    # where to connect, resolved already ("": resolve ``host``); ``host`` still
    # names the server for TLS
    address: str = ""

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return f"Target({self.username}@{self.host}:{self.port}/{self.database})"


# Fails when the extension is not created in the database ("relation ... does
# not exist") or its library is not preloaded ("must be loaded via
# shared_preload_libraries"): the reason is the StatementStats message.
STATEMENTS_QUERY = "SELECT 1 FROM pg_stat_statements LIMIT 1"


async def read_async(target: Target, *, timeout_seconds: int = 3) -> planner.PrimaryLimits | str:
    """The primary's limits (and whether pg_stat_statements can be read), or a
    one-line reason why they could not be read."""
    found = await _session(
        target, (LIMITS_QUERY,), then=STATEMENTS_QUERY, timeout_seconds=timeout_seconds
    )
    if isinstance(found, str):
        return found
    (limits,), statements = found
    return limits_from(limits, statements_missing=statements if isinstance(statements, str) else "")


def limits_from(
    rows: Sequence[tuple[Any, ...]], *, statements_missing: str = ""
) -> planner.PrimaryLimits:
    """The limits in the rows of :data:`LIMITS_QUERY`."""
    found = {str(name): str(value) for name, value in rows}
    return planner.PrimaryLimits(
        max_connections=int(found["max_connections"]),
        superuser_reserved_connections=int(found.get("superuser_reserved_connections", 0)),
        reserved_connections=int(found.get("reserved_connections", 0)),
        max_slot_wal_keep_size_mb=int(found["max_slot_wal_keep_size"])
        if "max_slot_wal_keep_size" in found
        else None,
        statements_missing=statements_missing,
    )


def query(target: Target, sql: str, *, timeout_seconds: int = 3) -> list[tuple[Any, ...]] | str:
    """The rows of one read-only ``sql`` on ``target``, or a one-line reason
    (never with the password in it) why it could not run."""
    # imported on first use: most profiles never ask, and libpq costs the
    # operator ~10 MB of memory
    import psycopg  # noqa: PLC0415

    with _tls(target) as tls:
        try:
            with psycopg.connect(
                **_params(target, tls=tls, timeout_seconds=timeout_seconds)
            ) as conn:
                rows: list[tuple[Any, ...]] = conn.execute(sql).fetchall()
        except psycopg.Error as err:
            return _reason(err, target)
    return rows


async def session_async(
    target: Target, statements: Sequence[str], *, timeout_seconds: int = 3
) -> list[list[tuple[Any, ...]]] | str:
    """The rows of each read-only statement, run in one connection to
    ``target`` (non-blocking), or a one-line reason why they could not run."""
    found = await _session(target, statements, then="", timeout_seconds=timeout_seconds)
    return found if isinstance(found, str) else found[0]


async def _session(
    target: Target, statements: Sequence[str], *, then: str, timeout_seconds: int
) -> tuple[list[list[tuple[Any, ...]]], list[tuple[Any, ...]] | str] | str:
    """:func:`session_async`, and ``then``: one more statement whose failure is
    its answer (the reason, as text) rather than the session's."""
    import psycopg  # noqa: PLC0415

    with _tls(target) as tls:
        try:
            async with await psycopg.AsyncConnection.connect(
                **_params(target, tls=tls, timeout_seconds=timeout_seconds)
            ) as conn:
                found = []
                for sql in statements:
                    cursor = await conn.execute(sql)
                    found.append(await cursor.fetchall())
                last: list[tuple[Any, ...]] | str = []
                if then:
                    try:
                        cursor = await conn.execute(then)
                        last = await cursor.fetchall()
                    except psycopg.errors.DatabaseError as err:
                        if conn.closed:  # the connection failed, not the statement
                            raise
                        last = _reason(err, target)
        except psycopg.Error as err:
            return _reason(err, target)
    return found, last


@contextlib.contextmanager
def _tls(target: Target) -> Iterator[dict[str, Any]]:
    """libpq's TLS parameters for ``target`` (a CA file while in use)."""
    if target.server_ca_pem is None or not target.ssl_mode.startswith("verify-"):
        # like PgBouncer, the weaker modes do not check the certificate chain
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="headroom-ca-") as folder:
        ca_file = Path(folder) / "ca.crt"  # libpq reads root certificates from a file only
        ca_file.write_text(target.server_ca_pem)
        yield {"sslrootcert": str(ca_file)}


def _params(target: Target, *, tls: dict[str, Any], timeout_seconds: int) -> dict[str, Any]:
    address = {"hostaddr": target.address} if target.address else {}
    return {
        "host": target.host,
        **address,
        "port": target.port,
        "dbname": target.database,
        "user": target.username,
        "password": target.password,
        "sslmode": target.ssl_mode,
        **tls,
        "connect_timeout": timeout_seconds,
        "application_name": "headroom-operator",
        "autocommit": True,
    }


def _reason(err: Exception, target: Target) -> str:
    text = str(err).strip()
    reason = f"{type(err).__name__}: {text.splitlines()[0] if text else 'no detail'}"
    if target.password:
        reason = reason.replace(target.password, "***")
    return reason[:300]
