"""Budget state staleness."""

from __future__ import annotations

from adp_common.schemas.cost import BudgetState
from adp_router.budget import is_exceeded


def test_budget_state_staleness() -> None:
    st = BudgetState(scope="global", day="2020-01-01", spent_usd=2, limit_usd=1, percentage=2.0, exceeded=True)
    assert not is_exceeded(st, "2020-01-02")
    assert is_exceeded(st, "2020-01-01")
