"""The reconcile pass's view of the cluster (:class:`headroom.reconcile.cluster_view.Cluster`):
reads from the watch caches, writes through the client and into the caches,
so the operator's own writes trigger nothing.

A pass names kinds ("Deployment", "ScaledObject"); this adapter picks their
resource from :mod:`headroom.reconcile.watches` (of a composed kind, the
installed version's). Built by :mod:`headroom.runtime.process`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from headroom.kube import apiserver, errors, kinds, watch_cache
from headroom.planning import connection_budget
from headroom.reconcile import cluster_view, watches
from headroom.runtime import share_table

Obj = dict[str, Any]


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


class CachedCluster:
    """Reads from the caches, writes through the client (and into the caches)."""

    def __init__(
        self,
        kube: apiserver.Kube,
        cache: watch_cache.Cache,
        shared: share_table.SharedBudgets,
        *,
        on_written: Callable[[Obj], None] = lambda _: None,
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.shared = shared
        # our writes reach the cache without a watch event; the shares must
        # still see what a profile's status and its poolers' objects say
        self.on_written = on_written

    def profile(self, namespace: str, name: str) -> Obj | None:
        return self.cache.profile(namespace, name)

    def children(self, owner_uid: str) -> dict[str, Obj]:
        return {
            f"{res.kind}/{obj['metadata']['name']}": obj
            for res, objs in self.cache.children(owner_uid).items()
            for obj in objs
        }

    def children_versions(self, owner_uid: str) -> frozenset[tuple[str, str, str]]:
        return self.cache.children_versions(owner_uid)

    def _resource(self, kind: str) -> kinds.Resource:
        """The resource of ``kind``; of a composed kind, the installed version's."""
        for engine in watches.engines_of(kind):
            if watches.installed(engine, self.cache.crd):
                return next(k.resource for k in engine.kinds if k.kind == kind)
        return watches.RESOURCES[kind]

    def cached(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.cache.child(self._resource(kind), namespace, name)

    def served(self, kind: str) -> bool:
        engines = watches.engines_of(kind)
        if not engines:
            return True
        return any(watches.installed(e, self.cache.crd) for e in engines) and (
            self.cache.owned_synced(self._resource(kind))
        )

    def grants(self, key: str) -> dict[str, connection_budget.Grant]:
        return self.shared.grants(key)

    def prometheuses(self) -> list[Obj]:
        return self.cache.all_of(watches.PROMETHEUS)

    def facts(self) -> dict[str, bool]:
        return {
            e.fact: watches.installed(e, self.cache.crd)
            and all(self.cache.owned_synced(k.resource) for k in e.kinds)
            for e in watches.ENGINES
        }

    def _ref(self, ref: cluster_view.InputRef) -> watch_cache.InputRef:
        kind, namespace, name = ref
        return (self._resource(kind), namespace, name)

    def version_of(self, ref: cluster_view.InputRef) -> str:
        return self.cache.input_version(self._ref(ref))

    async def read_input(self, ref: cluster_view.InputRef) -> Obj | None:
        return await self.cache.read_input(self._ref(ref))

    async def use_inputs(self, user: str, refs: Iterable[cluster_view.InputRef]) -> None:
        await self.cache.use_inputs(user, [self._ref(r) for r in refs])

    async def get_live(self, kind: str, namespace: str, name: str) -> Obj | None:
        # only asked before creating a name that is not in our cache: the API
        # server's own cache answers it without an etcd read
        return await self.kube.get(
            self._resource(kind), namespace=namespace, name=name, cached=True
        )

    async def apply(self, obj: Obj, *, subresource: str | None = None) -> Obj:
        result = await self.kube.apply(obj, subresource=subresource)
        self.cache.record_write(result)
        self.on_written(result)
        return result

    async def remove_keys(self, secret: Obj, keys: list[str]) -> Obj:
        meta = secret["metadata"]
        ops: list[Obj] = [{"op": "test", "path": "/metadata/uid", "value": meta["uid"]}]
        ops += [{"op": "remove", "path": f"/data/{_pointer(k)}"} for k in keys]
        result = await self.kube.json_patch(
            kinds.SECRET, namespace=meta["namespace"], name=meta["name"], ops=ops
        )
        self.cache.record_write(result)
        return result

    async def remove_data_keys(self, config_map: Obj, keys: list[str]) -> Obj:
        """Remove ``keys`` of a ConfigMap whose data others write (the pooler
        agents' reports): a merge patch that sets them to null, so our field
        manager owns none of its keys; the uid (immutable) makes it fail on a
        ConfigMap of the same name created since."""
        meta = config_map["metadata"]
        body: Obj = {
            "metadata": {"uid": meta["uid"]},
            "data": {k: None for k in keys},
        }
        result = await self.kube.merge_patch(
            kinds.CONFIG_MAP, namespace=meta["namespace"], name=meta["name"], body=body
        )
        self.cache.record_write(result)
        return result

    async def scale_to_zero(self, workload: Obj) -> Obj:
        meta = workload["metadata"]
        ops: list[Obj] = [
            {"op": "test", "path": "/metadata/uid", "value": meta["uid"]},
            {"op": "replace", "path": "/spec/replicas", "value": 0},
        ]
        result = await self.kube.json_patch(
            self.kube.resource_of(workload), namespace=meta["namespace"], name=meta["name"], ops=ops
        )
        self.cache.record_write(result)
        self.on_written(result)
        return result

    async def delete(self, obj: Obj) -> bool:
        res = self.kube.resource_of(obj)
        meta = obj["metadata"]
        deleted = await self.kube.delete(
            res, namespace=meta["namespace"], name=meta["name"], uid=meta["uid"]
        )
        self.cache.record_delete(res, meta["namespace"], meta["name"])
        self.on_written(obj)  # a pooler that goes holds nothing
        return deleted

    async def remove_finalizer(self, profile: Obj, finalizer: str) -> None:
        meta = profile["metadata"]
        index = (meta.get("finalizers") or []).index(finalizer)
        ops = [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        with contextlib.suppress(errors.ApiError):  # changed meanwhile: the next pass retries
            result = await self.kube.json_patch(
                watches.PROFILE, namespace=meta["namespace"], name=meta["name"], ops=ops
            )
            self.cache.record_write(result)

    async def add_finalizer(self, profile: Obj, finalizer: str) -> None:
        meta = profile["metadata"]
        present = meta.get("finalizers")
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        ]
        if present:
            ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
        else:
            ops.append({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
        with contextlib.suppress(errors.ApiError):  # changed meanwhile: the next pass retries
            result = await self.kube.json_patch(
                watches.PROFILE, namespace=meta["namespace"], name=meta["name"], ops=ops
            )
            self.cache.record_write(result)

    async def running_pods(self, namespace: str, *, selector: str = "") -> list[Obj]:
        """The namespace's pods that have not finished (``selector``: those
        with these labels): read only while one of its profiles is being
        deleted (in-use protection) or a pooler's state ConfigMap has more
        entries than it has pods, so no pod of the cluster is ever cached."""
        items, _ = await self.kube.list(
            kinds.POD,
            namespace=namespace,
            label_selector=selector,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        )
        return items

    async def post_event(self, involved: Obj, *, type: str, reason: str, message: str) -> None:
        await self.kube.post_event(involved, type=type, reason=reason, message=message)
