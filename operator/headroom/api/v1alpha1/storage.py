"""``spec.storage``: the app's buckets, each from one provider (COSI, an
existing S3-compatible bucket, or the builtin S3 server Headroom runs), their
browser access (CORS) and how they are named in the binding."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from headroom.api.v1alpha1 import images
from headroom.api.v1alpha1.pods import SAME_CLAIM, Resources, Volume
from headroom.api.v1alpha1.schema import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    IMAGE,
    SECRET_KEY,
    SECRET_KEY_MAX,
    Model,
    Quantity,
    cel,
    quantity_rule,
)

# S3's bucket naming rules (general purpose buckets): 3-63 characters of
# lowercase letters, digits, dots and hyphens, starting and ending with a
# letter or digit; no "..", not an IPv4 address, none of the reserved
# prefixes and suffixes.
BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"
_IPV4 = r"^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$"  # [.]: a CEL string has no backslash-dot escape
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", ".mrap")


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse ``name`` as a bucket name (None: it would not)."""
    if not 3 <= len(name) <= 63:
        return "a bucket name has 3 to 63 characters"
    if not re.match(BUCKET_NAME, name):
        return (
            "a bucket name has only lowercase letters, digits, dots and hyphens, "
            "and starts and ends with a letter or digit"
        )
    if ".." in name:
        return "a bucket name has no two adjacent dots"
    if re.match(_IPV4, name):
        return "a bucket name is not an IP address"
    for prefix in _BUCKET_PREFIXES:
        if name.startswith(prefix):
            return f"a bucket name does not start with {prefix!r}"
    for suffix in _BUCKET_SUFFIXES:
        if name.endswith(suffix):
            return f"a bucket name does not end with {suffix!r}"
    return None


def _checked_bucket_name(name: str) -> str:
    problem = bucket_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


BucketName = Annotated[
    str,
    Field(min_length=3, max_length=63, pattern=BUCKET_NAME),
    AfterValidator(_checked_bucket_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 3,
            "maxLength": 63,
            "pattern": BUCKET_NAME,
            "x-kubernetes-validations": [
                cel("!self.contains('..')", "a bucket name has no two adjacent dots"),
                cel(f"!self.matches('{_IPV4}')", "a bucket name is not an IP address"),
            ],
        }
    ),
]
# An origin a browser sends: scheme://host[:port], one "*." wildcard label at
# most, or "*" (any origin) when asked for explicitly.
CORS_ORIGIN = r"^(\*|https?://(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?)$"
HTTP_HEADER = r"^(\*|[A-Za-z0-9!#$%&'*+.^_`|~-]+)$"
ENDPOINT = r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$"
REGION = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A base URL objects are served at for browsers: scheme, host, optional port and path.
PUBLIC_URL = (
    r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]*)?$"
)
MAX_UPLOAD_BYTES = 5 * 1024**3  # S3's largest single PUT / POST object
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024**2


HttpMethod = Literal["GET", "PUT", "POST", "HEAD", "DELETE"]


def _upload_methods() -> list[HttpMethod]:
    return ["GET", "PUT", "POST", "HEAD"]


class BucketCors(Model):
    """Cross-origin access for browsers that upload and download directly
    (presigned URLs). No origin is allowed unless listed; ``*`` only when
    listed, and never together with allowCredentials."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.allowCredentials) && self.allowCredentials && "
                    "has(self.allowedOrigins) && self.allowedOrigins.exists(o, o == '*'))",
                    "allowedOrigins: '*' cannot be combined with allowCredentials "
                    "(browsers refuse credentials for any origin)",
                )
            ]
        }
    )

    allowed_origins: list[Annotated[str, Field(pattern=CORS_ORIGIN, max_length=253)]] = Field(
        min_length=1,
        max_length=32,
        description="Origins whose pages may call the bucket, e.g. https://app.example.com "
        "or https://*.example.com. '*' allows any origin and must be written out.",
    )
    allowed_methods: list[HttpMethod] = Field(
        default_factory=_upload_methods,
        min_length=1,
        max_length=5,
        description="HTTP methods those origins may use (presigned PUT and POST uploads, GET).",
    )
    allowed_headers: list[Annotated[str, Field(pattern=HTTP_HEADER, max_length=128)]] = Field(
        default_factory=lambda: ["*"],
        max_length=32,
        description="Request headers a preflight may ask for.",
    )
    expose_headers: list[Annotated[str, Field(pattern=HTTP_HEADER, max_length=128)]] = Field(
        default_factory=lambda: ["ETag"],
        max_length=32,
        description="Response headers scripts may read; ETag by default (multipart uploads "
        "need it).",
    )
    max_age_seconds: int = Field(
        default=3600, ge=0, le=86400, description="How long a browser may cache a preflight."
    )
    allow_credentials: bool = Field(
        default=False,
        description="Pages may send cookies or HTTP auth along (never with origin '*').",
    )

    @model_validator(mode="after")
    def _no_credentials_for_any_origin(self) -> BucketCors:
        if self.allow_credentials and "*" in self.allowed_origins:
            raise ValueError(
                "allowedOrigins: '*' cannot be combined with allowCredentials "
                "(browsers refuse credentials for any origin)"
            )
        return self


class CosiBucket(Model):
    """A bucket the cluster's COSI driver provisions (objectstorage.k8s.io
    BucketClaim + BucketAccess); the driver names the real bucket."""

    bucket_class_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="BucketClass of the BucketClaim (which driver, which parameters)."
    )
    bucket_access_class_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="BucketAccessClass of the BucketAccess (how credentials are minted)."
    )


class BucketCredentialsRef(Model):
    """Keys of an existing Secret holding an access key for the bucket."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="Name of a Secret in the profile's namespace. Headroom only reads it."
    )
    access_key_id_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = Field(
        default="AWS_ACCESS_KEY_ID", description="Key of the access key ID."
    )
    secret_access_key_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = (
        Field(default="AWS_SECRET_ACCESS_KEY", description="Key of the secret access key.")
    )


class S3Bucket(Model):
    """An existing bucket on an S3-compatible endpoint (AWS S3, Cloudflare R2,
    ...). Headroom neither creates nor deletes it: it hands it to the app."""

    endpoint: Annotated[str, Field(pattern=ENDPOINT, max_length=253)] = Field(
        description="Endpoint URL, e.g. https://s3.eu-west-1.amazonaws.com or "
        "https://<account>.r2.cloudflarestorage.com (scheme and host, no path)."
    )
    region: Annotated[str, Field(pattern=REGION, max_length=32)] = Field(
        default="us-east-1", description="Signing region; Cloudflare R2 uses 'auto'."
    )
    bucket_name: BucketName = Field(description="The bucket's name on the endpoint.")
    force_path_style: bool = Field(
        default=False,
        description="Address the bucket as <endpoint>/<bucket> instead of "
        "<bucket>.<endpoint> (most self-hosted servers need it).",
    )
    credentials_secret: BucketCredentialsRef = Field(
        description="Secret with the access key the app uses."
    )


class BuiltinVolume(Volume):
    """The PVC of the builtin S3 server: the data of every builtin bucket."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    SAME_CLAIM,
                    "spec.storage.buckets[].builtin.storage.size and storageClassName cannot "
                    "change: they are the server StatefulSet's volumeClaimTemplates, which "
                    "Kubernetes never updates. Grow the PVC itself (kubectl patch pvc, if the "
                    "StorageClass allows expansion)",
                )
            ]
        }
    )

    size: Quantity = Field(
        default="10Gi",
        description="Size of the server's PVC.",
        json_schema_extra={"x-kubernetes-validations": [quantity_rule("> 0", "must be > 0")]},
    )


class BuiltinPublic(Model):
    """Where browsers reach the builtin S3 server: presigned uploads (seed 003's
    presigned POST) and downloads. Headroom writes an Ingress for ``host`` to the
    server's Service, admits the ingress controller's pods in the server's
    NetworkPolicy, and puts ``S3_PUBLIC_ENDPOINT`` in the binding: the endpoint the
    app presigns with, so the URLs a browser gets name this host."""

    host: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="The host name browsers use (DNS points it at the ingress controller)."
    )
    scheme: Literal["https", "http"] = Field(
        default="https", description="What browsers speak to the host (https in production)."
    )
    ingress_class_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] | None = Field(
        default=None, description="The Ingress' ingressClassName (default: the cluster's)."
    )
    tls_secret_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] | None = Field(
        default=None,
        description="A kubernetes.io/tls Secret for the host, in the Ingress' tls section "
        "(or leave TLS to the controller's default certificate or cert-manager).",
    )
    ingress_namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] = Field(
        default="ingress-nginx",
        description="Namespace of the ingress controller's pods: the server's NetworkPolicy "
        "admits them on the S3 port.",
    )


class BuiltinBucket(Model):
    """A bucket on the S3 server Headroom runs itself (versitygw, Apache-2.0), for
    clusters with neither COSI nor an external S3. One server per profile holds every
    builtin bucket; the app gets keys of its own (never the server's root keys)."""

    storage: BuiltinVolume = Field(
        default_factory=BuiltinVolume, description="The server's volume (all builtin buckets)."
    )
    image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(
        default=images.VERSITYGW_IMAGE,
        description="versitygw image; /usr/local/bin/versitygw and mkdir must be in it.",
    )
    resources: Resources | None = Field(
        default=None,
        description="The server container's resources (default: requests cpu 50m, memory "
        "128Mi; limit memory 512Mi).",
    )
    public: BuiltinPublic | None = Field(
        default=None,
        description="A host browsers reach the server at (an Ingress); none: in-cluster only.",
    )


# Every provider of a bucket: the Bucket field that selects it. A provider is
# one model and one entry here (the CRD rule and the validator read it).
BUCKET_PROVIDERS: tuple[str, ...] = ("cosi", "s3", "builtin")


class Bucket(Model):
    """One bucket the app uses, from exactly one provider."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[" + ", ".join(f"has(self.{p})" for p in BUCKET_PROVIDERS) + "]"
                    ".filter(x, x).size() == 1",
                    "set exactly one provider: " + ", ".join(BUCKET_PROVIDERS),
                )
            ]
        }
    )

    name: BucketName = Field(
        description="The bucket's name in the profile and in the binding (S3_<NAME>_BUCKET); "
        "S3's naming rules apply. With provider s3 the real name is s3.bucketName; "
        "COSI's driver names its bucket itself; a builtin bucket has this name."
    )
    cosi: CosiBucket | None = Field(default=None, description="Provisioned by COSI.")
    s3: S3Bucket | None = Field(default=None, description="An existing external bucket.")
    builtin: BuiltinBucket | None = Field(
        default=None,
        description="On the S3 server Headroom runs (<profile>-s3). Every builtin bucket of a "
        "profile is on that one server: set storage/image/resources on the first, and "
        "leave later ones {} (or the same).",
    )
    cors: BucketCors | None = Field(
        default=None, description="Browser access (none unless set; see BucketCors)."
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="Retain: the bucket (its claim) and its data outlive the profile; "
        "Delete: deleted with the profile or when removed from it.",
    )
    public_url: Annotated[str, Field(pattern=PUBLIC_URL, max_length=512)] | None = Field(
        default=None,
        description="Base URL browsers read this bucket's objects at (an R2 custom domain, a "
        "CDN): S3_PUBLIC_URL (S3_<NAME>_PUBLIC_URL) in the binding. A builtin bucket with "
        "builtin.public defaults to <scheme>://<host>/<bucket>.",
    )
    max_upload_bytes: int = Field(
        default=DEFAULT_MAX_UPLOAD_BYTES,
        ge=1,
        le=MAX_UPLOAD_BYTES,
        description="Largest upload the app should sign into a presigned POST policy "
        "(content-length-range); in the binding as S3_MAX_UPLOAD_BYTES.",
    )

    @model_validator(mode="after")
    def _one_provider(self) -> Bucket:
        chosen = [p for p in BUCKET_PROVIDERS if getattr(self, p) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one provider: "
                + ", ".join(BUCKET_PROVIDERS)
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        return self

    @property
    def provider(self) -> str:
        return next(p for p in BUCKET_PROVIDERS if getattr(self, p) is not None)


def env_name(name: str) -> str:
    """``meal-photos`` -> ``MEAL_PHOTOS`` (for S3_<NAME>_BUCKET)."""
    return re.sub(r"[.-]", "_", name).upper()


class Storage(Model):
    """Object storage: buckets and their credentials in the binding."""

    buckets: list[Bucket] = Field(
        min_length=1,
        max_length=16,
        description="The app's buckets; the first is the default (S3_BUCKET, S3_ENDPOINT...).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("buckets")
    @classmethod
    def _distinct(cls, buckets: list[Bucket]) -> list[Bucket]:
        seen: dict[str, str] = {}
        for bucket in buckets:
            key = env_name(bucket.name)
            if key in seen:
                raise ValueError(
                    f"buckets {seen[key]!r} and {bucket.name!r} share the binding name "
                    f"S3_{key}_BUCKET"
                    if seen[key] != bucket.name
                    else f"bucket {bucket.name!r} is listed twice"
                )
            seen[key] = bucket.name
        return _one_server(buckets)


def _one_server(buckets: list[Bucket]) -> list[Bucket]:
    """Builtin buckets share one server: a later one's settings are the defaults
    (``{}``, which the API server fills with the defaults) or the first's."""
    builtin = [(i, b.builtin) for i, b in enumerate(buckets) if b.builtin is not None]
    if not builtin:
        return buckets
    first_index, first = builtin[0]
    for index, settings in builtin[1:]:
        if settings not in (first, BuiltinBucket()):
            raise ValueError(
                f"buckets[{index}].builtin differs from buckets[{first_index}].builtin: builtin "
                "buckets share one server; leave the later ones {} or set the same"
            )
    return buckets
