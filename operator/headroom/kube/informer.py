"""A watch-fed cache of one kind (list, then watch from the list's version).

Like client-go's reflector + store: the first LIST fills the store, a WATCH
keeps it current, a 410 Gone (or a broken stream the server no longer can
resume) lists again and reports the difference as events. Filtering happens on
the server (label and field selectors), so nothing else reaches the operator.

Objects are kept as compact JSON without ``managedFields`` (a cluster of 500
profiles holds ~12,000 of them) and parsed on read. Writes the operator makes
itself are put in with :meth:`Informer.upsert` (newer resourceVersion wins), so
the watch event of our own write is recognised as known and triggers nothing.
An index function (owner uids by default; the caller may pass its own, as
client-go's indexers are) decides the keys :meth:`Informer.indexed` finds an
object under.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headroom.kube import apiserver, errors, kinds

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
_MAX_BACKOFF = 8.0  # reconnecting to a server that is down costs it nothing


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached object. ``spec_fingerprint`` changes when anything but status
    (and bookkeeping: resourceVersion, managedFields) changes."""

    raw: bytes
    namespace: str
    name: str
    uid: str
    resource_version: str
    owners: tuple[tuple[str, str, str], ...]  # (kind, name, uid) of each owner reference
    spec_fingerprint: str
    index: tuple[str, ...] = ()  # the keys the informer's index function gave it

    def object(self) -> Obj:
        found: Obj = json.loads(self.raw)
        return found


def _newer(candidate: str, than: str) -> bool:
    """resourceVersions are opaque; every API server we know uses etcd's
    increasing integers. When both are numbers, compare them; else trust the
    candidate (the safe side: the store follows the server)."""
    if candidate.isdigit() and than.isdigit():
        return int(candidate) > int(than)
    return candidate != than


# An object -> the keys it is indexed under.
IndexFunction = Callable[[Obj], tuple[str, ...]]


def owner_uids(obj: Obj) -> tuple[str, ...]:
    """The default index: the uid of each owner reference."""
    meta = obj.get("metadata") or {}
    return tuple(str(r.get("uid")) for r in meta.get("ownerReferences") or [])


def make_entry(obj: Obj, index: IndexFunction = owner_uids) -> Entry:
    meta = obj.get("metadata") or {}
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations:
        for key in _DROPPED_ANNOTATIONS:
            annotations.pop(key, None)
    spec_part = {k: v for k, v in obj.items() if k != "status"}
    spec_part["metadata"] = {
        k: v for k, v in meta.items() if k not in ("resourceVersion", "generation")
    }
    fingerprint = hashlib.blake2b(
        json.dumps(spec_part, sort_keys=True, separators=(",", ":")).encode(), digest_size=8
    ).hexdigest()
    return Entry(
        raw=json.dumps(obj, separators=(",", ":")).encode(),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        owners=tuple(
            (str(r.get("kind")), str(r.get("name")), str(r.get("uid")))
            for r in meta.get("ownerReferences") or []
        ),
        spec_fingerprint=fingerprint,
        index=index(obj),
    )


# (event type ADDED | MODIFIED | DELETED, old entry, new entry)
Handler = Callable[[str, Entry | None, Entry | None], None]


class Informer:
    """The cache of one resource in one scope (a namespace or all)."""

    def __init__(
        self,
        kube: apiserver.Kube,
        resource: kinds.Resource,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        handler: Handler | None = None,
        watch_seconds: tuple[int, int] = (300, 600),
        index: IndexFunction = owner_uids,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.handler = handler
        self.watch_seconds = watch_seconds
        self.index = index
        self.items: dict[Key, Entry] = {}
        self.by_index: dict[str, set[Key]] = {}
        self.synced = asyncio.Event()
        self.served = True  # False while the kind is not served (its CRD is absent)
        self.last_error = ""
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"informer {self.describe()}"
            )

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def describe(self) -> str:
        scope = self.namespace or "*"
        selector = self.field_selector or self.label_selector
        return f"{self.resource.kind} in {scope}" + (f" ({selector})" if selector else "")

    # -- reads ------------------------------------------------------------------

    def get(self, namespace: str | None, name: str) -> Entry | None:
        return self.items.get((namespace or "", name))

    def indexed(self, key: str) -> list[Entry]:
        """The entries the index function put under ``key`` (an owner's uid)."""
        return [self.items[k] for k in self.by_index.get(key, ()) if k in self.items]

    # -- writes the operator made itself ----------------------------------------

    def upsert(self, obj: Obj) -> None:
        """Put the server's answer to our own write into the store, unless the
        watch already brought something newer."""
        entry = make_entry(obj, self.index)
        key = (entry.namespace, entry.name)
        current = self.items.get(key)
        if current is None or _newer(entry.resource_version, current.resource_version):
            self._put(key, entry)

    def forget(self, namespace: str | None, name: str) -> None:
        """After our own delete: the DELETED event then finds nothing to report."""
        self._drop((namespace or "", name))

    # -- store bookkeeping ------------------------------------------------------

    def _put(self, key: Key, entry: Entry) -> None:
        old = self.items.get(key)
        if old is not None:
            self._unindex(key, old)
        self.items[key] = entry
        for index_key in entry.index:
            self.by_index.setdefault(index_key, set()).add(key)

    def _drop(self, key: Key) -> Entry | None:
        old = self.items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: Key, entry: Entry) -> None:
        for index_key in entry.index:
            keys = self.by_index.get(index_key)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_index[index_key]

    def _emit(self, kind: str, old: Entry | None, new: Entry | None) -> None:
        if self.handler is None:
            return
        try:
            self.handler(kind, old, new)
        except Exception:  # a handler bug must not stop the cache
            log.exception("event handler failed for %s", self.describe())

    def _replace(self, objects: list[Obj], *, initial: bool) -> None:
        fresh = {}
        for obj in objects:
            entry = make_entry(obj, self.index)
            fresh[(entry.namespace, entry.name)] = entry
        for key in [k for k in self.items if k not in fresh]:
            old = self._drop(key)
            if not initial:
                self._emit("DELETED", old, None)
        for key, entry in fresh.items():
            old = self.items.get(key)
            if old is not None and old.resource_version == entry.resource_version:
                continue
            self._put(key, entry)
            if not initial:
                self._emit("MODIFIED" if old else "ADDED", old, entry)

    def _on_event(self, kind: str, obj: Obj) -> None:
        entry = make_entry(obj, self.index)
        key = (entry.namespace, entry.name)
        old = self.items.get(key)
        if kind == "DELETED":
            if old is None:
                return  # our own delete, already forgotten
            self._drop(key)
            self._emit("DELETED", old, None)
            return
        if old is not None and not _newer(entry.resource_version, old.resource_version):
            return  # already known (our own write, put in by upsert)
        self._put(key, entry)
        self._emit("MODIFIED" if old is not None else "ADDED", old, entry)

    # -- the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 1.0
        version = ""  # "" -> list first
        initial = True
        while not self._stop.is_set():
            try:
                if not version:
                    objects, version = await self.kube.list(
                        self.resource,
                        namespace=self.namespace,
                        label_selector=self.label_selector,
                        field_selector=self.field_selector,
                    )
                    self._replace(objects, initial=initial)
                    initial = False
                    self.served = True
                    self.synced.set()
                version = await self._watch(version)
                backoff = 1.0
                self.last_error = ""
            except _GoneError:
                version = ""  # list again, now
            except (errors.KubeError, ValueError) as err:
                gone = isinstance(err, errors.NotServedError) or (
                    isinstance(err, errors.ApiError) and err.status == 404 and not err.reason
                )
                if gone:
                    # Not served right now. A restarting API server answers 404
                    # for custom kinds until it has loaded their CRDs: keep what
                    # is known (a CRD really deleted stops this informer) and
                    # list again when it answers.
                    self.served = False
                    self.synced.set()
                    version = ""
                self.last_error = str(err)[:300]
                log.debug("%s: %s; again in %.0fs", self.describe(), err, backoff)
                if await apiserver.sleep_or_stop(self._stop, backoff * random.uniform(0.8, 1.2)):  # noqa: S311
                    return
                backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _watch(self, version: str) -> str:
        """Watch from ``version`` until the server ends the stream; the last
        version seen (bookmarks included)."""
        low, high = self.watch_seconds
        stream = self.kube.watch(
            self.resource,
            namespace=self.namespace,
            resource_version=version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=random.randint(low, high),  # noqa: S311 - spread reconnects
        )
        async for event in stream:
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _GoneError
                raise errors.ApiError(
                    status=int(obj.get("code") or 500),
                    reason=str(obj.get("reason") or ""),
                    message=str(obj.get("message") or ""),
                )
            new_version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                obj.setdefault("apiVersion", self.resource.api_version)
                obj.setdefault("kind", self.resource.kind)
                self._on_event(kind, obj)
            if new_version:
                version = new_version
        return version


class _GoneError(Exception):
    """The watch's resourceVersion is too old: list again."""
