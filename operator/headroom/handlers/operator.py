"""The operator process: watches -> coalescing queue -> workers -> the engine.

``headroom run`` starts, in one asyncio event loop:

- the watch caches (:mod:`headroom.kube.cache`), whose events only *enqueue*
  profile keys (a spec change as SPEC, a child's edit or deletion as DRIFT, a
  child's status as STATUS);
- a few workers that take the most urgent key from the queue and run one pass
  (:meth:`Engine.reconcile`), at most one per profile at a time;
- the periodic resync, which enqueues every profile at the lowest priority
  (passes whose inputs did not change are skipped without a request);
- leader election on a Lease: every replica keeps warm caches and serves
  admission, only the leader runs workers and registers the webhook;
- health (``/healthz``, ``/readyz``) and metrics endpoints.

The admission webhook runs in a thread of its own (:mod:`headroom.handlers.webhook`).
Nothing here decides anything about a profile; that is the engine's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import start_http_server

from headroom import settings as settings_mod
from headroom.api import v1alpha1
from headroom.builders import common
from headroom.handlers import webhook
from headroom.kube import cache as cache_mod
from headroom.kube import client as kube_client
from headroom.kube import errors, informer, kinds, leader
from headroom.planning import budget as budget_mod
from headroom.reconcile import engine as engine_mod
from headroom.reconcile import metrics as metrics_mod
from headroom.reconcile import queue as queue_mod
from headroom.reconcile import registry
from headroom.reconcile import shared as shared_mod

log = logging.getLogger("headroom")

Obj = dict[str, Any]
OWNED_SELECTOR = f"app.kubernetes.io/managed-by={common.MANAGED_BY},{common.PROFILE_LABEL}"
_RESOURCES = {k.kind: k.resource for k in registry.ALL_OWNED}
_RESOURCES["Deployment"] = kinds.DEPLOYMENT
# read (never written) to say why a Redis with persistence is not ready
_RESOURCES["PersistentVolumeClaim"] = kinds.PVC
_RESOURCES["StorageClass"] = kinds.STORAGE_CLASS
# read (never written): the database of readReplicas mode cnpg
_RESOURCES["Cluster"] = kinds.CNPG_CLUSTER
# read (never written): what a Prometheus' namespace selector sees of a profile's namespace
_RESOURCES["Namespace"] = kinds.NAMESPACE


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


class CachedCluster:
    """The engine's view of the cluster: reads from the caches, writes through
    the client (and into the caches, so our own writes trigger nothing)."""

    def __init__(
        self, kube: kube_client.Kube, cache: cache_mod.Cache, shared: shared_mod.SharedBudgets
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.shared = shared

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
        for engine in registry.engines_of(kind):
            if registry.installed(engine, self.cache.crd):
                return next(k.resource for k in engine.kinds if k.kind == kind)
        return _RESOURCES[kind]

    def cached(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.cache.child(self._resource(kind), namespace, name)

    def served(self, kind: str) -> bool:
        engines = registry.engines_of(kind)
        if not engines:
            return True
        return any(registry.installed(e, self.cache.crd) for e in engines) and (
            self.cache.owned_synced(self._resource(kind))
        )

    def shared_uses(self, key: str) -> tuple[budget_mod.SharedUse, ...]:
        return self.shared.older(key)

    def prometheuses(self) -> list[Obj]:
        return self.cache.prometheuses()

    def facts(self) -> dict[str, bool]:
        return {
            e.fact: registry.installed(e, self.cache.crd)
            and all(self.cache.owned_synced(k.resource) for k in e.kinds)
            for e in registry.ENGINES
        }

    def _ref(self, ref: engine_mod.InputRef) -> cache_mod.InputRef:
        kind, namespace, name = ref
        return (self._resource(kind), namespace, name)

    def version_of(self, ref: engine_mod.InputRef) -> str:
        return self.cache.input_version(self._ref(ref))

    async def read_input(self, ref: engine_mod.InputRef) -> Obj | None:
        return await self.cache.read_input(self._ref(ref))

    async def use_inputs(self, user: str, refs: Iterable[engine_mod.InputRef]) -> None:
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

    async def delete(self, obj: Obj) -> bool:
        res = self.kube.resource_of(obj)
        meta = obj["metadata"]
        deleted = await self.kube.delete(
            res, namespace=meta["namespace"], name=meta["name"], uid=meta["uid"]
        )
        self.cache.record_delete(res, meta["namespace"], meta["name"])
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
                kinds.SCALING_PROFILE, namespace=meta["namespace"], name=meta["name"], ops=ops
            )
            self.cache.record_write(result)

    async def post_event(self, involved: Obj, *, type: str, reason: str, message: str) -> None:
        await self.kube.post_event(involved, type=type, reason=reason, message=message)


class Runtime:
    def __init__(self, cfg: settings_mod.Settings, *, namespaces: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.metrics = metrics_mod.Metrics()
        self.kube = kube_client.Kube.from_environment(
            timeout_seconds=cfg.api_timeout_seconds, on_request=self._count_request
        )
        for engine in registry.ENGINES:
            for owned in engine.kinds:
                self.kube.register(owned.resource)
        self.queue = queue_mod.WorkQueue()
        self.cache = cache_mod.Cache(
            self.kube,
            namespaces=namespaces,
            owned_selector=OWNED_SELECTOR,
            on_profile=self._on_profile,
            on_child=self._on_child,
            on_input=self._on_input,
            on_crd=self._on_crd,
            on_prometheus=lambda: self.enqueue_all(queue_mod.Trigger.DRIFT),
        )
        self.metrics.profile_conditions.source = self.cache.profile_entries
        self.shared = shared_mod.SharedBudgets()
        self.cluster = CachedCluster(self.kube, self.cache, self.shared)
        self.engine = engine_mod.Engine(
            self.cluster,
            self.metrics,
            primary_check_seconds=cfg.primary_check_seconds,
            replica_check_seconds=cfg.replica_check_seconds,
            agent_image=cfg.agent_image,
            operator_namespace=self.kube.cfg.namespace or "",
        )
        self.engine.probe.on_change = self._primaries_changed
        self.engine.replica_probe.on_change = self._primaries_changed
        self.engine.bucket_probe.on_change = self._primaries_changed
        self.stop = asyncio.Event()
        self.active = asyncio.Event()  # set while this replica is the leader
        self._tasks: list[asyncio.Task[Any]] = []
        self._webhook: webhook.Server | None = None
        self._ca_pem = b""  # the caBundle the leader registers
        self._serving_pem = b""  # the certificate this replica serves
        self._elector: leader.LeaderElector | None = None
        self._api_down = False

    # -- event -> queue ---------------------------------------------------------

    def _count_request(self, verb: str, kind: str, code: int) -> None:
        self.metrics.api_requests.labels(verb=verb, kind=kind, code=str(code)).inc()
        # An outage ends with the first answer: what waits out a backoff goes now.
        if code == 0 or code in (502, 503, 504):
            self._api_down = True
        elif self._api_down and code < 500:
            self._api_down = False
            retried = self.queue.retry_now()
            log.info("the API server answers again; retrying %d profiles now", retried)

    def _on_profile(
        self, kind: str, old: informer.Entry | None, new: informer.Entry | None
    ) -> None:
        entry = new or old
        assert entry is not None
        key = f"{entry.namespace}/{entry.name}"
        if kind == "DELETED":
            self.queue.forget(key)
            self.queue.add(key, queue_mod.Trigger.SPEC)  # the pass releases its input watches
            self._share(key, None)
            return
        assert new is not None
        if old is None or old.uid != new.uid:
            self.queue.add(key, queue_mod.Trigger.SPEC)
            self._share(key, new)
        elif old.spec_fingerprint != new.spec_fingerprint:
            self.queue.add(key, queue_mod.Trigger.SPEC)  # spec or metadata, not our status
            self._share(key, new)
        elif shared_mod.planned_since(old.object()) != shared_mod.planned_since(new.object()):
            self._share(key, new)  # its first pass: it now ranks before later ones

    def _share(self, key: str, entry: informer.Entry | None) -> None:
        """Keep the shared-server table current; queue the profiles whose share
        changed and tell the webhook."""
        requeue, changed = self.shared.update(key, entry.object() if entry is not None else None)
        for other in requeue:
            self.queue.add(other, queue_mod.Trigger.DRIFT)
        if changed and self._webhook is not None:
            self._webhook.publish(self.shared.table(changed))

    def _on_child(
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
        trigger = queue_mod.Trigger.STATUS if status_only else queue_mod.Trigger.DRIFT
        for owner_kind, owner_name, _ in entry.owners:
            if owner_kind == v1alpha1.KIND:
                self.queue.add(f"{entry.namespace}/{owner_name}", trigger)
        if entry.retained_for:  # a retained child: its profile's name is on its label
            self.queue.add(f"{entry.namespace}/{entry.retained_for}", trigger)

    def _on_input(self, ref: cache_mod.InputRef, kind: str) -> None:
        for user in self.cache.input_users(ref):
            self.queue.add(user, queue_mod.Trigger.DRIFT)

    def _on_crd(self, name: str) -> None:
        self._spawn(self._sync_engines(), name=f"engines after CRD {name}")

    def enqueue_all(self, trigger: queue_mod.Trigger) -> None:
        for key in self.cache.profile_keys():
            self.queue.add(key, trigger)

    async def _sync_engines(self) -> None:
        """Watch the kinds of every installed engine, and only those; re-plan
        every profile once the new caches are filled."""
        changed = False
        for engine in registry.ENGINES:
            up = registry.installed(engine, self.cache.crd)
            flipped = False
            for owned in engine.kinds:
                watched = owned.resource in self.cache.owned
                if up and not watched:
                    self.cache.watch_owned(owned.resource)
                    flipped = True
                elif not up and watched:
                    await self.cache.unwatch_owned(owned.resource)
                    flipped = True
            if flipped:
                changed = True
                log.info("engine %s is %s", engine.name, "installed" if up else "not installed")
        # the Prometheus objects, read while prometheus-operator is installed
        watching = self.cache.prometheus is not None
        wanted = registry.installed(
            registry.PROMETHEUS_OPERATOR, self.cache.crd
        ) and registry.crd_served(self.cache.crd(registry.PROMETHEUS_CRD), "v1")
        if wanted and not watching:
            self.cache.watch_prometheuses()
            changed = True
        elif watching and not wanted:
            await self.cache.unwatch_prometheuses()
            changed = True
        if changed:
            for group in self.cache.owned.values():
                for inf in group:
                    await inf.synced.wait()
            if self.cache.prometheus is not None:
                # (a list that keeps failing, e.g. forbidden, must not hold the engines up)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.cache.prometheus.synced.wait(), 30)
            self.enqueue_all(queue_mod.Trigger.DRIFT)

    # -- workers ----------------------------------------------------------------

    async def _worker(self) -> None:
        while not self.stop.is_set():
            await self.active.wait()
            item = await self.queue.get()
            if not self.active.is_set():  # lost the lease while waiting
                self.queue.done(item.key)
                self.queue.add(item.key, item.trigger)
                continue
            trigger = item.trigger.name.lower()
            self.metrics.queue_wait_seconds.labels(trigger=trigger).observe(item.waited)
            self.metrics.in_flight.inc()
            started = time.monotonic()
            failed, result = False, "failed"
            try:
                outcome = await asyncio.wait_for(
                    self.engine.reconcile(item.key, force=queue_mod.Trigger.RETRY in item.triggers),
                    timeout=self.cfg.pass_timeout_seconds,
                )
                if outcome is None:
                    result = "gone"
                elif outcome.skipped:
                    result = "skipped"
                else:
                    failed = outcome.retry
                    result = "applied" if outcome.writes else "unchanged"
                    if failed:
                        result = "failed"
            except Exception as err:
                failed = True
                reason = type(err).__name__
                self.metrics.reconcile_errors.labels(reason=reason).inc()
                quiet = isinstance(err, errors.ApiError) and err.namespace_terminating
                # during an outage every pass fails the same way: said once, by the lease
                quiet = quiet or (isinstance(err, errors.UnavailableError) and self._api_down)
                (log.debug if quiet else log.warning)(
                    "pass of %s failed: %s: %s", item.key, reason, err
                )
            finally:
                self.metrics.in_flight.dec()
                self.metrics.reconcile_seconds.labels(trigger=trigger).observe(
                    time.monotonic() - started
                )
                self.metrics.passes.labels(trigger=trigger, result=result).inc()
                self.queue.done(item.key, failed=failed)
                self.metrics.queue_depth.set(self.queue.depth)

    def _primaries_changed(self, users: set[str]) -> None:
        for key in users:
            self.queue.add(key, queue_mod.Trigger.DRIFT)

    async def _probe_primaries(self) -> None:
        """Re-read the primaries' limits on their own schedule (a fact, like a watch)."""
        while not await kube_client.sleep_or_stop(self.stop, 5):
            if self.active.is_set():
                try:
                    await self.engine.probe.refresh_due()
                    await self.engine.replica_probe.refresh_due()
                    await self.engine.bucket_probe.refresh_due()
                except Exception:  # a probe bug must not stop the others
                    log.exception("reading the primaries' limits or the replicas' lag failed")

    async def _watch_webhook(self) -> None:
        """Restart the admission process if it dies (the API server would refuse
        every profile write meanwhile: failurePolicy Fail)."""
        while not await kube_client.sleep_or_stop(self.stop, 2):
            if self._webhook is not None and not self._webhook.alive:
                log.error("the webhook process died; starting it again")
                await asyncio.to_thread(self._webhook.start)

    async def _certificate(self) -> tuple[bytes, bytes]:
        if self.cfg.webhook_cert_secret:
            return await webhook.shared_certificate(self.cfg, self.kube)
        return webhook.local_certificate(self.cfg)

    async def _renew_certificate(self) -> None:
        """Renew the serving certificate while running (30 days before it
        expires). The API server must trust a certificate before any replica
        serves it: the leader registers old + new in caBundle first; another
        replica switches once it sees the new one there."""
        every = self.cfg.webhook_cert_check_seconds
        while not await kube_client.sleep_or_stop(self.stop, every):
            try:
                cert_pem, key_pem = await self._certificate()
                if cert_pem == self._serving_pem:
                    continue
                if self.active.is_set():
                    self._ca_pem = webhook.ca_bundle(cert_pem, self._serving_pem)
                    await webhook.register(self.cfg, self.kube, self._ca_pem)
                elif not webhook.trusts(await webhook.registered(self.kube), cert_pem):
                    log.info("a renewed webhook certificate waits for the leader to publish it")
                    continue
                webhook.install(self.cfg, cert_pem, key_pem)
                self._serving_pem = cert_pem
                # the previous ones stay (while valid) for replicas that still serve them
                self._ca_pem = webhook.ca_bundle(cert_pem, self._ca_pem)
                log.info("the webhook serves a renewed certificate")
            except errors.KubeError as err:
                log.warning("could not renew the webhook certificate: %s", err)

    async def _resync(self) -> None:
        while not await kube_client.sleep_or_stop(self.stop, self.cfg.resync_seconds):
            if self.active.is_set():
                self.enqueue_all(queue_mod.Trigger.RESYNC)
            self.metrics.queue_depth.set(self.queue.depth)
            self.metrics.cached_objects.set(sum(len(i.items) for i in self.cache.all_informers()))

    # -- leadership ---------------------------------------------------------------

    def _on_leadership(self, held: bool) -> None:
        self.metrics.leader.set(1 if held else 0)
        if held:
            self._spawn(self._lead(), name="take the lead")
        else:
            self.active.clear()

    async def _lead(self) -> None:
        await self.cache.wait_synced()
        if self._webhook is not None:
            await self._register_webhook()
        else:
            await self._unregister_webhook()
        self.active.set()
        self.enqueue_all(queue_mod.Trigger.DRIFT)

    async def _unregister_webhook(self) -> None:
        """Admission is off (HEADROOM_WEBHOOK_ENABLED=false): a configuration an
        earlier leader registered would send every profile write to a server
        that is not there (failurePolicy Fail), so it goes."""
        try:
            await webhook.unregister(self.kube)
        except errors.KubeError as err:
            log.warning("could not remove the webhook configuration: %s", err)

    async def _register_webhook(self) -> None:
        while not self.stop.is_set():
            try:
                # Trust what this replica serves and what the others may have
                # renewed to (the shared Secret's certificate), while valid.
                latest, _ = await self._certificate()
                self._ca_pem = webhook.ca_bundle(latest, self._ca_pem)
                await webhook.register(self.cfg, self.kube, self._ca_pem)
                return
            except errors.KubeError as err:
                log.warning("could not register the webhook: %s", err)
                if await kube_client.sleep_or_stop(self.stop, 2):
                    return

    # -- endpoints ----------------------------------------------------------------

    async def _health_server(self) -> web.AppRunner:
        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok")  # the loop answers: alive (API outages included)

        async def readyz(_: web.Request) -> web.Response:
            ok = self.cache.synced
            return web.Response(text="ok" if ok else "caches not synced", status=200 if ok else 503)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.cfg.health_addr, self.cfg.health_port).start()
        return runner

    def _spawn(self, coro: Any, *, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed: %r", task.get_name(), task.exception())

    # -- main -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        if self.cfg.metrics_port:
            start_http_server(
                self.cfg.metrics_port, addr=self.cfg.metrics_addr, registry=self.metrics.registry
            )
        health = await self._health_server()
        if self.cfg.webhook_enabled:
            cert_pem, key_pem = await self._certificate()
            cert, key = webhook.install(self.cfg, cert_pem, key_pem)
            self._serving_pem = cert_pem
            self._ca_pem = webhook.ca_bundle(cert_pem)
            self._webhook = webhook.Server(
                self.cfg, cert=cert, key=key, latency=self.metrics.admission_seconds
            )
            self._webhook.start()
        self.cache.start(
            owned=[k.resource for k in registry.BUILTIN_OWNED],
            crd_names=[*registry.crd_names(), registry.PROMETHEUS_CRD],
        )
        await asyncio.gather(*(c.synced.wait() for c in self.cache.crds.values()))
        await asyncio.gather(*(p.synced.wait() for p in self.cache.profiles))
        for profiles in self.cache.profiles:  # the first listing sends no events
            for (namespace, name), entry in list(profiles.items.items()):
                self.shared.update(f"{namespace}/{name}", entry.object())
        if self._webhook is not None:
            self._webhook.publish(self.shared.table())
        await self._sync_engines()
        workers = [
            loop.create_task(self._worker(), name=f"worker {i}") for i in range(self.cfg.workers)
        ]
        self._spawn(self._resync(), name="resync")
        self._spawn(self._probe_primaries(), name="primary limits")
        if self._webhook is not None:
            self._spawn(self._watch_webhook(), name="webhook watchdog")
            self._spawn(self._renew_certificate(), name="webhook certificate")
        if self.cfg.leader_election:
            self._elector = leader.LeaderElector(
                self.kube,
                namespace=self.cfg.lease_namespace or self.kube.cfg.namespace or "headroom-system",
                name=self.cfg.lease_name,
                identity=self.cfg.identity,
                lease_seconds=self.cfg.lease_seconds,
                renew_seconds=max(1.0, self.cfg.lease_seconds / 3),
                on_change=self._on_leadership,
            )
            self._spawn(self._elector.run(self.stop), name="leader election")
        else:
            self._on_leadership(True)
        log.info("headroom operator running (%d workers)", self.cfg.workers)
        await self.stop.wait()
        log.info("stopping")
        self.active.clear()
        self.queue.close()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if self._elector is not None:
            await self._elector.release()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.cache.stop()
        if self._webhook is not None:
            self._webhook.stop()
        await health.cleanup()
        await self.kube.close()
        return 0


def run(*, namespace: list[str] | None = None) -> int:
    """Run the operator until SIGTERM/SIGINT (``headroom run``)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    cfg = settings_mod.Settings()

    async def main() -> int:
        return await Runtime(cfg, namespaces=tuple(namespace or ())).run()

    return asyncio.run(main())
