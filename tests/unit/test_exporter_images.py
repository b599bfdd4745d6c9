"""The exporters the alert conformance tests build and scrape (hack/versions.env) are the
versions of the default exporter images Headroom renders: the rules' metric names come from
those versions' source, so the two must not drift apart. Likewise the PgBouncer the tests
build renders what the default PgBouncer image gets."""

from pathlib import Path

from headroom.api import v1alpha1
from headroom.planning import pgbouncer_params

VERSIONS = Path(__file__).resolve().parents[2] / "hack" / "versions.env"


def _versions() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in VERSIONS.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def _tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


def test_pooler_exporter_image_is_the_version_the_tests_build() -> None:
    default = v1alpha1.Pooler.model_fields["exporter_image"].default
    assert "pgbouncer-exporter" in default
    assert _tag(default) == _versions()["PGBOUNCER_EXPORTER_VERSION"]


def test_redis_exporter_image_is_the_version_the_tests_build() -> None:
    default = v1alpha1.Cache.model_fields["exporter_image"].default
    assert "redis_exporter" in default
    assert _tag(default) == _versions()["REDIS_EXPORTER_VERSION"]


def test_the_tested_pgbouncer_is_the_default_images_release() -> None:
    """The conformance and client tests run PgBouncer from Debian's archive
    (PGBOUNCER_DEBIAN_VERSION): the default image's major.minor, so every setting
    Headroom may render is valid in it exactly when it is in the default image's,
    and the pgbouncer.ini the tests run is the one the default pods get."""
    default = pgbouncer_params.image_version(v1alpha1.Pooler.model_fields["image"].default)
    built = pgbouncer_params.parse_version(_versions()["PGBOUNCER_DEBIAN_VERSION"].split("-")[0])
    assert default == built
    for key, param in pgbouncer_params.ALLOWED.items():
        assert (param.min_version <= built) == (param.min_version <= default), key
