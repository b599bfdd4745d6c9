"""A small blocking client of the API server, for the agents in Headroom's pods.

The operator talks to the API server through :mod:`headroom.kube.apiserver`
(asyncio, aiohttp, caches); an agent beside PgBouncer needs three requests
and none of that: read one object, watch it, and server-side apply its own
report. This is those three on the standard library's ``http.client``, with
:mod:`headroom.kube.kubeconfig` for where the API server is and how to
authenticate (a service-account token re-read from its file, since bound
tokens rotate; the cluster's CA). Every request has a timeout; errors are
:mod:`headroom.kube.errors`. Used by :mod:`headroom.agent.pooler`; nothing
here logs, and the token never leaves the Authorization header.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any

from headroom.kube import errors, kubeconfig

Obj = dict[str, Any]
# The API server ends a watch after this long; the client waits a little longer.
WATCH_SECONDS = 300
_READ_SLACK_SECONDS = 15


def _error(status: int, body: bytes) -> errors.ApiError:
    try:
        found = json.loads(body)
    except ValueError:
        found = {}
    if not isinstance(found, dict):
        found = {}
    return errors.ApiError(
        status=status,
        reason=str(found.get("reason") or http.client.responses.get(status, "")),
        message=str(found.get("message") or body[:200].decode(errors="replace")),
    )


class Client:
    """Requests to one API server, one connection per request (an agent sends
    a few a minute at most)."""

    def __init__(self, cfg: kubeconfig.ClusterConfig, *, timeout_seconds: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(cfg.server)
        if parsed.scheme != "https" or not parsed.hostname:
            raise kubeconfig.ConfigError(f"not an https API server address: {cfg.server}")
        self.cfg = cfg
        self.host = parsed.hostname
        self.port = parsed.port or 443
        self.timeout_seconds = timeout_seconds

    def _connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=self.cfg.ssl_context, timeout=timeout
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout: float,
    ) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        auth = self.cfg.credentials.header()
        if auth:
            headers["Authorization"] = auth
        conn = self._connect(timeout)
        try:
            conn.request(method, url, body=body, headers=headers)
            response = conn.getresponse()
        except (OSError, ssl.SSLError, http.client.HTTPException) as err:
            conn.close()
            raise errors.UnavailableError(f"{method} {path}: {err}") from None
        if response.status == 401:
            self.cfg.credentials.invalidate()  # a rotated token: read it again next time
        if response.status >= 300:
            data = response.read()
            conn.close()
            raise _error(response.status, data)
        return conn, response

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        """One request; its JSON answer."""
        payload = None if body is None else json.dumps(body).encode()
        conn, response = self._send(
            method,
            path,
            query=query,
            body=payload,
            content_type=content_type,
            timeout=self.timeout_seconds,
        )
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise errors.UnavailableError(f"{method} {path}: {err}") from None
        finally:
            conn.close()
        found = json.loads(data) if data else {}
        return found if isinstance(found, dict) else {}

    def apply(self, path: str, body: Obj, *, field_manager: str) -> Obj:
        """Server-side apply ``body`` at ``path`` (an object's path) as ``field_manager``."""
        return self.request(
            "PATCH",
            path,
            query={"fieldManager": field_manager, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",  # JSON is YAML
        )

    def watch(self, path: str, *, query: dict[str, str]) -> Iterator[Obj]:
        """The events of a watch of the collection at ``path`` (``query``: its
        fieldSelector, resourceVersion), until the API server ends it; an
        ERROR event is raised as ApiError (410: list again)."""
        asked = {**query, "watch": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        conn, response = self._send(
            "GET", path, query=asked, timeout=WATCH_SECONDS + _READ_SLACK_SECONDS
        )
        try:
            while True:
                try:
                    line = response.readline()
                except (TimeoutError, OSError, http.client.HTTPException) as err:
                    raise errors.UnavailableError(f"watch {path}: {err}") from None
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise errors.ApiError(
                        status=int(status.get("code") or 500),
                        reason=str(status.get("reason") or ""),
                        message=str(status.get("message") or ""),
                    )
                yield event
        finally:
            conn.close()
