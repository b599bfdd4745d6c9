"""The exporters the alert conformance tests build and scrape (hack/versions.env) are the
versions of the default exporter images Headroom renders: the rules' metric names come from
those versions' source, so the two must not drift apart. Likewise the PgBouncer the tests
build renders what the default PgBouncer image gets."""

from pathlib import Path
from typing import Any

import yaml

from headroom.api import v1alpha1
from headroom.api.v1alpha1 import images
from headroom.planning import pgbouncer_params
from tests import profiles

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
    default = v1alpha1.Pooler().exporter_image
    assert "pgbouncer-exporter" in default
    assert _tag(default) == _versions()["PGBOUNCER_EXPORTER_VERSION"]


def test_redis_exporter_image_is_the_version_the_tests_build() -> None:
    default = v1alpha1.REDIS_EXPORTER_IMAGE
    assert "redis_exporter" in default
    assert _tag(default) == _versions()["REDIS_EXPORTER_VERSION"]


def test_the_tested_pgbouncer_is_the_default_images_release() -> None:
    """The conformance and client tests run PgBouncer from Debian's archive
    (PGBOUNCER_DEBIAN_VERSION): the default image's major.minor, so every setting
    Headroom may render is valid in it exactly when it is in the default image's,
    and the pgbouncer.ini the tests run is the one the default pods get."""
    default = pgbouncer_params.image_version(v1alpha1.Pooler().image)
    built = pgbouncer_params.parse_version(_versions()["PGBOUNCER_DEBIAN_VERSION"].split("-")[0])
    assert default == built
    for key, param in pgbouncer_params.ALLOWED.items():
        assert (param.min_version <= built) == (param.min_version <= default), key


CRD = Path(__file__).resolve().parents[2] / "crds" / "headroom.dev_scalingprofiles.yaml"


def _image_defaults(node: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            where = f"{path}.{key}"
            if key.lower().endswith("image") and isinstance(sub, dict) and "default" in sub:
                found.append(where)
            found += _image_defaults(sub, where)
        found += _image_defaults(node.get("items"), f"{path}[]")
    return found


def test_the_crd_writes_no_image_default_into_profiles() -> None:
    """A default the API server stores stays when a later release changes it."""
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _image_defaults(schema) == []


def test_an_unset_image_or_one_an_earlier_release_stored_is_this_releases_default() -> None:
    def pooler(image: str | None) -> str:
        body = profiles.base()
        if image is not None:
            body["spec"]["pooler"]["image"] = image
        return v1alpha1.parse_profile(body).spec.pooler.image

    assert pooler(None) == v1alpha1.PGBOUNCER_IMAGE
    # what the previous release's CRD stored into every profile it saw
    assert pooler("ghcr.io/cloudnative-pg/pgbouncer:1.24.1") == v1alpha1.PGBOUNCER_IMAGE
    # an image the user chose is kept
    assert pooler("registry.example/pgbouncer:1.24.1") == "registry.example/pgbouncer:1.24.1"
    for current, earlier in images.EARLIER_DEFAULTS.items():
        assert current in earlier  # the release before this one stored its default


def test_the_docs_list_every_default_and_every_earlier_one() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = docs.split("### Image defaults, by release", 1)[1].split("\n### ", 1)[0]
    for current, earlier in images.EARLIER_DEFAULTS.items():
        assert f"`{current}`" in section, current
        for old in earlier:
            assert _tag(old) in section, old


def test_postgres_exporter_image_is_the_version_the_tests_build() -> None:
    default = v1alpha1.DatabaseMetrics().image
    assert "postgres-exporter" in default
    assert _tag(default) == _versions()["POSTGRES_EXPORTER_VERSION"]
