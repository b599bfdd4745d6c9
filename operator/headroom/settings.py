"""Operator settings, from environment variables prefixed ``HEADROOM_``.

One pydantic-settings object, read once at start-up by the runtime.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from headroom import logs
from headroom.api import v1alpha1


def _identity() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEADROOM_", frozen=True)

    log_format: logs.LogFormat = Field(
        default="text",
        description="text, or json: one object per line with stable keys (headroom.logs).",
    )
    resync_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Queue every profile this often (a pass with nothing new is skipped).",
    )
    workers: int = Field(default=8, ge=1, le=64, description="Passes run at once.")
    api_timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of one API call.")
    pass_timeout_seconds: float = Field(
        default=120.0, gt=0, description="A pass that takes longer is abandoned and retried."
    )
    primary_check_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Re-read each primary's connection limits this often (failures: 1/5 of it).",
    )
    replica_check_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Re-measure each profile's read replicas (lag, limits) this often; the "
        "read-pool agents decide the data path on their own, every pollSeconds.",
    )
    probe_concurrency: int = Field(
        default=128,
        ge=1,
        le=4096,
        description="Reads of the periodic probes (primaries, replicas, buckets) in flight at "
        "once: each is a non-blocking connection that may wait out a connect timeout; a "
        "target's first reading goes ahead of refreshes.",
    )
    allow_internal_endpoints: bool = Field(
        default=False,
        description="Let the operator's bucket check contact an endpoint that resolves to a "
        "loopback, link-local or metadata address. For tests on 127.0.0.1 only: in a cluster "
        "it would let a profile make the operator call the cluster's or the cloud's internals.",
    )
    agent_image: str = Field(
        default=v1alpha1.AGENT_IMAGE,
        max_length=512,
        description="Image of the poolers', Redis's and the S3 server's agents "
        "(Headroom's own image).",
    )
    metrics_addr: str = Field(
        default="0.0.0.0",  # noqa: S104 - scraped from inside the cluster
        description="Address /metrics (Prometheus) listens on.",
    )
    metrics_port: int = Field(default=8000, ge=0, le=65535, description="Port of /metrics.")
    health_addr: str = Field(
        default="0.0.0.0",  # noqa: S104 - probed by the kubelet
        description="Address /healthz (alive) and /readyz (caches synced) listen on.",
    )
    health_port: int = Field(default=8080, ge=0, le=65535, description="Port of the probes.")

    leader_election: bool = Field(
        default=True, description="Reconcile only while holding the Lease (run 2 replicas for HA)."
    )
    lease_namespace: str = Field(
        default="", description="Namespace of the Lease; default: the operator's own."
    )
    lease_name: str = Field(default="headroom", description="Name of the Lease.")
    ownership_key_secret: str = Field(
        default="",
        description="namespace/name of the Secret with the key that proves a retained child "
        "is Headroom's; default: headroom-ownership-key in the operator's namespace.",
    )
    lease_seconds: int = Field(
        default=15, ge=2, description="A leader that has not renewed for this long is replaced."
    )
    identity: str = Field(default_factory=_identity, description="This replica's Lease identity.")

    webhook_enabled: bool = Field(
        default=True,
        description="Serve admission (and, as the leader, register it); false removes a "
        "registration an earlier leader made.",
    )
    webhook_addr: str = Field(default="127.0.0.1", description="Address the webhook listens on.")
    webhook_port: int = Field(
        default=9443, ge=1, le=65535, description="Port the webhook listens on."
    )
    webhook_cert_check_seconds: float = Field(
        default=3600,
        gt=0,
        description="How often the serving certificate is checked and, 30 days before "
        "it expires, renewed while running.",
    )
    webhook_host: str = Field(
        default="",
        description="Host the API server dials (URL mode); defaults to webhook_addr.",
    )
    webhook_service: str = Field(
        default="",
        description="namespace/name of the Service in front of the webhook (in-cluster mode).",
    )
    webhook_cert_secret: str = Field(
        default="",
        description="namespace/name of the Secret with the certificate all replicas serve.",
    )
    webhook_cert_dir: Path = Field(
        default=Path.home() / ".cache" / "headroom" / "webhook",
        description="Where the serving certificate is kept on disk.",
    )
