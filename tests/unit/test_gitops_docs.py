"""docs/gitops.md shows the shipped GitOps checks as they are: the Flux
expressions verbatim from gitops/flux/kustomization.yaml, and the Argo CD
check where Argo CD's layout puts it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "gitops.md").read_text()


def test_the_flux_expressions_in_the_docs_are_the_shipped_ones() -> None:
    shipped = (ROOT / "gitops" / "flux" / "kustomization.yaml").read_text()
    block = shipped[shipped.index("  healthCheckExprs:") :]
    assert block in DOC
    exprs = yaml.safe_load(shipped)["spec"]["healthCheckExprs"]
    assert [(e["apiVersion"], e["kind"]) for e in exprs] == [
        ("headroom.dev/v1alpha1", "ScalingProfile")
    ]


def test_the_argo_cd_check_is_where_the_docs_say() -> None:
    where = "gitops/argocd/resource_customizations/headroom.dev/ScalingProfile/"
    assert where in DOC
    for name in ("health.lua", "health_test.yaml", "testdata"):
        assert (ROOT / where / name).exists()
    assert "resource.customizations.health.headroom.dev_ScalingProfile" in DOC
