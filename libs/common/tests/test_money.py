"""Money renders as a fixed decimal string in every JSON form, whatever the Decimal's exponent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adp_common.schemas.cost import BudgetState, BudgetView, CostRow, CostSummary, DailyCost
from adp_common.schemas.money import format_money


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0E-9"), "0.000000000"),
        (Decimal("1E+2"), "100"),
        (Decimal("0.000001230"), "0.000001230"),
        (Decimal("-2.5E-7"), "-0.00000025"),
        (Decimal(0), "0"),
    ],
)
def test_format_money_is_fixed_point(amount: Decimal, text: str) -> None:
    assert format_money(amount) == text


def test_every_amount_in_cost_replies_serializes_fixed_point() -> None:
    zero = Decimal("0E-9")
    summary = CostSummary(
        costByProvider=[CostRow(key="p", cost_usd=zero)],
        dailyCosts=[DailyCost(date="2025-01-01", provider="p", cost_usd=zero)],
        budget=BudgetView(current=zero, limit=Decimal("1E+1"), percentage=0, exceeded=False),
        userCost=zero,
        totalCost=zero,
    )
    text = summary.model_dump_json()
    assert "E-" not in text and "E+" not in text
    dumped = summary.model_dump(mode="json")
    assert dumped["totalCost"] == dumped["userCost"] == dumped["costByProvider"][0]["cost_usd"] == "0.000000000"
    assert dumped["budget"]["limit"] == "10"
    assert CostSummary.model_validate_json(text) == summary  # and it reads back as the same amounts
    state = BudgetState(scope="global", day="2025-01-01", spent_usd=zero, limit_usd=zero, percentage=0, exceeded=False)
    assert state.model_dump(mode="json")["spent_usd"] == "0.000000000"
    assert CostSummary.model_json_schema(mode="serialization")["properties"]["totalCost"]["type"] == "string"
