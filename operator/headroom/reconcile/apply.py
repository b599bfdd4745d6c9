"""The apply phase of a pass: what differs is applied, what is no longer
wanted is pruned, and nothing that is not ours is touched.

- :meth:`Applier.conflicts`: wanted names that exist but belong to somebody
  else (the pass contains their components: nothing of them is applied);
- :meth:`Applier.apply_all`: stage by stage (what pods mount, workloads,
  autoscalers; one stage's objects concurrently; what nothing waits for,
  such as Services, beside the stages), each object applied only
  when it differs from the cache (:mod:`headroom.reconcile.compare`), a
  workload's template rolled only for a value its pods hold that changed
  (:mod:`headroom.reconcile.rollout`); leftover
  autoscalers pruned before, every other leftover after; a retained child (a
  Retain bucket's claim) and a contained component's objects never deleted.

A child the API server refuses does not stop the others: the result says
which and why (ChildrenApplied). Called by :mod:`headroom.reconcile.reconciler`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from headroom.api import conditions
from headroom.builders import desired
from headroom.kube import errors
from headroom.planning import object_storage, planner
from headroom.reconcile import (
    cluster_view,
    compare,
    outcome,
    ownership,
    rollout,
    telemetry,
    watches,
)

Obj = cluster_view.Obj


@dataclass
class ApplyResult:
    writes: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    retry: bool = False

    def fail(self, key: str, message: str, *, retry: bool) -> None:
        self.failures.append((key, message))
        self.retry = self.retry or retry

    def condition(self) -> conditions.Cond:
        if not self.failures:
            return conditions.Cond(
                conditions.CHILDREN_APPLIED, "True", "Applied", "every child is as desired"
            )
        text = "; ".join(f"{k}: {m}" for k, m in self.failures)
        return conditions.Cond(
            conditions.CHILDREN_APPLIED,
            "False",
            "ApplyFailed",
            f"{len(self.failures)} child object(s) not applied: {text}"[:2000],
        )


def _api_message(err: Exception) -> str:
    if isinstance(err, errors.ApiError):
        return f"{err.status} {err.reason}: {err.message}"[:400]
    return str(err)[:400]


def _owned_kind(key: str) -> watches.OwnedKind:
    return watches.BY_KIND[key.split("/", 1)[0]]


class Applier:
    """Applies and prunes for every profile of one process; remembers what it
    applied, so an object the API server normalised is not applied again."""

    def __init__(self, cluster: cluster_view.Cluster, metrics: telemetry.Metrics) -> None:
        self.cluster = cluster
        self.metrics = metrics
        # (profile key, child key) -> (desired hash, resourceVersion after our
        # apply): the object is as we left it, even where the API server
        # normalised a field our comparison does not know about
        self._applied: dict[tuple[str, str], tuple[str, str]] = {}
        # (profile key, child key) -> the generation a write of a Deployment's
        # metadata alone gave it: the API server counts an annotation change of
        # a Deployment as a new generation, though nothing rolls
        self._metadata_only: dict[tuple[str, str], int] = {}

    def forget(self, profile_key: str) -> None:
        for k in [k for k in self._applied if k[0] == profile_key]:
            del self._applied[k]
        for k in [k for k in self._metadata_only if k[0] == profile_key]:
            del self._metadata_only[k]

    def settled(self, profile_key: str, observed: dict[str, Obj]) -> dict[str, Obj]:
        """The children as observed, a Deployment whose generation only a write
        of its metadata moved taken as observed at it (its controller had
        observed the generation before, with the same spec): the observers do
        not report a rollout that is none."""
        view = dict(observed)
        for (owner, child_key), generation in self._metadata_only.items():
            obj = observed.get(child_key) if owner == profile_key else None
            if obj is None or int(obj["metadata"].get("generation") or 0) != generation:
                continue
            status = obj.get("status") or {}
            if int(status.get("observedGeneration") or 0) == generation - 1:
                view[child_key] = {**obj, "status": {**status, "observedGeneration": generation}}
        return view

    async def conflicts(
        self, planned: planner.Plan, wanted: desired.Desired, *, children: dict[str, Obj]
    ) -> list[str]:
        """Keys of wanted objects that exist but are not ours. Our own children
        come from the cache; a name the cache does not hold (not carrying our
        labels) is looked up once, since it may belong to somebody else."""
        found: list[str] = []
        unknown: list[str] = []
        for key in wanted.objects:
            if key in children:
                continue
            kind, name = key.split("/", 1)
            if not self.cluster.served(kind):
                continue  # a composed kind not served: nothing of it can exist
            if self.cluster.cached(kind, planned.namespace, name) is not None:
                found.append(key)  # carries our labels, but another owner
            else:
                unknown.append(key)
        live = await asyncio.gather(
            *(
                self.cluster.get_live(k.split("/", 1)[0], planned.namespace, k.split("/", 1)[1])
                for k in unknown
            )
        )
        for key, obj in zip(unknown, live, strict=True):
            if obj is not None and not ownership.owned_by(obj, planned.uid):
                found.append(key)
        return sorted(found)

    async def apply_all(
        self,
        key: str,
        *,
        wanted: desired.Desired,
        children: dict[str, Obj],
        frozen: set[str],
        events: list[outcome.Event],
    ) -> ApplyResult:
        result = ApplyResult()
        # Leftovers: ours, no longer wanted. A contained component's objects are
        # left as they are (``frozen``: neither applied nor deleted), and a
        # retained one (a Retain bucket's claim) is never deleted by Headroom.
        leftovers = sorted(
            k
            for k in children
            if k not in wanted.objects
            and k not in frozen
            and not object_storage.is_retained(children[k])
        )
        prune_first = [k for k in leftovers if _owned_kind(k).prune_first]
        prune_after = [k for k in leftovers if k not in prune_first]
        await self._prune(key, prune_first, children, result, events)

        def batch_of(stage: watches.Stage) -> list[str]:
            return [k for k in wanted.objects if _owned_kind(k).stage == stage]

        def applying(batch: list[str]) -> asyncio.Future[list[bool]]:
            return asyncio.gather(
                *(self._apply_one(key, wanted.objects[k], children.get(k), result) for k in batch)
            )

        beside = batch_of(watches.Stage.ALONGSIDE)
        beside_applied = applying(beside)
        changed: list[str] = []
        try:
            for stage in watches.Stage:
                if stage == watches.Stage.ALONGSIDE:
                    continue
                batch = batch_of(stage)
                applied = await applying(batch)
                changed += [k for k, did in zip(batch, applied, strict=True) if did]
            changed += [k for k, did in zip(beside, await beside_applied, strict=True) if did]
        finally:
            if not beside_applied.done():  # a stage raised: nothing is left running
                beside_applied.cancel()
                await asyncio.gather(beside_applied, return_exceptions=True)
        if changed:
            events.append(
                outcome.Event("Normal", outcome.APPLIED, "created or updated " + ", ".join(changed))
            )
        await self._prune(key, prune_after, children, result, events)
        return result

    async def _apply_one(
        self, profile_key: str, obj: Obj, live: Obj | None, result: ApplyResult
    ) -> bool:
        """Apply ``obj`` if it differs from ``live``; True when it was written."""
        child_key = desired.key_of(obj)
        if not self.cluster.served(obj["kind"]):
            result.fail(child_key, f"{obj['kind']} is not served by the API server", retry=True)
            return False
        # a workload whose pods hold every value they read keeps its template
        stamped = compare.stamp(rollout.carry_over(obj, live))
        want_hash = stamped["metadata"]["annotations"][compare.HASH_ANNOTATION]
        reason = compare.difference(stamped, live)
        if reason is None:
            return False
        version = (live or {}).get("metadata", {}).get("resourceVersion")
        if reason == "drift" and self._applied.get((profile_key, child_key)) == (
            want_hash,
            version,
        ):
            return False  # as we left it: the server normalised something
        try:
            applied = await self.cluster.apply(stamped)
            if obj["kind"] == "Secret":
                extra = compare.extra_secret_keys(stamped, applied)
                if extra:
                    applied = await self.cluster.remove_keys(applied, extra)
                    result.writes += 1
        except errors.NotServedError as err:
            result.fail(child_key, str(err), retry=True)
            return False
        except errors.KubeError as err:
            result.fail(child_key, _api_message(err), retry=err.retriable)
            return False
        result.writes += 1
        self.metrics.applied_objects.labels(kind=obj["kind"]).inc()
        spec_kept = live is not None and compare.covers(live.get("spec"), stamped.get("spec"))
        if obj["kind"] == "Deployment" and spec_kept:
            generation = int(applied["metadata"].get("generation") or 0)
            self._metadata_only[(profile_key, child_key)] = generation
        else:
            self._metadata_only.pop((profile_key, child_key), None)
        self._applied[(profile_key, child_key)] = (
            want_hash,
            str(applied["metadata"].get("resourceVersion", "")),
        )
        before = (live or {}).get("metadata", {}).get("resourceVersion")
        return bool(before != applied["metadata"].get("resourceVersion"))

    async def scale_away(
        self,
        profile_key: str,
        workloads: dict[str, Obj],
        *,
        result: ApplyResult,
        events: list[outcome.Event],
    ) -> None:
        """Our ``workloads`` (a contained component's) run no pod: a Deployment
        is deleted (its autoscaler would scale it up again), a StatefulSet is
        scaled to zero (its volumes stay). Applied again, whole, once the other
        object is gone."""
        deployments = sorted(k for k, obj in workloads.items() if obj["kind"] == "Deployment")
        await self._prune(profile_key, deployments, workloads, result, events)
        for child_key, obj in sorted(workloads.items()):
            if obj["kind"] != "StatefulSet" or (obj.get("spec") or {}).get("replicas") == 0:
                continue
            try:
                await self.cluster.scale_to_zero(obj)
            except errors.KubeError as err:
                result.fail(child_key, f"scale away: {_api_message(err)}", retry=err.retriable)
                continue
            self._applied.pop((profile_key, child_key), None)
            result.writes += 1
            events.append(
                outcome.Event("Normal", outcome.SCALED_AWAY, f"scaled {child_key} to 0 replicas")
            )

    async def _prune(
        self,
        profile_key: str,
        keys: list[str],
        children: dict[str, Obj],
        result: ApplyResult,
        events: list[outcome.Event],
    ) -> None:
        for child_key in keys:
            try:
                deleted = await self.cluster.delete(children[child_key])
            except errors.KubeError as err:
                result.fail(child_key, f"delete: {_api_message(err)}", retry=err.retriable)
                continue
            self._applied.pop((profile_key, child_key), None)
            if deleted:
                result.writes += 1
                self.metrics.pruned_objects.labels(kind=child_key.split("/")[0]).inc()
                events.append(
                    outcome.Event(
                        "Normal", outcome.PRUNED, f"deleted {child_key}, no longer wanted"
                    )
                )
