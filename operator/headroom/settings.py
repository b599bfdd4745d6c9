"""Operator settings, from environment variables prefixed ``HEADROOM_``.

One pydantic-settings object, read once at start-up by the handlers.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEADROOM_", frozen=True)

    resync_seconds: float = Field(
        default=60.0, gt=0, description="Full reconcile of every profile this often."
    )
    primary_check_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Re-read each primary's connection limits this often (failures: 1/5 of it).",
    )
    metrics_addr: str = "0.0.0.0"  # noqa: S104 - scraped from inside the cluster
    metrics_port: int = Field(default=8000, ge=0, le=65535)
    health_addr: str = "0.0.0.0"  # noqa: S104
    health_port: int = Field(default=8080, ge=0, le=65535)

    webhook_enabled: bool = True
    webhook_addr: str = Field(default="127.0.0.1", description="Address the webhook listens on.")
    webhook_port: int = Field(default=9443, ge=1, le=65535)
    webhook_host: str = Field(
        default="",
        description="Host the API server dials (URL mode); defaults to webhook_addr.",
    )
    webhook_service: str = Field(
        default="",
        description="namespace/name of the Service in front of the webhook (in-cluster mode).",
    )
    webhook_cert_dir: Path = Field(
        default=Path.home() / ".cache" / "headroom" / "webhook",
        description="Where the self-signed serving certificate is kept.",
    )
