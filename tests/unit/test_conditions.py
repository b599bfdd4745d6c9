"""Which condition changes become Events."""

from __future__ import annotations

from headroom.api import status
from headroom.reconcile import conditions as cond


def _prev(*conds: cond.Cond) -> list[dict[str, str]]:
    return [{"type": c.type, "status": c.status, "reason": c.reason} for c in conds]


def test_progress_is_not_an_event_but_ready_and_failures_are() -> None:
    rolling = cond.Cond("PoolerReady", "False", "RollingOut", "1/2")
    ready_false = cond.Cond(cond.READY, "False", "RollingOut", "")
    before = _prev(rolling, ready_false)
    now = [
        cond.Cond(cond.READY, "True", "AllComponentsReady", ""),
        cond.Cond("PoolerReady", "True", "PodsReady", ""),
        cond.Cond("CacheReady", "False", "PodsNotReady", ""),  # new, but progress
        cond.Cond("ChildrenApplied", "False", "ApplyFailed", "x"),  # new failure
    ]
    assert [c.type for c in cond.notable(before, now)] == [cond.READY, "ChildrenApplied"]


def test_an_unchanged_condition_is_never_an_event() -> None:
    same = cond.Cond("ChildrenApplied", "False", "ApplyFailed", "x")
    assert cond.notable(_prev(same), [same]) == []


def test_a_message_longer_than_the_crd_allows_is_cut_not_refused() -> None:
    long = cond.Cond("ChildrenApplied", "False", "ApplyFailed", "x" * 40_000)
    (merged,) = cond.merge([], [long], now="t", generation=1)
    assert len(merged["message"]) == status.MESSAGE_MAX
    assert merged["message"].endswith(f"... ({40_000 - status.MESSAGE_MAX} more characters)")
    short = cond.Cond("Ready", "True", "AllComponentsReady", "ok")
    assert cond.merge([], [short], now="t", generation=1)[0]["message"] == "ok"
