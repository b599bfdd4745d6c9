"""The committed CRD is exactly what the pydantic models generate."""

from __future__ import annotations

from pathlib import Path

from headroom import yamlfmt
from headroom.api import crd

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "headroom.dev_scalingprofiles.yaml"


def test_committed_crd_matches_models() -> None:
    assert CRD_FILE.read_text() == yamlfmt.dump(crd.build_crd()), "run `make crds`"


def test_schema_is_structural() -> None:
    text = yamlfmt.dump(crd.build_crd())
    for forbidden in ("$ref", "anyOf", "$defs", "title:", "additionalProperties: false"):
        assert forbidden not in text, forbidden


def test_cross_field_rules_name_fields() -> None:
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = spec["properties"]["app"]["x-kubernetes-validations"]
    assert any("spec.app.replicas" in r["message"] for r in rules)
    replica_rules = spec["properties"]["app"]["properties"]["replicas"]["x-kubernetes-validations"]
    assert replica_rules[0]["message"].startswith("spec.app.replicas.min")


def test_chart_copies_match() -> None:
    root = CRD_FILE.parents[1]
    chart = root / "charts" / "headroom"
    assert (chart / "crds" / CRD_FILE.name).read_text() == CRD_FILE.read_text(), "make crds"
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_chart", root / "hack" / "sync_chart.py")
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert (chart / "files" / "rules.yaml").read_text() == sync.rules_text(), "make crds"
    assert (chart / "files" / "role-rules.yaml").read_text() == sync.rules_text("Role")
