"""One idempotent reconcile pass of a ScalingProfile, on observed state.

The runtime's workers call :meth:`Reconciler.reconcile` for a profile key,
whatever the trigger. A pass whose inputs did not change since the last one
is skipped without a request. Otherwise, each phase in a module of its own:

1. parse the profile (:mod:`headroom.api.v1alpha1`);
2. read the cluster facts the plan depends on (:mod:`.facts`);
3. plan once (:mod:`headroom.planning.planner`);
4. read the inputs the build needs: the app, its login, Secrets (:mod:`.inputs`);
5. assemble the credentials (:mod:`headroom.planning.credentials`);
6. check the plan against the servers (:mod:`.live_checks`: the periodic
   probes' last answers; a pass never waits for a server);
7. build the desired children (:mod:`headroom.builders.desired`);
8. contain foreign objects, apply what differs, prune (:mod:`.apply`), and
   the write pooler's reports of pods that are gone (:mod:`.pooler_reports`);
9. observe the children (:mod:`.observe`);
10. report: conditions, status, Events (:mod:`.outcome`).

Guarantees: an impossible profile changes nothing; an object with one of our
names that we did not create is never taken over, and nothing of its component
is applied or pointed at; only objects with our labels *and* our owner
reference are ever deleted; a child the API server refuses does not stop the
others, and the profile's status always says what happened.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from headroom.api import conditions, v1alpha1
from headroom.builders import desired
from headroom.kube import errors
from headroom.planning import credentials, object_storage, planner, recommendations, server_shares
from headroom.reconcile import (
    apply,
    cluster_view,
    deletion,
    facts,
    inputs,
    live_checks,
    observe,
    outcome,
    ownership,
    pooler_reports,
    probe,
    rollout,
    telemetry,
)

log = logging.getLogger(__name__)

Obj = cluster_view.Obj
LEGACY_FINALIZER = "headroom.dev/finalizer"  # put on profiles by kopf-based versions
MONITORING_KINDS = ("PrometheusRule", "PodMonitor", "ServiceMonitor")


@dataclass
class _Memo:
    """What the last pass of a profile saw, to skip passes that would change nothing."""

    fingerprint: tuple[Any, ...]
    clean: bool  # no failure, no conflict: the pass is a pure function of the fingerprint


class Reconciler:
    """Passes of every profile; one instance per operator process."""

    def __init__(
        self,
        cluster: cluster_view.Cluster,
        metrics: telemetry.Metrics,
        *,
        primary_check_seconds: float = 300.0,
        replica_check_seconds: float = 30.0,
        bucket_check_seconds: float = 300.0,
        probe_concurrency: int = probe.DEFAULT_SLOTS,
        allow_internal_endpoints: bool = False,
        agent_image: str = v1alpha1.AGENT_IMAGE,
        operator_namespace: str = "",
        ownership_key: bytes = b"",
    ) -> None:
        """``ownership_key``: the operator's key of retained children's proofs
        (:mod:`.ownership`; without one, a key of this process alone)."""
        self.cluster = cluster
        self.ownership_key = ownership_key or secrets.token_bytes(32)
        self.agent_image = agent_image
        self.operator_namespace = operator_namespace
        self.metrics = metrics
        self.probes = live_checks.Probes.make(
            primary_check_seconds=primary_check_seconds,
            replica_check_seconds=replica_check_seconds,
            bucket_check_seconds=bucket_check_seconds,
            slots=probe_concurrency,
            allow_internal_endpoints=allow_internal_endpoints,
        )
        self.applier = apply.Applier(cluster, metrics)
        self._memo: dict[str, _Memo] = {}
        self._inputs: dict[str, frozenset[cluster_view.InputRef]] = {}
        # profiles this process has tried to confirm from status.converged: the
        # next pass of each is a full one (it reads the probes again)
        self._resumed: set[str] = set()

    def forget(self, key: str) -> None:
        self.probes.release(key)
        self.applier.forget(key)
        self._memo.pop(key, None)
        self._inputs.pop(key, None)
        self._resumed.discard(key)

    # -- entry point ---------------------------------------------------------

    async def reconcile(self, key: str, *, force: bool = False) -> outcome.Outcome | None:
        """One pass of the profile ``key`` (namespace/name) as the cache has it.
        None when it is gone or being deleted (owner references take the
        children away); while its deletion waits for the pods that read its
        binding (:mod:`.deletion`), that wait's outcome. ``force``: run even
        if nothing changed (a retry)."""
        namespace, name = key.split("/", 1)
        body = self.cluster.profile(namespace, name)
        waiting = None
        if body is not None and body["metadata"].get("deletionTimestamp"):
            waiting = await deletion.settle(self.cluster, body, key=key)
        if body is None or waiting is not None or body["metadata"].get("deletionTimestamp"):
            self.forget(key)
            await self.cluster.use_inputs(key, ())
            return waiting
        if LEGACY_FINALIZER in (body["metadata"].get("finalizers") or []):
            await self.cluster.remove_finalizer(body, LEGACY_FINALIZER)
        change = deletion.finalizer_change(body)
        if change == "add":
            await self.cluster.add_finalizer(body, deletion.FINALIZER)
        elif change == "remove":
            await self.cluster.remove_finalizer(body, deletion.FINALIZER)
        memo = self._memo.get(key)
        # What this pass is a function of, taken before it reads anything:
        # anything that changes from here on makes the next trigger run.
        fingerprint = self._fingerprint(key, body)
        if not force and memo is not None and memo.clean and memo.fingerprint == fingerprint:
            return outcome.Outcome(status=body.get("status") or {}, skipped=True)
        if not force and memo is None and key not in self._resumed:
            self._resumed.add(key)
            if await self._confirm(key, body):
                status = body.get("status") or {}
                return outcome.Outcome(status=status, skipped=True, confirmed=True)
        result, clean = await self._pass(key, body)

        async def post(event: outcome.Event) -> None:
            try:
                await self.cluster.post_event(
                    body, type=event.type, reason=event.reason, message=event.message
                )
            except errors.KubeError as err:  # an Event is a courtesy; never fail the pass for it
                log.debug("could not record event %s on %s: %s", event.reason, key, err)

        # at once, not one after the other: a first pass has eight or more
        await asyncio.gather(*(post(event) for event in result.events))
        # A pass that wrote changed its own inputs (children, status): the next
        # trigger runs once more and, finding nothing to do, becomes the one
        # whose fingerprint later triggers are compared with.
        self._memo[key] = _Memo(
            fingerprint=fingerprint,
            clean=clean and not result.retry and result.writes == 0,
        )
        return result

    async def report_failure(self, key: str, err: BaseException) -> None:
        """Say on the profile that its pass raised ``err`` (the runtime calls
        this; the queue retries the key with backoff). A profile whose every
        pass fails must not read as healthy: kstatus calls a profile without
        conditions Current."""
        namespace, name = key.split("/", 1)
        body = self.cluster.profile(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        retriable = isinstance(err, TimeoutError) or (
            isinstance(err, errors.KubeError) and err.retriable
        )
        report = outcome.Report(self.cluster, body, key=key, on_inputs=lambda _: None)
        await report.failed(error=type(err).__name__, retriable=retriable)

    def _fingerprint(self, key: str, body: Obj) -> tuple[Any, ...]:
        meta = body["metadata"]
        uid = str(meta.get("uid", ""))
        refs = self._inputs.get(key, frozenset())
        return (
            uid,
            meta.get("resourceVersion"),
            self.cluster.children_versions(uid),
            self.cluster.children_versions(
                object_storage.retained_key(
                    str(meta.get("namespace", "")), str(meta.get("name", ""))
                )
            ),
            tuple(sorted((ref, self.cluster.version_of(ref)) for ref in refs)),
            tuple(sorted(self.cluster.facts().items())),
            self.probes.version(key),
            tuple(sorted(self.cluster.grants(key).items())),
            tuple(
                sorted(
                    (
                        p["metadata"].get("namespace", ""),
                        p["metadata"]["name"],
                        p["metadata"].get("resourceVersion"),
                    )
                    for p in self.cluster.prometheuses()
                )
            ),
        )

    # -- resuming after a restart ---------------------------------------------------

    def _settled(self, key: str, body: Obj, refs: Iterable[cluster_view.InputRef]) -> str:
        """What a pass that changed nothing was a function of, as it can be
        computed again by another process: the spec's generation and the
        resourceVersions of the children, the inputs and the cluster facts
        (status.converged.fingerprint)."""
        meta = body["metadata"]
        uid = str(meta.get("uid", ""))
        retained = object_storage.retained_key(
            str(meta.get("namespace", "")), str(meta.get("name", ""))
        )
        parts = [
            uid,
            meta.get("generation"),
            sorted(self.cluster.children_versions(uid)),
            sorted(self.cluster.children_versions(retained)),
            sorted((list(ref), self.cluster.version_of(ref)) for ref in refs),
            sorted(self.cluster.facts().items()),
            sorted((server, repr(grant)) for server, grant in self.cluster.grants(key).items()),
            sorted(
                (
                    p["metadata"].get("namespace", ""),
                    p["metadata"]["name"],
                    p["metadata"].get("resourceVersion"),
                )
                for p in self.cluster.prometheuses()
            ),
        ]
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _converged(self, key: str, body: Obj, refs: set[cluster_view.InputRef]) -> dict[str, Any]:
        return {
            "fingerprint": self._settled(key, body, refs),
            "inputs": sorted("/".join(ref) for ref in refs),
        }

    async def _confirm(self, key: str, body: Obj) -> bool:
        """Whether the profile is as its last pass that changed nothing left it
        (status.converged), read from the caches and its inputs' watches: then
        a restarted operator need not pass it before the others."""
        status = body.get("status") or {}
        converged = status.get("converged") or {}
        generation = body["metadata"].get("generation")
        if not converged.get("fingerprint") or status.get("observedGeneration") != generation:
            return False
        refs: set[cluster_view.InputRef] = set()
        for text in converged.get("inputs") or []:
            kind, namespace, name = [*str(text).split("/", 2), "", ""][:3]
            refs.add((kind, namespace, name))
        try:
            for ref in sorted(refs):
                await self.cluster.read_input(ref)
        except (cluster_view.InputError, errors.KubeError):
            return False
        if self._settled(key, body, refs) != converged["fingerprint"]:
            return False
        await self.cluster.use_inputs(key, refs)
        self._inputs[key] = frozenset(refs)
        return True

    # -- the pass --------------------------------------------------------------

    async def _pass(self, key: str, body: Obj) -> tuple[outcome.Outcome, bool]:
        """The pass: (what it reports, whether it was clean)."""

        def remember(refs: frozenset[cluster_view.InputRef]) -> None:
            self._inputs[key] = refs

        report = outcome.Report(self.cluster, body, key=key, on_inputs=remember)
        try:
            profile = v1alpha1.parse_profile(body)
        except v1alpha1.ProfileError as err:
            invalid = conditions.Cond(
                conditions.CONNECTION_BUDGET, "False", "InvalidSpec", str(err)
            )
            return await report.finish([invalid], keep_last=True), True
        try:
            cluster_facts = await facts.gather(
                self.cluster,
                profile,
                refs=report.refs,
                key=key,
                agent_image=self.agent_image,
                operator_namespace=self.operator_namespace,
            )
        except cluster_view.InputError as err:
            missing = conditions.Cond(
                conditions.READ_POOLER_READY, "False", err.reason, err.message
            )
            return await report.finish([missing], keep_last=True), True
        planned = planner.plan(profile, facts=cluster_facts)
        planned, tuning = self._tune(profile, planned, cluster_facts=cluster_facts, report=report)
        budget = report.budget(planned)
        if not planned.ok:  # nothing is applied: the children keep their last good state
            refused = report.refused(planned.problems)
            return await report.finish([refused], keep_last=True, budget=budget), True
        waits = [grant.wait for _, grant in sorted(planned.facts.grants.items()) if grant.wait]
        if waits:  # its share is there once the others' poolers have shrunk
            waiting = conditions.Cond(
                conditions.CONNECTION_BUDGET, "False", conditions.WAITING_FOR_ROOM, "; ".join(waits)
            )
            return await report.finish([waiting], keep_last=True, budget=budget), True
        within = outcome.within_budget(planned)
        try:
            found = await inputs.read(self.cluster, planned, refs=report.refs)
        except cluster_view.InputError as err:
            missing = conditions.Cond(conditions.POOLER_READY, "False", err.reason, err.message)
            finished = await report.finish([within, missing], keep_last=True, budget=budget)
            return finished, True
        creds = credentials.assemble(
            planned,
            login=found.login,
            kept=inputs.kept(self.cluster, planned),
            new=inputs.new,
            server_ca_pem=found.server_ca_pem,
            server_ca_revision=found.server_ca_revision,
            buckets=found.buckets,
            monitor_revision=found.monitor_revision or "",
        )

        def checked() -> live_checks.LiveChecks:
            return live_checks.check(
                self.probes,
                key=key,
                planned=planned,
                creds=creds,
                bucket_problems=found.bucket_problems,
                previous_status=report.previous_status,
                events=report.events,
            )

        live = checked()
        # For the limits the plan depends on, briefly: a server that answers at
        # once is used in this pass; one that does not frees the worker, and its
        # answer queues the profile again.
        if live.wait_seconds is not None and await self.probes.first_answers(
            key, within=live_checks.IN_PASS_SECONDS
        ):
            live = checked()
        if live.wait_seconds is not None:
            return await report.postpone(live.wait_seconds), False
        if live.problems:  # the servers' real limits cannot carry the plan
            refused = report.refused(live.problems)
            finished = await report.finish([refused, *live.checks], keep_last=True, budget=budget)
            return finished, True
        try:
            wanted = desired.build_parts(planned, creds, app_pod_selector=found.app_selector)
        except ValueError as err:  # builders refuse unsafe credentials
            invalid = conditions.Cond(
                conditions.POOLER_READY, "False", "CredentialsInvalid", str(err)
            )
            finished = await report.finish(
                [within, invalid, *live.checks], keep_last=True, budget=budget
            )
            return finished, True
        # what its poolers run before this pass: a server found over its
        # budget is brought back inside it by the shares, and the pass says so
        overruns = server_shares.overruns(
            planned,
            server_shares.running(
                planned.names,
                self.cluster.children(planned.uid),
                read_servers=[d.server for d in planned.demands[1:]],
            ),
        )
        applied = await self._apply(
            key,
            planned,
            creds=creds,
            app_selector=found.app_selector,
            wanted=wanted,
            events=report.events,
        )
        if applied.result.writes and not applied.result.failures:
            report.events += [
                outcome.Event("Warning", outcome.SERVER_OVER_BUDGET, text) for text in overruns
            ]
        # the agents' reports of pods that are gone (read only when there are more)
        await pooler_reports.prune(
            self.cluster,
            planned.names,
            children=self._children(planned),
            result=applied.result,
        )
        report.writes += applied.result.writes
        components = await self._observe(
            key, planned, found=found, live=live, creds=creds, applied=applied
        )
        clean = not applied.conflicts and not applied.result.failures
        # a pass that changed no child leaves what it read in status, so a
        # restarted operator can confirm the profile without passing it
        extra: dict[str, Any] = dict(live.read_status)
        if clean and not applied.result.retry and applied.result.writes == 0:
            extra["converged"] = self._converged(key, body, report.refs)
        recommended = observe.recommendations_of(
            planned,
            self._children(planned),
            previous=report.previous_status.get("recommendations"),
        )
        if recommended:
            extra["recommendations"] = recommended
        if tuning is not None:
            extra["tuning"] = tuning
        observed = self._children(planned)
        held = report.held(planned, children=observed)
        finished = await report.finish(
            [outcome.budget_condition(planned, held), *components],
            retry=applied.result.retry,
            **extra,
            budget=report.budget(planned, held=held),
            pooler=applied.pooler_status,
            binding={"name": planned.names.binding},
        )
        return finished, clean

    def _tune(
        self,
        profile: v1alpha1.ScalingProfile,
        planned: planner.Plan,
        *,
        cluster_facts: planner.Facts,
        report: outcome.Report,
    ) -> tuple[planner.Plan, dict[str, Any] | None]:
        """spec.pooler.autoTune: the plan at the size it applied last (status.tuning)
        while that still fits, then a change the write pooler's recommendation calls
        for (an Event each); the plan to apply and status.tuning."""
        if not planned.ok or not profile.spec.pooler.auto_tune.enabled:
            return planned, None
        previous = report.previous_status.get("tuning")
        stored = recommendations.tuned_size(profile, report.previous_status)
        if stored is not None:
            tuned = planner.plan(
                recommendations.with_pool_size(profile, stored), facts=cluster_facts
            )
            if tuned.ok:
                planned = tuned
            else:
                previous = None
                report.events.append(
                    outcome.Event(
                        "Warning",
                        outcome.POOL_TUNED,
                        f"autoTune: default_pool_size {stored} no longer fits "
                        f"({tuned.problem_text()}); back to the plan's "
                        f"{planned.budget.default_pool_size}",
                    )
                )
        found = observe.recommendations_of(
            planned,
            self._children(planned),
            previous=report.previous_status.get("recommendations"),
        )
        decided = recommendations.tune(
            profile,
            previous=previous if isinstance(previous, dict) else None,
            recommended=found,
            current=planned.budget.default_pool_size,
            now=datetime.datetime.now(datetime.UTC),
            fits=lambda size: (
                planner.plan(recommendations.with_pool_size(profile, size), facts=cluster_facts).ok
            ),
        )
        if decided.change is not None and decided.size is not None:
            report.events.append(outcome.Event("Normal", outcome.POOL_TUNED, decided.change))
            planned = planner.plan(
                recommendations.with_pool_size(profile, decided.size), facts=cluster_facts
            )
        return planned, decided.status

    def _children(self, planned: planner.Plan) -> dict[str, Obj]:
        """Our children: owned by the profile, and the retained ones that carry
        its name (no owner reference; a re-created profile adopts them): only
        the kinds and names the plan retains, whatever else carries the marks."""
        owned = self.cluster.children(planned.uid)
        retained = ownership.retained_children(
            self.cluster.children(object_storage.retained_key(planned.namespace, planned.name)),
            allowed=object_storage.retained_keys(planned.buckets),
            owned=owned,
            key=self.ownership_key,
            profile=planned.name,
        )
        return {**retained, **owned}

    async def _apply(
        self,
        key: str,
        planned: planner.Plan,
        *,
        creds: credentials.Credentials,
        app_selector: Obj | None,
        wanted: desired.Desired,
        events: list[outcome.Event],
    ) -> _Applied:
        """Contain the components an object of somebody else's stands in, then
        apply what differs and prune what is no longer wanted."""
        children = self._children(planned)
        conflicts = await self.applier.conflicts(planned, wanted, children=children)
        every_component = wanted.component_of
        contained = desired.contained_closure(planned, {every_component[k] for k in conflicts})
        if contained:
            wanted = desired.build_parts(
                planned, creds, app_pod_selector=app_selector, without=contained
            )
        frozen = {k for k, c in every_component.items() if c in contained}
        proven = desired.Desired(
            objects=ownership.stamp_proofs(
                wanted.objects, key=self.ownership_key, profile=planned.name
            ),
            component_of=wanted.component_of,
        )
        events += _restart_events(planned, proven.objects, children)
        proven = _earlier_templates(planned, proven, children, events)
        result = await self.applier.apply_all(
            key, wanted=proven, children=children, frozen=frozen, events=events
        )
        # our own workloads of a contained component would mount or point at
        # the other object: they go away (a StatefulSet keeps its volumes)
        await self.applier.scale_away(
            key,
            {k: children[k] for k in frozen if k in children},
            result=result,
            events=events,
        )
        return _Applied(result=result, conflicts=conflicts, contained=contained, wanted=wanted)

    async def _observe(
        self,
        key: str,
        planned: planner.Plan,
        *,
        found: inputs.Inputs,
        live: live_checks.LiveChecks,
        creds: credentials.Credentials,
        applied: _Applied,
    ) -> list[conditions.Cond]:
        """Every component's condition, from the children as they are now."""
        observed = self.applier.settled(key, self._children(planned))
        pooler, applied.pooler_status = observe.pooler(planned, observed)
        conflict_text = "objects exist that Headroom did not create: " + ", ".join(
            applied.conflicts
        )
        components = [pooler, *live.checks]
        baseline = observe.load_baseline(planned, observed)
        if baseline is not None:
            components.append(baseline)
        components += observe.components(
            planned,
            observed,
            app_found=found.app is not None,
            pending_claims=await self._pending_claims(planned, observed),
            primary=live.primary,
            monitor_found=found.monitor_revision is not None,
        )
        storage_ready = observe.storage_ready(
            planned,
            observed,
            problems=live.bucket_problems,
            found=creds.buckets,
            notes=live.bucket_notes,
        )
        if storage_ready is not None:
            components.append(storage_ready)
        selected = observe.alerts_selected(
            planned,
            [k for k in applied.wanted.objects if k.split("/", 1)[0] in MONITORING_KINDS],
        )
        if selected is not None:
            components.append(selected)
        if applied.contained:
            contained = ", ".join(sorted(applied.contained))
            components.append(
                conditions.Cond(
                    conditions.CHILDREN_OWNED,
                    "False",
                    "NameConflict",
                    f"{conflict_text}; not applied and not in the binding: {contained}",
                )
            )
        components = _name_conflicts(components, applied.contained, conflict_text)
        components.append(applied.result.condition())
        if found.app is None:
            components.append(
                conditions.Cond(
                    conditions.APP_FOUND,
                    "False",
                    "AppDeploymentNotFound",
                    f"Deployment {planned.app.deployment} (spec.app.deployment) does not exist",
                )
            )
        return components

    async def _pending_claims(
        self, planned: planner.Plan, observed: dict[str, Obj]
    ) -> tuple[observe.PendingClaim, ...]:
        """The data claims of Redis StatefulSets that are not ready yet and not
        Bound: read only then (from the API server's cache), so a converged
        profile costs no request; a claim that binds rolls its pod out, and the
        StatefulSet's status change brings the next pass."""
        pending = []
        classes: dict[str, bool] = {}
        for name, spec_field in observe.unready_claims(planned, observed):
            claim = await self.cluster.get_live("PersistentVolumeClaim", planned.namespace, name)
            if claim is None or (claim.get("status") or {}).get("phase") != "Pending":
                continue
            storage_class = (claim.get("spec") or {}).get("storageClassName") or None
            if storage_class is not None and storage_class not in classes:
                exists = await self.cluster.get_live("StorageClass", "", storage_class)
                classes[storage_class] = exists is not None
            pending.append(
                observe.PendingClaim(
                    name=name,
                    field=spec_field,
                    storage_class=storage_class,
                    class_exists=classes.get(storage_class or "", False),
                )
            )
        return tuple(pending)


def _restart_events(
    planned: planner.Plan, wanted: dict[str, Obj], children: dict[str, Obj]
) -> list[outcome.Event]:
    """An Event for each config whose change rolls pods: a pgbouncer.ini
    setting PgBouncer takes only at start, a redis.conf directive Redis takes
    only at start, a Redis container's image or memory (everything else
    reaches the running pods by their agents)."""
    found = []
    for which, config_map in (
        ("write", planned.names.pooler_config),
        ("read", planned.names.read_pooler_config),
    ):
        pooler = f"ConfigMap/{config_map}"
        if pooler in wanted:
            restart = rollout.restart_settings_changed(wanted[pooler], children.get(pooler))
            if restart:
                text = rollout.restart_message(restart, which=which)
                found.append(outcome.Event("Normal", outcome.POOLER_RESTART, text))
    for instance in planned.redis:
        config = f"ConfigMap/{planned.names.redis_config(instance.name)}"
        if config in wanted:
            restart = rollout.redis_restart_changed(wanted[config], children.get(config))
            if restart:
                text = rollout.redis_restart_message(instance.name, restart)
                found.append(outcome.Event("Normal", outcome.REDIS_RESTART, text))
        workload = f"StatefulSet/{planned.names.redis(instance.name)}"
        live = children.get(workload)
        if workload in wanted and live is not None and not rollout.is_agentless_redis(live):
            changes = rollout.redis_pod_changes(wanted[workload], live)
            if changes:
                text = rollout.redis_pod_message(instance.name, changes)
                found.append(outcome.Event("Normal", outcome.REDIS_RESTART, text))
    return found


class _Earlier(NamedTuple):
    """A workload whose pods an earlier release may have started: how to tell
    (``is_earlier``), why they must roll now (``rolls``: nothing while they
    would roll for the new release alone), and the Event when they do."""

    workload: str  # its key among the children
    config: str  # the key of the ConfigMap whose data it reads
    is_earlier: Callable[[Obj], bool]
    rolls: Callable[..., list[str]]  # (desired, live, *, data) -> reasons
    reason: str  # the Event's
    message: Callable[[list[str]], str]


def _earlier_workloads(planned: planner.Plan) -> Iterable[_Earlier]:
    names = planned.names
    for instance in planned.redis:
        yield _Earlier(
            f"StatefulSet/{names.redis(instance.name)}",
            f"ConfigMap/{names.redis_config(instance.name)}",
            rollout.is_agentless_redis,
            rollout.agentless_redis_rolls,
            outcome.REDIS_RESTART,
            functools.partial(rollout.agentless_redis_message, instance.name),
        )
    yield _Earlier(
        f"Deployment/{names.read_pooler}",
        f"ConfigMap/{names.read_pooler_config}",
        rollout.is_reloadless_read_pooler,
        rollout.reloadless_read_pooler_rolls,
        outcome.POOLER_RESTART,
        rollout.reloadless_read_pooler_message,
    )


def _earlier_templates(
    planned: planner.Plan,
    wanted: desired.Desired,
    children: dict[str, Obj],
    events: list[outcome.Event],
) -> desired.Desired:
    """Pods an earlier release started (Redis without the config agent, read
    poolers whose agent did not RELOAD pgbouncer.ini) keep their template
    until something they run changes; then an Event says why they roll
    (rollout.agentless_redis_rolls, rollout.reloadless_read_pooler_rolls)."""
    objects = dict(wanted.objects)
    for earlier in _earlier_workloads(planned):
        live = children.get(earlier.workload)
        if earlier.workload not in objects or earlier.config not in objects or live is None:
            continue
        if not earlier.is_earlier(live):
            continue
        data = objects[earlier.config]["data"]
        reasons = earlier.rolls(objects[earlier.workload], live, data=data)
        if reasons:
            events.append(outcome.Event("Normal", earlier.reason, earlier.message(reasons)))
        else:
            objects[earlier.workload] = rollout.with_live_template(objects[earlier.workload], live)
    return desired.Desired(objects=objects, component_of=wanted.component_of)


def _name_conflicts(
    found: list[conditions.Cond], contained: frozenset[str], conflict_text: str
) -> list[conditions.Cond]:
    """Every condition of a contained component says NameConflict (one that
    is not reported yet, a component never applied, is added)."""
    types = {t: c for c in sorted(contained) for t in desired.conditions_of(c)}
    kept = [c for c in found if c.type not in types]
    for kind, component in types.items():
        text = f"{component} is not applied and not in the binding: {conflict_text}"
        kept.append(conditions.Cond(kind, "False", "NameConflict", text))
    return kept


@dataclass
class _Applied:
    """What the apply phase did, for the observers."""

    result: apply.ApplyResult
    conflicts: list[str]  # keys of wanted objects somebody else owns
    contained: frozenset[str]  # the components left alone because of them
    wanted: desired.Desired  # as applied (without the contained components)
    pooler_status: dict[str, Any] = field(default_factory=dict)
