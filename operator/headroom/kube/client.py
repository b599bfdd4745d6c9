"""Thin REST client over the official ``kubernetes`` package's transport.

The only module that sends requests to the API server. It works on plain dicts
(the builders' output), applies with server-side apply under one field manager
(:data:`FIELD_MANAGER`), and finds resources by discovery so CRDs that appear
or disappear (KEDA, prometheus-operator) are seen without a restart.
"""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from headroom.kube import errors

FIELD_MANAGER = "headroom"
_DISCOVERY_TTL = 10.0
_EVENT_MESSAGE_MAX = 1024

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, *, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        return base


class Kube:
    """A connection to one API server. Thread-safe for kopf's handler threads."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client
        self._lock = threading.Lock()
        self._discovery: dict[str, tuple[float, dict[str, Resource] | None]] = {}

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account if present, else $KUBECONFIG / ~/.kube/config."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(k8s_client.ApiClient(configuration))

    # -- transport ---------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        serialized = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        url, headers, payload = serialized[1], serialized[2], serialized[3]
        response = self._api.call_api(method, url, header_params=headers, body=payload)
        response.read()
        data = response.data or b"{}"
        try:
            parsed = json.loads(data)
        except ValueError:
            if response.status < 400:
                raise
            # Not every error is a Status object: an API group that is not
            # served (KEDA not installed) answers "404 page not found" as text.
            text = data.decode("utf-8", errors="replace").strip()
            raise errors.ApiError(status=response.status, reason="", message=text[:500]) from None
        if response.status >= 400:
            message = parsed.get("message", "") if isinstance(parsed, dict) else str(parsed)
            reason = parsed.get("reason", "") if isinstance(parsed, dict) else ""
            raise errors.ApiError(status=response.status, reason=reason, message=message)
        return parsed

    # -- discovery ---------------------------------------------------------

    def _group_resources(self, api_version: str) -> dict[str, Resource] | None:
        now = time.monotonic()
        with self._lock:
            cached = self._discovery.get(api_version)
            if cached and now - cached[0] < _DISCOVERY_TTL:
                return cached[1]
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self.request("GET", path)
        except errors.ApiError as err:
            if err.status != 404:
                raise
            found: dict[str, Resource] | None = None
        else:
            found = {
                item["kind"]: Resource(
                    api_version=api_version,
                    kind=item["kind"],
                    plural=item["name"],
                    namespaced=bool(item.get("namespaced")),
                )
                for item in listing.get("resources", [])
                if "/" not in item["name"]
            }
        with self._lock:
            self._discovery[api_version] = (now, found)
        return found

    def served(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves ``kind`` in ``api_version`` right now."""
        resources = self._group_resources(api_version)
        return bool(resources and kind in resources)

    def being_removed(self, api_version: str, kind: str) -> bool:
        """Whether ``kind`` is a custom resource whose CRD is being deleted: still
        served (and listed by discovery) while its objects are removed, but the
        API server refuses to create any."""
        res = self.resource(api_version, kind)
        group = api_version.rpartition("/")[0]
        crd = self.get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            namespace=None,
            name=f"{res.plural}.{group}",
        )
        return bool(crd and crd["metadata"].get("deletionTimestamp"))

    def resource(self, api_version: str, kind: str) -> Resource:
        resources = self._group_resources(api_version)
        if not resources or kind not in resources:
            raise errors.NotServedError(f"{kind}.{api_version} is not served by the API server")
        return resources[kind]

    def forget_discovery(self) -> None:
        with self._lock:
            self._discovery.clear()

    # -- objects -----------------------------------------------------------

    def _call(self, res: Resource, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` on a resource's path. A 404 that is not a Status object
        means the resource itself is gone (its CRD was deleted since discovery),
        not the object; a CRD being deleted refuses creates. Either way: forget
        the stale discovery and say the kind is not served."""
        try:
            return self.request(method, path, **kwargs)
        except errors.ApiError as err:
            gone = err.status == 404 and not err.reason
            if not gone and not err.crd_terminating:
                raise
            with self._lock:
                self._discovery.pop(res.api_version, None)
            state = "no longer served" if gone else "being removed"
            raise errors.NotServedError(
                f"{res.kind}.{res.api_version} is {state} by the API server"
            ) from None

    def apply(self, obj: Obj, *, subresource: str | None = None) -> Obj:
        """Server-side apply ``obj`` as Headroom (force: we own these fields)."""
        res = self.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        path = res.path(namespace=meta.get("namespace"), name=meta["name"])
        if subresource:
            path += f"/{subresource}"
        result: Obj = self._call(
            res,
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        return result

    def get(self, api_version: str, kind: str, *, namespace: str | None, name: str) -> Obj | None:
        res = self.resource(api_version, kind)
        try:
            found: Obj = self._call(res, "GET", res.path(namespace=namespace, name=name))
        except errors.ApiError as err:
            if err.status == 404:
                return None
            raise
        return found

    def list(
        self, api_version: str, kind: str, *, namespace: str | None, label_selector: str = ""
    ) -> list[Obj]:
        res = self.resource(api_version, kind)
        query = [("labelSelector", label_selector)] if label_selector else []
        listing = self._call(res, "GET", res.path(namespace=namespace), query=query)
        items: list[Obj] = listing.get("items", [])
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def delete(
        self, api_version: str, kind: str, *, namespace: str | None, name: str, uid: str
    ) -> bool:
        """Delete one object, only if it is still the one we saw (uid precondition)."""
        res = self.resource(api_version, kind)
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        try:
            self._call(res, "DELETE", res.path(namespace=namespace, name=name), body=body)
        except errors.ApiError as err:
            if err.status in (404, 409):
                return False
            raise
        return True

    # -- events --------------------------------------------------------------

    def post_event(self, involved: Obj, *, type: str, reason: str, message: str) -> None:
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
        self.request("POST", f"/api/v1/namespaces/{quote(meta['namespace'])}/events", body=event)
