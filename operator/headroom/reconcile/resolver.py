"""Host names of the servers the periodic probes read, resolved once per host
per refresh and shared by every probe and profile: ``ep-read-1.example.com``
named by 500 profiles' replicas is one lookup every ``ttl_seconds``, not one
per replica per profile per reading, and a name that does not resolve costs
one failed lookup per TTL, not a resolver timeout per read.

Lookups run in a few threads of their own (the system resolver blocks), one
per name at a time (concurrent askers share it), each given up after
``time_limit_seconds``. An address literal is its own answer. Called by the
probes' readers (:mod:`.primary_limits`, :mod:`.replica_lag`,
:mod:`.bucket_check`), which connect to the address and name the host for TLS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.abc

from headroom.postgres import server_limits

LOOKUP_THREADS = 4
TTL_SECONDS = 30.0
TIME_LIMIT_SECONDS = 5.0

Lookup = Callable[[str], list[str]]  # host -> addresses (blocking); OSError when none


def system_lookup(host: str) -> list[str]:
    found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


@dataclass
class _Cached:
    answer: tuple[str, ...] | str  # addresses, or why there are none
    expires: float


class Resolver:
    def __init__(
        self,
        *,
        ttl_seconds: float = TTL_SECONDS,
        time_limit_seconds: float = TIME_LIMIT_SECONDS,
        lookup: Lookup | None = None,  # None: the system's (system_lookup)
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._time_limit = time_limit_seconds
        self._lookup = lookup
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Future[tuple[str, ...] | str]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pruned = clock()
        self.lookups = 0  # how many the system resolver was asked (for tests and metrics)

    async def resolve(self, host: str) -> tuple[str, ...] | str:
        """The addresses of ``host``, or a one-line reason there are none."""
        try:
            return (str(ipaddress.ip_address(host)),)
        except ValueError:
            pass
        now = self._clock()
        self._prune(now)
        cached = self._cache.get(host)
        if cached is not None and cached.expires > now:
            return cached.answer
        pending = self._inflight.get(host)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve(host))
            self._inflight[host] = pending
        return await asyncio.shield(pending)

    async def _resolve(self, host: str) -> tuple[str, ...] | str:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                LOOKUP_THREADS, thread_name_prefix="headroom-dns"
            )
        self.lookups += 1
        loop = asyncio.get_running_loop()
        try:
            lookup = self._lookup or system_lookup
            found = await asyncio.wait_for(
                loop.run_in_executor(self._pool, lookup, host), self._time_limit
            )
            answer: tuple[str, ...] | str = tuple(found) or f"{host} has no address"
        except TimeoutError:
            answer = f"{host}: no answer from the resolver within {self._time_limit:g} s"
        except (OSError, UnicodeError) as err:
            answer = f"{host} does not resolve ({err})"
        finally:
            self._inflight.pop(host, None)
        self._cache[host] = _Cached(answer, self._clock() + self._ttl)
        return answer

    def _prune(self, now: float) -> None:
        """Forget names nobody asked for in a while (profiles come and go)."""
        if now - self._pruned < self._ttl:
            return
        self._pruned = now
        for host in [h for h, c in self._cache.items() if c.expires <= now]:
            del self._cache[host]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


async def pinned(resolve: Resolver, target: server_limits.Target) -> server_limits.Target | str:
    """``target`` to be reached at the address its host resolves to (the host
    still names it for TLS), or why it cannot be."""
    found = await resolve.resolve(target.host)
    return found if isinstance(found, str) else dataclasses.replace(target, address=found[0])


class ForHTTP(aiohttp.abc.AbstractResolver):
    """``resolve`` as an aiohttp connector's resolver: HTTP probes share its
    lookups (aiohttp's own DNS cache is to be off). ``refuse``: addresses never
    to connect to (none is given out when one of a name's is)."""

    def __init__(self, resolve: Resolver, *, refuse: Callable[[str], bool] | None = None) -> None:
        self._resolve = resolve
        self._refuse = refuse

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        found = await self._resolve.resolve(host)
        if isinstance(found, str):
            raise OSError(found)
        if self._refuse is not None and any(self._refuse(a) for a in found):
            raise OSError(f"{host} resolves to an address Headroom does not contact")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in found
        ]

    async def close(self) -> None:
        return None
