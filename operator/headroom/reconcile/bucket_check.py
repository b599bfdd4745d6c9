"""The operator's own look at ``s3`` buckets: a HEAD of each bucket with the
app's key, so a bucket missing on the endpoint or a key the endpoint refuses
shows in StorageReady instead of in the app. An instance of the periodic
probe (:mod:`headroom.reconcile.probe`), one reading per bucket, endpoint and
key (shared by the profiles that use the same), non-blocking over one aiohttp
session whose lookups are the probes' shared ones (:mod:`.resolver`).

An endpoint the operator cannot reach (no egress, DNS) is not the app's
problem: it is said, not failed on, and asked again less and less often while
it keeps not answering. An endpoint whose name resolves to an address of the
cluster's or the cloud's own is never contacted (:class:`Checker`). COSI
buckets are not checked (their driver vouches for them). Called by the
reconcile pass (:meth:`BucketProbe.check`, which never waits) and refreshed by
the runtime; no key or secret is ever in a verdict.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import aiohttp

from headroom.api import endpoints
from headroom.planning import object_storage, planner
from headroom.reconcile import primary_limits, probe, resolver
from headroom.s3 import rest

# what S3 says of a key that is wrong (not of one without the permission)
_BAD_KEY = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"})
CHECK_TIMEOUT_SECONDS = 5.0
TIME_LIMIT_SECONDS = 15.0  # the name's lookup and a HEAD (and a GET, to learn why)


@dataclass(frozen=True)
class Target:
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
    answered: bool = True  # False: the endpoint did not answer


class Checker:
    """Checks of buckets through one aiohttp session whose lookups are
    ``resolve``'s. An endpoint whose name resolves to a loopback, link-local
    or metadata address (:func:`headroom.api.endpoints.internal_address`) is
    noted and never contacted (``allow_internal``: tests on 127.0.0.1); the
    session connects only to an address so checked, should the name have
    changed in between."""

    def __init__(self, resolve: resolver.Resolver, *, allow_internal: bool = False) -> None:
        self._resolve = resolve
        self._allow_internal = allow_internal
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Checker:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, target: Target) -> Verdict:
        """HEAD the bucket with the app's key."""
        url = urllib.parse.urlsplit(target.endpoint)
        try:
            url.port  # noqa: B018 - raises for a port out of 0-65535
        except ValueError as err:
            return Verdict(note=f"not checked: {target.endpoint}: InvalidEndpoint ({err})")
        if not self._allow_internal:
            found = await self._resolve.resolve(url.hostname or "")
            if isinstance(found, str):
                return Verdict(note=f"not checked: {found}", answered=False)
            internal = [a for a in found if endpoints.internal_address(a)]
            if internal:
                return Verdict(
                    note=f"not checked: {url.hostname} resolves to {', '.join(internal)}: "
                    "Headroom does not contact the cluster's or the cloud's own addresses "
                    "(InternalAddress)"
                )
        if self._session is None:  # made in the loop that runs the checks
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=resolver.ForHTTP(
                        self._resolve,
                        refuse=None if self._allow_internal else endpoints.internal_address,
                    ),
                    use_dns_cache=False,
                    limit=probe.DEFAULT_SLOTS,
                )
            )
        return await _head(target, through=self._session)


async def _head(target: Target, *, through: aiohttp.ClientSession) -> Verdict:
    client = rest.Client(
        endpoint=target.endpoint,
        access_key=target.access_key_id,
        secret_key=target.secret_access_key,
        region=target.region,
        timeout_seconds=CHECK_TIMEOUT_SECONDS,
    )
    try:
        found = await client.bucket_exists(through, target.bucket)
    except rest.S3Error as err:
        if err.status == 0:
            return Verdict(
                note=f"not checked: {target.endpoint} did not answer ({err.code})", answered=False
            )
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
) -> dict[str, Target]:
    """The ``s3`` buckets of ``planned`` to check, by the profile's name for them."""
    return {
        b.name: Target(
            endpoint=found[b.name].endpoint,
            region=found[b.name].region,
            bucket=found[b.name].bucket,
            access_key_id=found[b.name].access_key_id,
            secret_access_key=found[b.name].secret_access_key,
        )
        for b in planned.buckets
        if b.s3 is not None and b.name in found
    }


def _not_answered(_: Target) -> Verdict:
    return Verdict(note=f"not checked: no answer within {TIME_LIMIT_SECONDS:g} s", answered=False)


def _key(target: Target) -> Hashable:
    return (
        target.endpoint,
        target.region,
        target.bucket,
        target.access_key_id,
        primary_limits.digest(target.secret_access_key),
    )


class BucketProbe(probe.PeriodicProbe[Target, Verdict]):
    """The last verdict on each bucket, refreshed every TTL."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        resolve: resolver.Resolver | None = None,
        allow_internal: bool = False,
        slots: probe.Slots | None = None,
        on_change: Callable[[set[str]], None] | None = None,
        checker: Callable[[Target], Awaitable[Verdict]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._checker = Checker(resolve or resolver.Resolver(), allow_internal=allow_internal)
        super().__init__(
            read=checker or self._checker,
            ttl_seconds=ttl_seconds,
            failed=lambda verdict: not verdict.answered,
            time_limit_seconds=TIME_LIMIT_SECONDS,
            on_timeout=_not_answered,
            slots=slots,
            on_change=on_change,
            clock=clock,
        )

    def check(self, found: dict[str, Target], *, user: str) -> dict[str, Verdict | None]:
        """The last verdict on each bucket, by name (None: not checked yet; the
        check has started)."""
        keys = {name: _key(target) for name, target in found.items()}
        answers = self.answers(user, {keys[name]: target for name, target in found.items()})
        return {name: answers[key].result for name, key in keys.items()}

    async def close(self) -> None:
        await super().close()
        await self._checker.close()
