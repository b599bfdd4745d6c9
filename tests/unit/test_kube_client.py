"""The async kube client and the informer against canned HTTP answers from a
local server on 127.0.0.1 (error mapping, timeouts, paging, watch framing,
relisting after 410 Gone). The real API server is exercised by tests/e2e."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from headroom.kube import apiserver, errors, informer, kinds, kubeconfig, watch_cache
from headroom.reconcile import watches

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SCALED_OBJECT = kinds.Resource("keda.sh/v1alpha1", "ScaledObject", "scaledobjects")


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _kube(server: str, *, token_file: Path | None = None, timeout: float = 5) -> apiserver.Kube:
    creds = (
        kubeconfig.Credentials(token_file=token_file) if token_file else kubeconfig.Credentials()
    )
    cfg = kubeconfig.ClusterConfig(
        server=server, ssl_context=ssl.create_default_context(), credentials=creds
    )
    return apiserver.Kube(cfg, timeout_seconds=timeout)


def _run(handler: Handler, body: Callable[[apiserver.Kube], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        runner, url = await _serve(handler)
        kube = _kube(url, **kw)
        try:
            return await body(kube)
        finally:
            await kube.close()
            await runner.cleanup()

    return asyncio.run(main())


def _answer(status: int, payload: Any) -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        if isinstance(payload, bytes):
            return web.Response(status=status, body=payload, content_type="text/plain")
        return web.json_response(payload, status=status)

    return handler


def test_an_unserved_group_is_not_served() -> None:
    # GET under /apis/keda.sh/... without KEDA: text/plain, not a Status object
    async def body(kube: apiserver.Kube) -> None:
        with pytest.raises(errors.NotServedError):
            await kube.get(SCALED_OBJECT, namespace="d", name="w")

    _run(_answer(404, b"404 page not found\n"), body)


def test_a_plain_text_error_is_an_api_error() -> None:
    async def body(kube: apiserver.Kube) -> None:
        with pytest.raises(errors.ApiError) as caught:
            await kube.request("GET", "/apis/keda.sh/v1alpha1")
        assert caught.value.status == 503 and caught.value.retriable
        assert "service unavailable" in caught.value.message

    _run(_answer(503, b"service unavailable"), body)


def test_a_missing_object_is_none_and_a_status_keeps_its_reason() -> None:
    not_found = {"kind": "Status", "reason": "NotFound", "message": 'secrets "x" not found'}

    async def body(kube: apiserver.Kube) -> None:
        assert await kube.get(kinds.SECRET, namespace="d", name="x") is None
        with pytest.raises(errors.ApiError) as caught:
            await kube.request("GET", "/api/v1/namespaces/d/secrets/x")
        assert (caught.value.status, caught.value.reason) == (404, "NotFound")

    _run(_answer(404, not_found), body)


def test_a_create_refused_by_a_terminating_crd_is_not_served() -> None:
    refused = {
        "kind": "Status",
        "reason": "Forbidden",
        "message": 'scaledobjects.keda.sh "w" is forbidden: create not allowed '
        "while custom resource definition is terminating",
    }
    obj = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "w", "namespace": "d"},
    }

    async def body(kube: apiserver.Kube) -> None:
        kube.register(SCALED_OBJECT)
        with pytest.raises(errors.NotServedError, match="being removed"):
            await kube.apply(obj)

    _run(_answer(403, refused), body)


def test_namespace_terminating_is_recognised() -> None:
    err = errors.ApiError(
        status=403,
        reason="Forbidden",
        message='configmaps "x" is forbidden: unable to create new content in namespace '
        "e2e because it is being terminated",
    )
    assert err.namespace_terminating and not err.retriable
    assert not errors.ApiError(status=403, reason="Forbidden", message="no").namespace_terminating


def test_a_hung_server_times_out() -> None:
    async def hang(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response()

    async def body(kube: apiserver.Kube) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(errors.UnavailableError):
            await kube.get(kinds.SECRET, namespace="d", name="x")
        return loop.time() - started

    assert _run(hang, body, timeout=0.3) < 5


def test_apply_is_server_side_with_one_field_manager() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.update(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            type=request.headers["Content-Type"],
        )
        return web.json_response(await request.json())

    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}}
    _run(handler, lambda kube: kube.apply(obj))
    assert seen == {
        "method": "PATCH",
        "path": "/api/v1/namespaces/d/configmaps/c",
        "query": {"fieldManager": "headroom", "force": "true"},
        "type": "application/apply-patch+yaml",
    }


def test_list_follows_continue_tokens() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("continue") == "t1":
            return web.json_response(
                {"metadata": {"resourceVersion": "7"}, "items": [{"metadata": {"name": "b"}}]}
            )
        return web.json_response(
            {
                "metadata": {"continue": "t1", "resourceVersion": "7"},
                "items": [{"metadata": {"name": "a"}}],
            }
        )

    items, version = _run(handler, lambda kube: kube.list(kinds.CONFIG_MAP, namespace="d"))
    assert [i["metadata"]["name"] for i in items] == ["a", "b"] and version == "7"
    assert items[0]["kind"] == "ConfigMap"


def test_a_rotated_token_is_read_again_after_a_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer new":
            token.write_text("new")  # rotated meanwhile
            return web.json_response({"kind": "Status", "reason": "Unauthorized"}, status=401)
        return web.json_response({"metadata": {"name": "x"}})

    found = _run(
        handler, lambda kube: kube.get(kinds.SECRET, namespace="d", name="x"), token_file=token
    )
    assert found["metadata"]["name"] == "x"
    assert seen == ["Bearer old", "Bearer new"]


def test_watch_events_split_across_chunks_are_reassembled() -> None:
    big = {
        "type": "ADDED",
        "object": {"metadata": {"name": "x", "resourceVersion": "5"}, "data": {"k": "v" * 200_000}},
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        line = json.dumps(big).encode() + b"\n"
        for i in range(0, len(line), 7000):
            await response.write(line[i : i + 7000])
        await response.write(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}\n')
        return response

    async def body(kube: apiserver.Kube) -> list[dict[str, Any]]:
        return [e async for e in kube.watch(kinds.CONFIG_MAP, namespace="d", resource_version="1")]

    events = _run(handler, body)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert len(events[0]["object"]["data"]["k"]) == 200_000


class _FakeWatchServer:
    """Lists, then answers the first watch with 410 Gone; the second list has
    lost one object and changed another."""

    def __init__(self) -> None:
        self.lists = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            self.lists += 1
            items = [self._obj("a", "1"), self._obj("b", "2")]
            if self.lists > 1:
                items = [self._obj("a", "3", status="new")]
            return web.json_response(
                {"metadata": {"resourceVersion": str(self.lists * 10)}, "items": items}
            )
        response = web.StreamResponse()
        await response.prepare(request)
        if self.lists == 1:
            await response.write(b'{"type":"ERROR","object":{"kind":"Status","code":410}}\n')
            return response
        await asyncio.sleep(30)
        return response

    @staticmethod
    def _obj(name: str, version: str, status: str = "old") -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "namespace": "d",
                "resourceVersion": version,
                "managedFields": [{}],
            },
            "status": {"s": status},
        }


def test_informer_relists_after_410_and_reports_the_difference() -> None:
    server = _FakeWatchServer()
    events: list[tuple[str, str, bool]] = []

    def handler(kind: str, old: informer.Entry | None, new: informer.Entry | None) -> None:
        entry = new or old
        assert entry is not None
        spec_changed = (
            old is not None and new is not None and old.spec_fingerprint != new.spec_fingerprint
        )
        events.append((kind, entry.name, spec_changed))

    async def body(kube: apiserver.Kube) -> None:
        inf = informer.Informer(kube, kinds.CONFIG_MAP, namespace="d", handler=handler)
        inf.start()
        await asyncio.wait_for(inf.synced.wait(), 5)
        for _ in range(100):
            if server.lists >= 2 and len(events) >= 2:
                break
            await asyncio.sleep(0.05)
        await inf.stop()
        assert set(inf.items) == {("d", "a")}
        assert "managedFields" not in inf.items[("d", "a")].object()["metadata"]

    _run(server, body)
    # the initial list reports nothing; the relist reports what changed
    assert sorted(events) == [("DELETED", "b", False), ("MODIFIED", "a", False)]


def _crd(version: str, *, served: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "widgets.example.com", "resourceVersion": version}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": meta,
        "spec": {
            "group": "example.com",
            "versions": [
                {"name": "v1", "served": served, "schema": {"openAPIV3Schema": {"x": "y" * 1000}}},
                {"name": "v1beta1", "served": False},
            ],
        },
        "status": {"conditions": [{"type": "Established", "status": "True"}]},
    }


def test_a_cached_crd_is_decoded_once_per_version_and_keeps_what_says_it_is_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[str] = []
    whole = informer.Entry.object

    def counting(entry: informer.Entry) -> dict[str, Any]:
        decoded.append(entry.resource_version)
        return whole(entry)

    monkeypatch.setattr(informer.Entry, "object", counting)

    async def body() -> None:
        kube = _kube("https://127.0.0.1:1")
        cache = watch_cache.Cache(
            kube,
            primary=kinds.CONFIG_MAP,
            owned_selector="",
            on_profile=lambda *a: None,
            on_child=lambda *a: None,
            on_input=lambda *a: None,
            on_crd=lambda *a: None,
        )
        name = "widgets.example.com"
        inf = informer.Informer(kube, kinds.CRD, field_selector=f"metadata.name={name}")
        cache.crds[name] = inf  # never started: filled by hand
        assert cache.crd(name) is None
        for version, kwargs in (
            ("1", {}),
            ("2", {"served": False}),
            ("3", {"deleting": True}),
        ):
            full = _crd(version, **kwargs)
            inf.upsert(full)
            first = cache.crd(name)
            for _ in range(50):  # every pass asks: decoded once per version
                assert cache.crd(name) is first
            assert decoded.count(version) == 1
            for asked in ("v1", "v1beta1", "v2"):
                assert watches.crd_served(first, asked) == watches.crd_served(full, asked)
            assert first is not None and "schema" not in json.dumps(first)
        inf.forget(None, name)
        assert cache.crd(name) is None
        await kube.close()

    asyncio.run(body())
