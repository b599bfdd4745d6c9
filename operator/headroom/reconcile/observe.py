"""Pure observation of the applied children -> component conditions
(PoolerReady with status.pooler, ReadPoolerReady, StandbysReady, CacheReady,
WorkersReady, BacklogScaling, AutoscalingReady, StorageReady, AlertsSelected,
DatabaseMetrics, LoadBaseline), and status.recommendations from the
poolers' reports (write and read).
Called by the reconcile pass with the children as cached after its apply
(status changes arrive as child events and trigger another pass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headroom.api import conditions
from headroom.planning import database_metrics, object_storage, planner, recommendations


def _rolled_out(obj: dict[str, Any] | None, *, want: int | None = None) -> tuple[bool, str]:
    if obj is None:
        return False, "not applied"
    st = obj.get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    total = int(st.get("replicas") or 0)
    desired = want if want is not None else int((obj.get("spec") or {}).get("replicas") or 0)
    current = int(st.get("observedGeneration") or 0) >= int(obj["metadata"].get("generation") or 0)
    return current and ready == desired and total == desired, f"{ready}/{desired} ready"


@dataclass(frozen=True)
class PendingClaim:
    """A Redis data claim that is not Bound, and what the cluster says about it."""

    name: str
    field: str  # spec path of the instance's persistence
    storage_class: str | None  # as the claim asks (None: no class, no default either)
    class_exists: bool


def _claim_text(claim: PendingClaim) -> str:
    if claim.storage_class is None:
        why = (
            "it names no StorageClass and the cluster has no default one: set "
            f"{claim.field}.storageClassName"
        )
    elif not claim.class_exists:
        why = f"StorageClass {claim.storage_class} does not exist ({claim.field}.storageClassName)"
    else:
        why = f"waiting for StorageClass {claim.storage_class} to provision a volume"
    return f"PersistentVolumeClaim {claim.name} is Pending: {why}"


def _cache(
    plan: planner.Plan, applied: dict[str, Any], claims: tuple[PendingClaim, ...] = ()
) -> conditions.Cond:
    if claims:
        return conditions.Cond(
            conditions.CACHE_READY,
            "False",
            "ClaimPending",
            "; ".join(_claim_text(c) for c in claims),
        )
    waiting = []
    for instance in plan.redis:
        sets = [plan.names.redis(instance.name)]
        if instance.sentinel_replicas:
            sets.append(plan.names.sentinel(instance.name))
        for name in sets:
            done, text = _rolled_out(applied.get(f"StatefulSet/{name}"))
            if not done:
                waiting.append(f"{name} {text}")
    if waiting:
        return conditions.Cond(conditions.CACHE_READY, "False", "PodsNotReady", "; ".join(waiting))
    names = ", ".join(f"{r.name} ({r.use}, {r.eviction_policy})" for r in plan.redis)
    return conditions.Cond(conditions.CACHE_READY, "True", "PodsReady", f"Redis ready: {names}")


def _workers(plan: planner.Plan, applied: dict[str, Any]) -> list[conditions.Cond]:
    waiting = []
    for queue in plan.queues:
        dep = applied.get(f"Deployment/{plan.names.worker(queue.name)}")
        # the autoscaler decides how many: ready means every pod it asked for is ready
        want = int(((dep or {}).get("status") or {}).get("replicas") or 0)
        done, text = _rolled_out(dep, want=want)
        if not done:
            waiting.append(f"{plan.names.worker(queue.name)} {text}")
    keda = plan.facts.keda
    scaling = (
        conditions.Cond(
            conditions.BACKLOG_SCALING, "True", "KEDAInstalled", "workers scale on queue backlog"
        )
        if keda
        else conditions.Cond(
            conditions.BACKLOG_SCALING,
            "False",
            "KEDANotInstalled",
            "KEDA's ScaledObject CRD is not served: workers scale on CPU through an HPA "
            "(and cannot scale to zero); install KEDA to scale on backlog",
        )
    )
    if waiting:
        ready = conditions.Cond(
            conditions.WORKERS_READY, "False", "PodsNotReady", "; ".join(waiting)
        )
    else:
        how = "KEDA ScaledObject (backlog)" if keda else "HPA (CPU fallback)"
        ready = conditions.Cond(
            conditions.WORKERS_READY,
            "True",
            "ScaledByKEDA" if keda else "ScaledByHPA",
            f"workers ready, {how}",
        )
    return [ready, scaling]


def _autoscaling(
    plan: planner.Plan, applied: dict[str, Any], *, app_found: bool
) -> conditions.Cond:
    if not plan.autoscaling.enabled:
        return conditions.Cond(
            conditions.AUTOSCALING_READY, "True", "Disabled", "spec.autoscaling.enabled is false"
        )
    if not app_found:
        return conditions.Cond(
            conditions.AUTOSCALING_READY,
            "False",
            "AppDeploymentNotFound",
            f"Deployment {plan.app.deployment} does not exist; the HPA waits for it",
        )
    name = plan.names.app_autoscaler
    missing = [
        k
        for k in (f"HorizontalPodAutoscaler/{name}", f"PodDisruptionBudget/{name}")
        if k not in applied
    ]
    if missing:
        return conditions.Cond(
            conditions.AUTOSCALING_READY, "False", "NotApplied", ", ".join(missing)
        )
    return conditions.Cond(
        conditions.AUTOSCALING_READY,
        "True",
        "HPAReady",
        f"{plan.app.deployment} scales {plan.autoscaling.min_replicas}.."
        f"{plan.autoscaling.max_replicas} at {plan.autoscaling.cpu_utilization}% CPU",
    )


def _app_scaling_active(hpa: dict[str, Any]) -> conditions.Cond:
    """Mirror the HPA controller's ScalingActive condition of the app's HPA."""
    for c in (hpa.get("status") or {}).get("conditions") or []:
        if c.get("type") == "ScalingActive":
            return conditions.Cond(
                conditions.APP_SCALING_ACTIVE,
                "True" if c.get("status") == "True" else "False",
                str(c.get("reason") or "Unknown"),
                f"HPA {hpa['metadata']['name']}: {c.get('message') or c.get('reason')}",
            )
    return conditions.Cond(
        conditions.APP_SCALING_ACTIVE,
        "Unknown",
        "NotReportedYet",
        f"HPA {hpa['metadata']['name']} has not been evaluated by the HPA controller yet",
    )


def _state_data(applied: dict[str, Any], name: str) -> dict[str, str] | None:
    state = applied.get(f"ConfigMap/{name}") or {}
    data = state.get("data")
    return data if isinstance(data, dict) else None


def load_baseline(plan: planner.Plan, applied: dict[str, Any]) -> conditions.Cond | None:
    """LoadBaseline (informational, with spec.load): the write pooler's observed time
    per transaction against the declared one, and the read pooler's against
    readSecondsPerRequest when that is declared (recommendations.baseline); None until
    an agent reports figures."""
    found = recommendations.baseline(
        plan,
        state=_state_data(applied, plan.names.pooler_state),
        read_state=_state_data(applied, plan.names.read_pooler_state),
    )
    if found is None:
        return None
    if found.above:
        return conditions.Cond(conditions.LOAD_BASELINE, "False", "AboveBaseline", found.message)
    return conditions.Cond(conditions.LOAD_BASELINE, "True", "WithinBaseline", found.message)


def recommendations_of(
    plan: planner.Plan, applied: dict[str, Any], *, previous: Any
) -> list[dict[str, Any]]:
    """status.recommendations: what the write and the read poolers' agents report in
    their state ConfigMaps (their pods' own figures), against the plan; the entries
    status holds stay while the new ones are within their band (no write on a wobble)."""
    held = [p for p in previous if isinstance(p, dict)] if isinstance(previous, list) else None
    return [
        *recommendations.for_plan(
            plan, state=_state_data(applied, plan.names.pooler_state), previous=held
        ),
        *recommendations.for_plan(
            plan,
            state=_state_data(applied, plan.names.read_pooler_state),
            previous=held,
            read=True,
        ),
    ]


def pooler(plan: planner.Plan, applied: dict[str, Any]) -> tuple[conditions.Cond, dict[str, Any]]:
    """PoolerReady and status.pooler: PgBouncer's Deployment, or CloudNativePG's Pooler."""
    if plan.read is not None and plan.read.cnpg_poolers:
        return _cnpg_pooler(plan, applied.get(f"Pooler/{plan.names.pooler_service}"))
    return _pgbouncer(plan, applied.get(f"Deployment/{plan.names.pooler}"))


def _pgbouncer(
    plan: planner.Plan, deployment: dict[str, Any] | None
) -> tuple[conditions.Cond, dict[str, Any]]:
    endpoint = plan.names.pooler_endpoint
    want = plan.pooler.instances
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


def _cnpg_pooler(
    plan: planner.Plan, pooler: dict[str, Any] | None
) -> tuple[conditions.Cond, dict[str, Any]]:
    """The write pooler is CloudNativePG's: ready when CNPG reports its pods."""
    endpoint = plan.names.pooler_endpoint
    want = plan.pooler.instances
    running = cnpg_instances(pooler)
    status = {"endpoint": endpoint, "instances": want, "readyInstances": running}
    if pooler is None:
        return (
            conditions.Cond(
                conditions.POOLER_READY, "False", "NotCreated", "CNPG Pooler not applied"
            ),
            status,
        )
    name = plan.names.pooler_service
    if running >= want:
        message = f"CNPG Pooler {name}: {running}/{want} pods at {endpoint}"
        return conditions.Cond(conditions.POOLER_READY, "True", "CNPGPoolerReady", message), status
    message = (
        f"CNPG Pooler {name} applied with Headroom's sizes; "
        f"CloudNativePG reports {running}/{want} pods"
    )
    return conditions.Cond(conditions.POOLER_READY, "False", "WaitingForCNPG", message), status


def cnpg_instances(pooler: dict[str, Any] | None) -> int:
    """Pods CloudNativePG reports for one of its Poolers (status.instances)."""
    value = ((pooler or {}).get("status") or {}).get("instances")
    return value if isinstance(value, int) else 0


def _cnpg_read_pool(plan: planner.Plan, applied: dict[str, Any]) -> conditions.Cond:
    assert plan.read is not None and plan.read_pooler is not None
    name = plan.names.read_pooler_service
    want = plan.read_pooler.instances
    running = cnpg_instances(applied.get(f"Pooler/{name}"))
    replicas_text = (
        f"; the Cluster has {plan.read.cnpg_instances - 1} replica(s)"
        if plan.read.cnpg_instances
        else ""
    )
    if running >= want:
        return conditions.Cond(
            conditions.READ_POOLER_READY,
            "True",
            "CNPGPoolerReady",
            f"CNPG Pooler {name} (type ro) carries Headroom's read sizes: {running}/{want} pods"
            f"{replicas_text}; CloudNativePG routes reads to ready replicas (no lag bound)",
        )
    return conditions.Cond(
        conditions.READ_POOLER_READY,
        "False",
        "WaitingForCNPG",
        f"CNPG Pooler {name} (type ro) applied with Headroom's read sizes; CloudNativePG "
        f"reports {running}/{want} pods{replicas_text}",
    )


def _slot_retention(live: planner.PrimaryLimits | None) -> list[conditions.Cond]:
    """Each standby holds a physical slot on the primary: without a
    max_slot_wal_keep_size a standby that is away (or whose profile is gone,
    its slot left behind) keeps WAL there without bound. ``live``: the
    primary's limits as it reports them (None: not read)."""
    if live is None or live.max_slot_wal_keep_size_mb is None:
        return []
    if live.max_slot_wal_keep_size_mb < 0:
        return [
            conditions.Cond(
                conditions.SLOT_RETENTION,
                "False",
                "Unbounded",
                "the primary's max_slot_wal_keep_size is -1 (unlimited): a standby that is "
                "away, or a slot left by a deleted profile, keeps WAL on the primary until its "
                "disk is full; set it on the primary (e.g. 10GB: a standby further behind is "
                "then invalidated and must be re-cloned by deleting its PVC)",
            )
        ]
    return [
        conditions.Cond(
            conditions.SLOT_RETENTION,
            "True",
            "Bounded",
            f"each standby's slot holds at most {live.max_slot_wal_keep_size_mb} MB of WAL on "
            "the primary (max_slot_wal_keep_size)",
        )
    ]


def _read_pool(
    plan: planner.Plan, applied: dict[str, Any], primary: planner.PrimaryLimits | None
) -> list[conditions.Cond]:
    read = plan.read
    assert read is not None
    if read.cnpg_poolers:
        return [_cnpg_read_pool(plan, applied)]
    found = []
    if read.standby is not None:
        found += _slot_retention(primary)
        name = plan.names.standbys
        done, text = _rolled_out(applied.get(f"StatefulSet/{name}"))
        found.append(
            conditions.Cond(
                conditions.STANDBYS_READY, "True", "PodsReady", f"{text} hot standbys ({name})"
            )
            if done
            else conditions.Cond(
                conditions.STANDBYS_READY, "False", "PodsNotReady", f"{name} {text}"
            )
        )
    endpoint = plan.names.read_pooler_endpoint
    done, text = _rolled_out(applied.get(f"Deployment/{plan.names.read_pooler}"))
    targets = ", ".join(f"{r.host}:{r.port}" for r in read.replicas)
    fallback = (
        "reads go to the primary when every replica is out"
        if read.fallback_per_pod
        else "reads are refused when every replica is out"
    )
    if read.mode == "cnpg":
        fallback += (
            "; CloudNativePG is not installed (poolers.postgresql.cnpg.io not served): "
            "Headroom's own PgBouncer fronts the Cluster's -rw and -ro Services"
        )
    if done:
        found.append(
            conditions.Cond(
                conditions.READ_POOLER_READY,
                "True",
                "PodsReady",
                f"{text} read-pooler pods at {endpoint} over {read.mode} replicas "
                f"({targets}); a replica more than {read.max_lag_seconds}s behind leaves the "
                f"read pool; {fallback}",
            )
        )
    else:
        found.append(
            conditions.Cond(
                conditions.READ_POOLER_READY,
                "False",
                "PodsNotReady",
                f"{plan.names.read_pooler} {text}",
            )
        )
    return found


def unready_claims(plan: planner.Plan, applied: dict[str, Any]) -> list[tuple[str, str]]:
    """(claim name, persistence field) of every data claim of a Redis
    StatefulSet that is not rolled out: the reconcile pass reads those to say why."""
    wanted = []
    for index, instance in enumerate(plan.redis):
        if instance.persistence is None:
            continue
        name = plan.names.redis(instance.name)
        statefulset = applied.get(f"StatefulSet/{name}")
        if statefulset is None or _rolled_out(statefulset)[0]:
            continue
        replicas = int((statefulset.get("spec") or {}).get("replicas") or 0)
        field = f"spec.cache.instances[{index}].persistence"
        wanted += [
            (plan.names.redis_data_claim(instance.name, ordinal), field)
            for ordinal in range(replicas)
        ]
    return wanted


def alerts_selected(plan: planner.Plan, wanted: list[str]) -> conditions.Cond | None:
    """Informational: where the rules went and whether a Prometheus loads them.
    ``wanted``: the keys (``Kind/name``) of the rules and monitors applied."""
    if plan.alerts is None:
        return None
    if not plan.facts.prometheus_operator:
        return conditions.Cond(
            conditions.ALERTS_SELECTED,
            "False",
            "NoPrometheusOperator",
            f"prometheus-operator's CRDs are not served: the rules are in ConfigMap "
            f"{plan.names.alert_rules} (key {plan.names.alert_rules_key}) for a "
            "plain Prometheus' rule_files; no scrape targets are declared",
        )
    selection = plan.facts.prometheus_selection
    kinds = sorted({key.split("/", 1)[0] for key in wanted})
    if not selection.prometheuses:
        return conditions.Cond(
            conditions.ALERTS_SELECTED,
            "False",
            "NoPrometheus",
            "no monitoring.coreos.com/v1 Prometheus exists to select "
            + ", ".join(kinds or ["the rules"]),
        )
    picks = [selection.pick(kind) for kind in kinds]
    missing = [p for p in picks if not p.selected]
    if missing:
        text = "; ".join(f"{p.kind} not selected: " + ", ".join(p.why_not) for p in missing)
        return conditions.Cond(conditions.ALERTS_SELECTED, "False", "NotSelected", text[:2000])
    by_whom = "; ".join(
        f"{p.kind} by Prometheus {p.prometheus}"
        + (" (labels " + ", ".join(f"{k}={v}" for k, v in p.labels) + ")" if p.labels else "")
        for p in picks
    )
    return conditions.Cond(conditions.ALERTS_SELECTED, "True", "Selected", by_whom[:2000])


def _database_metrics(
    plan: planner.Plan, applied: dict[str, Any], *, monitor_found: bool
) -> conditions.Cond | None:
    """Informational: the exporters are ready (their alerts are silent when they
    are not: a pod that never starts has no series to alert on)."""
    metrics = plan.database_metrics
    if metrics is None:
        return None

    def cond(status: str, reason: str, message: str) -> conditions.Cond:
        return conditions.Cond(conditions.DATABASE_METRICS, status, reason, message)

    if metrics.source == database_metrics.CNPG:
        return cond(
            "True",
            "CloudNativePGMetrics",
            f"the pods of CloudNativePG Cluster {metrics.cnpg_cluster} export the metrics "
            f"(PodMonitor {plan.names.pg_metrics(database_metrics.PRIMARY)}); no exporter",
        )
    login = metrics.credentials
    if not monitor_found:
        return cond(
            "False",
            "MonitoringCredentialsNotFound",
            f"Secret {login.name} (spec.database.metrics.credentialsSecret) does not exist: "
            "the exporters cannot start, and the database alerts stay silent",
        )
    waiting: list[str] = []
    ready: list[str] = []
    for server in metrics.servers:
        name = plan.names.pg_metrics(server.name)
        done, text = _rolled_out(applied.get(f"Deployment/{name}"))
        where = f"{server.name} ({server.host}:{server.port})"
        (ready if done else waiting).append(where if done else f"{name} {text}")
    role = "a monitoring role" if metrics.monitoring_role else "the app's role"
    if waiting:
        return cond(
            "False",
            "PodsNotReady",
            "postgres_exporter not ready (the database alerts are silent until it is): "
            + "; ".join(waiting),
        )
    return cond("True", "ExportersReady", f"postgres_exporter ({role}) on " + ", ".join(ready))


def components(
    plan: planner.Plan,
    applied: dict[str, Any],
    *,
    app_found: bool,
    pending_claims: tuple[PendingClaim, ...] = (),
    primary: planner.PrimaryLimits | None = None,
    monitor_found: bool = True,
) -> list[conditions.Cond]:
    """Every component's condition but the write pooler's (:func:`pooler`).
    ``primary``: the primary's limits as it reports them (None: not read)."""
    found: list[conditions.Cond] = []
    if plan.read is not None:
        found += _read_pool(plan, applied, primary)
    if plan.redis:
        found.append(_cache(plan, applied, pending_claims))
    if plan.queues:
        found += _workers(plan, applied)
    found.append(_autoscaling(plan, applied, app_found=app_found))
    hpa = applied.get(f"HorizontalPodAutoscaler/{plan.names.app_autoscaler}")
    if plan.autoscaling.enabled and app_found and hpa is not None:
        found.append(_app_scaling_active(hpa))
    metrics = _database_metrics(plan, applied, monitor_found=monitor_found)
    if metrics is not None:
        found.append(metrics)
    return found


def _claim_bound(claim: dict[str, Any] | None) -> bool:
    """v1alpha1 status.bucketReady; v1alpha2 status.readyToUse."""
    st = (claim or {}).get("status") or {}
    return bool(st.get("bucketReady") or st.get("readyToUse"))


def _access_granted(access: dict[str, Any] | None) -> bool:
    """v1alpha1 status.accessGranted; v1alpha2 status.readyToUse."""
    st = (access or {}).get("status") or {}
    return bool(st.get("accessGranted") or st.get("readyToUse"))


def _bucket_state(
    bucket: object_storage.BucketPlan,
    applied: dict[str, Any],
    server_name: str,
    problem: tuple[str, str] | None,
    found: object_storage.BucketCredentials | None,
) -> tuple[str, str]:
    """(reason, text) of one bucket; reason "Ready" when it is in the binding
    and the operator's own check (s3) found nothing wrong."""
    if problem is None and found is not None:
        where = f"{found.bucket} at {found.endpoint}"
        if bucket.builtin is not None:
            done, state = _rolled_out(applied.get(f"StatefulSet/{server_name}"))
            if not done:
                return "ServerNotReady", f"{bucket.name}: builtin, the S3 server {state}"
            return "Ready", f"{bucket.name}: builtin, {where}"
        if bucket.cosi is not None:
            return "Ready", f"{bucket.name}: cosi {bucket.cosi_version}, {where}"
        return "Ready", f"{bucket.name}: {bucket.provider}, {where}"
    assert problem is not None
    reason, text = problem
    if bucket.cosi is not None and reason == "CredentialsPending":
        claim = applied.get(f"BucketClaim/{bucket.claim_name}")
        access = applied.get(f"BucketAccess/{bucket.claim_name}")
        if not _claim_bound(claim):
            return "ClaimPending", (
                f"{bucket.name}: BucketClaim {bucket.claim_name} (class "
                f"{bucket.cosi.bucket_class_name}) is not bound yet"
            )
        if not _access_granted(access):
            return "AccessPending", (
                f"{bucket.name}: BucketAccess {bucket.claim_name} (class "
                f"{bucket.cosi.bucket_access_class_name}) is not granted yet"
            )
    return reason, f"{bucket.name}: {text}"


def storage_ready(
    plan: planner.Plan,
    applied: dict[str, Any],
    *,
    problems: dict[str, tuple[str, str]],
    found: dict[str, object_storage.BucketCredentials],
    notes: dict[str, str] | None = None,
) -> conditions.Cond | None:
    """StorageReady: every bucket's credentials are in the binding. The reason
    is the first bucket's that is not (COSINotInstalled, ClaimPending,
    AccessPending, CredentialsPending, CredentialsSecretMissing,
    CredentialsKeyMissing, CredentialsInvalid; ServerNotReady: the builtin
    server's pod is not Ready, i.e. not provisioned yet; for s3 buckets the
    operator's HEAD: BucketNotFound, CredentialsRejected). ``notes``: what the
    check could not say, by bucket."""
    if not plan.buckets:
        return None
    states = [
        _bucket_state(b, applied, plan.names.s3_server, problems.get(b.name), found.get(b.name))
        for b in plan.buckets
    ]
    extra = [f"{b.name}: {(notes or {})[b.name]}" for b in plan.buckets if b.name in (notes or {})]
    extra += [
        f"{b.name}: CORS is not applied by Headroom for provider {b.provider}; set it on the bucket"
        for b in plan.buckets
        if b.cors is not None and b.provider in ("cosi", "s3")
    ]
    waiting = [(reason, text) for reason, text in states if reason != "Ready"]
    text = "; ".join([t for _, t in states] + extra)[:2000]
    if waiting:
        return conditions.Cond(conditions.STORAGE_READY, "False", waiting[0][0], text)
    return conditions.Cond(
        conditions.STORAGE_READY,
        "True",
        "Ready",
        f"{len(states)} bucket(s) in the binding: {text}"[:2000],
    )
