"""Budget logic (pure): percentages, threshold/exceeded, KV replace rule, day boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from adp_cost.budget import Evaluation, kv_key, scope_of_key, should_replace, user_scope, utc_day

LIMIT = 10 * 10**9  # 10 USD


def ev(spent: int, limit: int = LIMIT, threshold: float = 0.8) -> Evaluation:
    return Evaluation("global", date(2025, 3, 1), spent, limit, threshold)


def test_threshold_and_exceeded_boundaries() -> None:
    assert ev(0).due_events() == []
    assert ev(7_999_999_999).due_events() == []
    assert ev(8 * 10**9).due_events() == ["threshold"]
    assert ev(LIMIT - 1).due_events() == ["threshold"]
    assert ev(LIMIT).due_events() == ["threshold", "exceeded"]
    assert ev(LIMIT).exceeded and not ev(LIMIT - 1).exceeded
    assert ev(3 * 10**9, threshold=0.3).due_events() == ["threshold"]


def test_percentage_and_state_money() -> None:
    e = ev(2_500_000_001)
    assert e.percentage == 25.0
    s = e.state()
    assert s.spent_usd == Decimal("2.500000001") and s.limit_usd == Decimal("10.000000000")
    assert s.day == "2025-03-01" and not s.exceeded and s.threshold == 0.8
    assert ev(12 * 10**9).percentage == 120.0


def test_zero_limit() -> None:
    assert ev(0, limit=0).due_events() == [] and ev(0, limit=0).percentage == 0.0
    assert ev(1, limit=0).exceeded and ev(1, limit=0).percentage == 100.0


def test_should_replace() -> None:
    a = ev(100).state()
    assert should_replace(None, a)
    assert not should_replace(a, a)
    assert should_replace(a, ev(101).state())
    assert not should_replace(ev(101).state(), a)  # an older total never overwrites a newer one
    nxt = Evaluation("global", date(2025, 3, 2), 0, LIMIT, 0.8).state()
    assert should_replace(a, nxt) and not should_replace(nxt, a)  # rollover wins, yesterday never comes back
    assert should_replace(ev(100).state(), ev(50, limit=5 * 10**9).state())  # a new limit always applies


def test_utc_day_and_keys() -> None:
    late = datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert utc_day(late) == date(2025, 3, 1)
    assert utc_day(late + timedelta(seconds=1)) == date(2025, 3, 2)
    plus2 = timezone(timedelta(hours=2))
    assert utc_day(datetime(2025, 3, 2, 1, 0, tzinfo=plus2)) == date(2025, 3, 1)
    assert kv_key("global") == "global" and kv_key(user_scope("u1")) == "user.u1"
    assert scope_of_key("user.u1") == "user:u1" and scope_of_key("global") == "global"
