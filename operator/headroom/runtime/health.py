"""The operator's health endpoints: ``/healthz`` (the event loop answers:
alive, API outages included) and ``/readyz`` (every cache listed once).
Served by :mod:`headroom.runtime.process`."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


async def serve(*, addr: str, port: int, ready: Callable[[], bool]) -> web.AppRunner:
    """Start serving; the caller cleans the returned runner up."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.Response(text="ok" if ok else "caches not synced", status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, addr, port).start()
    return runner
