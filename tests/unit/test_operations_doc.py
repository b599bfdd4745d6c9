"""docs/operations.md has a runbook entry for every condition reason the status
can carry (api.conditions.REASONS), naming the conditions that carry it, and
REASONS holds every reason the reconcile pass writes: a CamelCase literal in
the modules that build conditions is a reason unless it is listed here as
another word (a kind, a status, an Event reason, an S3 error code)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from headroom.api import conditions
from headroom.reconcile import outcome

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text()
PACKAGE = ROOT / "operator" / "headroom"
WRITERS = [
    *sorted((PACKAGE / "reconcile").glob("*.py")),
    PACKAGE / "api" / "conditions.py",
    PACKAGE / "planning" / "object_storage.py",
]
NOT_REASONS = {
    # kinds and API words
    *("BucketAccess", "BucketClaim", "Cluster", "Deployment", "Namespace", "PodMonitor"),
    *("PersistentVolumeClaim", "Pooler", "Prometheus", "PrometheusRule", "ScaledObject"),
    *("Secret", "ServiceMonitor", "StatefulSet", "StorageClass", "TriggerAuthentication"),
    *("Established", "Pending", "Retain", "ScalingActive", "BucketInfo", "ReplicaSet"),
    # pod phases
    *("Succeeded", "Failed"),
    # statuses and Event types
    *("True", "False", "Unknown", "Normal", "Warning"),
    # Event reasons (not conditions: reconcile.outcome.EVENT_REASONS)
    *outcome.EVENT_REASONS,
    # S3 error codes the bucket check reads
    *("InvalidAccessKeyId", "InvalidToken", "SignatureDoesNotMatch"),
}
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")


def _runbook_rows() -> dict[str, str]:
    section = DOC[DOC.index("## Runbook") :]
    section = section[: section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Za-z]+)` \| ([^|]+) \|", line)
        if match:
            rows[match[1]] = match[2]
    return rows


def test_every_reason_has_a_runbook_entry_naming_its_conditions() -> None:
    rows = _runbook_rows()
    missing = sorted(set(conditions.REASONS) - set(rows))
    assert not missing, f"docs/operations.md's runbook lacks {missing}"
    for reason, types in conditions.REASONS.items():
        for kind in types:
            assert kind in rows[reason], f"{reason}: the runbook does not name {kind}"
    assert not set(rows) - set(conditions.REASONS), "the runbook names reasons the code lacks"


def test_every_reason_the_code_writes_is_in_the_vocabulary() -> None:
    types = {v for k, v in vars(conditions).items() if k.isupper() and isinstance(v, str)}
    written = set()
    for path in WRITERS:
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and CAMEL.match(text):
                written.add(text)
    unknown = sorted(written - set(conditions.REASONS) - types - NOT_REASONS)
    assert not unknown, f"add these to conditions.REASONS (or NOT_REASONS here): {unknown}"


def test_the_operations_guide_is_linked_from_the_readme() -> None:
    assert "docs/operations.md" in (ROOT / "README.md").read_text()


def test_every_event_reason_is_named_in_the_operations_guide() -> None:
    section = DOC[DOC.index("## Runbook") :]
    missing = sorted(r for r in outcome.EVENT_REASONS if f"`{r}`" not in section)
    assert not missing, f"docs/operations.md does not name the Event reasons {missing}"
