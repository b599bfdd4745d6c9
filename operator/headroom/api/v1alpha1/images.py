"""Every image Headroom runs by default, in one place: the defaults of the
profile's ``image`` fields and of the operator's own agent image. A test checks
the exporters' tags against the versions the alert tests build (hack/versions.env).

The CRD sets no image default: one the API server wrote into a profile would
stay there when a later release (a CVE fix) changes it. An unset image is
this release's default, resolved when the profile is read (:func:`defaulted`);
so is a value equal to a default an earlier release's CRD wrote into stored
profiles (:data:`EARLIER_DEFAULTS`, listed per release in docs/api.md), since
nobody can tell it from one the user never set.
"""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator, Field

from headroom import __version__

# PgBouncer and its exporter (spec.pooler.image, spec.pooler.exporterImage). 1.26.0:
# CloudNativePG's image of the release that fixed CVE-2026-6664..6667 (and 1.25.1's
# CVE-2025-12819). The tests run Debian's 1.26.1 (hack/build-pgbouncer.sh), which
# takes the same settings (a unit test checks it).
PGBOUNCER_IMAGE = "ghcr.io/cloudnative-pg/pgbouncer:1.26.0"
PGBOUNCER_EXPORTER_IMAGE = "quay.io/prometheuscommunity/pgbouncer-exporter:v0.12.1"
# Redis and its exporter (spec.cache.instances[].image, spec.cache.exporterImage).
REDIS_IMAGE = "docker.io/library/redis:7.2.5"
REDIS_EXPORTER_IMAGE = "docker.io/oliver006/redis_exporter:v1.62.0"
# postgres_exporter, one per database server a profile uses (spec.database.metrics.image).
# v0.17.1: the newest release the Go module proxy serves to the tests that build it.
POSTGRES_EXPORTER_IMAGE = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1"
# Postgres images the standbys run: the primary's major version (a standby
# replays the primary's WAL, which only the same major version can read).
POSTGRES_IMAGE = "docker.io/library/postgres:15.8"
# The builtin object storage's S3 server (spec.storage.buckets[].builtin.image).
VERSITYGW_IMAGE = "ghcr.io/versity/versitygw:v1.8.0"
# Headroom's own image: the read pooler's lag agent and the S3 server's bucket
# agent run it (HEADROOM_AGENT_IMAGE overrides it).
AGENT_IMAGE = f"ghcr.io/headroom-dev/headroom:{__version__}"

# What the CRDs of earlier releases wrote into the profiles they stored, by the
# default that replaces it now (this release's own default is there too: the
# release before this one still wrote it).
EARLIER_DEFAULTS: dict[str, tuple[str, ...]] = {
    PGBOUNCER_IMAGE: ("ghcr.io/cloudnative-pg/pgbouncer:1.24.1", PGBOUNCER_IMAGE),
    PGBOUNCER_EXPORTER_IMAGE: (
        "quay.io/prometheuscommunity/pgbouncer-exporter:v0.10.2",
        PGBOUNCER_EXPORTER_IMAGE,
    ),
    REDIS_IMAGE: (REDIS_IMAGE,),
    REDIS_EXPORTER_IMAGE: (REDIS_EXPORTER_IMAGE,),
    POSTGRES_IMAGE: (POSTGRES_IMAGE,),
    VERSITYGW_IMAGE: (VERSITYGW_IMAGE,),
}


def defaulted(current: str) -> BeforeValidator:
    """The validator of an image field whose default is ``current``: unset, or
    a default an earlier release stored, is ``current``.

    Put it after the field's ``Field(pattern=...)`` in ``Annotated``: placed
    before it, pydantic still checks the pattern but leaves it out of the JSON
    schema, so the CRD would accept what the model refuses."""
    earlier = frozenset(EARLIER_DEFAULTS.get(current, ()))

    def resolve(value: object) -> object:
        if value is None:
            return current
        # anything but a string is left to the field's type check (a list is
        # not hashable: it must be refused naming the field, not crash here)
        return current if isinstance(value, str) and value in earlier else value

    return BeforeValidator(resolve)


def field(current: str, *, what: str) -> Any:
    """The ``Field`` of an image field whose default is ``current`` (pair it
    with :func:`defaulted` and ``schema.ImageRef``): unset in the stored
    object, resolved when read; ``what`` begins its description."""
    return Field(
        default=None,
        validate_default=True,
        description=f"{what} Unset: this release's default ({current}).",
    )
