"""The operator process: start everything, run the workers, stop cleanly.

``headroom run`` starts, in one asyncio event loop:

- the watch caches (:mod:`headroom.kube.watch_cache`) of what
  :mod:`headroom.reconcile.watches` declares, whose events only *enqueue*
  profile keys (:mod:`headroom.runtime.events`);
- a few workers that take the most urgent key from the queue and run one pass
  (:meth:`headroom.reconcile.reconciler.Reconciler.reconcile`), at most one per profile at a time;
- the periodic resync, which enqueues every profile at the lowest priority
  (passes whose inputs did not change are skipped without a request), and the
  periodic probes' refresh (reads in the background; a changed answer queues
  the profiles that rely on it);
- leader election on a Lease: every replica keeps warm caches and serves
  admission, only the leader runs workers and registers the webhook;
- health (``/healthz``, ``/readyz``) and metrics endpoints;
- admission, in a process of its own (:mod:`headroom.runtime.admission`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from prometheus_client import start_http_server

from headroom import logs, settings
from headroom.kube import apiserver, errors, kinds, leader, watch_cache
from headroom.reconcile import reconciler, telemetry, watches
from headroom.runtime import (
    cached_cluster,
    events,
    health,
    ownership_key,
    share_table,
    work_queue,
)
from headroom.runtime.admission import lifecycle

log = logging.getLogger("headroom")


def _pass_fields(
    key: str, *, trigger: str, result: str, started: float, error: str | None
) -> dict[str, object]:
    """A pass's stable log keys (headroom.logs), as it ended."""
    namespace, _, name = key.partition("/")
    return logs.fields(
        namespace=namespace,
        profile=name,
        phase="pass",
        trigger=trigger,
        result=result,
        duration=time.monotonic() - started,
        error=error,
    )


class Runtime:
    def __init__(self, cfg: settings.Settings, *, namespaces: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.metrics = telemetry.Metrics()
        self.kube = apiserver.Kube.from_environment(
            timeout_seconds=cfg.api_timeout_seconds, on_request=self._count_request
        )
        self.kube.register(watches.PROFILE)
        for owned in watches.ALL_OWNED:
            self.kube.register(owned.resource)
        self.queue = work_queue.WorkQueue()
        self.stop = asyncio.Event()
        self.active = asyncio.Event()  # set while this replica is the leader
        self.admission: lifecycle.Admission | None = None
        if cfg.webhook_enabled:
            self.admission = lifecycle.Admission(
                cfg,
                self.kube,
                latency=self.metrics.admission_seconds,
                stop=self.stop,
                leading=self.active.is_set,
            )
        self.shared = share_table.SharedBudgets()
        self.events = events.Events(self.queue, self.shared, publish=self._publish)
        self.cache = watch_cache.Cache(
            self.kube,
            primary=watches.PROFILE,
            namespaces=namespaces,
            owned_selector=watches.OWNED_SELECTOR,
            owned_index=watches.owner_index,
            on_profile=self.events.on_profile,
            on_child=self.events.on_child,
            on_input=self.events.on_input,
            on_crd=self._on_crd,
        )
        self.events.cache = self.cache
        self.metrics.profile_conditions.source = self.cache.profile_entries
        self.cluster = cached_cluster.CachedCluster(
            self.kube, self.cache, self.shared, on_written=self.events.written
        )
        self.shared.children = self.cluster.children
        self.reconciler = reconciler.Reconciler(
            self.cluster,
            self.metrics,
            primary_check_seconds=cfg.primary_check_seconds,
            replica_check_seconds=cfg.replica_check_seconds,
            probe_concurrency=cfg.probe_concurrency,
            allow_internal_endpoints=cfg.allow_internal_endpoints,
            agent_image=cfg.agent_image,
            operator_namespace=self.kube.cfg.namespace or "",
        )
        for probe in self.reconciler.probes.all():
            probe.on_change = self.events.on_probe
        self._tasks: list[asyncio.Task[Any]] = []
        self._elector: leader.LeaderElector | None = None
        self._api_down = False

    def _publish(self, delta: share_table.Table) -> None:
        if self.admission is not None:
            self.admission.publish(delta)

    def _count_request(self, verb: str, kind: str, code: int) -> None:
        self.metrics.api_requests.labels(verb=verb, kind=kind, code=str(code)).inc()
        # An outage ends with the first answer: what waits out a backoff goes now.
        if code == 0 or code in (502, 503, 504):
            self._api_down = True
        elif self._api_down and code < 500:
            self._api_down = False
            retried = self.queue.retry_now()
            log.info("the API server answers again; retrying %d profiles now", retried)

    def _on_crd(self, name: str) -> None:
        self._spawn(events.sync_engines(self.cache, self.events), name=f"engines after CRD {name}")

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
            failed, result, error = False, "failed", None

            try:
                outcome = await asyncio.wait_for(
                    self.reconciler.reconcile(
                        item.key, force=work_queue.Trigger.RETRY in item.triggers
                    ),
                    timeout=self.cfg.pass_timeout_seconds,
                )
                if outcome is None:
                    result = "gone"
                elif outcome.confirmed:
                    result = "confirmed"
                elif outcome.skipped:
                    result = "skipped"
                else:
                    failed = outcome.retry
                    result = "applied" if outcome.writes else "unchanged"
                    if failed:
                        result = "failed"
                    elif outcome.recheck_seconds is not None:
                        result = "waiting"
                        self.queue.add_after(
                            item.key, work_queue.Trigger.PROBE, outcome.recheck_seconds
                        )
            except Exception as err:
                failed, error = True, type(err).__name__
                self.metrics.reconcile_errors.labels(reason=error).inc()
                quiet = isinstance(err, errors.ApiError) and err.namespace_terminating
                # during an outage every pass fails the same way: said once, by the lease
                quiet = quiet or (isinstance(err, errors.UnavailableError) and self._api_down)
                (log.debug if quiet else log.warning)(
                    "pass of %s failed: %s: %s",
                    item.key,
                    error,
                    err,
                    extra=_pass_fields(
                        item.key, trigger=trigger, result=result, started=started, error=error
                    ),
                )
                if not quiet:
                    await self._report_failure(item.key, err)
            finally:
                self.metrics.in_flight.dec()
                self.metrics.reconcile_seconds.labels(trigger=trigger).observe(
                    time.monotonic() - started
                )
                if error is None:
                    # a pass that wrote or failed is worth a line; the rest only when debugging
                    (log.info if result in ("applied", "failed") else log.debug)(
                        "pass of %s: %s",
                        item.key,
                        result,
                        extra=_pass_fields(
                            item.key, trigger=trigger, result=result, started=started, error=error
                        ),
                    )
                self.metrics.passes.labels(trigger=trigger, result=result).inc()
                namespace, name = item.key.split("/", 1)
                if result == "gone":
                    with contextlib.suppress(KeyError):
                        self.metrics.last_pass.remove(namespace, name)
                else:
                    self.metrics.last_pass.labels(namespace=namespace, profile=name).set(
                        time.time()
                    )
                self.queue.done(item.key, failed=failed)
                self.metrics.queue_depth.set(self.queue.depth)

    async def _report_failure(self, key: str, err: Exception) -> None:
        """The failed pass said on the profile (best effort: the API server may
        be the reason it failed)."""
        try:
            await self.reconciler.report_failure(key, err)
        except Exception as write_err:
            log.debug("could not report the failed pass of %s: %s", key, write_err)

    async def _refresh_probes(self) -> None:
        """Read what the periodic probes watch again on their own schedule (a
        fact, like a watch): the primaries' limits, the replicas, the buckets.
        Each reading runs in the background; this never waits for one."""
        while not await apiserver.sleep_or_stop(self.stop, 1):
            if self.active.is_set():
                try:
                    self.reconciler.probes.refresh_due()
                except Exception:  # a probe bug must not stop the refreshes
                    log.exception("starting the periodic probes' readings failed")

    async def _resync(self) -> None:
        while not await apiserver.sleep_or_stop(self.stop, self.cfg.resync_seconds):
            if self.active.is_set():
                self.events.enqueue_all(work_queue.Trigger.RESYNC)
            self.metrics.queue_depth.set(self.queue.depth)
            self.metrics.cached_objects.set(sum(len(i.items) for i in self.cache.all_informers()))

    # -- leadership ---------------------------------------------------------------

    def _on_leadership(self, held: bool) -> None:
        self.metrics.leader.set(1 if held else 0)
        if held:
            self._spawn(self._lead(), name="take the lead")
        else:
            self.active.clear()

    def _namespace(self) -> str:
        return self.cfg.lease_namespace or self.kube.cfg.namespace or "headroom-system"

    async def _lead(self) -> None:
        await self.cache.wait_synced()
        where = self.cfg.ownership_key_secret or f"{self._namespace()}/headroom-ownership-key"
        namespace, name = where.split("/", 1)
        while not self.stop.is_set():
            try:
                self.reconciler.ownership_key = await ownership_key.settle(
                    self.kube, namespace=namespace, name=name
                )
                break
            except errors.KubeError as err:
                log.warning("reading the ownership key %s failed: %s", where, err)
                await apiserver.sleep_or_stop(self.stop, 2)
        if self.admission is not None:
            await self.admission.register()
        else:
            await lifecycle.unregister(self.kube)
        self.active.set()
        self.events.resume()

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
        health_runner = await health.serve(
            addr=self.cfg.health_addr, port=self.cfg.health_port, ready=lambda: self.cache.synced
        )
        if self.admission is not None:
            await self.admission.start()
        self.cache.start(
            owned=[k.resource for k in watches.BUILTIN_OWNED],
            crd_names=[*watches.crd_names(), watches.PROMETHEUS_CRD],
        )
        await asyncio.gather(*(c.synced.wait() for c in self.cache.crds.values()))
        await asyncio.gather(*(p.synced.wait() for p in self.cache.profiles))
        # the poolers' objects too: what they run is what a profile holds
        await asyncio.gather(
            *(
                inf.synced.wait()
                for res in (kinds.CONFIG_MAP, kinds.DEPLOYMENT)
                for inf in self.cache.owned.get(res, [])
            )
        )
        for profiles in self.cache.profiles:  # the first listing sends no events
            for (namespace, name), entry in list(profiles.items.items()):
                self.shared.update(f"{namespace}/{name}", entry.object())
        self._publish(self.shared.table())
        await events.sync_engines(self.cache, self.events)
        workers = [
            loop.create_task(self._worker(), name=f"worker {i}") for i in range(self.cfg.workers)
        ]
        self._spawn(self._resync(), name="resync")
        self._spawn(self._refresh_probes(), name="periodic probes")
        if self.admission is not None:
            self._spawn(self.admission.watchdog(), name="webhook watchdog")
            self._spawn(self.admission.renew_forever(), name="webhook certificate")
        if self.cfg.leader_election:
            self._elector = leader.LeaderElector(
                self.kube,
                namespace=self._namespace(),
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
        await self.reconciler.probes.close()
        await self.cache.stop()
        if self.admission is not None:
            self.admission.stop()
        await health_runner.cleanup()
        await self.kube.close()
        return 0


def run(*, namespace: list[str] | None = None) -> int:
    """Run the operator until SIGTERM/SIGINT (``headroom run``)."""
    cfg = settings.Settings()
    logs.configure(cfg.log_format)

    async def main() -> int:
        return await Runtime(cfg, namespaces=tuple(namespace or ())).run()

    return asyncio.run(main())
