"""``spec.pooler``: PgBouncer in front of the primary (pods, pool mode, image
and version, allowlisted pgbouncer.ini overrides, the exporter sidecar)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from headroom.api.v1alpha1 import images
from headroom.api.v1alpha1.schema import ConfigKey, ConfigValue, ImageRef, Model

PGBOUNCER_VERSION = r"^1\.(1[89]|2[0-9])$"


class AutoTune(Model):
    """Apply status.recommendations to the write pooler's default_pool_size."""

    enabled: bool = Field(
        default=False,
        description="Size the write pooler's default_pool_size from what its pods observe "
        "(status.recommendations, medium confidence or better), inside the profile's share "
        "of the budget; an Event per change. Off: the plan's size.",
    )
    max_changes_per_hour: int = Field(
        default=2,
        ge=1,
        le=12,
        description="At most this many changes in any hour (PgBouncer takes each by RELOAD).",
    )


class Pooler(Model):
    """PgBouncer in front of the primary."""

    instances: int = Field(
        default=2, ge=1, le=50, description="PgBouncer pods. Two or more survive a node loss."
    )
    pool_mode: Literal["session", "transaction"] = Field(
        default="transaction",
        description="transaction multiplexes many clients on few server connections; "
        "session gives each client its own server connection (then the client demand must "
        "fit the server budget).",
    )
    image: Annotated[ImageRef, images.defaulted(images.PGBOUNCER_IMAGE)] = images.field(
        images.PGBOUNCER_IMAGE,
        what="PgBouncer image; its entrypoint is ignored, `pgbouncer` must be on PATH "
        "(docs/api.md lists the defaults per release).",
    )
    version: Annotated[str, Field(pattern=PGBOUNCER_VERSION, max_length=4)] | None = Field(
        default=None,
        description="PgBouncer major.minor the image runs; only settings valid for this "
        "version are rendered. Read from the image tag (1.24.1 -> 1.24) when unset; "
        "required when the tag does not say it, and must agree with it when it does.",
    )
    parameters: dict[ConfigKey, ConfigValue] = Field(
        default_factory=dict,
        max_length=64,
        description="pgbouncer.ini [pgbouncer] overrides. Only allowlisted keys; sizing "
        "keys (default_pool_size, reserve_pool_size, max_db_connections, max_client_conn) "
        "pin the planner and must fit the budget.",
    )
    auto_tune: AutoTune = Field(
        default_factory=AutoTune,
        description="Opt-in: the write pooler's pool follows its observed load (docs/api.md, "
        "Recommendations). A pinned parameters.default_pool_size is never tuned.",
    )
    exporter_image: Annotated[ImageRef, images.defaulted(images.PGBOUNCER_EXPORTER_IMAGE)] = (
        images.field(
            images.PGBOUNCER_EXPORTER_IMAGE,
            what="pgbouncer_exporter sidecar image (metrics on port 9127).",
        )
    )
