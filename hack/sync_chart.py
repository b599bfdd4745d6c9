"""Copy the generated CRD and the ClusterRole rules from crds/ and manifests/
into charts/headroom, so the chart and the plain manifests cannot drift
(`make crds` runs this; tests/unit/test_crd.py fails when they differ)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "headroom"
HEADER = "# Generated from manifests/rbac.yaml by `make crds`; edit that file.\n"


def rules_text(kind: str = "ClusterRole") -> str:
    docs = yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == kind)
    return HEADER + yaml.safe_dump(role["rules"], sort_keys=False)


def main() -> None:
    (CHART / "crds").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(
        ROOT / "crds" / "headroom.dev_scalingprofiles.yaml",
        CHART / "crds" / "headroom.dev_scalingprofiles.yaml",
    )
    (CHART / "files" / "rules.yaml").write_text(rules_text())
    (CHART / "files" / "role-rules.yaml").write_text(rules_text("Role"))


if __name__ == "__main__":
    main()
