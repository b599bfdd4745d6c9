"""A fake of the reconcile pass's cluster view (:class:`headroom.reconcile.cluster_view.Cluster`).

It keeps objects like an API server would for the reconcile pass's purposes: every
write that changes an object bumps its resourceVersion, a write that changes
nothing keeps it (as server-side apply does), a Secret's ``data`` is replaced
as a whole (what Headroom's apply of ``data`` does for its own keys). Tests
inject failures per object key and read the log of requests.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from headroom.kube import errors
from headroom.planning import connection_budget, names, object_storage
from headroom.reconcile import watches
from headroom.runtime import share_table

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace, name)


def _merge(live: Any, desired: Any) -> Any:
    if isinstance(live, dict) and isinstance(desired, dict):
        merged = dict(live)
        for k, v in desired.items():
            merged[k] = _merge(live.get(k), v)
        return merged
    return copy.deepcopy(desired)


class FakeCluster:
    def __init__(self, *, keda: bool = False, monitoring: bool = False, cosi: str = "") -> None:
        self.objects: dict[Key, Obj] = {}
        self.keda = keda
        self.monitoring = monitoring  # prometheus-operator's CRDs served
        self.cosi = cosi  # the served COSI version ("": none)
        self.log: list[tuple[str, str]] = []  # (verb, "Kind/name")
        self.fail: dict[str, errors.KubeError] = {}  # "Kind/name" -> error on apply
        self.events: list[tuple[str, str, str]] = []
        self.inputs_used: dict[str, set[tuple[str, str, str]]] = {}
        # a server-side rewrite applied to every stored object (normalisation)
        self.normalise: Callable[[Obj], None] | None = None
        self.shared = share_table.SharedBudgets(children=self.children)
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)

    # -- helpers for tests -----------------------------------------------------

    def put(self, obj: Obj) -> Obj:
        """Store ``obj`` as somebody else's write (a new resourceVersion)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
        if obj["kind"] == "ScalingProfile":  # what the runtime's profile handler does
            self.shared.update(f"{meta.get('namespace', '')}/{meta['name']}", obj)
        self.pooler_changed(obj)
        return obj

    def pooler_changed(self, obj: Obj) -> None:
        """What the runtime's child handler does for a pooler's ConfigMap or
        Deployment: the profile that owns it is counted again at what runs."""
        if obj["kind"] not in ("ConfigMap", "Deployment"):
            return
        meta = obj["metadata"]
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "ScalingProfile":
                self.shared.refresh(f"{meta.get('namespace', '')}/{ref['name']}")

    def find(self, kind: str, name: str, namespace: str = "default") -> Obj | None:
        return self.objects.get((kind, namespace, name))

    def writes(self) -> list[tuple[str, str]]:
        return [entry for entry in self.log if entry[0] in ("apply", "patch", "delete")]

    # -- reads ---------------------------------------------------------------------

    def profile(self, namespace: str, name: str) -> Obj | None:
        found = self.objects.get(("ScalingProfile", namespace, name))
        return copy.deepcopy(found) if found else None

    def _ours(self, uid: str) -> Iterable[Obj]:
        for obj in self.objects.values():
            if obj["kind"] not in watches.BY_KIND:
                continue
            meta = obj["metadata"]
            if any(r.get("uid") == uid for r in meta.get("ownerReferences") or []):
                yield obj
            elif object_storage.is_retained(obj) and uid == object_storage.retained_key(
                meta.get("namespace", ""), (meta.get("labels") or {}).get(names.PROFILE_LABEL, "")
            ):
                yield obj  # the retained index of the real cache

    def children(self, owner_uid: str) -> dict[str, Obj]:
        return {
            f"{o['kind']}/{o['metadata']['name']}": copy.deepcopy(o) for o in self._ours(owner_uid)
        }

    def children_versions(self, owner_uid: str) -> frozenset[tuple[str, str, str]]:
        return frozenset(
            (o["kind"], o["metadata"]["name"], o["metadata"]["resourceVersion"])
            for o in self._ours(owner_uid)
        )

    def cached(self, kind: str, namespace: str, name: str) -> Obj | None:
        found = self.objects.get((kind, namespace, name))
        labels = (found or {}).get("metadata", {}).get("labels") or {}
        if found is None or labels.get("app.kubernetes.io/managed-by") != "headroom":
            return None  # the cache holds only objects with our labels
        return copy.deepcopy(found)

    def served(self, kind: str) -> bool:
        if kind in ("BucketClaim", "BucketAccess"):
            return bool(self.cosi)
        engine = watches.engine_of(kind)
        if engine is watches.PROMETHEUS_OPERATOR:
            return self.monitoring
        return self.keda or engine is None

    def facts(self) -> dict[str, bool]:
        return {
            "keda": self.keda,
            "prometheus_operator": self.monitoring,
            "cosi_v1alpha1": self.cosi == "v1alpha1",
            "cosi_v1alpha2": self.cosi == "v1alpha2",
        }

    def prometheuses(self) -> list[Obj]:
        return [copy.deepcopy(o) for o in self.objects.values() if o["kind"] == "Prometheus"]

    def grants(self, key: str) -> dict[str, connection_budget.Grant]:
        return self.shared.grants(key)

    def version_of(self, ref: tuple[str, str, str]) -> str:
        found = self.objects.get(ref)
        return found["metadata"]["resourceVersion"] if found else ""

    async def read_input(self, ref: tuple[str, str, str]) -> Obj | None:
        found = self.objects.get(ref)
        return copy.deepcopy(found) if found else None

    async def use_inputs(self, user: str, refs: Iterable[tuple[str, str, str]]) -> None:
        self.inputs_used[user] = set(refs)

    async def get_live(self, kind: str, namespace: str, name: str) -> Obj | None:
        self.log.append(("get", f"{kind}/{name}"))
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    # -- writes --------------------------------------------------------------------

    async def apply(self, obj: Obj, *, subresource: str | None = None) -> Obj:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        label = f"{obj['kind']}/{meta['name']}" + (f"/{subresource}" if subresource else "")
        self.log.append(("apply", label))
        if label in self.fail:
            raise self.fail[label]
        live = self.objects.get(key)
        if subresource == "status":
            assert live is not None
            merged = {**live, "status": copy.deepcopy(obj["status"])}
        elif live is None:
            merged = copy.deepcopy(obj)
            merged["metadata"]["uid"] = f"uid-{next(self._uid)}"
        else:
            merged = _merge(live, obj)
            # server-side apply: fields our manager no longer sets are removed
            # (the owner reference; our own headroom.dev/ annotations)
            if "ownerReferences" not in obj["metadata"]:
                merged["metadata"].pop("ownerReferences", None)
            ours = obj["metadata"].get("annotations") or {}
            kept = {
                k: v
                for k, v in (merged["metadata"].get("annotations") or {}).items()
                if k in ours or not k.startswith("headroom.dev/")
            }
            if kept:
                merged["metadata"]["annotations"] = kept
            else:
                merged["metadata"].pop("annotations", None)
            if obj["kind"] == "Secret":  # Headroom owns every key it applies
                merged["data"] = {**(live.get("data") or {}), **(obj.get("data") or {})}
        if self.normalise is not None and subresource is None:
            self.normalise(merged)
        comparable = {k: v for k, v in merged.items()}
        before = {k: v for k, v in (live or {}).items()}
        meta_new = dict(comparable["metadata"])
        meta_new.pop("resourceVersion", None)
        meta_old = dict(before.get("metadata") or {})
        meta_old.pop("resourceVersion", None)
        if live is not None and {**comparable, "metadata": meta_new} == {
            **before,
            "metadata": meta_old,
        }:
            return copy.deepcopy(live)  # nothing changed: same resourceVersion
        merged["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = merged
        if obj["kind"] == "ScalingProfile":  # as the runtime's on_written
            self.shared.update(f"{key[1]}/{key[2]}", merged)
        self.pooler_changed(merged)
        return copy.deepcopy(merged)

    async def remove_keys(self, secret: Obj, keys: list[str]) -> Obj:
        meta = secret["metadata"]
        self.log.append(("patch", f"Secret/{meta['name']}"))
        live = self.objects[("Secret", meta["namespace"], meta["name"])]
        for k in keys:
            live["data"].pop(k, None)
        live["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(live)

    async def remove_data_keys(self, config_map: Obj, keys: list[str]) -> Obj:
        meta = config_map["metadata"]
        self.log.append(("patch", f"ConfigMap/{meta['name']}"))
        live = self.objects[("ConfigMap", meta["namespace"], meta["name"])]
        assert live["metadata"]["uid"] == meta["uid"]
        for k in keys:
            (live.get("data") or {}).pop(k, None)
        live["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(live)

    async def scale_to_zero(self, workload: Obj) -> Obj:
        meta = workload["metadata"]
        self.log.append(("patch", f"{workload['kind']}/{meta['name']}"))
        live = self.objects[(workload["kind"], meta["namespace"], meta["name"])]
        live["spec"]["replicas"] = 0
        live["metadata"]["resourceVersion"] = str(next(self._rv))
        self.pooler_changed(live)
        return copy.deepcopy(live)

    async def delete(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        self.log.append(("delete", f"{obj['kind']}/{meta['name']}"))
        gone = self.objects.pop((obj["kind"], meta["namespace"], meta["name"]), None)
        if gone is not None:
            self.pooler_changed(gone)
        return gone is not None

    async def remove_finalizer(self, profile: Obj, finalizer: str) -> None:
        meta = profile["metadata"]
        self.log.append(("patch", f"ScalingProfile/{meta['name']}"))
        live = self.objects[("ScalingProfile", meta["namespace"], meta["name"])]
        live["metadata"]["finalizers"].remove(finalizer)

    async def add_finalizer(self, profile: Obj, finalizer: str) -> None:
        meta = profile["metadata"]
        self.log.append(("patch", f"ScalingProfile/{meta['name']}"))
        live = self.objects[("ScalingProfile", meta["namespace"], meta["name"])]
        live["metadata"].setdefault("finalizers", []).append(finalizer)
        live["metadata"]["resourceVersion"] = str(next(self._rv))

    async def running_pods(self, namespace: str, *, selector: str = "") -> list[Obj]:
        self.log.append(("list", "Pod"))
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
        return [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in self.objects.items()
            if kind == "Pod"
            and ns == namespace
            and wanted.items() <= ((obj["metadata"].get("labels") or {}).items())
        ]

    async def post_event(self, involved: Obj, *, type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))
