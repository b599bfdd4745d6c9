"""The objects of ``spec.storage.buckets``: a COSI BucketClaim + BucketAccess
per ``cosi`` bucket (of the version the cluster serves), and per bucket whose
credentials were read a servicebinding.io ``type: s3`` Secret.

Pure; called by :mod:`headroom.builders.desired` (one component per bucket)
and :mod:`headroom.builders.binding` (the S3 entries of the app's binding).

Retention: a ``Retain`` bucket's claim carries no owner reference (garbage
collection would delete it with the profile) but our labels and the
``headroom.dev/retain`` annotation; the reconcile pass never prunes such an object and
a profile of the same name adopts it again. The BucketAccess (the app's key)
is always owned: deleting the profile revokes the key, not the bucket.
"""

from __future__ import annotations

from headroom.builders import common
from headroom.planning import credentials, object_storage, planner, versitygw

COMPONENT = "bucket"
APP_NAME = "headroom-bucket"
BINDING_TYPE = "servicebinding.io/s3"
PROTOCOL = "S3"


def component(bucket: object_storage.BucketPlan) -> str:
    return f"bucket/{bucket.name}"


def _meta(
    plan: planner.Plan, bucket: object_storage.BucketPlan, name: str, *, retain: bool
) -> common.Obj:
    meta = common.metadata(plan, name=name, component=COMPONENT, app_name=APP_NAME, retain=retain)
    meta["labels"][object_storage.BUCKET_LABEL] = bucket.name
    return meta


def build(
    plan: planner.Plan, bucket: object_storage.BucketPlan, creds: credentials.Credentials
) -> list[common.Obj]:
    objects: list[common.Obj] = []
    if bucket.cosi is not None and bucket.cosi_version:
        objects += _cosi(plan, bucket)
    found = creds.buckets.get(bucket.name)
    if found is not None:
        objects.append(_binding_secret(plan, bucket, found))
    return objects


def _cosi(plan: planner.Plan, bucket: object_storage.BucketPlan) -> list[common.Obj]:
    assert bucket.cosi is not None
    version = f"{object_storage.COSI_GROUP}/{bucket.cosi_version}"
    claim: common.Obj = {
        "apiVersion": version,
        "kind": "BucketClaim",
        "metadata": _meta(plan, bucket, bucket.claim_name, retain=bucket.retain),
        "spec": {"bucketClassName": bucket.cosi.bucket_class_name, "protocols": [PROTOCOL]},
    }
    access: common.Obj = {
        "apiVersion": version,
        "kind": "BucketAccess",
        "metadata": _meta(plan, bucket, bucket.claim_name, retain=False),
    }
    if bucket.cosi_version == "v1alpha1":
        access["spec"] = {
            "bucketClaimName": bucket.claim_name,
            "bucketAccessClassName": bucket.cosi.bucket_access_class_name,
            "credentialsSecretName": bucket.credentials_secret,
            "protocol": PROTOCOL,
        }
    else:
        access["spec"] = {
            "bucketAccessClassName": bucket.cosi.bucket_access_class_name,
            "bucketClaims": [
                {
                    "bucketClaimName": bucket.claim_name,
                    "accessMode": "ReadWrite",
                    "accessSecretName": bucket.credentials_secret,
                }
            ],
            "protocol": PROTOCOL,
        }
    return [claim, access]


def _binding_secret(
    plan: planner.Plan, bucket: object_storage.BucketPlan, found: object_storage.BucketCredentials
) -> common.Obj:
    """servicebinding.io: a directory of keys with ``type``; this one per bucket."""
    data = {
        "type": "s3",
        "provider": bucket.provider,
        "endpoint": found.endpoint,
        "region": found.region,
        "bucket": found.bucket,
        "access-key-id": found.access_key_id,
        "secret-access-key": found.secret_access_key,
        "force-path-style": _bool(found.force_path_style),
        "max-upload-bytes": str(bucket.max_upload_bytes),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(plan, bucket, bucket.binding_secret, retain=False),
        "type": BINDING_TYPE,
        "data": common.secret_data(data),
    }


def _bool(value: bool) -> str:
    return "true" if value else "false"


def binding_entries(
    plan: planner.Plan, creds: credentials.Credentials, *, omit: frozenset[str]
) -> dict[str, str]:
    """The env names S3 SDKs read, for the first bucket of the spec (the
    default): S3_ENDPOINT, S3_BUCKET, S3_REGION, S3_FORCE_PATH_STYLE,
    S3_MAX_UPLOAD_BYTES, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (plus
    AWS_REGION and AWS_ENDPOINT_URL_S3, which the AWS SDKs read themselves),
    S3_PUBLIC_URL (where browsers read its objects, when known) and for a
    builtin bucket on a public server S3_PUBLIC_ENDPOINT (presign with it).
    With several buckets every one gets S3_<NAME>_BUCKET and
    S3_<NAME>_MAX_UPLOAD_BYTES, and one on another endpoint or key than the
    default also S3_<NAME>_ENDPOINT, _REGION, _FORCE_PATH_STYLE,
    _ACCESS_KEY_ID and _SECRET_ACCESS_KEY. A bucket whose credentials are not
    known yet (or that is contained) has no keys at all: the default's names
    never point at another bucket."""

    def usable(bucket: object_storage.BucketPlan) -> object_storage.BucketCredentials | None:
        if component(bucket) in omit:
            return None
        return creds.buckets.get(bucket.name)

    if not plan.buckets:
        return {}
    entries: dict[str, str] = {}
    server = versitygw.server_plan(plan.buckets)
    public = (
        object_storage.public_endpoint(server.public)
        if server is not None and server.public
        else ""
    )

    def browser_entries(bucket: object_storage.BucketPlan, prefix: str) -> dict[str, str]:
        """Where browsers reach it: the public base URL of its objects, and for a
        builtin bucket the public endpoint to presign with (the URLs then name it)."""
        found: dict[str, str] = {}
        if bucket.public_url:
            found[f"{prefix}_PUBLIC_URL"] = bucket.public_url
        if bucket.builtin is not None and public:
            found[f"{prefix}_PUBLIC_ENDPOINT"] = public
        return found

    default_bucket = plan.buckets[0]
    default = usable(default_bucket)
    if default is not None:
        entries |= browser_entries(default_bucket, "S3")
        entries |= {
            "S3_ENDPOINT": default.endpoint,
            "S3_BUCKET": default.bucket,
            "S3_REGION": default.region,
            "S3_FORCE_PATH_STYLE": _bool(default.force_path_style),
            "S3_MAX_UPLOAD_BYTES": str(default_bucket.max_upload_bytes),
            "AWS_ACCESS_KEY_ID": default.access_key_id,
            "AWS_SECRET_ACCESS_KEY": default.secret_access_key,
            "AWS_REGION": default.region,
            "AWS_ENDPOINT_URL_S3": default.endpoint,
        }
    if len(plan.buckets) == 1:
        return entries
    for bucket in plan.buckets:
        found = usable(bucket)
        if found is None:
            continue
        prefix = f"S3_{bucket.env}"
        entries[f"{prefix}_BUCKET"] = found.bucket
        entries[f"{prefix}_MAX_UPLOAD_BYTES"] = str(bucket.max_upload_bytes)
        entries |= browser_entries(bucket, prefix)
        if default is None or not found.same_connection(default):
            entries |= {
                f"{prefix}_ENDPOINT": found.endpoint,
                f"{prefix}_REGION": found.region,
                f"{prefix}_FORCE_PATH_STYLE": _bool(found.force_path_style),
                f"{prefix}_ACCESS_KEY_ID": found.access_key_id,
                f"{prefix}_SECRET_ACCESS_KEY": found.secret_access_key,
            }
    return entries
