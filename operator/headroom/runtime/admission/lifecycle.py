"""What the operator process does for admission: start the webhook server (and
start it again if it dies), keep its certificate current while running, and,
while this replica leads, keep the API server's configuration pointing at it.

Every replica serves admission; only the leader registers. A renewed
certificate is served only once the API server trusts it: the leader
registers old + new in the caBundle first, another replica switches once it
sees the new one there. Called by :mod:`headroom.runtime.process`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import Histogram

from headroom import settings
from headroom.kube import apiserver, errors
from headroom.runtime import share_table
from headroom.runtime.admission import certificates, registration, server

log = logging.getLogger(__name__)


class Admission:
    """The webhook of one operator replica."""

    def __init__(
        self,
        cfg: settings.Settings,
        kube: apiserver.Kube,
        *,
        latency: Histogram,
        stop: asyncio.Event,
        leading: Callable[[], bool],
    ) -> None:
        self.cfg = cfg
        self.kube = kube
        self.latency = latency
        self.stop_event = stop
        self.leading = leading
        self.server: server.Server | None = None
        self._ca_pem = b""  # the caBundle the leader registers
        self._serving_pem = b""  # the certificate this replica serves

    async def start(self) -> None:
        """Settle the certificate and start the server process."""
        cert_pem, key_pem = await self._certificate()
        cert, key = certificates.install(self.cfg, cert_pem, key_pem)
        self._serving_pem = cert_pem
        self._ca_pem = certificates.ca_bundle(cert_pem)
        self.server = server.Server(self.cfg, cert=cert, key=key, latency=self.latency)
        self.server.start()

    def publish(self, delta: share_table.Table) -> None:
        """Tell the server what the profiles on each Postgres server open."""
        if self.server is not None:
            self.server.publish(delta)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    async def watchdog(self) -> None:
        """Restart the admission process if it dies (the API server would refuse
        every profile write meanwhile: failurePolicy Fail)."""
        while not await apiserver.sleep_or_stop(self.stop_event, 2):
            if self.server is not None and not self.server.alive:
                log.error("the webhook process died; starting it again")
                await asyncio.to_thread(self.server.start)

    async def _certificate(self) -> tuple[bytes, bytes]:
        if self.cfg.webhook_cert_secret:
            return await certificates.shared_certificate(self.cfg, self.kube)
        return certificates.local_certificate(self.cfg)

    async def renew_forever(self) -> None:
        """Renew the serving certificate while running (30 days before it
        expires). The API server must trust a certificate before any replica
        serves it: the leader registers old + new in caBundle first; another
        replica switches once it sees the new one there."""
        every = self.cfg.webhook_cert_check_seconds
        while not await apiserver.sleep_or_stop(self.stop_event, every):
            try:
                cert_pem, key_pem = await self._certificate()
                if cert_pem == self._serving_pem:
                    continue
                if self.leading():
                    self._ca_pem = certificates.ca_bundle(cert_pem, self._serving_pem)
                    await registration.register(self.cfg, self.kube, self._ca_pem)
                elif not registration.trusts(await registration.registered(self.kube), cert_pem):
                    log.info("a renewed webhook certificate waits for the leader to publish it")
                    continue
                certificates.install(self.cfg, cert_pem, key_pem)
                self._serving_pem = cert_pem
                # the previous ones stay (while valid) for replicas that still serve them
                self._ca_pem = certificates.ca_bundle(cert_pem, self._ca_pem)
                log.info("the webhook serves a renewed certificate")
            except errors.KubeError as err:
                log.warning("could not renew the webhook certificate: %s", err)

    async def register(self) -> None:
        """As the new leader: register the configuration, retrying until it is."""
        while not self.stop_event.is_set():
            try:
                # Trust what this replica serves and what the others may have
                # renewed to (the shared Secret's certificate), while valid.
                latest, _ = await self._certificate()
                self._ca_pem = certificates.ca_bundle(latest, self._ca_pem)
                await registration.register(self.cfg, self.kube, self._ca_pem)
                return
            except errors.KubeError as err:
                log.warning("could not register the webhook: %s", err)
                if await apiserver.sleep_or_stop(self.stop_event, 2):
                    return


async def unregister(kube: apiserver.Kube) -> None:
    """Admission is off (HEADROOM_WEBHOOK_ENABLED=false): a configuration an
    earlier leader registered would send every profile write to a server that
    is not there (failurePolicy Fail), so it goes."""
    try:
        await registration.unregister(kube)
    except errors.KubeError as err:
        log.warning("could not remove the webhook configuration: %s", err)
