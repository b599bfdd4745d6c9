"""``spec.storage``: the app's buckets, each from one provider (COSI, an
existing S3-compatible bucket, or the builtin S3 server Headroom runs), their
browser access (CORS) and how they are named in the binding.

Endpoints and origins are URLs in :mod:`headroom.api.endpoints`' grammar and
policy (no address of the cluster's or the cloud's own)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from headroom.api import endpoints
from headroom.api.v1alpha1 import images
from headroom.api.v1alpha1.pods import Resources, Volume, same_claim
from headroom.api.v1alpha1.references import different_keys
from headroom.api.v1alpha1.schema import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    LIST_MAP,
    SECRET_KEY,
    SECRET_KEY_MAX,
    Broken,
    Checked,
    ImageRef,
    Model,
    PositiveQuantity,
    Rule,
    paired,
    unique_names,
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
    if not re.fullmatch(BUCKET_NAME, name):
        return (
            "a bucket name has only lowercase letters, digits, dots and hyphens, "
            "and starts and ends with a letter or digit"
        )
    if ".." in name:
        return "a bucket name has no two adjacent dots"
    if re.fullmatch(_IPV4, name):
        return "a bucket name is not an IP address"
    for prefix in _BUCKET_PREFIXES:
        if name.startswith(prefix):
            return f"a bucket name does not start with {prefix!r}"
    for suffix in _BUCKET_SUFFIXES:
        if name.endswith(suffix):
            return f"a bucket name does not end with {suffix!r}"
    return None


def _checked_bucket_name(name: str) -> None:
    problem = bucket_name_problem(name)
    if problem:
        raise ValueError(problem)


_RESERVED_AFFIXES = " || ".join(
    [f"self.startsWith('{p}')" for p in _BUCKET_PREFIXES]
    + [f"self.endsWith('{s}')" for s in _BUCKET_SUFFIXES]
)
BucketName = Annotated[
    str,
    Field(max_length=63),
    Checked(
        _checked_bucket_name,
        {
            "type": "string",
            "minLength": 3,
            "maxLength": 63,
            "pattern": BUCKET_NAME,
            "x-kubernetes-validations": [
                paired("!self.contains('..')", "a bucket name has no two adjacent dots"),
                paired(f"!self.matches('{_IPV4}')", "a bucket name is not an IP address"),
                paired(
                    f"!({_RESERVED_AFFIXES})",
                    "a bucket name does not start with "
                    + ", ".join(_BUCKET_PREFIXES)
                    + " nor end with "
                    + ", ".join(_BUCKET_SUFFIXES),
                ),
            ],
        },
    ),
]


def _checked_origin(origin: str) -> None:
    problem = endpoints.origin_problem(origin)
    if problem:
        raise ValueError(problem)


# An origin a browser sends (headroom.api.endpoints): scheme://host[:port], a
# "*." wildcard with two labels after it, or "*" (any origin) when asked for.
CORS_ORIGIN = endpoints.CORS_ORIGIN
CorsOrigin = Annotated[
    str,
    Field(max_length=endpoints.ORIGIN_MAX),  # the pattern is the CRD's; the check says more
    Checked(
        _checked_origin,
        {
            "type": "string",
            "maxLength": endpoints.ORIGIN_MAX,
            "pattern": CORS_ORIGIN,
            "x-kubernetes-validations": [
                paired(endpoints.ORIGIN_PORT_CEL, endpoints.ORIGIN_PORT_MESSAGE)
            ],
        },
    ),
]


def _checked_endpoint(url: str) -> None:
    problem = endpoints.endpoint_problem(url)
    if problem:
        raise ValueError(problem)


ENDPOINT = endpoints.ENDPOINT
Endpoint = Annotated[
    str,
    Field(max_length=endpoints.ENDPOINT_MAX),  # the pattern is the CRD's; the check says more
    Checked(
        _checked_endpoint,
        {
            "type": "string",
            "maxLength": endpoints.ENDPOINT_MAX,
            "pattern": ENDPOINT,
            "x-kubernetes-validations": [
                paired(endpoints.endpoint_cel(), endpoints.INTERNAL_MESSAGE)
            ],
        },
    ),
]
HTTP_HEADER = r"^(\*|[A-Za-z0-9!#$%&'*+.^_`|~-]+)$"
REGION = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A base URL objects are served at for browsers: scheme, host, port 1-65535, a path.
PUBLIC_URL = endpoints.PUBLIC_URL
MAX_UPLOAD_BYTES = 5 * 1024**3  # S3's largest single PUT / POST object
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024**2


HttpMethod = Literal["GET", "PUT", "POST", "HEAD", "DELETE"]


def _upload_methods() -> list[HttpMethod]:
    return ["GET", "PUT", "POST", "HEAD"]


def _no_credentials_for_any_origin(cors: BucketCors) -> Broken | None:
    if not (cors.allow_credentials and "*" in cors.allowed_origins):
        return None
    return Broken(
        "allowedOrigins",
        lambda at: (
            f"'*' cannot be combined with {at('allowCredentials')} true (browsers "
            "refuse credentials for any origin)"
        ),
    )


class BucketCors(Model):
    """Cross-origin access for browsers that upload and download directly
    (presigned URLs). No origin is allowed unless listed; ``*`` only when
    listed, and never together with allowCredentials."""

    RULES = (
        Rule(
            "!(has(self.allowCredentials) && self.allowCredentials && "
            "has(self.allowedOrigins) && self.allowedOrigins.exists(o, o == '*'))",
            "spec.storage.buckets[].cors.allowedOrigins: '*' cannot be combined with "
            "allowCredentials (browsers refuse credentials for any origin)",
            _no_credentials_for_any_origin,
        ),
    )

    allowed_origins: list[CorsOrigin] = Field(
        min_length=1,
        max_length=32,
        description="Origins whose pages may call the bucket, e.g. https://app.example.com "
        "or https://*.example.com (no default port: a browser never sends :443). '*' allows "
        "any origin and must be written out.",
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

    RULES = (
        different_keys(
            "accessKeyIdKey",
            "secretAccessKeyKey",
            what="the access key ID and the secret access key are two values",
        ),
    )

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

    endpoint: Endpoint = Field(
        description="Endpoint URL, e.g. https://s3.eu-west-1.amazonaws.com or "
        "https://<account>.r2.cloudflarestorage.com (scheme, host and port 1-65535, no "
        "path); not a loopback, link-local or cloud metadata address."
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

    RULES = (
        same_claim(
            "spec.storage.buckets[].builtin.storage.size and storageClassName cannot "
            "change: they are the server StatefulSet's volumeClaimTemplates, which "
            "Kubernetes never updates. Grow the PVC itself (kubectl patch pvc, if the "
            "StorageClass allows expansion)"
        ),
    )

    size: PositiveQuantity = Field(default="10Gi", description="Size of the server's PVC.")


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
    image: Annotated[ImageRef, images.defaulted(images.VERSITYGW_IMAGE)] = images.field(
        images.VERSITYGW_IMAGE,
        what="versitygw image; /usr/local/bin/versitygw and mkdir must be in it.",
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


def _one_provider(bucket: Bucket) -> Broken | None:
    chosen = [p for p in BUCKET_PROVIDERS if getattr(bucket, p) is not None]
    if len(chosen) == 1:
        return None
    return Broken(
        "",
        lambda _: (
            "set exactly one provider: "
            + ", ".join(BUCKET_PROVIDERS)
            + (f" (got {', '.join(chosen)})" if chosen else "")
        ),
    )


def _kept_unless_ours(bucket: Bucket) -> Broken | None:
    if bucket.s3 is None or bucket.deletion_policy != "Delete":
        return None
    return Broken(
        "deletionPolicy",
        lambda at: (
            f"Delete, but {at('s3')} is a bucket Headroom never created and never "
            "deletes: leave Retain"
        ),
    )


class Bucket(Model):
    """One bucket the app uses, from exactly one provider."""

    RULES = (
        Rule(
            "[" + ", ".join(f"has(self.{p})" for p in BUCKET_PROVIDERS) + "]"
            ".filter(x, x).size() == 1",
            "set exactly one provider: " + ", ".join(BUCKET_PROVIDERS),
            _one_provider,
        ),
        Rule(
            "!has(self.s3) || self.deletionPolicy != 'Delete'",
            "spec.storage.buckets[].deletionPolicy Delete is not for a provider s3 bucket: "
            "Headroom never deletes a bucket it did not create",
            _kept_unless_ours,
        ),
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
        "Delete: deleted with the profile or when removed from it (cosi and builtin; an s3 "
        "bucket is never Headroom's to delete).",
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

    @property
    def provider(self) -> str:
        return next(p for p in BUCKET_PROVIDERS if getattr(self, p) is not None)


def env_name(name: str) -> str:
    """``meal-photos`` -> ``MEAL_PHOTOS`` (for S3_<NAME>_BUCKET)."""
    return re.sub(r"[.-]", "_", name).upper()


def _distinct_binding_names(storage: Storage) -> Broken | None:
    seen: dict[str, int] = {}
    for index, bucket in enumerate(storage.buckets):
        first = seen.setdefault(env_name(bucket.name), index)
        if first != index:
            return _shared_binding_name(storage.buckets[first].name, bucket.name, first, index)
    return None


def _shared_binding_name(other: str, mine: str, first: int, index: int) -> Broken:
    return Broken(
        f"buckets[{index}].name",
        lambda at: (
            f"{mine!r} and {at(f'buckets[{first}].name')} {other!r} share the binding "
            f"name S3_{env_name(mine)}_BUCKET"
        ),
    )


class Storage(Model):
    """Object storage: buckets and their credentials in the binding."""

    RULES = (
        Rule(
            "self.buckets.all(b, self.buckets.filter(c, "
            "c.name.replace('.', '_').replace('-', '_') == "
            "b.name.replace('.', '_').replace('-', '_')).size() == 1)",
            "spec.storage.buckets[].name: two buckets share a binding name "
            "(S3_<NAME>_BUCKET: '.' and '-' both become '_')",
            _distinct_binding_names,
        ),
    )

    buckets: Annotated[list[Bucket], AfterValidator(unique_names)] = Field(
        min_length=1,
        max_length=16,
        description="The app's buckets; the first is the default (S3_BUCKET, S3_ENDPOINT...). "
        "Builtin buckets share one server: the later ones leave builtin {} or repeat the "
        "first's settings.",
        json_schema_extra=LIST_MAP,
    )


def one_server(buckets: tuple[Bucket, ...] | list[Bucket]) -> tuple[int, int] | None:
    """Builtin buckets share one server: a later one's settings are the defaults
    (``{}``, which the API server fills with the defaults) or the first's. The
    (later, first) index of one that differs, or None (the planner reports it)."""
    builtin = [(i, b.builtin) for i, b in enumerate(buckets) if b.builtin is not None]
    if not builtin:
        return None
    first_index, first = builtin[0]
    for index, settings in builtin[1:]:
        if settings not in (first, BuiltinBucket()):
            return index, first_index
    return None
