"""The operator's own look at ``s3`` buckets: a HEAD of each bucket with the
app's key, so a bucket missing on the endpoint or a key the endpoint refuses
shows in StorageReady instead of in the app. An instance of the periodic
probe (:mod:`headroom.reconcile.probe`), one reading per profile (its ``s3``
buckets, each checked in a thread of its own).

An endpoint the operator cannot reach (no egress, DNS) is not the app's
problem: it is said, not failed on. COSI buckets are not checked (their driver
vouches for them). Called by the reconcile pass and refreshed by the runtime;
no key or secret is ever in a verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from headroom.planning import object_storage, planner
from headroom.reconcile import probe
from headroom.s3 import rest

_CONCURRENT_CHECKS = 4
# what S3 says of a key that is wrong (not of one without the permission)
_BAD_KEY = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"})
CHECK_TIMEOUT_SECONDS = 5.0
TIME_LIMIT_SECONDS = 30.0  # of one round, every bucket of the profile at once


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


def check(target: Target, *, allow_internal: bool = False) -> Verdict:
    """HEAD the bucket with the app's key (blocking). The endpoint is never a
    loopback, link-local or metadata address (headroom.s3.rest): one that
    resolves to such is noted and not contacted (``allow_internal``: tests
    against a server on 127.0.0.1)."""
    client = rest.Client(
        endpoint=target.endpoint,
        access_key=target.access_key_id,
        secret_key=target.secret_access_key,
        region=target.region,
        timeout_seconds=CHECK_TIMEOUT_SECONDS,
        refuse_internal=not allow_internal,
    )
    try:
        found = client.bucket_exists(target.bucket)
    except rest.S3Error as err:
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
    planned: planner.Plan, found: dict[str, object_storage.BucketCredentials]
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


def _not_answered(found: tuple[Target, ...]) -> Result:
    note = f"not checked: no answer within {TIME_LIMIT_SECONDS:g} s"
    return {t.name: Verdict(note=note) for t in found}


class BucketProbe(probe.PeriodicProbe[tuple[Target, ...], Result]):
    """The last verdict on each profile's ``s3`` buckets, refreshed every TTL."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        on_change: Callable[[set[str]], None] | None = None,
        checker: Callable[[Target], Verdict] = check,
    ) -> None:
        one = probe.in_thread(checker, asyncio.Semaphore(_CONCURRENT_CHECKS))

        async def check_all(found: tuple[Target, ...]) -> Result:
            verdicts = await asyncio.gather(*(one(t) for t in found))
            return {t.name: v for t, v in zip(found, verdicts, strict=True)}

        super().__init__(
            read=check_all,
            ttl_seconds=ttl_seconds,
            time_limit_seconds=TIME_LIMIT_SECONDS,
            on_timeout=_not_answered,
            on_change=on_change,
        )

    async def check(self, found: tuple[Target, ...], *, user: str) -> Result:
        """The last verdicts (checked now the first time and when a bucket,
        endpoint or key changed)."""
        if not found:
            self.release(user)
            return {}
        return await self.reading(user, found, user=user)
