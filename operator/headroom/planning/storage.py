"""Object storage, pure: a plan per bucket of ``spec.storage.buckets`` and the
translation of whatever Secret delivers a bucket's credentials into one shape.

Called by :mod:`headroom.planning.plan` (the plan), the builders (BucketClaim,
BucketAccess, the binding's S3 entries) and the engine (which reads the
credentials Secrets and hands their data to :func:`credentials_from`).

Providers: ``cosi`` (a BucketClaim + BucketAccess of the COSI version the
cluster serves; the driver writes the credentials Secret, v1alpha1 as one
``BucketInfo`` JSON key, v1alpha2 as ``COSI_S3_*`` keys) and ``s3`` (an
existing bucket; the profile names endpoint, bucket and a credentials Secret).
A provider is one model in :mod:`headroom.api.v1alpha1`, one branch in
:func:`bucket_plans` and one in :func:`credentials_from`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from headroom.api import v1alpha1

COSI_VERSIONS = ("v1alpha1", "v1alpha2")  # in order of preference
COSI_GROUP = "objectstorage.k8s.io"
# v1alpha1 (release-0.2, what drivers implement): one key holding BucketInfo JSON
COSI_V1ALPHA1_KEY = "BucketInfo"
# v1alpha2: one key per variable (client/apis/objectstorage/v1alpha2/protocols.go)
COSI_S3_BUCKET_ID = "COSI_S3_BUCKET_ID"
COSI_S3_ENDPOINT = "COSI_S3_ENDPOINT"
COSI_S3_REGION = "COSI_S3_REGION"
COSI_S3_ADDRESSING_STYLE = "COSI_S3_ADDRESSING_STYLE"
COSI_S3_ACCESS_KEY_ID = "COSI_S3_ACCESS_KEY_ID"
COSI_S3_ACCESS_SECRET_KEY = "COSI_S3_ACCESS_SECRET_KEY"  # noqa: S105 - a key name
RETAIN_ANNOTATION = "headroom.dev/retain"
BUCKET_LABEL = "headroom.dev/bucket"


def retained_key(namespace: str, profile: str) -> str:
    """The owner-index key of a profile's retained children (never a uid)."""
    return f"retained:{namespace}/{profile}"


def is_retained(obj: dict[str, object]) -> bool:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return isinstance(annotations, dict) and annotations.get(RETAIN_ANNOTATION) == "true"


@dataclass(frozen=True)
class BucketPlan:
    name: str  # the profile's name for it (S3_<ENV>_BUCKET)
    env: str  # MEAL_PHOTOS
    provider: str  # a v1alpha1.BUCKET_PROVIDERS entry
    retain: bool  # deletionPolicy Retain: the claim carries no owner reference
    max_upload_bytes: int
    cors: v1alpha1.BucketCors | None
    # where its credentials come from: a Secret in the profile's namespace and
    # the spec field a missing one is reported on
    credentials_secret: str
    credentials_field: str
    binding_secret: str  # its servicebinding.io "type: s3" Secret
    cosi: v1alpha1.CosiBucket | None = None
    cosi_version: str = ""  # the served COSI version ("": COSI is not installed)
    claim_name: str = ""  # BucketClaim and BucketAccess (provider cosi)
    s3: v1alpha1.S3Bucket | None = None


def claim_name(profile: str, bucket: str) -> str:
    return f"{profile}-{bucket}"


def bucket_plans(profile: v1alpha1.ScalingProfile, *, cosi_version: str) -> tuple[BucketPlan, ...]:
    storage = profile.spec.storage
    if storage is None:
        return ()
    plans = []
    for index, bucket in enumerate(storage.buckets):
        base = BucketPlan(
            name=bucket.name,
            env=v1alpha1.env_name(bucket.name),
            provider=bucket.provider,
            retain=bucket.deletion_policy == "Retain",
            max_upload_bytes=bucket.max_upload_bytes,
            cors=bucket.cors,
            credentials_secret="",
            credentials_field="",
            binding_secret=f"{profile.name}-binding-{bucket.name}",
        )
        if bucket.cosi is not None:
            plans.append(
                dataclasses.replace(
                    base,
                    credentials_secret=f"{profile.name}-bucket-{bucket.name}",
                    credentials_field=f"spec.storage.buckets[{index}].cosi",
                    cosi=bucket.cosi,
                    cosi_version=cosi_version,
                    claim_name=claim_name(profile.name, bucket.name),
                )
            )
        elif bucket.s3 is not None:
            plans.append(
                dataclasses.replace(
                    base,
                    credentials_secret=bucket.s3.credentials_secret.name,
                    credentials_field=f"spec.storage.buckets[{index}].s3.credentialsSecret",
                    s3=bucket.s3,
                )
            )
    return tuple(plans)


def preferred_cosi_version(served: dict[str, bool]) -> str:
    """``served``: COSI version -> its BucketClaim and BucketAccess are served."""
    return next((v for v in COSI_VERSIONS if served.get(v)), "")


# -- credentials ----------------------------------------------------------------


@dataclass(frozen=True)
class BucketCredentials:
    """What the app needs to reach one bucket (secret: never logged)."""

    endpoint: str
    region: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    force_path_style: bool
    revision: str = ""  # the source Secret's resourceVersion

    def same_connection(self, other: BucketCredentials) -> bool:
        """Same endpoint, region, addressing and key: one S3 client serves both."""
        return (
            self.endpoint,
            self.region,
            self.force_path_style,
            self.access_key_id,
            self.secret_access_key,
        ) == (
            other.endpoint,
            other.region,
            other.force_path_style,
            other.access_key_id,
            other.secret_access_key,
        )


class CredentialsError(ValueError):
    """The Secret is there but cannot serve as the bucket's credentials.
    ``str()`` names the Secret and key, never a value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def credentials_from(
    bucket: BucketPlan, data: dict[str, str], *, secret: str, revision: str = ""
) -> BucketCredentials:
    """``data``: the decoded Secret. Raises :class:`CredentialsError`."""
    if bucket.s3 is not None:
        ref = bucket.s3.credentials_secret
        values = {}
        for key, spec_field in (
            (ref.access_key_id_key, "accessKeyIdKey"),
            (ref.secret_access_key_key, "secretAccessKeyKey"),
        ):
            if not data.get(key):
                raise CredentialsError(
                    "CredentialsKeyMissing",
                    f"Secret {secret} has no key {key!r} ({bucket.credentials_field}.{spec_field})",
                )
            values[key] = data[key]
        return BucketCredentials(
            endpoint=bucket.s3.endpoint,
            region=bucket.s3.region,
            bucket=bucket.s3.bucket_name,
            access_key_id=values[ref.access_key_id_key],
            secret_access_key=values[ref.secret_access_key_key],
            force_path_style=bucket.s3.force_path_style,
            revision=revision,
        )
    if bucket.cosi_version == "v1alpha1" or COSI_V1ALPHA1_KEY in data:
        return _from_bucket_info(data, secret=secret, revision=revision)
    return _from_cosi_keys(data, secret=secret, revision=revision)


def _from_bucket_info(data: dict[str, str], *, secret: str, revision: str) -> BucketCredentials:
    """COSI v1alpha1: ``BucketInfo`` = {"spec": {"bucketName", "secretS3":
    {"endpoint", "region", "accessKeyID", "accessSecretKey"}}}."""
    raw = data.get(COSI_V1ALPHA1_KEY)
    if not raw:
        raise CredentialsError(
            "CredentialsKeyMissing", f"Secret {secret} has no key {COSI_V1ALPHA1_KEY!r}"
        )
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    spec = info.get("spec") if isinstance(info, dict) else None
    s3 = spec.get("secretS3") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(s3, dict):
        raise CredentialsError(
            "CredentialsInvalid",
            f"Secret {secret} key {COSI_V1ALPHA1_KEY!r} is not a BucketInfo with spec.secretS3",
        )
    fields = {
        "spec.bucketName": spec.get("bucketName"),
        "spec.secretS3.endpoint": s3.get("endpoint"),
        "spec.secretS3.accessKeyID": s3.get("accessKeyID"),
        "spec.secretS3.accessSecretKey": s3.get("accessSecretKey"),
    }
    empty = [k for k, v in fields.items() if not isinstance(v, str) or not v]
    if empty:
        raise CredentialsError(
            "CredentialsKeyMissing",
            f"Secret {secret} key {COSI_V1ALPHA1_KEY!r} has no {', '.join(empty)}",
        )
    region = s3.get("region")
    return BucketCredentials(
        endpoint=_endpoint(str(fields["spec.secretS3.endpoint"]), secret=secret),
        region=region if isinstance(region, str) and region else "us-east-1",
        bucket=str(fields["spec.bucketName"]),
        access_key_id=str(fields["spec.secretS3.accessKeyID"]),
        secret_access_key=str(fields["spec.secretS3.accessSecretKey"]),
        # v1alpha1 says nothing about addressing; path style works on every
        # S3-compatible server (and on AWS for names without dots)
        force_path_style=True,
        revision=revision,
    )


def _from_cosi_keys(data: dict[str, str], *, secret: str, revision: str) -> BucketCredentials:
    """COSI v1alpha2: COSI_S3_BUCKET_ID, _ENDPOINT, _REGION, _ADDRESSING_STYLE,
    _ACCESS_KEY_ID, _ACCESS_SECRET_KEY."""
    needed = (COSI_S3_BUCKET_ID, COSI_S3_ENDPOINT, COSI_S3_ACCESS_KEY_ID, COSI_S3_ACCESS_SECRET_KEY)
    missing = [k for k in needed if not data.get(k)]
    if missing:
        raise CredentialsError(
            "CredentialsKeyMissing", f"Secret {secret} has no key {', '.join(missing)}"
        )
    return BucketCredentials(
        endpoint=_endpoint(data[COSI_S3_ENDPOINT], secret=secret),
        region=data.get(COSI_S3_REGION) or "us-east-1",
        bucket=data[COSI_S3_BUCKET_ID],
        access_key_id=data[COSI_S3_ACCESS_KEY_ID],
        secret_access_key=data[COSI_S3_ACCESS_SECRET_KEY],
        force_path_style=data.get(COSI_S3_ADDRESSING_STYLE, "path") != "virtual",
        revision=revision,
    )


def _endpoint(value: str, *, secret: str) -> str:
    """Drivers write ``host:port`` or a URL; the binding carries a URL."""
    text = value.strip().rstrip("/")
    if "://" not in text:
        text = f"https://{text}"
    if any(c.isspace() for c in text) or len(text) > 2048:
        raise CredentialsError("CredentialsInvalid", f"Secret {secret}: the endpoint is no URL")
    return text
