"""The operator's ownership key: what proves a retained child is Headroom's
(:mod:`headroom.reconcile.ownership`).

Kept in a Secret of the operator's own namespace (``HEADROOM_OWNERSHIP_KEY_SECRET``,
default ``<its namespace>/headroom-ownership-key``), which the first leader
creates with 256 random bits; every later leader and replica reads it. App
teams write no Secret there, so none can make a proof. Deleting it makes
every retained claim unproven: they are then reported as NameConflict, never
taken over. Called by :mod:`headroom.runtime.process` before it leads.
"""

from __future__ import annotations

import base64
import secrets

from headroom.kube import apiserver, shared_secret

DATA_KEY = "key"


async def settle(kube: apiserver.Kube, *, namespace: str, name: str) -> bytes:
    """The key in Secret ``namespace/name``; made when there is none."""

    def read(data: dict[str, str]) -> bytes | None:
        value = data.get(DATA_KEY)
        return base64.b64decode(value) if value else None

    def make() -> tuple[dict[str, str], bytes]:
        made = secrets.token_bytes(32)
        return {DATA_KEY: base64.b64encode(made).decode()}, made

    return await shared_secret.settle(
        kube,
        namespace=namespace,
        name=name,
        data_type="Opaque",
        labels={"app.kubernetes.io/name": "headroom"},
        read=read,
        make=make,
    )
