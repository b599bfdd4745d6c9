"""One idempotent reconcile pass of a ScalingProfile, on observed state.

The runtime's workers call :meth:`Engine.reconcile` for a profile key, whatever
the trigger. The pass reads everything from the watch caches (:class:`Cluster`),
computes the whole desired state, and writes only what differs:

parse -> plan -> inputs -> desired -> contain foreign objects -> prune
autoscalers -> apply what differs, stage by stage -> prune leftovers ->
observe -> conditions -> status (written only when it changed).

Guarantees: an impossible profile changes nothing; an object with one of our
names that we did not create is never taken over, and nothing of its component
is applied or pointed at; only objects with our labels *and* our owner
reference are ever deleted; a child the API server refuses does not stop the
others, and the profile's status always says what happened.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography import x509

from headroom.api import conditions, v1alpha1
from headroom.api import status as status_models
from headroom.builders import (
    alerts,
    bucket_server,
    cnpg,
    common,
    desired,
    pgbouncer,
    readpool,
)
from headroom.kube import errors
from headroom.planning import bucket_server as server_mod
from headroom.planning import budget as budget_mod
from headroom.planning import membership, monitoring, server_shares
from headroom.planning import plan as plan_mod
from headroom.planning import replicas as replicas_mod
from headroom.planning import storage as storage_mod
from headroom.reconcile import buckets as bucket_probe
from headroom.reconcile import compare, observe, watches
from headroom.reconcile import metrics as metrics_mod
from headroom.reconcile import primary as primary_mod
from headroom.reconcile import replicas as replica_probe

log = logging.getLogger(__name__)

Obj = dict[str, Any]
InputRef = tuple[str, str, str]  # (kind, namespace, name)
LEGACY_FINALIZER = "headroom.dev/finalizer"  # put on profiles by kopf-based versions
MONITORING_KINDS = ("PrometheusRule", "PodMonitor", "ServiceMonitor")


class Cluster(Protocol):
    """What a pass reads (from caches) and writes. The real one is
    :class:`headroom.runtime.cluster.CachedCluster`; tests use a fake."""

    def profile(self, namespace: str, name: str) -> Obj | None: ...
    def children(self, owner_uid: str) -> dict[str, Obj]: ...  # "Kind/name" -> object
    def cached(self, kind: str, namespace: str, name: str) -> Obj | None: ...
    def served(self, kind: str) -> bool: ...
    def facts(self) -> dict[str, bool]: ...
    def prometheuses(self) -> list[Obj]: ...  # monitoring.coreos.com/v1 Prometheus objects
    def shared_uses(self, key: str) -> tuple[budget_mod.SharedUse, ...]: ...
    def version_of(self, ref: InputRef) -> str: ...
    def children_versions(self, owner_uid: str) -> frozenset[tuple[str, str, str]]: ...
    async def read_input(self, ref: InputRef) -> Obj | None: ...
    async def use_inputs(self, user: str, refs: Iterable[InputRef]) -> None: ...
    async def get_live(self, kind: str, namespace: str, name: str) -> Obj | None: ...
    async def apply(self, obj: Obj, *, subresource: str | None = None) -> Obj: ...
    async def remove_keys(self, secret: Obj, keys: list[str]) -> Obj: ...
    async def delete(self, obj: Obj) -> bool: ...
    async def remove_finalizer(self, profile: Obj, finalizer: str) -> None: ...
    async def post_event(self, involved: Obj, *, type: str, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    ready: bool = False
    writes: int = 0
    skipped: bool = False  # nothing changed since the last pass: no work done
    retry: bool = False  # something transient failed: the queue retries with backoff


@dataclass
class _Memo:
    """What the last pass of a profile saw, to skip passes that would change nothing."""

    fingerprint: tuple[Any, ...]
    clean: bool  # no failure, no conflict: the pass is a pure function of the fingerprint
    probe_key: primary_mod.ProbeKey | None = None


class InputError(Exception):
    """A referenced input (credentials Secret) is missing or unusable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ca_problem(pem: str) -> str | None:
    """Why ``pem`` cannot be the CA bundle the pooler verifies Postgres with
    (PgBouncer would refuse to start, or every TLS handshake would fail)."""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        return "no PEM certificate"
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as err:
        return f"not a valid PEM certificate ({err})"
    now = datetime.datetime.now(datetime.UTC)
    current = [c for c in certificates if c.not_valid_before_utc <= now <= c.not_valid_after_utc]
    if current:
        return None
    ends = max(c.not_valid_after_utc for c in certificates)
    if ends < now:
        return f"every certificate in it has expired (the last on {ends:%Y-%m-%d})"
    starts = min(c.not_valid_before_utc for c in certificates)
    return f"no certificate in it is valid yet (the first from {starts:%Y-%m-%d %H:%M} UTC)"


def _decode(secret: Obj, key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8", errors="strict")


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _api_message(err: Exception) -> str:
    if isinstance(err, errors.ApiError):
        return f"{err.status} {err.reason}: {err.message}"[:400]
    return str(err)[:400]


class Engine:
    """Passes of every profile; one instance per operator process."""

    def __init__(
        self,
        cluster: Cluster,
        metrics: metrics_mod.Metrics,
        *,
        primary_check_seconds: float = 300.0,
        replica_check_seconds: float = 30.0,
        bucket_check_seconds: float = 300.0,
        agent_image: str = v1alpha1.AGENT_IMAGE,
        operator_namespace: str = "",
    ) -> None:
        self.cluster = cluster
        self.agent_image = agent_image
        self.operator_namespace = operator_namespace
        self.metrics = metrics
        self.probe = primary_mod.PrimaryProbe(ttl_seconds=primary_check_seconds)
        self.replica_probe = replica_probe.ReplicaProbe(ttl_seconds=replica_check_seconds)
        self.bucket_probe = bucket_probe.BucketProbe(ttl_seconds=bucket_check_seconds)
        self._memo: dict[str, _Memo] = {}
        # (profile key, child key) -> (desired hash, resourceVersion after our
        # apply): the object is as we left it, even where the API server
        # normalised a field our comparison does not know about
        self._applied: dict[tuple[str, str], tuple[str, str]] = {}
        self._inputs: dict[str, frozenset[InputRef]] = {}

    def forget(self, key: str) -> None:
        self.probe.release(key)
        self.replica_probe.release(key)
        self.bucket_probe.release(key)
        self._memo.pop(key, None)
        self._inputs.pop(key, None)
        for k in [k for k in self._applied if k[0] == key]:
            del self._applied[k]

    # -- entry point ---------------------------------------------------------

    async def reconcile(self, key: str, *, force: bool = False) -> Outcome | None:
        """One pass of the profile ``key`` (namespace/name) as the cache has it.
        None when it is gone or being deleted (owner references take the
        children away). ``force``: run even if nothing changed (a retry)."""
        namespace, name = key.split("/", 1)
        body = self.cluster.profile(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.forget(key)
            await self.cluster.use_inputs(key, ())
            return None
        if LEGACY_FINALIZER in (body["metadata"].get("finalizers") or []):
            await self.cluster.remove_finalizer(body, LEGACY_FINALIZER)
        memo = self._memo.get(key)
        # What this pass is a function of, taken before it reads anything:
        # anything that changes from here on makes the next trigger run.
        fingerprint = self._fingerprint(key, body)
        if not force and memo is not None and memo.clean and memo.fingerprint == fingerprint:
            return Outcome(status=body.get("status") or {}, skipped=True)
        outcome, clean, probe_key = await self._pass(key, body)
        for event in outcome.events:
            try:
                await self.cluster.post_event(
                    body, type=event.type, reason=event.reason, message=event.message
                )
            except errors.KubeError as err:  # an Event is a courtesy; never fail the pass for it
                log.debug("could not record event %s on %s: %s", event.reason, key, err)
        # A pass that wrote changed its own inputs (children, status): the next
        # trigger runs once more and, finding nothing to do, becomes the one
        # whose fingerprint later triggers are compared with.
        self._memo[key] = _Memo(
            fingerprint=fingerprint,
            clean=clean and not outcome.retry and outcome.writes == 0,
            probe_key=probe_key,
        )
        return outcome

    def _fingerprint(self, key: str, body: Obj) -> tuple[Any, ...]:
        meta = body["metadata"]
        uid = str(meta.get("uid", ""))
        inputs = self._inputs.get(key, frozenset())
        memo = self._memo.get(key)
        return (
            uid,
            meta.get("resourceVersion"),
            self.cluster.children_versions(uid),
            self.cluster.children_versions(
                storage_mod.retained_key(str(meta.get("namespace", "")), str(meta.get("name", "")))
            ),
            tuple(sorted((ref, self.cluster.version_of(ref)) for ref in inputs)),
            tuple(sorted(self.cluster.facts().items())),
            self.probe.version(memo.probe_key if memo is not None else None),
            self.replica_probe.version(key),
            self.bucket_probe.version(key),
            self.cluster.shared_uses(key),
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

    # -- the pass --------------------------------------------------------------

    async def _pass(self, key: str, body: Obj) -> tuple[Outcome, bool, primary_mod.ProbeKey | None]:
        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        previous_status: dict[str, Any] = body.get("status") or {}
        previous = previous_status.get("conditions") or []
        events: list[Event] = []
        writes = 0
        refs: set[InputRef] = set()

        async def finish(
            components: list[conditions.Cond], *, keep_last: bool = False, **extra: Any
        ) -> Outcome:
            """``keep_last``: a failure path; conditions of components this pass
            did not get to, and the last status.pooler/binding, stay as they were."""
            nonlocal writes
            top = conditions.ready(components)
            events.extend(
                Event(
                    "Normal" if c.status == "True" else "Warning",
                    c.reason,
                    f"{c.type}: {c.message}",
                )
                for c in conditions.notable(previous, [top, *components])
            )
            merged = conditions.merge(
                previous, [top, *components], now=_now(), generation=generation
            )
            status: dict[str, Any] = {}
            if keep_last:
                seen = {c["type"] for c in merged}
                merged += [c for c in previous if c.get("type") not in seen]
                status = {k: v for k, v in previous_status.items() if k in ("pooler", "binding")}
            status |= {"observedGeneration": generation, "conditions": merged, **extra}
            await self.cluster.use_inputs(key, refs)
            self._inputs[key] = frozenset(refs)
            if _status_differs(previous_status, status):
                await self._write_status(meta, status)
                writes += 1
            return Outcome(status=status, events=events, ready=top.status == "True", writes=writes)

        try:
            profile = v1alpha1.parse_profile(body)
        except v1alpha1.ProfileError as err:
            invalid = conditions.Cond(
                conditions.CONNECTION_BUDGET, "False", "InvalidSpec", str(err)
            )
            return await finish([invalid], keep_last=True), True, None

        served = self.cluster.facts()
        facts = plan_mod.Facts(
            keda=served.get("keda", False),
            cnpg=served.get("cnpg", False),
            prometheus_operator=served.get("prometheus_operator", False),
            shared=self.cluster.shared_uses(key),
            agent_image=self.agent_image,
            operator_namespace=self.operator_namespace,
            cosi=storage_mod.preferred_cosi_version(
                {v: served.get(f"cosi_{v}", False) for v in storage_mod.COSI_VERSIONS}
            ),
        )
        planned = plan_mod.plan(profile, facts=facts)
        if facts.prometheus_operator and planned.alerts is not None:
            facts = dataclasses.replace(
                facts, prometheus_selection=await self._prometheus_selection(planned, refs)
            )
            planned = dataclasses.replace(planned, facts=facts)
        try:
            facts = await self._cnpg_cluster(profile, facts, refs)
        except InputError as err:
            missing = conditions.Cond(
                conditions.READ_POOLER_READY, "False", err.reason, err.message
            )
            return await finish([missing], keep_last=True), True, None
        if facts.cnpg_cluster is not None:
            planned = plan_mod.plan(profile, facts=facts)
        budget = _budget_status(
            planned,
            since=server_shares.planned_since(body)
            or datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds"),
        )
        if not planned.ok:
            # Nothing is applied: the children keep their last good state.
            return await finish([_exceeded(planned)], keep_last=True, budget=budget), True, None
        budget_cond = conditions.Cond(
            conditions.CONNECTION_BUDGET,
            "True",
            "WithinBudget",
            f"{planned.budget.server_connections} server connections of "
            f"{planned.budget.available} available, margin {planned.budget.margin}; "
            f"client demand {planned.budget.client_demand}",
        )

        app_ref: InputRef = ("Deployment", planned.namespace, planned.app.deployment)
        refs.add(app_ref)
        app = await self.cluster.read_input(app_ref)
        app_selector = (app or {}).get("spec", {}).get("selector")
        try:
            creds = await self._credentials(planned, refs)
        except InputError as err:
            missing = conditions.Cond(conditions.POOLER_READY, "False", err.reason, err.message)
            return await finish([budget_cond, missing], keep_last=True, budget=budget), True, None
        bucket_problems: dict[str, tuple[str, str]] = {}
        bucket_notes: dict[str, str] = {}
        if planned.buckets:
            found_buckets, bucket_problems = await self._bucket_credentials(
                planned, refs, server_keys=creds.s3_server
            )
            creds = dataclasses.replace(creds, buckets=found_buckets)
            verdicts = await self.bucket_probe.check(
                bucket_probe.targets(planned, found_buckets), user=key
            )
            for name, verdict in verdicts.items():
                if verdict.reason is not None:  # in the binding still: the check may be wrong
                    bucket_problems[name] = (verdict.reason, verdict.message)
                if verdict.note:
                    bucket_notes[name] = verdict.note
        else:
            self.bucket_probe.release(key)
        checks: list[conditions.Cond] = []
        probe_key = None
        if planned.database.read_limits:
            probe_key = self.probe.key(planned, creds)
            live, primary_cond = await self.probe.check(planned, creds, user=key)
            checks.append(primary_cond)
            if live is not None:
                facts = dataclasses.replace(facts, primary=live)
                planned = plan_mod.plan(profile, facts=facts)
                if not planned.ok:  # the declared limits are higher than the real ones
                    outcome = await finish(
                        [_exceeded(planned), *checks], keep_last=True, budget=budget
                    )
                    return outcome, True, probe_key
        read_status: dict[str, Any] = {}
        if _measures_replicas(planned):
            planned, read_status = await self._replicas(
                key,
                profile=profile,
                planned=planned,
                creds=creds,
                facts=facts,
                previous_status=previous_status,
                checks=checks,
                events=events,
            )
            if not planned.ok:  # a replica's real limits are below the declared ones
                outcome = await finish([_exceeded(planned), *checks], keep_last=True, budget=budget)
                return outcome, True, probe_key
        else:
            self.replica_probe.release(key)
        try:
            wanted = desired.build_parts(planned, creds, app_pod_selector=app_selector)
        except ValueError as err:  # builders refuse unsafe credentials
            invalid = conditions.Cond(
                conditions.POOLER_READY, "False", "CredentialsInvalid", str(err)
            )
            outcome = await finish([budget_cond, invalid, *checks], keep_last=True, budget=budget)
            return outcome, True, probe_key

        children = self._children(planned)
        conflicts = await self._conflicts(planned, wanted, children)
        every_component = wanted.component_of
        contained = desired.contained_closure(planned, {wanted.component_of[k] for k in conflicts})
        if contained:
            wanted = desired.build_parts(
                planned, creds, app_pod_selector=app_selector, without=contained
            )
        apply_result = await self._apply_all(
            key,
            wanted=wanted,
            children=children,
            frozen={k for k, c in every_component.items() if c in contained},
            events=events,
        )
        writes += apply_result.writes

        observed = self._children(planned)
        if cnpg.uses_cnpg_poolers(planned):
            pooler_cond, pooler_status = _observe_cnpg_pooler(
                planned, observed.get(f"Pooler/{planned.names.pooler_service}")
            )
        else:
            pooler_cond, pooler_status = _observe_pooler(
                planned, observed.get(f"Deployment/{planned.names.pooler}")
            )
        conflict_text = "objects exist that Headroom did not create: " + ", ".join(conflicts)
        if desired.POOLER in contained:
            pooler_cond = conditions.Cond(
                conditions.POOLER_READY, "False", "NameConflict", conflict_text
            )
        components = [budget_cond, pooler_cond, *checks]
        components += observe.components(
            planned,
            observed,
            app_found=app is not None,
            pending_claims=await self._pending_claims(planned, observed),
        )
        storage_cond = observe.storage_ready(
            planned, observed, problems=bucket_problems, found=creds.buckets, notes=bucket_notes
        )
        if storage_cond is not None:
            components.append(storage_cond)
        selected = observe.alerts_selected(
            planned, [k for k in wanted.objects if k.split("/", 1)[0] in MONITORING_KINDS]
        )
        if selected is not None:
            components.append(selected)
        if contained - {desired.POOLER}:
            names = ", ".join(sorted(contained - {desired.POOLER}))
            components.append(
                conditions.Cond(
                    conditions.CHILDREN_OWNED,
                    "False",
                    "NameConflict",
                    f"{conflict_text}; not applied and not in the binding: {names}",
                )
            )
        components.append(apply_result.condition())
        if app is None:
            components.append(
                conditions.Cond(
                    conditions.APP_FOUND,
                    "False",
                    "AppDeploymentNotFound",
                    f"Deployment {planned.app.deployment} (spec.app.deployment) does not exist",
                )
            )
        outcome = await finish(
            components,
            **read_status,
            budget=budget,
            pooler=pooler_status,
            binding={"name": planned.names.binding},
        )
        outcome.retry = apply_result.retry
        return outcome, not conflicts and not apply_result.failures, probe_key

    def _children(self, planned: plan_mod.Plan) -> dict[str, Obj]:
        """Our children: owned by the profile, and the retained ones that carry
        its name (no owner reference; a re-created profile adopts them)."""
        found = self.cluster.children(storage_mod.retained_key(planned.namespace, planned.name))
        found.update(self.cluster.children(planned.uid))
        return found

    # -- inputs ---------------------------------------------------------------

    async def _bucket_credentials(
        self,
        planned: plan_mod.Plan,
        refs: set[InputRef],
        *,
        server_keys: server_mod.ServerKeys | None = None,
    ) -> tuple[dict[str, storage_mod.BucketCredentials], dict[str, tuple[str, str]]]:
        """Each bucket's credentials from its Secret (the profile's for s3, the
        one the COSI driver writes for cosi; for builtin the app keys Headroom
        generated), or why not (reason, message)."""
        found: dict[str, storage_mod.BucketCredentials] = {}
        problems: dict[str, tuple[str, str]] = {}
        for bucket in planned.buckets:
            if bucket.builtin is not None:
                assert server_keys is not None
                found[bucket.name] = bucket_server.credentials(planned, bucket, server_keys)
                continue
            if bucket.cosi is not None and not bucket.cosi_version:
                problems[bucket.name] = (
                    "COSINotInstalled",
                    "COSI is not installed (no served objectstorage.k8s.io BucketClaim and "
                    "BucketAccess, v1alpha1 or v1alpha2)",
                )
                continue
            ref: InputRef = ("Secret", planned.namespace, bucket.credentials_secret)
            refs.add(ref)
            secret = await self.cluster.read_input(ref)
            if secret is None:
                problems[bucket.name] = (
                    ("CredentialsPending", f"the COSI driver has not written Secret {ref[2]} yet")
                    if bucket.cosi is not None
                    else (
                        "CredentialsSecretMissing",
                        f"Secret {ref[2]} ({bucket.credentials_field}.name) does not exist",
                    )
                )
                continue
            try:
                data = {k: _decode(secret, k) or "" for k in secret.get("data") or {}}
                found[bucket.name] = storage_mod.credentials_from(
                    bucket,
                    data,
                    secret=ref[2],
                    revision=str(secret["metadata"].get("resourceVersion", "")),
                )
            except (UnicodeDecodeError, ValueError) as err:
                reason = getattr(err, "reason", "CredentialsInvalid")
                text = (
                    str(err)
                    if isinstance(err, storage_mod.CredentialsError)
                    else (f"Secret {ref[2]} holds values that are not UTF-8")
                )
                problems[bucket.name] = (reason, text)
        return found, problems

    async def _input_secret(
        self,
        planned: plan_mod.Plan,
        refs: set[InputRef],
        name: str,
        *,
        field_path: str,
        reason: str,
    ) -> Obj:
        """A Secret the profile references (never ours); InputError when missing."""
        ref: InputRef = ("Secret", planned.namespace, name)
        refs.add(ref)
        found = await self.cluster.read_input(ref)
        if found is None:
            raise InputError(reason, f"Secret {name} ({field_path}) does not exist")
        return found

    async def _replicas(
        self,
        key: str,
        *,
        profile: v1alpha1.ScalingProfile,
        planned: plan_mod.Plan,
        creds: common.Credentials,
        facts: plan_mod.Facts,
        previous_status: dict[str, Any],
        checks: list[conditions.Cond],
        events: list[Event],
    ) -> tuple[plan_mod.Plan, dict[str, Any]]:
        """Measure the replicas (their last reading): the membership the agent
        would decide, an Event per change since the last status, their own
        limits (a replan when they were read)."""
        reading = await self.replica_probe.check(planned, creds, user=key)
        config = readpool.agent_config(planned)
        before = {
            str(r.get("name")): bool(r.get("inPool"))
            for r in previous_status.get("readReplicas") or []
            if isinstance(r, dict)
        }
        names = {r.name for r in config.replicas}
        found = membership.decide(
            config,
            observed={r.name: r.observed for r in reading},
            previous={n: member for n, member in before.items() if n in names},
        )
        events.extend(
            Event("Normal" if "joins" in line or "again" in line else "Warning", "ReadPool", line)
            for line in found.changes
        )
        checks.append(_in_pool_condition(found, config))
        live = tuple((r.name, r.limits) for r in reading if r.limits is not None)
        if live:
            planned = plan_mod.plan(profile, facts=dataclasses.replace(facts, replica_limits=live))
        statuses = [
            status_models.ReadReplicaStatus(
                name=v.name,
                host=v.host,
                in_pool=v.member,
                lag_seconds=_finite(r.observed.lag_seconds),
                lag_bytes=r.observed.lag_bytes,
                reason=v.reason[:1024],
            ).model_dump(by_alias=True, exclude_none=True)
            for v, r in zip(found.verdicts, reading, strict=True)
        ]
        return planned, {"readReplicas": statuses}

    async def _prometheus_selection(
        self, planned: plan_mod.Plan, refs: set[InputRef]
    ) -> monitoring.Selection:
        """What the cluster's Prometheus objects select, for the rules' and
        monitors' labels. The profile's namespace is read (its own watch) only
        when a namespace selector looks at more than its name."""
        found = self.cluster.prometheuses()
        labels: dict[str, str] = {}
        if any(_needs_namespace_labels(p) for p in found):
            ref: InputRef = ("Namespace", "", planned.namespace)
            refs.add(ref)
            namespace = await self.cluster.read_input(ref)
            labels = dict(((namespace or {}).get("metadata") or {}).get("labels") or {})
        return monitoring.select(
            found,
            namespace=planned.namespace,
            namespace_labels=labels,
            own_labels=alerts.own_labels(planned),
        )

    async def _cnpg_cluster(
        self, profile: v1alpha1.ScalingProfile, facts: plan_mod.Facts, refs: set[InputRef]
    ) -> plan_mod.Facts:
        """With readReplicas mode cnpg and CloudNativePG installed, the Cluster's
        instances and max_connections (read, never written)."""
        rr = profile.spec.database.read_replicas
        if rr is None or rr.cnpg is None or not facts.cnpg:
            return facts
        ref: InputRef = ("Cluster", profile.namespace, rr.cnpg.cluster)
        refs.add(ref)
        found = await self.cluster.read_input(ref)
        if found is None:
            raise InputError(
                "CNPGClusterNotFound",
                f"CloudNativePG Cluster {rr.cnpg.cluster} "
                "(spec.database.readReplicas.cnpg.cluster) does not exist",
            )
        return dataclasses.replace(facts, cnpg_cluster=replicas_mod.cnpg_cluster(found))

    async def _credentials(self, planned: plan_mod.Plan, refs: set[InputRef]) -> common.Credentials:
        ref = planned.database.credentials_secret
        source = await self._input_secret(
            planned,
            refs,
            ref.name,
            field_path="spec.database.credentialsSecret.name",
            reason="CredentialsNotFound",
        )
        try:
            username = _decode(source, ref.username_key)
            password = _decode(source, ref.password_key)
        except (UnicodeDecodeError, ValueError):
            raise InputError(
                "CredentialsInvalid", f"Secret {ref.name} holds values that are not UTF-8"
            ) from None
        for secret_key, value in ((ref.username_key, username), (ref.password_key, password)):
            if not value:
                raise InputError(
                    "CredentialsInvalid",
                    f"Secret {ref.name} has no key {secret_key!r} "
                    "(spec.database.credentialsSecret.usernameKey/passwordKey)",
                )
        assert username is not None and password is not None
        stats_password = self._kept_secret(
            planned, planned.names.pooler_auth, pgbouncer.STATS_PASSWORD_KEY
        )
        server_ca_pem, server_ca_revision = None, ""
        if planned.database.server_ca_secret is not None:
            server_ca_pem, server_ca_revision = await self._server_ca(planned, refs)
        return common.Credentials(
            username=username,
            password=password,
            stats_password=stats_password or secrets.token_urlsafe(24),
            revision=str(source["metadata"].get("resourceVersion", "")),
            redis_passwords={
                r.name: self._kept_secret(planned, planned.names.redis_auth(r.name), "password")
                or secrets.token_hex(24)
                for r in planned.redis
            },
            server_ca_revision=server_ca_revision,
            server_ca_pem=server_ca_pem,
            agent_password=(
                self._kept_secret(
                    planned, planned.names.read_pooler_auth, pgbouncer.AGENT_PASSWORD_KEY
                )
                or secrets.token_urlsafe(24)
            )
            if planned.read is not None
            else "",
            s3_server=self._server_keys(planned),
        )

    def _server_keys(self, planned: plan_mod.Plan) -> server_mod.ServerKeys | None:
        """The builtin S3 server's root and app keys: kept once made (a pair is
        made anew only together, when its Secret is gone)."""
        if not any(b.builtin is not None for b in planned.buckets):
            return None
        pairs = []
        for name in (
            planned.names.s3_root_keys,
            planned.names.s3_app_keys,
        ):
            access = self._kept_secret(planned, name, bucket_server.ACCESS_KEY)
            secret = self._kept_secret(planned, name, bucket_server.SECRET_KEY)
            if not access or not secret:
                access, secret = secrets.token_hex(10), secrets.token_urlsafe(30)
            pairs.append((access, secret))
        (root_access, root_secret), (app_access, app_secret) = pairs
        return server_mod.ServerKeys(
            root_access_key=root_access,
            root_secret_key=root_secret,
            app_access_key=app_access,
            app_secret_key=app_secret,
        )

    def _kept_secret(self, planned: plan_mod.Plan, name: str, secret_key: str) -> str | None:
        """A value Headroom generated earlier (kept once made), from its own Secret."""
        found = self.cluster.cached("Secret", planned.namespace, name)
        if found is None or not _owned_by(found, planned.uid):
            return None
        try:
            return _decode(found, secret_key) or None
        except (UnicodeDecodeError, ValueError):
            return None

    async def _server_ca(self, planned: plan_mod.Plan, refs: set[InputRef]) -> tuple[str, str]:
        """The PEM of spec.database.serverCASecret and its resourceVersion."""
        ref = planned.database.server_ca_secret
        assert ref is not None
        found = await self._input_secret(
            planned,
            refs,
            ref.name,
            field_path="spec.database.serverCASecret.name",
            reason="ServerCANotFound",
        )
        try:
            pem = _decode(found, ref.key) or ""
        except (UnicodeDecodeError, ValueError):
            pem = ""
        problem = _ca_problem(pem)
        if problem is not None:
            raise InputError(
                "ServerCAInvalid",
                f"Secret {ref.name} key {ref.key!r} (spec.database.serverCASecret): {problem}",
            )
        return pem, str(found["metadata"].get("resourceVersion", ""))

    async def _pending_claims(
        self, planned: plan_mod.Plan, observed: dict[str, Obj]
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
                found = await self.cluster.get_live("StorageClass", "", storage_class)
                classes[storage_class] = found is not None
            pending.append(
                observe.PendingClaim(
                    name=name,
                    field=spec_field,
                    storage_class=storage_class,
                    class_exists=classes.get(storage_class or "", False),
                )
            )
        return tuple(pending)

    # -- containment ------------------------------------------------------------

    async def _conflicts(
        self, planned: plan_mod.Plan, wanted: desired.Desired, children: dict[str, Obj]
    ) -> list[str]:
        """Keys of wanted objects that exist but are not ours. Our own children
        come from the cache; a name the cache does not hold (not carrying our
        labels) is looked up once, since it may belong to somebody else."""
        conflicts: list[str] = []
        unknown: list[str] = []
        for key in wanted.objects:
            if key in children:
                continue
            kind, name = key.split("/", 1)
            if not self.cluster.served(kind):
                continue  # a composed kind not served: nothing of it can exist
            if self.cluster.cached(kind, planned.namespace, name) is not None:
                conflicts.append(key)  # carries our labels, but another owner
            else:
                unknown.append(key)
        found = await asyncio.gather(
            *(
                self.cluster.get_live(k.split("/", 1)[0], planned.namespace, k.split("/", 1)[1])
                for k in unknown
            )
        )
        for key, live in zip(unknown, found, strict=True):
            if live is not None and not _owned_by(live, planned.uid):
                conflicts.append(key)
        return sorted(conflicts)

    # -- apply and prune --------------------------------------------------------

    async def _apply_all(
        self,
        key: str,
        *,
        wanted: desired.Desired,
        children: dict[str, Obj],
        frozen: set[str],
        events: list[Event],
    ) -> _ApplyResult:
        result = _ApplyResult()
        # Leftovers: ours, no longer wanted. A contained component's objects are
        # left as they are (``frozen``: neither applied nor deleted), and a
        # retained one (a Retain bucket's claim) is never deleted by Headroom.
        leftovers = sorted(
            k
            for k in children
            if k not in wanted.objects
            and k not in frozen
            and not storage_mod.is_retained(children[k])
        )
        prune_first = [k for k in leftovers if _owned_kind(k).prune_first]
        prune_after = [k for k in leftovers if k not in prune_first]
        await self._prune(key, prune_first, children, result, events)
        changed: list[str] = []
        for stage in watches.Stage:
            batch = [k for k in wanted.objects if _owned_kind(k).stage == stage]
            outcomes = await asyncio.gather(
                *(self._apply_one(key, wanted.objects[k], children.get(k), result) for k in batch)
            )
            changed += [k for k, did in zip(batch, outcomes, strict=True) if did]
        if changed:
            events.append(Event("Normal", "Applied", "created or updated " + ", ".join(changed)))
        await self._prune(key, prune_after, children, result, events)
        return result

    async def _apply_one(
        self, profile_key: str, obj: Obj, live: Obj | None, result: _ApplyResult
    ) -> bool:
        """Apply ``obj`` if it differs from ``live``; True when it was written."""
        child_key = common.key_of(obj)
        if not self.cluster.served(obj["kind"]):
            result.fail(child_key, f"{obj['kind']} is not served by the API server", retry=True)
            return False
        stamped = compare.stamp(obj)
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
        self._applied[(profile_key, child_key)] = (
            want_hash,
            str(applied["metadata"].get("resourceVersion", "")),
        )
        before = (live or {}).get("metadata", {}).get("resourceVersion")
        return bool(before != applied["metadata"].get("resourceVersion"))

    async def _prune(
        self,
        profile_key: str,
        keys: list[str],
        children: dict[str, Obj],
        result: _ApplyResult,
        events: list[Event],
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
                events.append(Event("Normal", "Pruned", f"deleted {child_key}, no longer wanted"))

    async def _write_status(self, meta: Obj, status: dict[str, Any]) -> None:
        patch = {
            "apiVersion": v1alpha1.API_VERSION,
            "kind": v1alpha1.KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": status,
        }
        try:
            await self.cluster.apply(patch, subresource="status")
        except errors.ApiError as err:
            if err.status != 404:  # deleted meanwhile: nothing to report on
                raise


@dataclass
class _ApplyResult:
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


def _needs_namespace_labels(prometheus: Obj) -> bool:
    """A namespace selector that is neither null (own namespace) nor empty (all)
    nor only about ``kubernetes.io/metadata.name`` (which is the name itself)."""
    spec = prometheus.get("spec") or {}
    for _, ns_field in monitoring.SELECTORS.values():
        selector = spec.get(ns_field)
        if not selector:
            continue
        keys = set(selector.get("matchLabels") or {})
        keys |= {e.get("key") for e in selector.get("matchExpressions") or []}
        if keys - {"kubernetes.io/metadata.name"}:
            return True
    return False


def _owned_kind(key: str) -> watches.OwnedKind:
    return watches.BY_KIND[key.split("/", 1)[0]]


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _status_differs(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """The API server drops nulls from a structural schema's status: compare as stored."""
    return bool(_without_nulls(before) != _without_nulls(after))


def _budget_status(planned: plan_mod.Plan, *, since: str) -> dict[str, Any]:
    b = planned.budget
    model = status_models.BudgetStatus(
        summary=b.summary,
        max_connections=b.max_connections,
        reserved=b.reserved,
        available=b.available,
        app_pods_max=planned.app.max_replicas,
        client_connections_per_pod=planned.app.pool_size_per_pod,
        client_demand=b.client_demand,
        pooler_pods_at_peak=b.pooler_pods_at_peak,
        default_pool_size=b.default_pool_size,
        reserve_pool_size=b.reserve_pool_size,
        max_db_connections=b.max_db_connections,
        max_client_conn=b.max_client_conn,
        server_connections=b.server_connections,
        margin=b.margin,
        server=server_shares.server_key(planned.namespace, planned.database),
        shared_with=[
            status_models.SharedProfile(
                profile=use.profile, server_connections=use.server_connections
            )
            for use in b.shared
        ],
        read_fallback=b.read_fallback,
        read=_read_budget_status(planned),
        planned_since=since,
    )
    return model.model_dump(by_alias=True, exclude_none=True)


def _exceeded(planned: plan_mod.Plan) -> conditions.Cond:
    return conditions.Cond(
        conditions.CONNECTION_BUDGET, "False", "BudgetExceeded", planned.problem_text()
    )


def _read_budget_status(planned: plan_mod.Plan) -> status_models.ReadBudgetStatus | None:
    read = planned.read
    if read is None:
        return None
    b = read.budget
    return status_models.ReadBudgetStatus(
        mode=read.mode,
        replicas=len(read.replicas),
        smallest=f"{read.smallest.host}:{read.smallest.port}",
        max_connections=b.max_connections,
        reserved=b.reserved,
        available=b.available,
        client_demand=b.client_demand,
        pooler_pods_at_peak=b.pooler_pods_at_peak,
        default_pool_size=b.default_pool_size,
        max_db_connections=b.max_db_connections,
        max_client_conn=b.max_client_conn,
        server_connections=b.server_connections,
        margin=b.margin,
        when_all_lagging=read.when_all_lagging,
        shared_with=[
            status_models.SharedProfile(
                profile=use.profile, server_connections=use.server_connections
            )
            for use in b.shared
        ],
    )


def _observe_pooler(
    planned: plan_mod.Plan, deployment: Obj | None
) -> tuple[conditions.Cond, dict[str, Any]]:
    endpoint = f"{planned.names.pooler_host}:{pgbouncer.SERVICE_PORT}"
    want = planned.pooler.instances
    if deployment is None:
        return (
            conditions.Cond(
                conditions.POOLER_READY, "False", "NotCreated", "pooler Deployment not applied"
            ),
            {"endpoint": endpoint, "instances": want, "readyInstances": 0},
        )
    st = deployment.get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    total = int(st.get("replicas") or 0)
    observed = int(st.get("observedGeneration") or 0)
    generation = int(deployment["metadata"].get("generation") or 0)
    status = {"endpoint": endpoint, "instances": want, "readyInstances": ready}
    if observed >= generation and ready == want and updated == want and total == want:
        message = f"{ready}/{want} PgBouncer pods ready at {endpoint}"
        return conditions.Cond(conditions.POOLER_READY, "True", "PodsReady", message), status
    message = f"{ready}/{want} ready, {updated}/{want} updated, {total} running"
    return conditions.Cond(conditions.POOLER_READY, "False", "RollingOut", message), status


def _observe_cnpg_pooler(
    planned: plan_mod.Plan, pooler: Obj | None
) -> tuple[conditions.Cond, dict[str, Any]]:
    """The write pooler is CloudNativePG's: ready when CNPG reports its pods."""
    endpoint = f"{planned.names.pooler_host}:{pgbouncer.SERVICE_PORT}"
    want = planned.pooler.instances
    running = observe.cnpg_instances(pooler)
    status = {"endpoint": endpoint, "instances": want, "readyInstances": running}
    if pooler is None:
        return (
            conditions.Cond(
                conditions.POOLER_READY, "False", "NotCreated", "CNPG Pooler not applied"
            ),
            status,
        )
    if running >= want:
        message = f"CNPG Pooler {planned.names.pooler_service}: {running}/{want} pods at {endpoint}"
        return conditions.Cond(conditions.POOLER_READY, "True", "CNPGPoolerReady", message), status
    message = (
        f"CNPG Pooler {planned.names.pooler_service} applied with Headroom's sizes; "
        f"CloudNativePG reports {running}/{want} pods"
    )
    return conditions.Cond(conditions.POOLER_READY, "False", "WaitingForCNPG", message), status


def _measures_replicas(planned: plan_mod.Plan) -> bool:
    """The operator measures the replicas the read-pool agent decides on: not
    CNPG's (its own Pooler routes), and only where it may read the servers."""
    return (
        planned.read is not None and not planned.read.cnpg_poolers and planned.database.read_limits
    )


def _finite(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else seconds


def _in_pool_condition(
    found: membership.Membership, config: membership.ReadPoolConfig
) -> conditions.Cond:
    """Informational: the read pool works with fewer replicas, or none (fallback)."""
    out = [v for v in found.verdicts if not v.member]
    if not out:
        return conditions.Cond(
            conditions.READ_REPLICAS_IN_POOL,
            "True",
            "AllInPool",
            f"{len(found.verdicts)} replica(s) within {config.max_lag_seconds:g}s of the primary",
        )
    text = "; ".join(f"{v.name} ({v.host}) out: {v.reason}" for v in out)
    if found.target == "replicas":
        return conditions.Cond(conditions.READ_REPLICAS_IN_POOL, "False", "SomeOut", text[:2000])
    where = "reads go to the primary" if found.target == "fallback" else "reads are refused"
    return conditions.Cond(
        conditions.READ_REPLICAS_IN_POOL, "False", "AllOut", f"{where}; {text}"[:2000]
    )
