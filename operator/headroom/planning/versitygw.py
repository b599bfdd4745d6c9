"""The builtin storage provider's S3 server (versitygw), pure:

- :class:`BucketServerConfig`, the model of ``buckets.json`` (version 1), which
  the builder writes into the server's ConfigMap and ``headroom.agent.bucket``
  (the sidecar that provisions the server) reads: which buckets to create, who
  owns them (the app's access key, a non-root versitygw user), their CORS;
- :func:`render_cors`, a bucket's CORS rules as the S3 ``PutBucketCors``
  document;
- :func:`server_args`, versitygw's command line as the pod runs it (the
  conformance test runs the same list on 127.0.0.1).

Why versitygw is run this way: the posix backend on the PVC; its internal IAM
(``--iam-dir``, a JSON file on the same PVC) holds the app's user; the admin
API listens on 127.0.0.1 only (``--admin-port``), so only the sidecar in the
same pod reaches it, with the root keys; the S3 port serves the app with its
own keys (role ``user``: it can use the buckets it owns and cannot create
any).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal
from xml.etree import ElementTree

from pydantic import Field

from headroom.api import v1alpha1
from headroom.planning import agentfile, object_storage

VERSION: Literal[1] = 1
S3_PORT = 7070
ADMIN_PORT = 7071  # 127.0.0.1 only: the sidecar's
DATA_DIR = "/data"
BUCKETS_DIR = f"{DATA_DIR}/buckets"
IAM_DIR = f"{DATA_DIR}/iam"
# object metadata (ETags, content types, CORS, ACLs) in files beside the data
# rather than in user xattrs, which some volumes (NFS) lack: versitygw refuses
# to start on those ("xattr check failed")
META_DIR = f"{DATA_DIR}/meta"
HEALTH_PATH = "/health"
REGION = "us-east-1"  # versitygw's default; the binding's S3_REGION
APP_ROLE: Literal["user"] = "user"  # versitygw role: owned buckets only, no CreateBucket
DEFAULT_POLL_SECONDS = 30.0

# What may appear in the config and in the XML the agent sends (no control
# characters, no XML/shell metacharacters beyond what a CORS origin needs).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ORIGIN = re.compile(r"^(\*|https?://[A-Za-z0-9*.-]+(:[0-9]{1,5})?)$")
_METHOD = re.compile(r"^(GET|PUT|POST|DELETE|HEAD)$")
_HEADER = re.compile(r"^(\*|[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128})$")  # an HTTP token
_ACCESS_KEY = re.compile(r"^[A-Za-z0-9]{8,128}$")
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


BucketName = Annotated[str, agentfile.charset(_BUCKET, "bucket name")]
Origin = Annotated[str, agentfile.charset(_ORIGIN, "CORS origin")]
Method = Annotated[str, agentfile.charset(_METHOD, "CORS method")]
Header = Annotated[str, agentfile.charset(_HEADER, "CORS header")]
Url = Annotated[str, agentfile.charset(_URL, "endpoint URL")]


class _Model(agentfile.AgentFile):
    """The base of every model in this file."""


class CorsRule(_Model):
    allowed_origins: tuple[Origin, ...] = Field(min_length=1)
    allowed_methods: tuple[Method, ...] = Field(min_length=1)
    allowed_headers: tuple[Header, ...] = ()
    expose_headers: tuple[Header, ...] = ("ETag",)
    max_age_seconds: int | None = Field(default=None, ge=0, le=86400 * 7)


class ServedBucket(_Model):
    name: BucketName
    cors: tuple[CorsRule, ...] = ()  # empty: the bucket has no CORS configuration


class BucketServerConfig(_Model):
    """``buckets.json``: what the sidecar makes the server hold."""

    version: Literal[1] = VERSION
    s3_endpoint: Url = f"http://127.0.0.1:{S3_PORT}"
    admin_endpoint: Url = f"http://127.0.0.1:{ADMIN_PORT}"
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$")] = REGION
    app_access_key: Annotated[str, agentfile.charset(_ACCESS_KEY, "access key")]
    app_role: Literal["user"] = APP_ROLE
    buckets: tuple[ServedBucket, ...] = Field(min_length=1)
    poll_seconds: float = Field(default=DEFAULT_POLL_SECONDS, gt=0, le=3600)
    ready_file: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/._-]+$")] = "/run/headroom/provisioned"


def render_cors(rules: tuple[CorsRule, ...]) -> str:
    """The ``PutBucketCors`` body for ``rules`` (values already charset-checked;
    ElementTree escapes them anyway)."""
    root = ElementTree.Element("CORSConfiguration")
    for rule in rules:
        element = ElementTree.SubElement(root, "CORSRule")
        for tag, values in (
            ("AllowedOrigin", rule.allowed_origins),
            ("AllowedMethod", rule.allowed_methods),
            ("AllowedHeader", rule.allowed_headers),
            ("ExposeHeader", rule.expose_headers),
        ):
            for value in values:
                ElementTree.SubElement(element, tag).text = value
        if rule.max_age_seconds is not None:
            ElementTree.SubElement(element, "MaxAgeSeconds").text = str(rule.max_age_seconds)
    return ElementTree.tostring(root, encoding="unicode")


def init_command() -> list[str]:
    """The pod's init step (versitygw's image): the data dirs on a fresh PVC."""
    return ["mkdir", "-p", BUCKETS_DIR, IAM_DIR, META_DIR]


def server_args() -> list[str]:
    """versitygw's arguments in the pod (root keys come from the environment:
    ROOT_ACCESS_KEY / ROOT_SECRET_KEY)."""
    return [
        "--port",
        f":{S3_PORT}",
        "--admin-port",
        f"127.0.0.1:{ADMIN_PORT}",
        "--iam-dir",
        IAM_DIR,
        "--health",
        HEALTH_PATH,
        "--quiet",
        "posix",
        "--sidecar",
        META_DIR,
        BUCKETS_DIR,
    ]


DEFAULT_IMAGE = v1alpha1.VERSITYGW_IMAGE
BINARY = "/usr/local/bin/versitygw"  # where the upstream image puts it
RUN_AS = 10001  # any non-root uid: the PVC is made writable by fsGroup
DEFAULT_REQUESTS = (("cpu", "50m"), ("memory", "128Mi"))
DEFAULT_LIMITS = (("memory", "512Mi"),)


@dataclass(frozen=True)
class ServerPlan:
    """The builtin provider's one server of a profile: its volume, image and
    resources, and the buckets every ``builtin`` bucket of the profile puts in it.
    ``retain``: the PVC outlives the profile (some builtin bucket is Retain)."""

    buckets: tuple[ServedBucket, ...]
    size: str = "10Gi"
    storage_class_name: str | None = None
    image: str = DEFAULT_IMAGE
    requests: tuple[tuple[str, str], ...] = DEFAULT_REQUESTS
    limits: tuple[tuple[str, str], ...] = DEFAULT_LIMITS
    retain: bool = True
    region: str = REGION
    public: v1alpha1.BuiltinPublic | None = None  # the host browsers use (an Ingress)


@dataclass(frozen=True)
class ServerKeys:
    """Generated by the reconcile pass with ``secrets`` and kept in Headroom's Secrets:
    the root pair never leaves the server's pod; the app pair is the binding's."""

    root_access_key: str
    root_secret_key: str = field(repr=False)
    app_access_key: str
    app_secret_key: str = field(repr=False)


def cors_rules(cors: v1alpha1.BucketCors | None) -> tuple[CorsRule, ...]:
    """spec.storage.buckets[].cors as the server's one CORS rule (none: no CORS)."""
    if cors is None:
        return ()
    return (
        CorsRule(
            allowed_origins=tuple(cors.allowed_origins),
            allowed_methods=tuple(cors.allowed_methods),
            allowed_headers=tuple(cors.allowed_headers),
            expose_headers=tuple(cors.expose_headers),
            max_age_seconds=cors.max_age_seconds,
        ),
    )


def server_plan(buckets: Sequence[object_storage.BucketPlan]) -> ServerPlan | None:
    """The profile's builtin server, None when no bucket is builtin. The first
    builtin bucket's settings are the server's (the API refuses others that differ)."""
    builtin = [b for b in buckets if b.builtin is not None]
    if not builtin:
        return None
    first = builtin[0].builtin
    assert first is not None
    resources = first.resources
    return ServerPlan(
        buckets=tuple(ServedBucket(name=b.name, cors=cors_rules(b.cors)) for b in builtin),
        size=first.storage.size,
        storage_class_name=first.storage.storage_class_name,
        image=first.image,
        requests=tuple(sorted(resources.requests.items())) if resources else DEFAULT_REQUESTS,
        limits=tuple(sorted(resources.limits.items())) if resources else DEFAULT_LIMITS,
        retain=any(b.retain for b in builtin),
        public=first.public,
    )
