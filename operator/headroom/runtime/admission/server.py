"""The HTTPS admission server, in a process of its own.

An admission answer never waits behind reconcile work (the pass's CPU, the
interpreter lock, the queue): the server runs in a child process, answers
with :func:`headroom.runtime.admission.review.review`, reloads a renewed
certificate by itself, and sends its timings back for ``/metrics``. Locally
the API server dials https://127.0.0.1:PORT; in a cluster it dials a Service.
Started and restarted by :mod:`headroom.runtime.admission.lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import Histogram

from headroom import logs, settings
from headroom.runtime import share_table
from headroom.runtime.admission import registration, review

_MAX_BODY = 8 * 1024 * 1024


async def _handle(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        review_in = json.loads(await request.read())
        answer = review.review(review_in.get("request") or {}, request.app[_TABLE])
    except (ValueError, AttributeError) as err:
        return web.json_response({"error": f"not an AdmissionReview: {err}"}, status=400)
    finally:
        request.app[_TIMINGS].put(time.perf_counter() - started)
    return web.json_response(
        {
            "apiVersion": review_in.get("apiVersion", "admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": answer,
        }
    )


_TIMINGS: web.AppKey[Any] = web.AppKey("timings")
_TABLE: web.AppKey[share_table.Table] = web.AppKey("table")


def _apply(table: share_table.Table, delta: share_table.Table) -> None:
    for server, peers in delta.items():
        if peers:
            table[server] = peers
        else:
            table.pop(server, None)


def _follow(tables: Any, table: share_table.Table, loop: asyncio.AbstractEventLoop) -> None:
    """In the child, on a thread of its own: take the operator's table updates
    as they come and apply each on the event loop, where the reviews read the
    table (a review iterates it; a change from this thread meanwhile failed
    the review with "dictionary changed size during iteration")."""
    while True:
        delta = tables.get()
        if delta is None:
            return
        loop.call_soon_threadsafe(_apply, table, delta)


def _stamp(path: str) -> tuple[int, int]:
    try:
        found = os.stat(path)
    except OSError:
        return (0, 0)
    return (found.st_mtime_ns, found.st_size)


def _serve_forever(where: dict[str, Any], timings: Any, ready: Any, tables: Any) -> None:
    """The child process: serve admission on ``where`` (addr, port, cert, key)
    until SIGTERM; every answer's time goes to ``timings``; ``tables`` brings
    the shared-server table."""
    addr, port, cert, key = where["addr"], where["port"], where["cert"], where["key"]
    logs.configure(where["log_format"])
    table: share_table.Table = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=_follow, args=(tables, table, loop), daemon=True).start()
        app = web.Application(client_max_size=_MAX_BODY)
        app[_TIMINGS] = timings
        app[_TABLE] = table
        app.router.add_post(registration.PATH, _handle)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for attempt in range(40):  # a killed operator's server may still hold the port
            try:
                await web.TCPSite(runner, addr, port, ssl_context=context).start()
                break
            except OSError:
                if attempt == 39:
                    raise
                await asyncio.sleep(0.25)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ready.set()
        parent = os.getppid()
        serving = _stamp(cert)
        while not stop.is_set():
            # The operator was killed (-9): its admission server goes with it.
            if os.getppid() != parent:
                break
            # A renewed certificate (the operator installs it once the API
            # server trusts it): new handshakes use it, open ones finish.
            if _stamp(cert) != serving:
                try:
                    context.load_cert_chain(cert, key)
                    serving = _stamp(cert)
                    logging.info("serving the renewed certificate")
                except (OSError, ssl.SSLError) as err:
                    logging.warning("could not load the renewed certificate yet: %s", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        await runner.cleanup()

    asyncio.run(main())


class Server:
    """The HTTPS admission server, in a process of its own: an answer never
    waits for the operator's event loop or its interpreter lock, whatever the
    reconcile load. The operator starts it, restarts it if it dies, and
    receives its timings for ``/metrics``."""

    def __init__(
        self, cfg: settings.Settings, *, cert: Path, key: Path, latency: Histogram
    ) -> None:
        self.cfg = cfg
        self.cert, self.key = cert, key
        self.latency = latency
        self._context = multiprocessing.get_context("spawn")
        self._timings = self._context.SimpleQueue()
        self._tables: Any = None
        self._table: share_table.Table = {}  # the whole table, for a restarted child
        self._process: Any = None
        self._drain: threading.Thread | None = None

    def publish(self, delta: share_table.Table) -> None:
        """Servers whose profiles changed (an empty list: the server is gone)."""
        for server, peers in delta.items():
            if peers:
                self._table[server] = peers
            else:
                self._table.pop(server, None)
        if self._tables is not None:
            self._tables.put(delta)

    def start(self) -> None:
        ready = self._context.Event()
        self._tables = self._context.SimpleQueue()
        self._tables.put(dict(self._table))
        self._process = self._context.Process(
            target=_serve_forever,
            args=(
                {
                    "addr": self.cfg.webhook_addr,
                    "port": self.cfg.webhook_port,
                    "cert": str(self.cert),
                    "key": str(self.key),
                    "log_format": self.cfg.log_format,
                },
                self._timings,
                ready,
                self._tables,
            ),
            name="headroom-webhook",
            daemon=True,
        )
        self._process.start()
        if not ready.wait(60):
            self._process.kill()
            where = f"{self.cfg.webhook_addr}:{self.cfg.webhook_port}"
            raise RuntimeError(f"the webhook server did not start on {where}")
        if self._drain is None:
            self._drain = threading.Thread(
                target=self._observe, name="webhook-timings", daemon=True
            )
            self._drain.start()

    def _observe(self) -> None:
        while True:
            value = self._timings.get()
            if value is None:
                return
            self.latency.observe(value)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
        self._timings.put(None)
