"""The inputs a build needs beyond the plan, read once the plan is known: the
app's Deployment (its pod selector), the app's database login, the server CA
the pooler verifies Postgres with, what each bucket's Secret holds, and the
values Headroom generated earlier (kept in its own Secrets, from the cache).

Every Secret a profile references is read from a watch of its own, registered
in ``refs`` so a change queues the profile; nothing read here is ever logged.
:func:`new` makes a value Headroom generates (the one place ``secrets`` is
called). Called by :mod:`headroom.reconcile.reconciler`, which hands what is
read to :func:`headroom.planning.credentials.assemble`.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from dataclasses import dataclass, field

from cryptography import x509

from headroom.planning import credentials, object_storage, planner
from headroom.reconcile import cluster_view

Obj = cluster_view.Obj
InputRef = cluster_view.InputRef


@dataclass(frozen=True)
class Inputs:
    app: Obj | None  # the app's Deployment (None: not found)
    login: credentials.Login
    server_ca_pem: str | None = None
    server_ca_revision: str = ""
    # what each cosi/s3 bucket's Secret holds, when usable
    buckets: dict[str, object_storage.BucketCredentials] = field(default_factory=dict)
    # why a bucket has none: bucket name -> (reason, message)
    bucket_problems: dict[str, tuple[str, str]] = field(default_factory=dict)
    # spec.database.metrics.credentialsSecret's resourceVersion ("": none given;
    # None: it does not exist)
    monitor_revision: str | None = ""

    @property
    def app_selector(self) -> Obj | None:
        found = (self.app or {}).get("spec", {}).get("selector")
        return found if isinstance(found, dict) else None


async def read(
    cluster: cluster_view.Cluster, planned: planner.Plan, *, refs: set[InputRef]
) -> Inputs:
    """Raises :class:`cluster_view.InputError` when the login or the CA is
    missing or unusable (a bucket's problem is reported, not raised)."""
    app_ref: InputRef = ("Deployment", planned.namespace, planned.app.deployment)
    refs.add(app_ref)
    app = await cluster.read_input(app_ref)
    login = await _login(cluster, planned, refs=refs)
    pem, revision = None, ""
    if planned.database.server_ca_secret is not None:
        pem, revision = await _server_ca(cluster, planned, refs=refs)
    buckets, problems = await _bucket_credentials(cluster, planned, refs=refs)
    return Inputs(
        app=app,
        login=login,
        server_ca_pem=pem,
        server_ca_revision=revision,
        buckets=buckets,
        bucket_problems=problems,
        monitor_revision=await _monitor_revision(cluster, planned, refs),
    )


async def _monitor_revision(
    cluster: cluster_view.Cluster, planned: planner.Plan, refs: set[InputRef]
) -> str | None:
    """The monitoring role's Secret revision (its values are never read: the
    exporters get them through secretKeyRef); None when it does not exist."""
    metrics = planned.database_metrics
    if metrics is None or not metrics.monitoring_role:
        return ""
    ref: InputRef = ("Secret", planned.namespace, metrics.credentials.name)
    refs.add(ref)
    found = await cluster.read_input(ref)
    if found is None:
        return None
    return str(found["metadata"].get("resourceVersion", ""))


def kept(cluster: cluster_view.Cluster, planned: planner.Plan) -> credentials.Kept:
    """A value Headroom generated earlier (kept once made), from its own Secret."""

    def lookup(name: str, key: str) -> str | None:
        found = cluster.cached("Secret", planned.namespace, name)
        owners = (found or {}).get("metadata", {}).get("ownerReferences") or []
        if found is None or not any(ref.get("uid") == planned.uid for ref in owners):
            return None
        try:
            return _decode(found, key) or None
        except (UnicodeDecodeError, ValueError):
            return None

    return lookup


def new(name: str, key: str) -> str:
    """A new value for ``key`` of Headroom's Secret ``name``."""
    if key == credentials.ACCESS_KEY:
        return secrets.token_hex(10)  # an S3 access key: letters and digits
    if key == credentials.SECRET_KEY:
        return secrets.token_urlsafe(30)
    if key == credentials.REDIS_PASSWORD_KEY:
        return secrets.token_hex(24)  # goes into redis:// URLs unescaped
    return secrets.token_urlsafe(24)


def _decode(secret: Obj, key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8", errors="strict")


async def _input_secret(
    cluster: cluster_view.Cluster,
    planned: planner.Plan,
    *,
    refs: set[InputRef],
    name: str,
    field_path: str,
    reason: str,
) -> Obj:
    """A Secret the profile references (never ours); InputError when missing."""
    ref: InputRef = ("Secret", planned.namespace, name)
    refs.add(ref)
    found = await cluster.read_input(ref)
    if found is None:
        raise cluster_view.InputError(reason, f"Secret {name} ({field_path}) does not exist")
    return found


async def _login(
    cluster: cluster_view.Cluster, planned: planner.Plan, *, refs: set[InputRef]
) -> credentials.Login:
    ref = planned.database.credentials_secret
    source = await _input_secret(
        cluster,
        planned,
        refs=refs,
        name=ref.name,
        field_path="spec.database.credentialsSecret.name",
        reason="CredentialsNotFound",
    )
    try:
        username = _decode(source, ref.username_key)
        password = _decode(source, ref.password_key)
    except (UnicodeDecodeError, ValueError):
        raise cluster_view.InputError(
            "CredentialsInvalid", f"Secret {ref.name} holds values that are not UTF-8"
        ) from None
    for secret_key, value in ((ref.username_key, username), (ref.password_key, password)):
        if not value:
            raise cluster_view.InputError(
                "CredentialsInvalid",
                f"Secret {ref.name} has no key {secret_key!r} "
                "(spec.database.credentialsSecret.usernameKey/passwordKey)",
            )
    assert username is not None and password is not None
    return credentials.Login(
        username=username,
        password=password,
        revision=str(source["metadata"].get("resourceVersion", "")),
    )


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


async def _server_ca(
    cluster: cluster_view.Cluster, planned: planner.Plan, *, refs: set[InputRef]
) -> tuple[str, str]:
    """The PEM of spec.database.serverCASecret and its resourceVersion."""
    ref = planned.database.server_ca_secret
    assert ref is not None
    found = await _input_secret(
        cluster,
        planned,
        refs=refs,
        name=ref.name,
        field_path="spec.database.serverCASecret.name",
        reason="ServerCANotFound",
    )
    try:
        pem = _decode(found, ref.key) or ""
    except (UnicodeDecodeError, ValueError):
        pem = ""
    problem = _ca_problem(pem)
    if problem is not None:
        raise cluster_view.InputError(
            "ServerCAInvalid",
            f"Secret {ref.name} key {ref.key!r} (spec.database.serverCASecret): {problem}",
        )
    return pem, str(found["metadata"].get("resourceVersion", ""))


async def _bucket_credentials(
    cluster: cluster_view.Cluster, planned: planner.Plan, *, refs: set[InputRef]
) -> tuple[dict[str, object_storage.BucketCredentials], dict[str, tuple[str, str]]]:
    """Each cosi/s3 bucket's credentials from its Secret (the profile's for s3,
    the one the COSI driver writes for cosi), or why not (reason, message). A
    builtin bucket's are Headroom's own (planning.credentials)."""
    found: dict[str, object_storage.BucketCredentials] = {}
    problems: dict[str, tuple[str, str]] = {}
    for bucket in planned.buckets:
        if bucket.builtin is not None:
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
        secret = await cluster.read_input(ref)
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
            found[bucket.name] = object_storage.credentials_from(
                bucket,
                data,
                secret=ref[2],
                revision=str(secret["metadata"].get("resourceVersion", "")),
            )
        except (UnicodeDecodeError, ValueError) as err:
            reason = getattr(err, "reason", "CredentialsInvalid")
            text = (
                str(err)
                if isinstance(err, object_storage.CredentialsError)
                else (f"Secret {ref[2]} holds values that are not UTF-8")
            )
            problems[bucket.name] = (reason, text)
    return found, problems
