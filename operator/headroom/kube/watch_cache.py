"""Every watch a controller keeps, in one place: the observed state passes read.

- the primary kind (the controller's own custom resource), all in scope;
- owned children: one informer per child kind (per watched namespace), filtered
  on the server by the owner's label selector, indexed by the index function
  the caller passes (owner uids by default);
- inputs an object references but does not own: one watch per object
  (``fieldSelector=metadata.name=``, as the kubelet watches the Secrets its
  pods mount), kept while something references it;
- CRDs, one watch per CRD name: whether a custom kind is served;
- kinds watched whole and read only while the caller wants them (cluster-wide).

Generic: what is the primary kind, what is owned and what is watched is the
caller's declaration (the runtime, from :mod:`headroom.reconcile.watches`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from headroom.kube import apiserver, errors, informer, kinds

log = logging.getLogger(__name__)

Obj = dict[str, Any]
InputRef = tuple[kinds.Resource, str, str]  # (resource, namespace, name)
ChildHandler = Callable[[kinds.Resource, str, informer.Entry | None, informer.Entry | None], None]
InputHandler = Callable[[InputRef, str], None]
CrdHandler = Callable[[str], None]
_INPUT_WATCH_SECONDS = (1200, 2400)  # idle per-object watches: reconnect rarely


class Cache:
    def __init__(
        self,
        kube: apiserver.Kube,
        *,
        primary: kinds.Resource,
        namespaces: tuple[str, ...] = (),
        owned_selector: str,
        owned_index: informer.IndexFunction = informer.owner_uids,
        on_profile: informer.Handler,
        on_child: ChildHandler,
        on_input: InputHandler,
        on_crd: CrdHandler,
    ) -> None:
        self.kube = kube
        self.primary = primary
        self.scopes: tuple[str | None, ...] = namespaces or (None,)
        self.owned_selector = owned_selector
        self.owned_index = owned_index
        self._on_child = on_child
        self._on_input = on_input
        self._on_crd = on_crd
        self.whole: dict[kinds.Resource, informer.Informer] = {}
        self.profiles = [
            informer.Informer(kube, primary, namespace=ns, handler=on_profile) for ns in self.scopes
        ]
        self.owned: dict[kinds.Resource, list[informer.Informer]] = {}
        self.crds: dict[str, informer.Informer] = {}
        self._crd_objects: dict[str, tuple[informer.Entry, Obj]] = {}
        self.inputs: dict[InputRef, informer.Informer] = {}
        self._input_users: dict[InputRef, set[str]] = {}
        self._uses: dict[str, set[InputRef]] = {}

    # -- lifecycle ----------------------------------------------------------------

    def start(self, *, owned: Iterable[kinds.Resource], crd_names: Iterable[str]) -> None:
        for inf in self.profiles:
            inf.start()
        for res in owned:
            self.watch_owned(res)
        for name in crd_names:

            def crd_changed(kind: str, old: Any, new: Any, crd_name: str = name) -> None:
                self._on_crd(crd_name)

            crd = informer.Informer(
                self.kube,
                kinds.CRD,
                field_selector=f"metadata.name={name}",
                handler=crd_changed,
            )
            self.crds[name] = crd
            crd.start()

    def all_informers(self) -> list[informer.Informer]:
        found = [*self.profiles, *self.crds.values(), *self.inputs.values(), *self.whole.values()]
        for group in self.owned.values():
            found += group
        return found

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until profiles, owned kinds and CRDs have been listed once."""
        waiting = [*self.profiles, *self.crds.values()]
        for group in self.owned.values():
            waiting += group
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in waiting)), timeout)

    @property
    def synced(self) -> bool:
        core = [*self.profiles, *self.crds.values()]
        for group in self.owned.values():
            core += group
        return all(i.synced.is_set() for i in core)

    async def stop(self) -> None:
        await asyncio.gather(*(i.stop() for i in self.all_informers()))

    def watch_owned(self, res: kinds.Resource) -> None:
        """Start caching our children of ``res`` (a composed kind once served)."""
        if res in self.owned:
            return

        def changed(kind: str, old: informer.Entry | None, new: informer.Entry | None) -> None:
            self._on_child(res, kind, old, new)

        group = [
            informer.Informer(
                self.kube,
                res,
                namespace=ns,
                label_selector=self.owned_selector,
                handler=changed,
                index=self.owned_index,
            )
            for ns in self.scopes
        ]
        self.owned[res] = group
        for inf in group:
            inf.start()

    async def unwatch_owned(self, res: kinds.Resource) -> None:
        group = self.owned.pop(res, [])
        await asyncio.gather(*(i.stop() for i in group))

    def watch_whole(self, res: kinds.Resource, on_change: Callable[[], None]) -> informer.Informer:
        """Start caching every object of ``res`` in the cluster (read only)."""
        found = self.whole.get(res)
        if found is None:

            def changed(kind: str, old: Any, new: Any) -> None:
                on_change()

            found = self.whole[res] = informer.Informer(self.kube, res, handler=changed)
            found.start()
        return found

    async def unwatch_whole(self, res: kinds.Resource) -> None:
        found = self.whole.pop(res, None)
        if found is not None:
            await found.stop()

    def all_of(self, res: kinds.Resource) -> list[Obj]:
        """The cached objects of a kind watched whole (none while it is not)."""
        found = self.whole.get(res)
        if found is None:
            return []
        return [entry.object() for entry in found.items.values()]

    # -- reads --------------------------------------------------------------------

    def profile(self, namespace: str, name: str) -> Obj | None:
        for inf in self.profiles:
            entry = inf.get(namespace, name)
            if entry is not None:
                return entry.object()
        return None

    def profile_entries(self) -> list[informer.Entry]:
        """A copy of every cached profile; safe to call from another thread (the
        metrics server's): each store is copied in one C-level dict copy."""
        return [e for inf in list(self.profiles) for e in inf.items.copy().values()]

    def profile_keys(self) -> list[str]:
        return [f"{ns}/{name}" for inf in self.profiles for (ns, name) in inf.items]

    def crd(self, name: str) -> Obj | None:
        """What the cached CRD says of serving its kinds: its metadata (name,
        resourceVersion, deletionTimestamp), ``spec.versions`` (each one's
        name and served) and ``status.conditions``; None when there is none.
        Decoded once per version of the CRD (every pass asks, and some CRDs,
        prometheus-operator's, are megabytes of JSON), and shared: read it,
        never change it."""
        inf = self.crds.get(name)
        entry = inf.get(None, name) if inf is not None else None
        if entry is None:
            self._crd_objects.pop(name, None)
            return None
        known = self._crd_objects.get(name)
        if known is None or known[0] is not entry:
            known = (entry, _serving(entry.object()))
            self._crd_objects[name] = known
        return known[1]

    def owned_informer(self, res: kinds.Resource, namespace: str) -> informer.Informer | None:
        for inf in self.owned.get(res) or []:
            if inf.namespace in (None, namespace):
                return inf
        return None

    def child(self, res: kinds.Resource, namespace: str, name: str) -> Obj | None:
        """Our cached object of that name: owned or not (it carries our labels)."""
        inf = self.owned_informer(res, namespace)
        entry = inf.get(namespace, name) if inf is not None else None
        return entry.object() if entry is not None else None

    def children(self, owner_uid: str) -> dict[kinds.Resource, list[Obj]]:
        found: dict[kinds.Resource, list[Obj]] = {}
        for res, group in self.owned.items():
            for inf in group:
                for entry in inf.indexed(owner_uid):
                    found.setdefault(res, []).append(entry.object())
        return found

    def children_versions(self, owner_uid: str) -> frozenset[tuple[str, str, str]]:
        """(kind, name, resourceVersion) of every cached child: a pass's fingerprint."""
        return frozenset(
            (res.kind, e.name, e.resource_version)
            for res, group in self.owned.items()
            for inf in group
            for e in inf.indexed(owner_uid)
        )

    def owned_synced(self, res: kinds.Resource) -> bool:
        group = self.owned.get(res) or []
        return bool(group) and all(i.synced.is_set() for i in group)

    # -- inputs -------------------------------------------------------------------

    async def read_input(self, ref: InputRef, *, timeout: float = 15.0) -> Obj | None:
        """The referenced object, from its own watch (started on first use)."""
        found = self.inputs.get(ref)
        if found is None:
            res, namespace, name = ref
            found = informer.Informer(
                self.kube,
                res,
                namespace=namespace,
                field_selector=f"metadata.name={name}",
                handler=lambda kind, *_: self._on_input(ref, kind),
                watch_seconds=_INPUT_WATCH_SECONDS,
            )
            self.inputs[ref] = found
            found.start()
        inf = found
        if not inf.synced.is_set():
            try:
                await asyncio.wait_for(inf.synced.wait(), timeout)
            except TimeoutError:
                detail = inf.last_error or "no answer"
                raise errors.UnavailableError(
                    f"could not read {ref[0].kind} {ref[1]}/{ref[2]}: {detail}"
                ) from None
        entry = inf.get(ref[1], ref[2])
        return entry.object() if entry is not None else None

    def input_version(self, ref: InputRef) -> str:
        inf = self.inputs.get(ref)
        entry = inf.get(ref[1], ref[2]) if inf is not None else None
        return entry.resource_version if entry is not None else ""

    async def use_inputs(self, user: str, refs: Iterable[InputRef]) -> None:
        """``user`` (a profile key) now references exactly ``refs``; watches that
        nobody references any more are stopped."""
        wanted = set(refs)
        before = self._uses.get(user, set())
        for ref in wanted - before:
            self._input_users.setdefault(ref, set()).add(user)
        released = []
        for ref in before - wanted:
            users = self._input_users.get(ref, set())
            users.discard(user)
            if not users:
                self._input_users.pop(ref, None)
                released.append(ref)
        if wanted:
            self._uses[user] = wanted
        else:
            self._uses.pop(user, None)
        for ref in released:
            inf = self.inputs.pop(ref, None)
            if inf is not None:
                await inf.stop()

    def input_users(self, ref: InputRef) -> set[str]:
        return set(self._input_users.get(ref, ()))

    # -- our own writes -----------------------------------------------------------

    def record_write(self, obj: Obj) -> None:
        res = self.kube.resource_of(obj)
        if res == self.primary:
            for inf in self.profiles:
                if inf.namespace in (None, obj["metadata"].get("namespace")):
                    inf.upsert(obj)
            return
        owned = self.owned_informer(res, str(obj["metadata"].get("namespace") or ""))
        if owned is not None:
            owned.upsert(obj)

    def record_delete(self, res: kinds.Resource, namespace: str, name: str) -> None:
        inf = self.owned_informer(res, namespace)
        if inf is not None:
            inf.forget(namespace, name)


def _serving(crd: Obj) -> Obj:
    """The part of a CRD that says whether (and which versions of) its kinds
    are served: kept instead of the whole, whose schemas can be megabytes."""
    meta = crd.get("metadata") or {}
    return {
        "metadata": {
            k: meta[k] for k in ("name", "resourceVersion", "deletionTimestamp") if k in meta
        },
        "spec": {
            "versions": [
                {"name": v.get("name"), "served": v.get("served")}
                for v in (crd.get("spec") or {}).get("versions") or []
            ]
        },
        "status": {"conditions": list((crd.get("status") or {}).get("conditions") or [])},
    }
