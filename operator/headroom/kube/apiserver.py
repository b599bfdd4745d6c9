"""Async REST client of the API server (aiohttp), on plain dicts.

The only module that sends requests to the API server. Every request has a
timeout (a hung connection can never hold a pass forever); writes use
server-side apply under one field manager (:data:`FIELD_MANAGER`); watches are
streamed on their own connection pool with a read timeout a little longer than
the server-side one. Resources are known ahead of time (:mod:`headroom.kube.kinds`,
plus what the caller registers), so no discovery request is ever made.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import datetime
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from headroom.kube import errors, kinds, kubeconfig

FIELD_MANAGER = "headroom"
_EVENT_MESSAGE_MAX = 1024
# asyncio gives every TLS connection a 256 KiB read buffer; the operator keeps one
# idle watch per referenced object (a thousand at 500 profiles), so that alone
# would be 256 MB. A TLS record is at most 16 KiB: 32 KiB reads lose nothing.
_TLS_READ_BUFFER = 32 * 1024
if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > _TLS_READ_BUFFER:
    asyncio.sslproto.SSLProtocol.max_size = _TLS_READ_BUFFER

Obj = dict[str, Any]
# (verb, kind, HTTP status or 0 for no answer): fed to the operator's metrics
RequestHook = Callable[[str, str, int], None]


def _verb(method: str, *, name: str | None, watch: bool = False) -> str:
    if watch:
        return "watch"
    if method == "GET":
        return "get" if name else "list"
    return {"PATCH": "patch", "POST": "create", "DELETE": "delete", "PUT": "update"}[method]


class Kube:
    """A connection to one API server, used from one asyncio event loop."""

    def __init__(
        self,
        cfg: kubeconfig.ClusterConfig,
        *,
        timeout_seconds: float = 30.0,
        on_request: RequestHook | None = None,
    ) -> None:
        self.cfg = cfg
        self.timeout_seconds = timeout_seconds
        self._on_request = on_request
        self._resources = {(r.api_version, r.kind): r for r in kinds.BUILTIN}
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls, **kwargs: Any) -> Kube:
        return cls(kubeconfig.load(), **kwargs)

    async def close(self) -> None:
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()
        self._session = self._watch_session = None

    def _sessions(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        if self._session is None or self._watch_session is None:
            ssl = self.cfg.ssl_context
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl, limit=64, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds, sock_connect=10),
            )
            self._watch_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session, self._watch_session

    # -- resources ----------------------------------------------------------

    def register(self, resource: kinds.Resource) -> None:
        self._resources[(resource.api_version, resource.kind)] = resource

    def resource(self, api_version: str, kind: str) -> kinds.Resource:
        found = self._resources.get((api_version, kind))
        if found is None:
            raise errors.NotServedError(f"{kind}.{api_version} is not a kind Headroom knows")
        return found

    def resource_of(self, obj: Obj) -> kinds.Resource:
        return self.resource(obj["apiVersion"], obj["kind"])

    # -- transport ------------------------------------------------------------

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        auth = self.cfg.credentials.header()
        if auth:
            headers["Authorization"] = auth
        return headers

    def _count(self, verb: str, kind: str, status: int) -> None:
        if self._on_request is not None:
            self._on_request(verb, kind, status)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        verb: str = "",
        kind: str = "",
        timeout_seconds: float | None = None,
    ) -> Any:
        """One request; the parsed JSON answer. ApiError for an HTTP error,
        UnavailableError when there is no answer in time."""
        session, _ = self._sessions()
        payload = None if body is None else json.dumps(body, separators=(",", ":"))
        timeout = aiohttp.ClientTimeout(total=timeout_seconds or self.timeout_seconds)
        for attempt in (1, 2):
            try:
                async with session.request(
                    method,
                    self.cfg.server + path,
                    params=query or None,
                    data=payload,
                    headers=self._headers(content_type),
                    timeout=timeout,
                ) as response:
                    data = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                self._count(verb or method.lower(), kind, 0)
                raise errors.UnavailableError(
                    f"{method} {path}: {type(err).__name__}: {err}"[:300]
                ) from None
            self._count(verb or method.lower(), kind, status)
            if status == 401 and attempt == 1:
                self.cfg.credentials.invalidate()  # a rotated token: read it again once
                continue
            break
        return _parse(status, data)

    async def _call(self, res: kinds.Resource, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` on a resource's path. A 404 that is not a Status object
        means the resource itself is gone (its CRD was deleted), not the object;
        a CRD being deleted refuses creates. Either way the kind is not served."""
        try:
            return await self.request(method, path, kind=res.kind, **kwargs)
        except errors.ApiError as err:
            gone = err.status == 404 and not err.reason
            if not gone and not err.crd_terminating:
                raise
            state = "no longer served" if gone else "being removed"
            raise errors.NotServedError(
                f"{res.kind}.{res.api_version} is {state} by the API server"
            ) from None

    # -- objects --------------------------------------------------------------

    async def apply(self, obj: Obj, *, subresource: str | None = None) -> Obj:
        """Server-side apply ``obj`` as Headroom (force: we own these fields)."""
        res = self.resource_of(obj)
        meta = obj["metadata"]
        path = res.path(namespace=meta.get("namespace"), name=meta["name"])
        if subresource:
            path += f"/{subresource}"
        result: Obj = await self._call(
            res,
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
            verb="apply",
        )
        return result

    async def json_patch(
        self, res: kinds.Resource, *, namespace: str | None, name: str, ops: list[Obj]
    ) -> Obj:
        """An RFC 6902 patch (with ``test`` ops as preconditions)."""
        return await self._patch(
            res,
            namespace=namespace,
            name=name,
            body=ops,
            content_type="application/json-patch+json",
        )

    async def merge_patch(
        self, res: kinds.Resource, *, namespace: str | None, name: str, body: Obj
    ) -> Obj:
        """An RFC 7386 merge patch: a null removes a key, and only the keys
        named change (nothing else is taken over, as an apply would)."""
        return await self._patch(
            res,
            namespace=namespace,
            name=name,
            body=body,
            content_type="application/merge-patch+json",
        )

    async def _patch(
        self,
        res: kinds.Resource,
        *,
        namespace: str | None,
        name: str,
        body: Any,
        content_type: str,
    ) -> Obj:
        result: Obj = await self._call(
            res,
            "PATCH",
            res.path(namespace=namespace, name=name),
            body=body,
            query=[("fieldManager", FIELD_MANAGER)],
            content_type=content_type,
            verb="patch",
        )
        return result

    async def create(self, obj: Obj) -> Obj:
        res = self.resource_of(obj)
        result: Obj = await self._call(
            res,
            "POST",
            res.path(namespace=obj["metadata"].get("namespace")),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER)],
            verb="create",
        )
        return result

    async def replace(self, obj: Obj) -> Obj:
        res = self.resource_of(obj)
        meta = obj["metadata"]
        result: Obj = await self._call(
            res,
            "PUT",
            res.path(namespace=meta.get("namespace"), name=meta["name"]),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER)],
            verb="update",
        )
        return result

    async def get(
        self, res: kinds.Resource, *, namespace: str | None, name: str, cached: bool = False
    ) -> Obj | None:
        """One object, None when absent. ``cached``: from the API server's watch
        cache (``resourceVersion=0``), no etcd read: fine where a moment's
        staleness is (whether a name is taken before we create it)."""
        try:
            found: Obj = await self._call(
                res,
                "GET",
                res.path(namespace=namespace, name=name),
                query=[("resourceVersion", "0")] if cached else None,
                verb="get",
            )
        except errors.ApiError as err:
            if err.status == 404:
                return None
            raise
        found.setdefault("apiVersion", res.api_version)
        found.setdefault("kind", res.kind)
        return found

    async def list(
        self,
        res: kinds.Resource,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = 500,
    ) -> tuple[list[Obj], str]:
        """Every matching object (paged) and the list's resourceVersion."""
        items: list[Obj] = []
        token = ""
        while True:
            query = [("limit", str(page_size))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            listing = await self._call(
                res, "GET", res.path(namespace=namespace), query=query, verb="list"
            )
            for item in listing.get("items") or []:  # list items carry no apiVersion/kind
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            meta = listing.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    async def delete(
        self, res: kinds.Resource, *, namespace: str | None, name: str, uid: str
    ) -> bool:
        """Delete one object, only if it is still the one we saw (uid precondition)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        try:
            await self._call(
                res, "DELETE", res.path(namespace=namespace, name=name), body=body, verb="delete"
            )
        except errors.ApiError as err:
            if err.status in (404, 409):
                return False
            raise
        return True

    # -- watch ----------------------------------------------------------------

    async def watch(
        self,
        res: kinds.Resource,
        *,
        namespace: str | None,
        resource_version: str,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int = 300,
    ) -> AsyncIterator[Obj]:
        """Watch events (``{"type", "object"}``) from ``resource_version`` until
        the server ends the stream (after ``timeout_seconds``). An ERROR event is
        yielded as it comes (410 Gone: the caller lists again)."""
        _, session = self._sessions()
        query = [
            ("watch", "1"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
        try:
            async with session.get(
                self.cfg.server + res.path(namespace=namespace),
                params=query,
                headers=self._headers("application/json"),
                timeout=timeout,
            ) as response:
                self._count("watch", res.kind, response.status)
                if response.status >= 400:
                    if response.status == 401:
                        self.cfg.credentials.invalidate()
                    _parse(response.status, await response.read())
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
            raise errors.UnavailableError(
                f"watch {res.kind}: {type(err).__name__}: {err}"[:300]
            ) from None

    # -- events -----------------------------------------------------------------

    async def post_event(self, involved: Obj, *, type: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on ``involved`` (what ``kubectl describe`` shows)."""
        meta = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "type": type,
            "reason": reason,
            "message": message[:_EVENT_MESSAGE_MAX],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": socket.gethostname()[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request(
            "POST",
            kinds.EVENT.path(namespace=meta["namespace"]),
            body=event,
            verb="create",
            kind="Event",
        )


def _parse(status: int, data: bytes) -> Any:
    try:
        parsed = json.loads(data or b"{}")
    except ValueError:
        if status < 400:
            raise errors.UnavailableError(f"answer is not JSON (HTTP {status})") from None
        # Not every error is a Status object: an API group that is not served
        # answers "404 page not found" as text.
        text = data.decode("utf-8", errors="replace").strip()
        raise errors.ApiError(status=status, reason="", message=text[:500]) from None
    if status >= 400:
        message = parsed.get("message", "") if isinstance(parsed, dict) else str(parsed)
        reason = parsed.get("reason", "") if isinstance(parsed, dict) else ""
        raise errors.ApiError(status=status, reason=reason, message=message)
    return parsed


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
