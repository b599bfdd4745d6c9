"""The start-up of a streaming standby Headroom runs (read replicas, mode
``streaming``; groundwork for issue 10): the init script that clones the primary
once, and the environment it reads.

Pure. The script is a constant: every value it uses comes from environment
variables that :func:`clone_env` builds from checked data, so nothing a
profile says can become shell. What it does, in an init container of each
standby pod, on the pod's own volume:

- ``$PGDATA`` already holds a cluster (``PG_VERSION``): nothing, a restarted
  pod never clones again (its data and its place in the WAL stream stay);
- otherwise ``pg_basebackup -R -C -S $SLOT_NAME -X stream`` into
  ``$PGDATA.partial``, renamed to ``$PGDATA`` only when complete, so an
  interrupted clone is never mistaken for a finished one. ``-C`` makes the
  standby's physical replication slot on the primary; when the slot exists
  already (the volume was lost, the slot was not) the clone reuses it.

A slot keeps WAL on the primary for as long as its standby is away: the
primary's ``max_slot_wal_keep_size`` bounds that (documented for users; a
deleted standby's slot is dropped by the operator).
"""

from __future__ import annotations

import re

from headroom.builders import common

SLOT_PREFIX = "headroom_"
_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")  # Postgres: lower case, digits, underscore
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PATH = re.compile(r"^/[A-Za-z0-9_./-]{1,200}$")

CLONE_SCRIPT = """\
#!/bin/sh
# Clone the primary once into this standby's volume (Headroom; see builders/standby.py).
set -eu
if [ -s "$PGDATA/PG_VERSION" ]; then
  echo "standby: $PGDATA holds a cluster already: not cloning again"
  exit 0
fi
partial="$PGDATA.partial"
rm -rf "$partial"
clone() {
  pg_basebackup --host="$PRIMARY_HOST" --port="$PRIMARY_PORT" \\
    --username="$REPLICATION_USER" --no-password --pgdata="$partial" \\
    --write-recovery-conf --slot="$SLOT_NAME" --wal-method=stream \\
    --checkpoint=fast --progress "$@"
}
if ! clone --create-slot 2>"$partial.err"; then
  if grep -q "already exists" "$partial.err"; then
    echo "standby: slot $SLOT_NAME exists on the primary: cloning through it"
    rm -rf "$partial"
    clone
  else
    cat "$partial.err" >&2
    rm -rf "$partial" "$partial.err"
    exit 1
  fi
fi
rm -f "$partial.err"
chmod 0700 "$partial"
if [ -d "$PGDATA" ]; then
  # an empty mount point may stand there; anything else is not ours to replace
  rmdir "$PGDATA" 2>/dev/null || {
    echo "standby: $PGDATA is not empty and holds no cluster: not overwriting it" >&2
    exit 1
  }
fi
mv "$partial" "$PGDATA"
echo "standby: cloned $PRIMARY_HOST:$PRIMARY_PORT through slot $SLOT_NAME"
"""


def slot_name(profile: str, ordinal: int) -> str:
    """The physical slot of standby ``ordinal`` of ``profile`` (a DNS label)."""
    name = f"{SLOT_PREFIX}{profile.replace('-', '_')}_{ordinal}"
    if not _SLOT.match(name):
        raise ValueError(f"slot name {name!r} is not a Postgres slot name (a-z, 0-9, _; 63)")
    return name


def clone_env(
    *,
    primary_host: str,
    primary_port: int,
    replication_user: str,
    slot: str,
    pgdata: str,
    password_secret: common.Obj,
) -> list[common.Obj]:
    """The init container's environment. ``password_secret``: the
    ``secretKeyRef`` of the replication role's password (PGPASSWORD, read by
    libpq; never in the script, the pod spec or the logs)."""
    checks = (
        ("primary host", primary_host, _HOST),
        ("replication user", replication_user, _USER),
        ("slot", slot, _SLOT),
        ("PGDATA", pgdata, _PATH),
    )
    for what, value, pattern in checks:
        if not pattern.match(value):
            raise ValueError(f"{what} {value!r} is not allowed in a standby's start-up")
    if not 1 <= primary_port <= 65535:
        raise ValueError(f"primary port {primary_port} is out of range")
    return [
        {"name": "PGDATA", "value": pgdata},
        {"name": "PRIMARY_HOST", "value": primary_host},
        {"name": "PRIMARY_PORT", "value": str(primary_port)},
        {"name": "REPLICATION_USER", "value": replication_user},
        {"name": "SLOT_NAME", "value": slot},
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": dict(password_secret)}},
    ]
