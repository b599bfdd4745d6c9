"""Leader election on a coordination.k8s.io/v1 Lease (client-go's algorithm).

Every replica keeps its caches warm and serves admission; only the holder of
the Lease reconciles. A lease is taken over when its record has not changed
for ``leaseDurationSeconds`` *as observed locally* (no trust in the clocks of
other machines). The holder that cannot renew within the lease duration stops
working (another replica may take over) but keeps trying, so an API server
outage pauses the operator instead of killing it. A graceful stop releases the
lease, so the standby takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from headroom.kube import apiserver, errors, kinds

log = logging.getLogger(__name__)


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: apiserver.Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        retry_seconds: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self.on_change = on_change
        self.leader = False
        self.transitions = 0
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    def _set(self, leader: bool) -> None:
        if leader != self.leader:
            self.leader = leader
            if leader:
                self.transitions += 1
            log.info(
                "%s leadership of lease %s/%s",
                "acquired" if leader else "lost",
                self.namespace,
                self.name,
            )
            if self.on_change is not None:
                self.on_change(leader)

    def _spec(self, *, acquire: bool, previous: dict[str, Any]) -> dict[str, Any]:
        now = _micro_now()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": now,
            "acquireTime": previous.get("acquireTime") or now,
            "leaseTransitions": int(previous.get("leaseTransitions") or 0),
        }
        if acquire:
            spec["acquireTime"] = now
            spec["leaseTransitions"] += 1 if previous.get("holderIdentity") else 0
        return spec

    async def try_once(self) -> bool:
        """Acquire or renew once; whether we hold the lease now."""
        lease = await self.kube.get(kinds.LEASE, namespace=self.namespace, name=self.name)
        now = time.monotonic()
        if lease is None:
            body = {
                "apiVersion": kinds.LEASE.api_version,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(acquire=True, previous={}),
            }
            try:
                await self.kube.create(body)
            except errors.ApiError as err:
                if err.status == 409:
                    return False  # another replica created it first
                raise
            self._renewed_at = now
            return True
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.get("holderIdentity") or ""
        duration = int(spec.get("leaseDurationSeconds") or self.lease_seconds)
        ours = holder == self.identity
        expired = not holder or now - self._observed_at > duration
        if not ours and not expired:
            return False
        lease["spec"] = self._spec(acquire=not ours, previous=spec)
        try:
            updated = await self.kube.replace(lease)
        except errors.ApiError as err:
            if err.status == 409:
                return False  # somebody else wrote it meanwhile
            raise
        new_spec = updated.get("spec") or {}
        self._observed = (
            new_spec.get("holderIdentity"),
            new_spec.get("renewTime"),
            new_spec.get("leaseTransitions"),
        )
        self._observed_at = self._renewed_at = now
        return True

    async def run(self, stop: asyncio.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                held = await self.try_once()
                if failing:
                    log.info("lease %s/%s: the API server answers again", self.namespace, self.name)
                failing = False
                self._set(held)
            except errors.KubeError as err:
                # once per outage, not every retry
                (log.debug if failing else log.warning)(
                    "lease %s/%s: %s", self.namespace, self.name, err
                )
                failing = True
                if self.leader and time.monotonic() - self._renewed_at > self.lease_seconds:
                    self._set(False)  # another replica may hold it by now
            delay = self.renew_seconds if self.leader else self.retry_seconds
            if await apiserver.sleep_or_stop(stop, delay):
                break

    async def release(self) -> None:
        """Give the lease up (graceful stop), so a standby need not wait for it to expire."""
        if not self.leader:
            return
        try:
            lease = await self.kube.get(kinds.LEASE, namespace=self.namespace, name=self.name)
            if (
                lease is not None
                and (lease.get("spec") or {}).get("holderIdentity") == self.identity
            ):
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.kube.replace(lease)
        except errors.KubeError as err:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, err)
        self._set(False)
