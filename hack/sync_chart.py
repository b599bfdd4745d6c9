"""Keep the Helm chart, crds/ and manifests/ one set of objects.

The chart (charts/headroom) is the source of the install objects; crds/ is
generated from the pydantic models. Two directions:

- ``python hack/sync_chart.py`` (``make crds``): the CRD into the chart as the
  template templates/crd.yaml, with ``helm.sh/resource-policy: keep``. A
  template, not the chart's crds/ folder: Helm installs crds/ once and never
  upgrades it, so a release with new fields would keep the old schema and the
  API server would prune the new fields.
- ``python hack/sync_chart.py --manifests HELM`` (``make manifests``):
  manifests/operator.yaml and manifests/rbac.yaml rendered from the chart by
  ``helm template`` (release ``headroom`` in ``headroom-system``), so the plain
  manifests and the chart cannot differ. tests/unit/test_crd.py and
  tests/e2e/test_chart.py fail when either is stale.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "headroom"
CRD_FILE = ROOT / "crds" / "headroom.dev_scalingprofiles.yaml"
CRD_TEMPLATE = CHART / "templates" / "crd.yaml"
RELEASE, NAMESPACE = "headroom", "headroom-system"
# chart template -> the manifests/ file rendered from it
RENDERED = {"rbac.yaml": "rbac.yaml", "operator.yaml": "operator.yaml"}

_CRD_HEADER = """\
{{- if .Values.crds.install }}
# Generated from crds/headroom.dev_scalingprofiles.yaml by `make crds`; edit the
# pydantic models. A template so that `helm upgrade` upgrades the schema; kept by
# `helm uninstall` (deleting the CRD would delete every ScalingProfile).
"""
_KEEP = """\
  annotations:
    helm.sh/resource-policy: keep
    argocd.argoproj.io/sync-options: Prune=false
"""


def crd_template_text() -> str:
    crd = CRD_FILE.read_text()
    if "{{" in crd:
        raise SystemExit(f"{CRD_FILE} contains '{{{{', which Helm would read as a template")
    if "\nmetadata:\n" not in crd:
        raise SystemExit(f"{CRD_FILE}: no top-level metadata")
    body = crd.replace("\nmetadata:\n", "\nmetadata:\n" + _KEEP, 1)
    return _CRD_HEADER + body + "{{- end }}\n"


def render_manifests(helm: str) -> dict[str, str]:
    """manifests/ file name -> its text, as helm renders the chart."""
    done = subprocess.run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--set",
            "crds.install=false",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    sections: dict[str, list[str]] = {}
    for doc in done.stdout.split("\n---\n"):
        match = re.search(r"^# Source: headroom/templates/(\S+)$", doc, re.MULTILINE)
        if match is None:
            if doc.strip() and doc.strip() != "---":
                raise SystemExit(f"a rendered document without a source:\n{doc[:200]}")
            continue
        source = match.group(1)
        if source not in RENDERED:
            raise SystemExit(f"templates/{source} renders by default; say where it goes")
        body = doc[match.end() :].strip("\n")
        sections.setdefault(RENDERED[source], []).append(body)
    header = (
        f"# Generated from charts/headroom by `make manifests` (helm template {RELEASE} "
        f"--namespace {NAMESPACE}); edit the chart.\n"
    )
    return {name: header + "\n---\n".join(bodies) + "\n" for name, bodies in sections.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", metavar="HELM", help="render manifests/ with this helm")
    args = parser.parse_args()
    if args.manifests:
        for name, text in render_manifests(args.manifests).items():
            (ROOT / "manifests" / name).write_text(text)
        return
    stale = CHART / "crds"
    for leftover in (stale / CRD_FILE.name,):
        leftover.unlink(missing_ok=True)
    if stale.is_dir() and not any(stale.iterdir()):
        stale.rmdir()
    CRD_TEMPLATE.write_text(crd_template_text())


if __name__ == "__main__":
    main()
