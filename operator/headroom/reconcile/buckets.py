"""The operator's own look at ``s3`` buckets: a HEAD of each bucket with the
app's key, so a bucket missing on the endpoint or a key the endpoint refuses
shows in StorageReady instead of in the app.

Like the primary's limits (:mod:`headroom.reconcile.primary`) it is a fact
read on its own schedule: a profile's first pass checks once, later passes
use the last answer, :meth:`BucketProbe.refresh_due` checks again every TTL
and reports the profiles whose answer changed. An endpoint the operator cannot
reach (no egress, DNS) is not the app's problem: it is said, not failed on.
COSI buckets are not checked (their driver vouches for them). Called by the
engine and the runtime; no key or secret is ever in a verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from headroom.planning import plan as plan_mod
from headroom.planning import storage
from headroom.s3 import client as s3_client

_CONCURRENT_CHECKS = 4
# what S3 says of a key that is wrong (not of one without the permission)
_BAD_KEY = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"})
CHECK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Target:
    name: str  # the profile's name for the bucket
    endpoint: str
    region: str
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class Verdict:
    """``reason`` None: the bucket answered (or could not be asked: ``note``)."""

    reason: str | None = None
    message: str = ""
    note: str = ""


def check(target: Target) -> Verdict:
    """HEAD the bucket with the app's key (blocking)."""
    client = s3_client.Client(
        endpoint=target.endpoint,
        access_key=target.access_key_id,
        secret_key=target.secret_access_key,
        region=target.region,
        timeout_seconds=CHECK_TIMEOUT_SECONDS,
    )
    try:
        found = client.bucket_exists(target.bucket)
    except s3_client.S3Error as err:
        if err.status == 0:
            return Verdict(note=f"not checked: {target.endpoint} did not answer ({err.code})")
        if err.code in _BAD_KEY:
            return Verdict(
                "CredentialsRejected",
                f"{target.endpoint} refuses the key for bucket {target.bucket}: "
                f"{err.status} {err.code}",
            )
        if err.status == 403:  # a key scoped to objects may not HEAD the bucket
            return Verdict(note=f"{target.bucket}: HEAD refused ({err.code}); objects may work")
        return Verdict(note=f"not checked: {target.endpoint} answered {err.status} {err.code}")
    if not found:
        return Verdict(
            "BucketNotFound", f"bucket {target.bucket} does not exist at {target.endpoint}"
        )
    return Verdict()


def targets(
    planned: plan_mod.Plan, found: dict[str, storage.BucketCredentials]
) -> tuple[Target, ...]:
    return tuple(
        Target(
            name=b.name,
            endpoint=found[b.name].endpoint,
            region=found[b.name].region,
            bucket=found[b.name].bucket,
            access_key_id=found[b.name].access_key_id,
            secret_access_key=found[b.name].secret_access_key,
        )
        for b in planned.buckets
        if b.s3 is not None and b.name in found
    )


Result = dict[str, Verdict]


@dataclass
class _Entry:
    targets: tuple[Target, ...]
    result: Result
    expires: float
    version: int = 1


class BucketProbe:
    """The last verdict on each profile's ``s3`` buckets, refreshed every TTL."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        on_change: Callable[[set[str]], None] | None = None,
        checker: Callable[[Target], Verdict] = check,
    ) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, _Entry] = {}
        self._gate = asyncio.Semaphore(_CONCURRENT_CHECKS)
        self._checker = checker
        self.on_change = on_change

    def version(self, user: str) -> int:
        entry = self._entries.get(user)
        return entry.version if entry is not None else 0

    async def _check_all(self, found: tuple[Target, ...]) -> Result:
        async def one(target: Target) -> Verdict:
            async with self._gate:
                return await asyncio.to_thread(self._checker, target)

        verdicts = await asyncio.gather(*(one(t) for t in found))
        return {t.name: v for t, v in zip(found, verdicts, strict=True)}

    async def check(self, found: tuple[Target, ...], *, user: str) -> Result:
        """The last verdicts (checked now the first time and when a bucket,
        endpoint or key changed)."""
        if not found:
            self.release(user)
            return {}
        entry = self._entries.get(user)
        if entry is None or entry.targets != found:
            result = await self._check_all(found)
            version = entry.version + 1 if entry is not None else 1
            entry = _Entry(found, result, time.monotonic() + self._ttl, version)
            self._entries[user] = entry
        return entry.result

    def release(self, user: str) -> None:
        self._entries.pop(user, None)

    async def refresh_due(self) -> None:
        now = time.monotonic()
        due = [(user, e) for user, e in self._entries.items() if e.expires <= now]
        results = await asyncio.gather(*(self._check_all(e.targets) for _, e in due))
        changed: set[str] = set()
        for (user, entry), result in zip(due, results, strict=True):
            entry.expires = time.monotonic() + self._ttl
            if result != entry.result:
                entry.result = result
                entry.version += 1
                changed.add(user)
        if changed and self.on_change is not None:
            self.on_change(changed)
