"""One idempotent reconcile pass of a ScalingProfile.

Called by every kopf handler (create, update, resume, timer, child events):
parse -> plan -> read inputs -> build desired -> server-side apply -> prune our
own leftovers -> observe -> conditions -> status. There is no create path and
no update path; the pass computes the whole desired state every time.

Guarantees: an impossible profile changes nothing (no half-applied state); an
object with one of our names that we did not create is never taken over; only
objects with our labels *and* our owner reference are ever deleted.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from headroom.api import status as status_models
from headroom.api import v1alpha1
from headroom.builders import binding, common, desired, pgbouncer, redis
from headroom.kube import client as kube_client
from headroom.kube import errors
from headroom.planning import plan as plan_mod
from headroom.postgres import limits as postgres_limits
from headroom.reconcile import conditions as cond
from headroom.reconcile import metrics as metrics_mod
from headroom.reconcile import observe

log = logging.getLogger(__name__)

# Every kind a profile may own, in apply order (config before the pods using it).
OWNED_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
)
KEDA = "keda.sh/v1alpha1"
AUTOSCALER_KINDS = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})
_ORDER = {kind: index for index, (_, kind) in enumerate(OWNED_KINDS)}


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
    profile: dict[str, Any] = field(default_factory=dict)  # as read for the pass


class InputError(Exception):
    """A referenced input (credentials Secret) is missing or unusable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decode(secret: dict[str, Any], key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8", errors="strict")


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


class Engine:
    """Holds the cluster connection and per-profile locks (created once at start-up)."""

    def __init__(
        self,
        kube: kube_client.Kube,
        metrics: metrics_mod.Metrics,
        *,
        primary_check_seconds: float = 300.0,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self._primary_ttl = primary_check_seconds
        self._primary_cache: dict[tuple[Any, ...], tuple[float, plan_mod.PrimaryLimits | str]] = {}
        self._primary_guard = threading.Lock()  # passes of different profiles run in threads
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    # -- entry point ---------------------------------------------------------

    def reconcile(self, body: dict[str, Any]) -> Outcome | None:
        """One pass over the profile ``body`` names, as it is now: the body is read
        again once the profile's lock is held, so a pass that waited (a resync
        behind an update) never applies an older spec. ``body`` may be a stub
        with only name, namespace and uid (a child's owner reference). None: it
        is gone, being deleted, or (uid given) replaced by a new profile."""
        meta = body.get("metadata", {})
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        started = time.monotonic()
        with self._lock(key):
            try:
                current = self.kube.get(
                    v1alpha1.API_VERSION,
                    v1alpha1.KIND,
                    namespace=meta.get("namespace"),
                    name=str(meta.get("name")),
                )
                if current is None or current["metadata"].get("deletionTimestamp"):
                    return None  # deleted: owner references take the children away
                if meta.get("uid") and current["metadata"].get("uid") != meta["uid"]:
                    return None  # a new profile with the old name: not the one meant
                try:
                    outcome = self._pass(current)
                except errors.NotServedError:
                    # A composed CRD (KEDA) went away during the pass, after discovery
                    # said it was served: plan again at once on fresh discovery.
                    self.kube.forget_discovery()
                    outcome = self._pass(current)
                outcome.profile = current
            except Exception as err:
                reason = type(err).__name__
                self.metrics.reconcile_errors.labels(reason=reason).inc()
                raise
            finally:
                self.metrics.reconcile_seconds.observe(time.monotonic() - started)
        return outcome

    # -- the pass --------------------------------------------------------------

    def _pass(self, body: dict[str, Any]) -> Outcome:
        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        previous = (body.get("status") or {}).get("conditions") or []
        events: list[Event] = []

        def finish(components: list[cond.Cond], **extra: Any) -> Outcome:
            top = cond.ready(components, informational=observe.INFORMATIONAL)
            # One event per condition change, not per pass: a standing problem is
            # in status, and repeating it on every resync would flood the namespace.
            events.extend(
                Event(
                    "Normal" if c.status == "True" else "Warning",
                    c.reason,
                    f"{c.type}: {c.message}",
                )
                for c in cond.transitions(previous, [top, *components])
            )
            status = {
                "observedGeneration": generation,
                "conditions": cond.merge(
                    previous, [top, *components], now=_now(), generation=generation
                ),
                **extra,
            }
            self._write_status(meta, status)
            return Outcome(status=status, events=events, ready=top.status == "True")

        try:
            profile = v1alpha1.parse_profile(body)
        except v1alpha1.ProfileError as err:
            return finish([cond.Cond(cond.CONNECTION_BUDGET, "False", "InvalidSpec", str(err))])

        facts = plan_mod.Facts(keda=self._keda_installed())
        planned = plan_mod.plan(profile, facts=facts)
        budget = _budget_status(planned)
        if not planned.ok:
            message = planned.problem_text()
            # Nothing is applied: the children keep their last good state.
            return finish(
                [cond.Cond(cond.CONNECTION_BUDGET, "False", "BudgetExceeded", message)],
                budget=budget,
            )
        budget_cond = cond.Cond(
            cond.CONNECTION_BUDGET,
            "True",
            "WithinBudget",
            f"{planned.budget.server_connections} server connections of "
            f"{planned.budget.available} available, margin {planned.budget.margin}; "
            f"client demand {planned.budget.client_demand}",
        )

        app = self.kube.get(
            "apps/v1", "Deployment", namespace=planned.namespace, name=planned.app.deployment
        )
        app_selector = (app or {}).get("spec", {}).get("selector")
        try:
            creds = self._credentials(planned)
        except InputError as err:
            return finish(
                [budget_cond, cond.Cond(cond.POOLER_READY, "False", err.reason, err.message)],
                budget=budget,
            )
        checks: list[cond.Cond] = []
        if planned.database.read_limits:
            live, primary_cond = self._primary_limits(planned, creds)
            checks.append(primary_cond)
            if live is not None:
                planned = plan_mod.plan(profile, facts=dataclasses.replace(facts, primary=live))
                if not planned.ok:  # the declared limits are higher than the real ones
                    message = planned.problem_text()
                    return finish(
                        [
                            cond.Cond(cond.CONNECTION_BUDGET, "False", "BudgetExceeded", message),
                            *checks,
                        ],
                        budget=budget,
                    )
        try:
            wanted = desired.build(planned, creds, app_pod_selector=app_selector)
        except ValueError as err:  # builders refuse unsafe credentials
            return finish(
                [
                    budget_cond,
                    cond.Cond(cond.POOLER_READY, "False", "CredentialsInvalid", str(err)),
                    *checks,
                ],
                budget=budget,
            )

        applied, conflicts = self._apply(planned, wanted, events)
        message = "objects exist that Headroom did not create: " + ", ".join(conflicts)
        pooler_cond, pooler_status = _observe_pooler(
            planned, applied.get(f"Deployment/{pgbouncer.deployment_name(planned)}")
        )
        pooler_keys = {common.key_of(o) for o in pgbouncer.build(planned, creds)}
        if pooler_keys & set(conflicts):
            pooler_cond = cond.Cond(cond.POOLER_READY, "False", "NameConflict", message)
        components = [budget_cond, pooler_cond, *checks]
        components += observe.components(planned, applied, app_found=app is not None)
        if set(conflicts) - pooler_keys:
            components.append(cond.Cond("ChildrenOwned", "False", "NameConflict", message))
        if app is None:
            components.append(
                cond.Cond(
                    "AppFound",
                    "False",
                    "AppDeploymentNotFound",
                    f"Deployment {planned.app.deployment} (spec.app.deployment) does not exist",
                )
            )
        return finish(
            components,
            budget=budget,
            pooler=pooler_status,
            binding={"name": binding.secret_name(planned)},
        )

    # -- inputs ---------------------------------------------------------------

    def _primary_limits(
        self, planned: plan_mod.Plan, creds: common.Credentials
    ) -> tuple[plan_mod.PrimaryLimits | None, cond.Cond]:
        """The primary's own limits (cached: a pass runs on every child event)."""
        db = planned.database
        key = (
            db.host,
            db.port,
            db.name,
            db.ssl_mode,
            creds.username,
            creds.revision,
            creds.server_ca_revision,
        )
        now = time.monotonic()
        with self._primary_guard:
            cached = self._primary_cache.get(key)
        if cached is None or cached[0] < now:
            target = postgres_limits.Target(
                # the pooler resolves a short name in the profile's namespace; so must we
                host=db.host if "." in db.host else f"{db.host}.{planned.namespace}.svc",
                port=db.port,
                database=db.name,
                username=creds.username,
                password=creds.password,
                ssl_mode=db.ssl_mode,
                server_ca_pem=creds.server_ca_pem,
            )
            result = postgres_limits.read(target)  # not under the guard: it may take seconds
            # a failure is retried sooner: the primary may just be starting
            ttl = self._primary_ttl if not isinstance(result, str) else self._primary_ttl / 5
            with self._primary_guard:
                for stale in [k for k, v in self._primary_cache.items() if v[0] < now]:
                    del self._primary_cache[stale]
                self._primary_cache[key] = cached = (now + ttl, result)
        result = cached[1]
        if isinstance(result, str):
            return None, cond.Cond(
                observe.PRIMARY_LIMITS,
                "False",
                "PrimaryUnreachable",
                f"could not read the limits of {db.host}:{db.port} ({result}); "
                "planning with the declared ones",
            )
        declared = (
            f"declared maxConnections {db.max_connections}, "
            f"superuserReservedConnections {db.superuser_reserved_connections}"
        )
        return result, cond.Cond(
            observe.PRIMARY_LIMITS,
            "True",
            "LimitsRead",
            f"{db.host}:{db.port} reports {result.describe()} = {result.available}; {declared}",
        )

    def _keda_installed(self) -> bool:
        """KEDA's kinds are served and their CRDs are not being deleted (while they
        are, the API server refuses new ScaledObjects: plan the HPA fallback)."""
        kinds = ("ScaledObject", "TriggerAuthentication")
        return all(self.kube.served(KEDA, kind) for kind in kinds) and not any(
            self.kube.being_removed(KEDA, kind) for kind in kinds
        )

    def _input_secret(
        self, planned: plan_mod.Plan, name: str, *, field_path: str, reason: str
    ) -> dict[str, Any]:
        """A Secret the profile references (never ours); InputError when missing."""
        found = self.kube.get("v1", "Secret", namespace=planned.namespace, name=name)
        if found is None:
            raise InputError(reason, f"Secret {name} ({field_path}) does not exist")
        return found

    def _credentials(self, planned: plan_mod.Plan) -> common.Credentials:
        ref = planned.database.credentials_secret
        source = self._input_secret(
            planned,
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
        for key, value in ((ref.username_key, username), (ref.password_key, password)):
            if not value:
                raise InputError(
                    "CredentialsInvalid",
                    f"Secret {ref.name} has no key {key!r} "
                    "(spec.database.credentialsSecret.usernameKey/passwordKey)",
                )
        assert username is not None and password is not None
        auth = self.kube.get(
            "v1", "Secret", namespace=planned.namespace, name=pgbouncer.auth_secret_name(planned)
        )
        stats_password = None
        if auth is not None and _owned_by(auth, planned.uid):
            stats_password = _decode(auth, pgbouncer.STATS_PASSWORD_KEY)
        server_ca_pem, server_ca_revision = None, ""
        if planned.database.server_ca_secret is not None:
            server_ca_pem, server_ca_revision = self._server_ca(planned)
        return common.Credentials(
            username=username,
            password=password,
            stats_password=stats_password or secrets.token_urlsafe(24),
            revision=str(source["metadata"].get("resourceVersion", "")),
            redis_passwords={r.name: self._redis_password(planned, r) for r in planned.redis},
            server_ca_revision=server_ca_revision,
            server_ca_pem=server_ca_pem,
        )

    def _server_ca(self, planned: plan_mod.Plan) -> tuple[str, str]:
        """The PEM of spec.database.serverCASecret and its resourceVersion."""
        ref = planned.database.server_ca_secret
        assert ref is not None
        found = self._input_secret(
            planned,
            ref.name,
            field_path="spec.database.serverCASecret.name",
            reason="ServerCANotFound",
        )
        try:
            pem = _decode(found, ref.key) or ""
        except (UnicodeDecodeError, ValueError):
            pem = ""
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise InputError(
                "ServerCAInvalid",
                f"Secret {ref.name} has no PEM certificate under key {ref.key!r} "
                "(spec.database.serverCASecret.key)",
            )
        return pem, str(found["metadata"].get("resourceVersion", ""))

    def _redis_password(self, planned: plan_mod.Plan, instance: plan_mod.RedisPlan) -> str:
        """The instance's generated password: kept once made, new only for a new instance."""
        name = redis.auth_secret_name(planned, instance)
        found = self.kube.get("v1", "Secret", namespace=planned.namespace, name=name)
        if found is not None and _owned_by(found, planned.uid):
            kept = _decode(found, "password")
            if kept:
                return kept
        return secrets.token_hex(24)

    # -- apply and prune --------------------------------------------------------

    def _apply(
        self, planned: plan_mod.Plan, wanted: dict[str, common.Obj], events: list[Event]
    ) -> tuple[dict[str, common.Obj], list[str]]:
        selector = (
            f"{common.PROFILE_LABEL}={planned.name},"
            f"app.kubernetes.io/managed-by={common.MANAGED_BY}"
        )
        existing: dict[str, common.Obj] = {}
        for api_version, kind in OWNED_KINDS:
            if not self.kube.served(api_version, kind):
                continue  # e.g. KEDA removed: its objects went with its CRDs
            for obj in self.kube.list(
                api_version, kind, namespace=planned.namespace, label_selector=selector
            ):
                if _owned_by(obj, planned.uid):
                    existing[common.key_of(obj)] = obj

        # Two autoscalers on one Deployment fight, and KEDA's admission webhook
        # refuses a ScaledObject while another HPA targets its workload: a
        # leftover autoscaler goes before the new one is applied, everything
        # else after (a Service or Secret is never missing in between).
        prune_first, prune_after = prune_order(wanted=wanted, existing=existing)
        self._prune(prune_first, existing, events)
        applied: dict[str, common.Obj] = {}
        conflicts: list[str] = []
        changed: list[str] = []
        for key in sorted(wanted, key=lambda k: _ORDER.get(k.split("/")[0], 99)):
            obj = wanted[key]
            before = existing.get(key)
            if before is None:
                found = self.kube.get(
                    obj["apiVersion"],
                    obj["kind"],
                    namespace=planned.namespace,
                    name=obj["metadata"]["name"],
                )
                if found is not None and not _owned_by(found, planned.uid):
                    conflicts.append(key)
                    continue
                before = found
            result = self.kube.apply(obj)
            applied[key] = result
            old_version = (before or {}).get("metadata", {}).get("resourceVersion")
            if old_version != result["metadata"].get("resourceVersion"):
                changed.append(key)
                self.metrics.applied_objects.labels(kind=obj["kind"]).inc()
        if changed:
            events.append(Event("Normal", "Applied", "created or updated " + ", ".join(changed)))
        self._prune(prune_after, existing, events)
        return applied, conflicts

    def _prune(self, keys: list[str], existing: dict[str, common.Obj], events: list[Event]) -> None:
        for key in keys:
            obj = existing[key]
            meta = obj["metadata"]
            if self.kube.delete(
                obj["apiVersion"],
                obj["kind"],
                namespace=meta["namespace"],
                name=meta["name"],
                uid=meta["uid"],
            ):
                self.metrics.pruned_objects.labels(kind=obj["kind"]).inc()
                events.append(Event("Normal", "Pruned", f"deleted {key}, no longer wanted"))

    def _write_status(self, meta: dict[str, Any], status: dict[str, Any]) -> None:
        patch = {
            "apiVersion": v1alpha1.API_VERSION,
            "kind": v1alpha1.KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": status,
        }
        try:
            self.kube.apply(patch, subresource="status")
        except errors.ApiError as err:
            if err.status != 404:  # deleted meanwhile: nothing to report on
                raise


def prune_order(
    *, wanted: dict[str, common.Obj], existing: dict[str, common.Obj]
) -> tuple[list[str], list[str]]:
    """Split our leftovers (existing, not wanted) into those deleted before the
    apply (autoscalers) and those deleted after it (everything else)."""
    leftovers = sorted(key for key in existing if key not in wanted)
    first = [key for key in leftovers if key.split("/")[0] in AUTOSCALER_KINDS]
    return first, [key for key in leftovers if key not in first]


def _budget_status(planned: plan_mod.Plan) -> dict[str, Any]:
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
    )
    return model.model_dump(by_alias=True)


def _observe_pooler(
    planned: plan_mod.Plan, deployment: common.Obj | None
) -> tuple[cond.Cond, dict[str, Any]]:
    endpoint = f"{pgbouncer.service_host(planned)}:{pgbouncer.SERVICE_PORT}"
    want = planned.pooler.instances
    if deployment is None:
        return (
            cond.Cond(cond.POOLER_READY, "False", "NotCreated", "pooler Deployment not applied"),
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
        return cond.Cond(cond.POOLER_READY, "True", "PodsReady", message), status
    message = f"{ready}/{want} ready, {updated}/{want} updated, {total} running"
    return cond.Cond(cond.POOLER_READY, "False", "RollingOut", message), status
