"""Which condition changes become Events."""

from __future__ import annotations

import pytest

from headroom.api import conditions, status


def _prev(*conds: conditions.Cond) -> list[dict[str, str]]:
    return [{"type": c.type, "status": c.status, "reason": c.reason} for c in conds]


def test_progress_is_not_an_event_but_ready_and_failures_are() -> None:
    rolling = conditions.Cond("PoolerReady", "False", "RollingOut", "1/2")
    ready_false = conditions.Cond(conditions.READY, "False", "RollingOut", "")
    before = _prev(rolling, ready_false)
    now = [
        conditions.Cond(conditions.READY, "True", "AllComponentsReady", ""),
        conditions.Cond("PoolerReady", "True", "PodsReady", ""),
        conditions.Cond("CacheReady", "False", "PodsNotReady", ""),  # new, but progress
        conditions.Cond("ChildrenApplied", "False", "ApplyFailed", "x"),  # new failure
    ]
    assert [c.type for c in conditions.notable(before, now)] == [
        conditions.READY,
        "ChildrenApplied",
    ]


def test_an_unchanged_condition_is_never_an_event() -> None:
    same = conditions.Cond("ChildrenApplied", "False", "ApplyFailed", "x")
    assert conditions.notable(_prev(same), [same]) == []


def test_a_message_longer_than_the_crd_allows_is_cut_not_refused() -> None:
    long = conditions.Cond("ChildrenApplied", "False", "ApplyFailed", "x" * 40_000)
    (merged,) = conditions.merge([], [long], now="t", generation=1)
    assert len(merged["message"]) == status.MESSAGE_MAX
    assert merged["message"].endswith(f"... ({40_000 - status.MESSAGE_MAX} more characters)")
    short = conditions.Cond("Ready", "True", "AllComponentsReady", "ok")
    assert conditions.merge([], [short], now="t", generation=1)[0]["message"] == "ok"


_C = conditions.Cond
ROLLING = _C("PoolerReady", "False", "RollingOut", "1/2 pods ready")
REFUSED = _C("ConnectionBudget", "False", "BudgetExceeded", "spec.app: 400 > 92")


@pytest.mark.parametrize(
    ("components", "retry", "expected"),
    [
        # every component ready: neither condition
        ([_C("PoolerReady", "True", "PodsReady")], False, []),
        # a rollout is progress
        ([ROLLING], False, [("Reconciling", "RollingOut", "PoolerReady: 1/2 pods ready")]),
        # a refusal needs a person, and wins over a rollout elsewhere
        (
            [ROLLING, REFUSED],
            False,
            [("Stalled", "BudgetExceeded", "ConnectionBudget: spec.app: 400 > 92")],
        ),
        # an informational condition never stalls
        ([_C("PrimaryLimits", "False", "PrimaryUnreachable", "x")], False, []),
        # a child refused for good stalls; one refused for a passing error is retried
        (
            [_C("ChildrenApplied", "False", "ApplyFailed", "Service/x: 422")],
            False,
            [("Stalled", "ApplyFailed", "ChildrenApplied: Service/x: 422")],
        ),
        (
            [_C("ChildrenApplied", "False", "ApplyFailed", "Service/x: 409")],
            True,
            [("Reconciling", "ApplyFailed", "ChildrenApplied: Service/x: 409")],
        ),
        # nothing held back, but the pass must be retried
        (
            [_C("PoolerReady", "True", "PodsReady")],
            True,
            [("Reconciling", "RetryingAfterError", "a passing error; the pass is retried")],
        ),
    ],
)
def test_reconciling_or_stalled_as_kstatus_reads_them(
    components: list[conditions.Cond], retry: bool, expected: list[tuple[str, str, str]]
) -> None:
    got = conditions.progress(components, retry=retry)
    assert [(c.type, c.status, c.reason, c.message) for c in got] == [
        (kind, "True", reason, message) for kind, reason, message in expected
    ]
