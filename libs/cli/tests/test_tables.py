"""The one table printer and the alert table both alert commands print."""

from __future__ import annotations

from datetime import UTC, datetime

from adp_cli.tables import alert_table, table
from adp_common.schemas.alerts import AlertEvent


def test_columns_are_as_wide_as_their_widest_cell() -> None:
    assert table(["A", "LONG"], [["xyz", "1"], ["w", "22"]]).splitlines() == ["A    LONG", "xyz  1", "w    22"]


def test_a_rule_under_the_headers_and_long_cells_cut() -> None:
    lines = table(["NAME", "NOTE"], [["a", "x" * 10]], max_width=5, rule=True).splitlines()
    assert lines == ["NAME  NOTE", "----  -----", "a     xxxx…"]


def test_alert_table_marks_acknowledged_alerts() -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    alerts = [
        AlertEvent(id="a1", rule="error_rate", subject="global", severity="warning", state="firing",
                   message="errors", started_at=started),
        AlertEvent(id="a2", rule="budget_exceeded", subject="u1", severity="critical", state="firing",
                   acknowledged=True, message="over", started_at=started),
    ]  # fmt: skip
    header, first, second = alert_table(alerts).splitlines()
    assert header.split() == ["ID", "SEVERITY", "STATE", "RULE", "SUBJECT", "STARTED", "MESSAGE"]
    assert first.split()[:3] == ["a1", "warning", "firing"] and "2026-01-02 03:04:05" in first
    assert "firing (acked)" in second
