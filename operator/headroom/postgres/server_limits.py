"""Read the primary's connection limits, to check the limits a profile declares
(and, through :func:`query`, anything else a server reports: replica lag).

The reconcile pass calls :func:`read` with the app's own credentials (the ones
the pooler uses). It runs one read-only query on ``pg_settings``, which every
role may read, and never raises for an unreachable or refusing primary: the
failure comes back as text for a condition (no password in it, ever).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headroom.planning import planner

_QUERY = (
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

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return f"Target({self.username}@{self.host}:{self.port}/{self.database})"


def read(target: Target, *, timeout_seconds: int = 3) -> planner.PrimaryLimits | str:
    """The primary's limits, or a one-line reason why they could not be read."""
    rows = query(target, _QUERY, timeout_seconds=timeout_seconds)
    if isinstance(rows, str):
        return rows
    found = {str(name): str(value) for name, value in rows}
    return planner.PrimaryLimits(
        max_connections=int(found["max_connections"]),
        superuser_reserved_connections=int(found.get("superuser_reserved_connections", 0)),
        reserved_connections=int(found.get("reserved_connections", 0)),
        max_slot_wal_keep_size_mb=int(found["max_slot_wal_keep_size"])
        if "max_slot_wal_keep_size" in found
        else None,
    )


def query(target: Target, sql: str, *, timeout_seconds: int = 3) -> list[tuple[Any, ...]] | str:
    """The rows of one read-only ``sql`` on ``target``, or a one-line reason
    (never with the password in it) why it could not run."""
    if target.server_ca_pem is None or not target.ssl_mode.startswith("verify-"):
        # like PgBouncer, the weaker modes do not check the certificate chain
        return _rows(target, sql, tls={}, timeout_seconds=timeout_seconds)
    with tempfile.TemporaryDirectory(prefix="headroom-ca-") as folder:
        ca_file = Path(folder) / "ca.crt"  # libpq reads root certificates from a file only
        ca_file.write_text(target.server_ca_pem)
        return _rows(
            target, sql, tls={"sslrootcert": str(ca_file)}, timeout_seconds=timeout_seconds
        )


def _rows(
    target: Target, sql: str, *, tls: dict[str, Any], timeout_seconds: int
) -> list[tuple[Any, ...]] | str:
    # imported on first use: most profiles never ask, and libpq costs the
    # operator ~10 MB of memory
    import psycopg  # noqa: PLC0415

    try:
        with psycopg.connect(
            host=target.host,
            port=target.port,
            dbname=target.database,
            user=target.username,
            password=target.password,
            sslmode=target.ssl_mode,
            **tls,
            connect_timeout=timeout_seconds,
            application_name="headroom-operator",
            autocommit=True,
        ) as conn:
            rows: list[tuple[Any, ...]] = conn.execute(sql).fetchall()
    except psycopg.Error as err:
        text = str(err).strip()
        reason = f"{type(err).__name__}: {text.splitlines()[0] if text else 'no detail'}"
        if target.password:
            reason = reason.replace(target.password, "***")
        return reason[:300]
    return rows
