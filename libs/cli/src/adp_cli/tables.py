"""The one table printer of the `adp` commands (left-aligned columns two spaces apart), and the alert table
that `adp alerts` (over NATS) and `adp alerts-list` (through the gateway) both print."""

from __future__ import annotations

from collections.abc import Sequence

from adp_common.schemas.alerts import AlertEvent


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, max_width: int = 0, rule: bool = False) -> str:
    """`headers` over `rows`; cells longer than `max_width` (when set) end in '…'; `rule` puts a line of dashes
    under the headers."""
    cells = [[str(c) for c in row] for row in rows]
    if max_width:
        cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(list(headers))]
    if rule:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells]
    return "\n".join(out)


def alert_table(alerts: Sequence[AlertEvent]) -> str:
    rows = [
        [
            a.id,
            a.severity,
            a.state + (" (acked)" if a.acknowledged else ""),
            a.rule,
            a.subject,
            a.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            a.message[:70],
        ]
        for a in alerts
    ]
    return table(["ID", "SEVERITY", "STATE", "RULE", "SUBJECT", "STARTED", "MESSAGE"], rows)
