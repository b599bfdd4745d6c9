"""Which condition changes become Events."""

from __future__ import annotations

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
