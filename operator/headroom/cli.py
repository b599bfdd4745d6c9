"""The ``headroom`` command.

- ``headroom plan FILE``: the plan as a table; exit 1 with the admission
  message when the profile is impossible. Several profiles (documents of
  FILE, and ``--with OTHER`` files of profiles already on the cluster) are
  planned as the operator plans them when they share a Postgres server
  (primary or read replica): every server divided among every profile on
  it by weight (``planning.server_shares``), as admission and the pass divide it.
- ``headroom render FILE``: every child object as YAML (no cluster needed).
  Secret values the operator reads from the cluster are placeholders. The
  NetworkPolicies admit the app's pods as the operator's do: by the selector of
  the app's Deployment when FILE (or a ``--with`` file) holds it, else by
  ``--app-selector key=value,...``; with neither, render refuses (policies
  without the app would cut it off from everything in its binding).
  ``--rules`` prints only the alerting rule file; ``--prometheus-operator``
  renders PrometheusRule and monitors instead of the rule-file ConfigMap.
- ``headroom crd``: the generated CRD (``make crds``).
- ``headroom status``: every profile in the cluster of ``$KUBECONFIG``,
  grouped by database server (:mod:`headroom.overview`); ``-o json`` for scripts.
- ``headroom run``: start the operator, see :mod:`headroom.runtime.process`.

``plan`` and ``render`` read profiles as strictly as the API server does
(``"10"`` is not an integer, ``"false"`` not a boolean, a key may appear once)
and report a bad file or profile as one line naming the field, with exit code 1.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from headroom import overview, yamlfmt
from headroom.api import crd, v1alpha1
from headroom.builders import alert_rules, common, desired
from headroom.planning import (
    credentials,
    database_metrics,
    load_report,
    object_storage,
    planner,
    server_shares,
)

USERS_HELP = (
    "what-if: plan FILE's profiles that declare spec.load.users with N concurrent users "
    "instead (their think time kept): the sizes, the budget, the first bottleneck"
)
RPS_HELP = (
    "what-if: plan FILE's profiles that declare spec.load at R requests/s at peak instead "
    "(their database time per request kept)"
)
SCALE_HELP = (
    "what-if: plan FILE's profiles with every load they declare F times (the app's users "
    "or requests/s, each queue's jobs/s): where it breaks first as traffic grows"
)
KEDA_HELP = "plan queues for a cluster with KEDA (default: the CPU HPA fallback)"
WITH_HELP = (
    "a file of other profiles already on the cluster (repeatable): FILE's profiles share "
    "the Postgres servers they use with these, as on the cluster; render also "
    "reads the app's Deployment from it"
)


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice, as kubectl does (PyYAML keeps
    the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class InputError(Exception):
    """A file the CLI cannot read profiles from; ``str()`` is the one-line reason."""


def _read(path: str) -> list[dict[str, Any]]:
    """Every mapping document of ``path`` (``-``: stdin), or InputError."""
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise InputError(f"{name}: cannot read: {reason}") from None
    return _documents(text, name=name)


def _load(path: str) -> list[dict[str, Any]]:
    """The ScalingProfile documents of ``path`` (``-``: stdin), or InputError."""
    return _profiles(_read(path), name="<stdin>" if path == "-" else path)


def _load_beside(path: str) -> list[dict[str, Any]]:
    """The profiles of a ``--with`` file, which may also hold only the app's Deployment."""
    docs = _read(path)
    if any(doc.get("kind") == "Deployment" for doc in docs):
        return [doc for doc in docs if doc.get("kind") == v1alpha1.KIND]
    return _profiles(docs, name=path)


def _documents(text: str, *, name: str) -> list[dict[str, Any]]:
    try:
        docs = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{name}: not valid YAML{where}: {problem}") from None
    return [doc for doc in docs if isinstance(doc, dict)]


def _profiles(docs: list[dict[str, Any]], *, name: str) -> list[dict[str, Any]]:
    profiles = [doc for doc in docs if doc.get("kind") == v1alpha1.KIND]
    if not profiles:
        raise InputError(f"{name}: no document with kind: {v1alpha1.KIND}")
    return profiles


def parse_documents(text: str, *, name: str) -> list[dict[str, Any]]:
    """The ScalingProfile documents of a YAML text, or InputError naming ``name``."""
    return _profiles(_documents(text, name=name), name=name)


# A label key (optional DNS-subdomain prefix and a name) and value, as Kubernetes allows.
_LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^{_LABEL_NAME}?$")


def parse_selector(text: str) -> dict[str, Any]:
    """``key=value,key=value`` -> a matchLabels selector, or InputError naming the part."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value) or not value:
            raise InputError(
                f"--app-selector: {part.strip()!r} is not key=value with a Kubernetes label "
                "key and a non-empty label value"
            )
        labels[key] = value
    return {"matchLabels": labels}


def _deployments(paths: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The apps/v1 Deployments of the files, by (namespace, name)."""
    found = {}
    for path in paths:
        for doc in _read(path):
            if doc.get("kind") == "Deployment" and doc.get("apiVersion") == "apps/v1":
                meta = doc.get("metadata")
                meta = meta if isinstance(meta, dict) else {}
                found[(meta.get("namespace") or "default", str(meta.get("name", "")))] = doc
    return found


def app_selector(
    plan: planner.Plan,
    *,
    deployments: dict[tuple[str, str], dict[str, Any]],
    given: dict[str, Any] | None,
) -> dict[str, Any]:
    """What the operator reads from the app's Deployment: its pod selector; the
    flag's when given; else InputError, rather than policies that cut the app off."""
    if given is not None:
        return given
    deployment = deployments.get((plan.namespace, plan.app.deployment))
    where = f"{plan.namespace}/{plan.name}"
    if deployment is None:
        raise InputError(
            f"{where}: the NetworkPolicies need the pod selector of Deployment "
            f"{plan.namespace}/{plan.app.deployment}: put it in the file (or a --with file), "
            f"or pass --app-selector (e.g. app={plan.app.deployment}); without it they "
            "would admit only Headroom's own pods and cut the app off"
        )
    spec = deployment.get("spec")
    selector = common.usable_selector(spec.get("selector") if isinstance(spec, dict) else None)
    if not selector:
        raise InputError(
            f"{where}: Deployment {plan.namespace}/{plan.app.deployment} has no usable "
            "spec.selector (it would match every pod); pass --app-selector"
        )
    return selector


def _placeholder_buckets(plan: planner.Plan) -> dict[str, object_storage.BucketCredentials]:
    """What the binding would hold: an s3 bucket's own endpoint and name, the
    Secret keys the operator reads the rest from."""
    found = {}
    for bucket in plan.buckets:
        source = f"<{bucket.credentials_secret}"
        if bucket.s3 is not None:
            ref = bucket.s3.credentials_secret
            found[bucket.name] = object_storage.BucketCredentials(
                endpoint=bucket.s3.endpoint,
                region=bucket.s3.region,
                bucket=bucket.s3.bucket_name,
                access_key_id=f"{source}/{ref.access_key_id_key}>",
                secret_access_key=f"{source}/{ref.secret_access_key_key}>",
                force_path_style=bucket.s3.force_path_style,
            )
        elif bucket.cosi is not None and bucket.cosi_version:
            found[bucket.name] = object_storage.BucketCredentials(
                endpoint=f"{source}: endpoint>",
                region=f"{source}: region>",
                bucket=f"{source}: bucket name>",
                access_key_id=f"{source}: access key>",
                secret_access_key=f"{source}: secret key>",
                force_path_style=True,
            )
    return found


def _placeholder(plan: planner.Plan) -> credentials.New:
    """What ``render`` shows for a value the operator generates (with
    ``secrets``); the builtin server's access keys alphanumeric, as its agent wants."""

    def new(name: str, key: str) -> str:
        if key == credentials.ACCESS_KEY:
            root = name == plan.names.s3_root_keys
            return "REPLACEgeneratedRootKey" if root else "REPLACEgeneratedAppKey"
        if key in (credentials.SECRET_KEY, credentials.REDIS_PASSWORD_KEY):
            return "REPLACE-generated-by-headroom"
        return "<generated>"

    return new


def placeholder_credentials(
    profile: v1alpha1.ScalingProfile, plan: planner.Plan
) -> credentials.Credentials:
    ref = profile.spec.database.credentials_secret
    ca = profile.spec.database.server_ca_secret
    return credentials.assemble(
        plan,
        login=credentials.Login(
            username=f"<{ref.name}/{ref.username_key}>",
            password=f"<{ref.name}/{ref.password_key}>",
            revision="render",
        ),
        kept=lambda name, key: None,
        new=_placeholder(plan),
        buckets=_placeholder_buckets(plan),
        server_ca_pem=None if ca is None else f"<{ca.name}/{ca.key}>",
    )


def format_plan(plan: planner.Plan, *, what_if: str = "") -> str:
    b = plan.budget
    rows = [
        ("profile", f"{plan.namespace}/{plan.name}"),
        *([("what-if", what_if)] if what_if else []),
        ("app deployment", plan.app.deployment),
        ("app replicas", f"{plan.app.min_replicas}..{plan.app.max_replicas}"),
    ]
    rows += [
        (f"clients: {c.label}", f"{c.max_pods} pods x {c.connections_per_pod} = {c.connections}")
        for c in b.clients
    ]
    rows += [
        ("client demand", str(b.client_demand)),
        ("max_connections", str(b.max_connections)),
        ("reserved", str(b.reserved)),
        *(
            [("read fallback", f"{b.read_fallback} kept for reads when every replica is out")]
            if b.read_fallback
            else []
        ),
        ("available", str(b.available)),
        ("pool mode", plan.pooler.pool_mode),
        ("pooler instances", f"{plan.pooler.instances} ({b.pooler_pods_at_peak} at peak)"),
        ("default_pool_size", str(b.default_pool_size)),
        ("reserve_pool_size", str(b.reserve_pool_size)),
        ("max_db_connections", f"{b.max_db_connections} per pooler pod"),
        ("max_client_conn", f"{b.max_client_conn} per pooler pod"),
        ("server connections", f"{b.server_connections} of {b.available}"),
        ("margin", str(b.margin)),
        *(
            [
                (
                    "beside",
                    "; ".join(
                        f"{u.profile} holds {u.server_connections} on {u.server}"
                        for u in plan.facts.shared
                    ),
                )
            ]
            if plan.facts.shared
            else []
        ),
        *(
            ("share", f"{g.connections} on {server} (weight {plan.share_weight})")
            for server, g in sorted(plan.facts.grants.items())
            if not g.refusal
        ),
    ]
    rows += load_report.rows(plan)
    rows += _read_rows(plan)
    rows += _metrics_rows(plan)
    rows += _scaling_rows(plan)
    rows += _bucket_rows(plan)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _bucket_rows(plan: planner.Plan) -> list[tuple[str, str]]:
    """One row per bucket: where it comes from, retention, upload limit, CORS."""
    rows = []
    for index, bucket in enumerate(plan.buckets):
        if bucket.cosi is not None:
            version = bucket.cosi_version or "not installed"
            source = (
                f"cosi {version}: BucketClaim {bucket.claim_name} (class "
                f"{bucket.cosi.bucket_class_name}), BucketAccess (class "
                f"{bucket.cosi.bucket_access_class_name}) -> Secret {bucket.credentials_secret}"
            )
        elif bucket.builtin is not None:
            source = (
                f"builtin: on {credentials.s3_endpoint(plan)} (versitygw "
                f"{bucket.builtin.image.rsplit(':', 1)[-1]}), app keys in Secret "
                f"{plan.names.s3_app_keys}"
            )
        else:
            assert bucket.s3 is not None
            style = "path-style" if bucket.s3.force_path_style else "virtual-hosted"
            source = (
                f"s3: {bucket.s3.bucket_name} at {bucket.s3.endpoint} (region "
                f"{bucket.s3.region}, {style}), keys from Secret {bucket.credentials_secret}"
            )
        cors = (
            f"CORS {', '.join(bucket.cors.allowed_origins)} {'/'.join(bucket.cors.allowed_methods)}"
            if bucket.cors
            else "no CORS"
        )
        env = "S3_BUCKET" if index == 0 else f"S3_{bucket.env}_BUCKET"
        rows.append((f"bucket {bucket.name}", source))
        rows.append(
            (
                "",
                f"{'Retain' if bucket.retain else 'Delete'}, uploads <= "
                f"{bucket.max_upload_bytes} bytes, {cors}; binding {env}",
            )
        )
    return rows


def _read_rows(plan: planner.Plan) -> list[tuple[str, str]]:
    """The read side: where reads go and the read budget (smallest replica)."""
    read = plan.read
    if read is None:
        return []
    b = read.budget
    rows = [
        (
            "read replicas",
            f"{read.mode}: "
            + ", ".join(
                f"{r.host}:{r.port} (max_connections {r.max_connections})" for r in read.replicas
            ),
        ),
        (
            "read lag bound",
            f"{read.max_lag_seconds}s, polled every {read.poll_seconds}s"
            + (f", or {read.max_lag_bytes} bytes" if read.max_lag_bytes else ""),
        ),
        ("when all lagging", read.when_all_lagging),
    ]
    rows += [
        (
            f"read clients: {c.label}",
            f"{c.max_pods} pods x {c.connections_per_pod} = {c.connections}",
        )
        for c in b.clients
    ]
    rows += [
        (
            "read available",
            f"{b.available} on the smallest replica "
            + (
                "(its share there, see share)"
                if b.shared
                else f"({b.max_connections} - {b.reserved} reserved, lag probes"
                + (" and postgres_exporter)" if read.exporter_connections else ")")
            ),
        ),
        ("read pooler instances", f"{read.instances} ({b.pooler_pods_at_peak} at peak)"),
        ("read max_db_connections", f"{b.max_db_connections} per read-pooler pod"),
        ("read max_client_conn", f"{b.max_client_conn} per read-pooler pod"),
        (
            "read server connections",
            f"{b.server_connections} of {b.available}, "
            "all on one replica if it is the only one left",
        ),
        ("read margin", str(b.margin)),
    ]
    return rows


def _metrics_rows(plan: planner.Plan) -> list[tuple[str, str]]:
    """Where the database servers' own metrics come from, and what they cost."""
    metrics = plan.database_metrics
    if metrics is None:
        return [("database metrics", "off")]
    if metrics.source == database_metrics.CNPG:
        return [("database metrics", f"CloudNativePG Cluster {metrics.cnpg_cluster}'s own")]
    role = f"role from Secret {metrics.credentials.name}"
    statements = "with" if metrics.statements else "without"
    return [
        (
            "database metrics",
            f"postgres_exporter on {len(metrics.servers)} server"
            f"{'s' if len(metrics.servers) > 1 else ''} "
            f"({database_metrics.EXPORTER_CONNECTIONS} connections each, in its budget), "
            f"{role}, {statements} per-statement times",
        )
    ]


def _scaling_rows(plan: planner.Plan) -> list[tuple[str, str]]:
    """Redis instances, queue workers and the app's autoscaling, one row each."""
    rows = []
    for r in plan.redis:
        topology = (
            f"sentinel: 1 master + {r.sentinel_replicas} "
            f"replica{'s' if r.sentinel_replicas > 1 else ''}, 3 sentinels, "
            f"writes need {r.min_replicas_to_write} "
            f"replica{'' if r.min_replicas_to_write == 1 else 's'}"
            if r.sentinel_replicas
            else "standalone"
        )
        persistence = f"PVC {r.persistence.size}" if r.persistence else "in memory"
        rows.append(
            (
                f"redis {r.name}",
                f"{r.use}, {r.eviction_policy}, maxmemory {r.maxmemory_text} of "
                f"{r.memory}, {topology}, {persistence}",
            )
        )
    for q in plan.queues:
        scaler = (
            f"KEDA on backlog, {q.backlog_per_worker} per worker"
            if q.scaler == "keda"
            else f"HPA on {q.cpu_utilization}% CPU (KEDA absent)"
        )
        database = f", {q.database_pool_size} db connections each" if q.database_pool_size else ""
        rows.append(
            (
                f"queue {q.name}",
                f"{q.list_name} on redis {q.redis}; workers {q.min_replicas}..{q.max_replicas}, "
                f"{scaler}{database}",
            )
        )
    auto = plan.autoscaling
    rows.append(
        (
            "app autoscaling",
            f"HPA {auto.min_replicas}..{auto.max_replicas} at {auto.cpu_utilization}% CPU, "
            f"scale-down window {auto.scale_down_stabilization_seconds}s; "
            f"PDB maxUnavailable {auto.max_unavailable}"
            if auto.enabled
            else "disabled",
        )
    )
    return rows


@dataclasses.dataclass(frozen=True)
class _Planned:
    """One profile of FILE: its plan, or why it could not be parsed."""

    profile: v1alpha1.ScalingProfile | None
    plan: planner.Plan | None
    error: str = ""
    what_if: str = ""  # the load --users/--rps put in place of the declared one
    # status.recommendations of a profile read back from the cluster (kubectl get -o yaml)
    recommended: tuple[str, ...] = ()


def _scaled(body: dict[str, Any], factor: float) -> tuple[dict[str, Any], str]:
    """``--scale F``: every load the profile declares (the app's users or
    requests, each queue's jobs) F times; what changed ("": it declares none)."""
    changed = copy.deepcopy(body)
    spec = changed.get("spec")
    if not isinstance(spec, dict):
        return body, ""
    said = []
    load = spec.get("load")
    if isinstance(load, dict):
        users = load.get("users")
        if isinstance(users, dict) and isinstance(users.get("concurrent"), int):
            declared = users["concurrent"]
            users["concurrent"] = math.ceil(declared * factor)
            said.append(f"spec.load.users.concurrent {users['concurrent']} (declared {declared})")
        elif isinstance(load.get("peakRequestsPerSecond"), int | float):
            declared = load["peakRequestsPerSecond"]
            load["peakRequestsPerSecond"] = round(declared * factor, 6)
            said.append(
                f"spec.load.peakRequestsPerSecond {load['peakRequestsPerSecond']:g} "
                f"(declared {declared:g})"
            )
    queues = spec.get("queues")
    for index, queue in enumerate(queues if isinstance(queues, list) else []):
        jobs = queue.get("load") if isinstance(queue, dict) else None
        if isinstance(jobs, dict) and isinstance(jobs.get("peakJobsPerSecond"), int | float):
            declared = jobs["peakJobsPerSecond"]
            jobs["peakJobsPerSecond"] = round(declared * factor, 6)
            said.append(
                f"spec.queues[{index}].load.peakJobsPerSecond "
                f"{jobs['peakJobsPerSecond']:g} (declared {declared:g})"
            )
    if not said:
        return body, ""
    return changed, f"{factor:g}x the declared load: " + ", ".join(said)


def what_if(
    body: dict[str, Any], *, users: int | None, rps: float | None, scale: float | None = None
) -> tuple[dict[str, Any], str]:
    """``headroom plan --users N`` / ``--rps R`` / ``--scale F``: the profile
    with its declared load replaced, and what changed ("": none asked, or the
    profile declares no load). --users keeps the declared think time, --rps the
    declared time per request; --scale multiplies the app's and the queues' loads."""
    if scale is not None:
        return _scaled(body, scale)
    spec = body.get("spec")
    load = spec.get("load") if isinstance(spec, dict) else None
    if (users is None and rps is None) or not isinstance(load, dict):
        return body, ""
    changed = copy.deepcopy(body)
    new_load = changed["spec"]["load"]
    if users is not None:
        declared = load.get("users")
        if not isinstance(declared, dict):
            raise InputError(
                f"--users: {_key(body)} declares spec.load.peakRequestsPerSecond, not "
                "spec.load.users (whose thinkSeconds --users needs); use --rps"
            )
        new_load["users"] = {**declared, "concurrent": users}
        return changed, (
            f"spec.load.users.concurrent {users} (declared {declared.get('concurrent')})"
        )
    declared_rate = load.get("peakRequestsPerSecond")
    new_load.pop("users", None)
    new_load["peakRequestsPerSecond"] = rps
    before = (
        f"declared {declared_rate}"
        if declared_rate is not None
        else "declared as users: " + ", ".join(f"{k} {v}" for k, v in load["users"].items())
        if isinstance(load.get("users"), dict)
        else "declared none"
    )
    return changed, f"spec.load.peakRequestsPerSecond {rps:g} ({before})"


def _key(body: dict[str, Any]) -> str:
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def _plan_all(args: argparse.Namespace, facts: planner.Facts) -> list[_Planned]:
    """The profiles of FILE planned as the operator plans them on shared servers:
    every server divided among every profile on it (server_shares). The
    ``--with`` files' profiles exist already (older, in the order given);
    FILE's are created after them in one go (one apply: the same second, so
    by name when minimums do not fit, as the API server would stamp them). A
    document that carries metadata.creationTimestamp (read back from the
    cluster) is ranked by it, as the pass ranks it."""
    others = [body for path in args.beside for body in _load_beside(path)]
    users, rps = getattr(args, "users", None), getattr(args, "rps", None)
    scale = getattr(args, "scale", None)
    mine, changes, recommended = [], {}, {}
    for body in _load(args.file):
        changed, change = what_if(body, users=users, rps=rps, scale=scale)
        mine.append(changed)
        changes[_key(body)] = change
        found_status = body.get("status")
        entries = found_status.get("recommendations") if isinstance(found_status, dict) else None
        recommended[_key(body)] = tuple(
            overview.recommended(e) for e in entries or [] if isinstance(e, dict)
        )
    if scale is not None and not any(changes.values()):
        raise InputError(
            f"--scale: no profile in {args.file} declares spec.load or spec.queues[].load"
        )
    if (users is not None or rps is not None) and not any(changes.values()):
        raise InputError(f"--users/--rps: no profile in {args.file} declares spec.load")
    peers: list[server_shares.Peer] = []
    found: list[tuple[str, v1alpha1.ScalingProfile | None, str]] = []
    seen: set[str] = set()
    for index, body in enumerate([*others, *mine]):
        key = _key(body)
        if key in seen:
            raise InputError(f"profile {key} is given twice")
        seen.add(key)
        try:
            profile = v1alpha1.parse_profile(body)
        except v1alpha1.ProfileError as err:
            if index < len(others):
                raise InputError(f"--with: {key}: {err}") from None
            found.append((key, None, str(err)))
            continue
        # the order the pass ranks by when minimums do not fit: a document read
        # back from the cluster carries its creationTimestamp; else the order's
        # text only compares: existing ones first, then FILE's (one apply: the
        # same second, so by name)
        stamped = str((body.get("metadata") or {}).get("creationTimestamp") or "")
        created = stamped or (f"{index:09d}" if index < len(others) else "new")
        peers.append(server_shares.peer(profile, body=body, facts=facts, created=created))
        if index >= len(others):
            found.append((key, profile, ""))
    grants = server_shares.shares(peers)
    out = []
    for key, parsed, error in found:
        if parsed is None:
            out.append(_Planned(None, None, error))
            continue
        planned = planner.plan(parsed, facts=dataclasses.replace(facts, grants=grants[key]))
        out.append(
            _Planned(
                parsed,
                planned,
                what_if=changes.get(key, ""),
                recommended=recommended.get(key, ()),
            )
        )
    return out


def _cmd_plan(args: argparse.Namespace) -> int:
    status = 0
    facts = planner.Facts(keda=args.keda, cosi=_cosi(args))
    for index, found in enumerate(_plan_all(args, facts)):
        if found.plan is None:
            print(f"error: {found.error}", file=sys.stderr)
            status = 1
            continue
        text = format_plan(found.plan, what_if=found.what_if)
        # what the cluster observed, when FILE is a profile read back with its status
        text += "".join(f"\n{'observed':<20}{line}" for line in found.recommended)
        print(("\n" if index else "") + text, flush=True)
        if not found.plan.ok:
            print(f"error: {found.plan.problem_text()}", file=sys.stderr, flush=True)
            status = 1
    return status


def _cmd_render(args: argparse.Namespace) -> int:
    out: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    facts = planner.Facts(
        keda=args.keda, prometheus_operator=args.prometheus_operator, cosi=_cosi(args)
    )
    given = parse_selector(args.app_selector) if args.app_selector else None
    deployments = _deployments([*args.beside, args.file])
    for found in _plan_all(args, facts):
        if found.plan is None or found.profile is None:
            print(f"error: {found.error}", file=sys.stderr)
            return 1
        plan = found.plan
        if not plan.ok:
            print(f"error: {plan.problem_text()}", file=sys.stderr)
            return 1
        groups += alert_rules.rule_groups(plan)
        if args.rules:
            continue
        selector = app_selector(plan, deployments=deployments, given=given)
        creds = placeholder_credentials(found.profile, plan)
        out.extend(desired.build(plan, creds, app_pod_selector=selector).values())
    if args.rules:
        sys.stdout.write(yamlfmt.dump({"groups": groups}))
    else:
        sys.stdout.write(yamlfmt.dump_all(out))
    return 0


def _cmd_crd(_: argparse.Namespace) -> int:
    sys.stdout.write(yamlfmt.dump(crd.build_crd()))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - the cluster client only when talking to a cluster
    import json  # noqa: PLC0415

    from headroom.kube import apiserver, errors, kubeconfig  # noqa: PLC0415
    from headroom.reconcile import watches  # noqa: PLC0415

    async def fetch() -> list[dict[str, Any]]:
        kube = apiserver.Kube.from_environment(timeout_seconds=args.timeout)
        try:
            items, _ = await kube.list(watches.PROFILE, namespace=args.namespace)
            return items
        finally:
            await kube.close()

    try:
        profiles = asyncio.run(fetch())
    except (kubeconfig.ConfigError, errors.KubeError, OSError) as err:
        print(f"error: cannot list ScalingProfiles: {err}", file=sys.stderr)
        return 1
    groups = overview.build(profiles)
    if args.output == "json":
        sys.stdout.write(json.dumps(overview.to_json(groups), indent=2) + "\n")
    else:
        sys.stdout.write(overview.format_table(groups))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from headroom.runtime import process  # noqa: PLC0415 - aiohttp only when running

    return process.run(namespace=args.namespace)


COSI_CHOICES = ("v1alpha1", "v1alpha2", "none")
COSI_HELP = (
    "the COSI version the cluster serves, for buckets with provider cosi "
    "(default v1alpha1, what drivers implement; none: COSI is not installed)"
)


def _factor(text: str) -> float:
    """--scale's F: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a factor above 0 (e.g. 2 or 0.5)")
    return value


def _cosi(args: argparse.Namespace) -> str:
    return "" if args.cosi == "none" else str(args.cosi)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="headroom", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="print the plan of the profile(s) in FILE")
    p.add_argument("file", help="YAML file with ScalingProfile(s), or - for stdin")
    p.add_argument("--with", dest="beside", action="append", default=[], help=WITH_HELP)
    p.add_argument("--keda", action="store_true", help=KEDA_HELP)
    p.add_argument("--cosi", choices=COSI_CHOICES, default="v1alpha1", help=COSI_HELP)
    peak = p.add_mutually_exclusive_group()
    peak.add_argument("--users", type=int, metavar="N", help=USERS_HELP)
    peak.add_argument("--rps", type=float, metavar="R", help=RPS_HELP)
    peak.add_argument("--scale", type=_factor, metavar="F", help=SCALE_HELP)
    p.set_defaults(func=_cmd_plan)
    r = sub.add_parser("render", help="print every child object of FILE's profile(s) as YAML")
    r.add_argument("file")
    r.add_argument("--with", dest="beside", action="append", default=[], help=WITH_HELP)
    r.add_argument("--keda", action="store_true", help=KEDA_HELP)
    r.add_argument("--cosi", choices=COSI_CHOICES, default="v1alpha1", help=COSI_HELP)
    r.add_argument(
        "--prometheus-operator",
        action="store_true",
        help="render for a cluster with prometheus-operator: PrometheusRule and monitors "
        "instead of the rule-file ConfigMap",
    )
    r.add_argument(
        "--app-selector",
        metavar="KEY=VALUE,...",
        help="the app pods' labels, for the NetworkPolicies (default: the selector of the "
        "app's Deployment in FILE or a --with file, as the operator reads it)",
    )
    r.add_argument(
        "--rules",
        action="store_true",
        help="print only the alerting rule file (for promtool check rules / rule_files)",
    )
    r.set_defaults(func=_cmd_render)
    c = sub.add_parser("crd", help="print the generated ScalingProfile CRD")
    c.set_defaults(func=_cmd_crd)
    st = sub.add_parser(
        "status",
        help="every profile in the cluster, by database server: planned and ceiling "
        "connections, the shared total, Ready/Stalled, what is refused",
    )
    st.add_argument("-n", "--namespace", default=None, help="only this namespace")
    st.add_argument("-o", "--output", choices=("table", "json"), default="table")
    st.add_argument("--timeout", type=float, default=30.0, help="seconds for the API call")
    st.set_defaults(func=_cmd_status)
    o = sub.add_parser("run", help="run the operator")
    o.add_argument("--namespace", action="append", default=None, help="watch only these")
    o.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
