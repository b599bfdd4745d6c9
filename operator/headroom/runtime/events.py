"""Cache events -> queued profile keys, and the watches that follow the
composed engines as they come and go.

Nothing here decides anything about a profile: a spec change queues it as
SPEC, a child's edit or deletion as DRIFT (a status-only change as STATUS), a
referenced input's change every profile that uses it, a change of the
Prometheus objects every profile; which profile a child's event belongs to is
:func:`headroom.reconcile.watches.profiles_of`. Wired by
:mod:`headroom.runtime.process` into the caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from headroom.kube import informer, kinds, watch_cache
from headroom.planning import server_shares
from headroom.reconcile import watches
from headroom.runtime import share_table, work_queue

log = logging.getLogger(__name__)
# the kinds whose objects say what a profile's poolers run (its ConfigMaps and
# Deployments): a change of one counts the profile again in the shares
POOLER_KINDS = (kinds.CONFIG_MAP.kind, kinds.DEPLOYMENT.kind)


class Events:
    """The handlers the caches call; each only queues keys."""

    def __init__(
        self,
        queue: work_queue.WorkQueue,
        shares: share_table.SharedBudgets,
        *,
        publish: Callable[[share_table.Table], None],
    ) -> None:
        self.queue = queue
        self.shares = shares
        self.publish = publish  # tells admission what changed on a server
        self.cache: watch_cache.Cache | None = None  # set once the caches exist

    def profile_keys(self) -> list[str]:
        return self.cache.profile_keys() if self.cache is not None else []

    def enqueue_all(self, trigger: work_queue.Trigger) -> None:
        for key in self.profile_keys():
            self.queue.add(key, trigger)

    def resume(self) -> None:
        """Queue every profile once this process leads, the ones that need a
        pass first (a restart must not start again from the same end):

        - SPEC: its status says no pass saw its spec's generation;
        - DRIFT: passed, not converged (not Ready, or no status.converged),
          the one whose status changed longest ago first;
        - CONFIRM: its last pass changed nothing (status.converged) and it is
          Ready: the pass confirms it from the caches, without the work.
        """
        if self.cache is None:
            return
        ranked = sorted(
            (*resume_rank(entry.object()), f"{entry.namespace}/{entry.name}")
            for entry in self.cache.profile_entries()
        )
        for trigger, _, key in ranked:
            self.queue.add(key, trigger)

    def on_profile(self, kind: str, old: informer.Entry | None, new: informer.Entry | None) -> None:
        entry = new or old
        assert entry is not None
        key = f"{entry.namespace}/{entry.name}"
        if kind == "DELETED":
            self.queue.forget(key)
            self.queue.add(key, work_queue.Trigger.SPEC)  # the pass releases its input watches
            self._share(key, None)
            return
        assert new is not None
        if old is None or old.uid != new.uid:
            self.queue.add(key, work_queue.Trigger.SPEC)
            self._share(key, new)
        elif old.spec_fingerprint != new.spec_fingerprint:
            self.queue.add(key, work_queue.Trigger.SPEC)  # spec or metadata, not our status
            self._share(key, new)
        elif server_shares.held_of(old.object()) != server_shares.held_of(new.object()):
            self._share(key, new)  # what its poolers hold: counted if it is refused

    def written(self, body: dict[str, Any]) -> None:
        """The operator wrote an object into the cache (no event comes for
        it): a profile's status, or a pooler's ConfigMap or Deployment, may
        change what it holds."""
        meta = body.get("metadata") or {}
        if body.get("kind") == watches.PROFILE.kind:
            self._share_body(f"{meta.get('namespace', '')}/{meta.get('name', '')}", body)
        elif body.get("kind") in POOLER_KINDS:
            owners = tuple(
                (str(r.get("kind")), str(r.get("name")), str(r.get("uid")))
                for r in meta.get("ownerReferences") or []
            )
            for key in watches.profiles_of(
                namespace=str(meta.get("namespace") or ""), owners=owners, index=()
            ):
                self._share_running(key)

    def _share_running(self, key: str) -> None:
        """What the pooler objects of ``key`` run changed: count it again."""
        requeue, changed = self.shares.refresh(key)
        for other in requeue:
            self.queue.add(other, work_queue.Trigger.DRIFT)
        if changed:
            self.publish(self.shares.table(changed))

    def _share(self, key: str, entry: informer.Entry | None) -> None:
        self._share_body(key, entry.object() if entry is not None else None)

    def _share_body(self, key: str, body: dict[str, Any] | None) -> None:
        """Keep the shared-server table current; queue the profiles whose share
        changed and tell admission."""
        requeue, changed = self.shares.update(key, body)
        for other in requeue:
            self.queue.add(other, work_queue.Trigger.DRIFT)
        if changed:
            self.publish(self.shares.table(changed))

    def on_child(
        self,
        res: kinds.Resource,
        kind: str,
        old: informer.Entry | None,
        new: informer.Entry | None,
    ) -> None:
        entry = new or old
        assert entry is not None
        status_only = (
            kind == "MODIFIED"
            and old is not None
            and new is not None
            and old.spec_fingerprint == new.spec_fingerprint
        )
        trigger = work_queue.Trigger.STATUS if status_only else work_queue.Trigger.DRIFT
        for key in watches.profiles_of(
            namespace=entry.namespace, owners=entry.owners, index=entry.index
        ):
            self.queue.add(key, trigger)
            if res.kind in POOLER_KINDS:  # what its poolers run is what it holds
                self._share_running(key)

    def on_input(self, ref: watch_cache.InputRef, kind: str) -> None:
        if self.cache is None:
            return
        for user in self.cache.input_users(ref):
            self.queue.add(user, work_queue.Trigger.DRIFT)

    def on_prometheus(self) -> None:
        self.enqueue_all(work_queue.Trigger.DRIFT)

    def on_probe(self, users: set[str]) -> None:
        """A periodic probe's answer changed for these profiles."""
        for key in users:
            self.queue.add(key, work_queue.Trigger.PROBE)


def resume_rank(body: dict[str, Any]) -> tuple[work_queue.Trigger, str]:
    """Where a profile goes in the queue after a restart (:meth:`Events.resume`):
    its trigger, and when its status last changed."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return work_queue.Trigger.SPEC, ""
    found = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    changed = max((str(c.get("lastTransitionTime") or "") for c in found), default="")
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in found)
    if ready and status.get("converged"):
        return work_queue.Trigger.CONFIRM, changed
    return work_queue.Trigger.DRIFT, changed


async def sync_engines(cache: watch_cache.Cache, events: Events) -> None:
    """Watch the kinds of every installed engine, and only those (and the
    Prometheus objects while prometheus-operator is installed); re-plan every
    profile once the new caches are filled."""
    changed = False
    for engine in watches.ENGINES:
        up = watches.installed(engine, cache.crd)
        flipped = False
        for owned in engine.kinds:
            watched = owned.resource in cache.owned
            if up and not watched:
                cache.watch_owned(owned.resource)
                flipped = True
            elif not up and watched:
                await cache.unwatch_owned(owned.resource)
                flipped = True
        if flipped:
            changed = True
            log.info("engine %s is %s", engine.name, "installed" if up else "not installed")
    watching = watches.PROMETHEUS in cache.whole
    wanted = watches.prometheuses_watched(cache.crd)
    if wanted and not watching:
        cache.watch_whole(watches.PROMETHEUS, events.on_prometheus)
        changed = True
    elif watching and not wanted:
        await cache.unwatch_whole(watches.PROMETHEUS)
        changed = True
    if changed:
        for group in cache.owned.values():
            for inf in group:
                await inf.synced.wait()
        prometheuses = cache.whole.get(watches.PROMETHEUS)
        if prometheuses is not None:
            # (a list that keeps failing, e.g. forbidden, must not hold the engines up)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(prometheuses.synced.wait(), 30)
        events.enqueue_all(work_queue.Trigger.DRIFT)
