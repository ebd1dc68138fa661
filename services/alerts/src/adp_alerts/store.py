"""Plain SQL over asyncpg: alerts, the notification outbox and delivery attempts.

Every state change is a compare-and-set in SQL (insert guarded by the partial unique index, updates guarded
by `state = 'firing'` / the previous `last_notified_at`), and its notifications are written in the same
transaction, so a change happens once and its notifications exist exactly when it did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from adp_common.schemas.alerts import AlertEvent

ALERT_COLUMNS = (
    "id, rule, subject, severity, state, message, value, threshold, labels, started_at, resolved_at, "
    "last_notified_at, reminders, acknowledged_at, acknowledged_by"
)


@dataclass
class AlertRow:
    id: str
    rule: str
    subject: str
    severity: str
    state: str
    message: str
    value: float | None
    threshold: float | None
    labels: dict[str, Any]
    started_at: datetime
    resolved_at: datetime | None
    last_notified_at: datetime
    reminders: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> AlertRow:
        labels = r["labels"]
        return cls(
            id=r["id"],
            rule=r["rule"],
            subject=r["subject"],
            severity=r["severity"],
            state=r["state"],
            message=r["message"],
            value=r["value"],
            threshold=r["threshold"],
            labels=json.loads(labels) if isinstance(labels, str) else dict(labels or {}),
            started_at=r["started_at"],
            resolved_at=r["resolved_at"],
            last_notified_at=r["last_notified_at"],
            reminders=r["reminders"],
            acknowledged_at=r["acknowledged_at"],
            acknowledged_by=r["acknowledged_by"],
        )

    def event(self) -> AlertEvent:
        return AlertEvent(
            id=self.id,
            rule=self.rule,
            subject=self.subject,
            severity=self.severity,
            state=self.state,
            acknowledged=self.acknowledged_at is not None,
            message=self.message,
            value=self.value,
            threshold=self.threshold,
            started_at=self.started_at,
            resolved_at=self.resolved_at,
            acknowledged_at=self.acknowledged_at,
            acknowledged_by=self.acknowledged_by,
            labels={**self.labels, "reminders": self.reminders},
        )


@dataclass
class NewNotification:
    dedup_key: str
    event: str
    channel: str
    target: str
    body: str


@dataclass
class NotificationRow:
    id: int
    dedup_key: str
    alert_id: str
    event: str
    channel: str
    target: str
    body: str
    rounds: int
    created_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> NotificationRow:
        return cls(
            id=r["id"],
            dedup_key=r["dedup_key"],
            alert_id=r["alert_id"],
            event=r["event"],
            channel=r["channel"],
            target=r["target"],
            body=r["body"],
            rounds=r["rounds"],
            created_at=r["created_at"],
        )


async def _enqueue(conn: asyncpg.Connection, alert_id: str, items: list[NewNotification]) -> None:
    if not items:
        return
    await conn.executemany(
        """INSERT INTO notifications (dedup_key, alert_id, event, channel, target, body)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedup_key) DO NOTHING""",
        [(n.dedup_key, alert_id, n.event, n.channel, n.target, n.body) for n in items],
    )


NotificationsFor = Callable[[AlertRow], list[NewNotification]]


async def _change(pool: asyncpg.Pool, notifications: NotificationsFor, sql: str, *args: Any) -> AlertRow | None:
    """Run one change of an alert (`sql` returning its row) and enqueue the notifications it calls for, in
    one transaction; None when the change did not apply."""
    async with pool.acquire() as conn, conn.transaction():
        rec = await conn.fetchrow(sql, *args)
        if rec is None:
            return None
        row = AlertRow.from_record(rec)
        await _enqueue(conn, row.id, notifications(row))
        return row


async def insert_firing(
    pool: asyncpg.Pool,
    *,
    alert_id: str,
    rule: str,
    subject: str,
    severity: str,
    message: str,
    value: float | None,
    threshold: float | None,
    labels: dict[str, Any],
    now: datetime,
    fired_by: str,
    notifications: NotificationsFor,
) -> AlertRow | None:
    """Insert a firing alert unless one is already firing for (rule, subject); `notifications`
    gives what to enqueue in the same transaction. None when it existed."""
    return await _change(
        pool,
        notifications,
        f"""INSERT INTO alerts (id, rule, subject, severity, state, message, value, threshold, labels,
                                started_at, last_notified_at, fired_by)
            VALUES ($1, $2, $3, $4, 'firing', $5, $6, $7, $8::jsonb, $9, $9, $10)
            ON CONFLICT (rule, subject) WHERE state = 'firing' DO NOTHING
            RETURNING {ALERT_COLUMNS}""",
        alert_id,
        rule,
        subject,
        severity,
        message,
        value,
        threshold,
        json.dumps(labels, default=str),
        now,
        fired_by,
    )


async def resolve(
    pool: asyncpg.Pool,
    alert_id: str,
    *,
    now: datetime,
    message: str,
    value: float | None,
    notifications: NotificationsFor,
) -> AlertRow | None:
    """firing -> resolved (once); None when it was not firing any more."""
    return await _change(
        pool,
        notifications,
        f"""UPDATE alerts SET state = 'resolved', resolved_at = $2, message = $3,
                   value = COALESCE($4, value), updated_at = now()
            WHERE id = $1 AND state = 'firing' RETURNING {ALERT_COLUMNS}""",
        alert_id,
        now,
        message,
        value,
    )


async def remind(
    pool: asyncpg.Pool,
    alert_id: str,
    *,
    expected_last: datetime,
    now: datetime,
    message: str | None,
    value: float | None,
    notifications: NotificationsFor,
) -> AlertRow | None:
    """Record a reminder (compare-and-set on last_notified_at, so two evaluators remind once)."""
    return await _change(
        pool,
        notifications,
        f"""UPDATE alerts SET last_notified_at = $3, reminders = reminders + 1,
                   message = COALESCE($4, message), value = COALESCE($5, value), updated_at = now()
            WHERE id = $1 AND state = 'firing' AND last_notified_at = $2 RETURNING {ALERT_COLUMNS}""",
        alert_id,
        expected_last,
        now,
        message,
        value,
    )


async def acknowledge(
    pool: asyncpg.Pool, alert_id: str, *, by: str | None, now: datetime, notifications: NotificationsFor
) -> tuple[AlertRow | None, bool]:
    """Acknowledge an alert. Returns (row, changed); row None when the id is unknown. Idempotent."""
    async with pool.acquire() as conn, conn.transaction():
        rec = await conn.fetchrow(
            f"""UPDATE alerts SET acknowledged_at = $2, acknowledged_by = $3, updated_at = now()
                WHERE id = $1 AND acknowledged_at IS NULL RETURNING {ALERT_COLUMNS}""",
            alert_id,
            now,
            by,
        )
        if rec is None:
            existing = await conn.fetchrow(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1", alert_id)
            return (AlertRow.from_record(existing) if existing else None), False
        row = AlertRow.from_record(rec)
        await _enqueue(conn, row.id, notifications(row))
        return row, True


async def firing(pool: asyncpg.Pool) -> list[AlertRow]:
    recs = await pool.fetch(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing' ORDER BY started_at")
    return [AlertRow.from_record(r) for r in recs]


async def get(pool: asyncpg.Pool, alert_id: str) -> AlertRow | None:
    rec = await pool.fetchrow(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1", alert_id)
    return AlertRow.from_record(rec) if rec else None


async def history(
    pool: asyncpg.Pool,
    *,
    rule: str | None = None,
    severity: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[AlertRow]:
    recs = await pool.fetch(
        f"""SELECT {ALERT_COLUMNS} FROM alerts
            WHERE ($1::text IS NULL OR rule = $1) AND ($2::text IS NULL OR severity = $2)
              AND ($3::text IS NULL OR state = $3)
            ORDER BY started_at DESC, id LIMIT $4""",
        rule,
        severity,
        state,
        limit,
    )
    return [AlertRow.from_record(r) for r in recs]


# ---- outbox ------------------------------------------------------------------------------------------
async def claim_due(pool: asyncpg.Pool, *, limit: int, claim_s: float) -> list[NotificationRow]:
    """Claim due notifications for this dispatcher: pushes their next attempt `claim_s` ahead so no other
    copy takes them meanwhile (a crashed dispatcher's claim simply expires)."""
    recs = await pool.fetch(
        """UPDATE notifications SET next_attempt_at = now() + make_interval(secs => $2), rounds = rounds + 1
           WHERE id IN (SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= now()
                        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING id, dedup_key, alert_id, event, channel, target, body, rounds, created_at""",
        limit,
        claim_s,
    )
    return sorted((NotificationRow.from_record(r) for r in recs), key=lambda n: n.id)


async def record_attempt(
    pool: asyncpg.Pool,
    notification_id: int,
    *,
    attempt: int,
    ok: bool,
    status_code: int | None,
    error: str | None,
    duration_ms: float,
    instance: str,
) -> None:
    await pool.execute(
        """INSERT INTO deliveries (notification_id, attempt, ok, status_code, error, duration_ms, instance)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        notification_id,
        attempt,
        ok,
        status_code,
        error,
        duration_ms,
        instance,
    )


async def mark_delivered(pool: asyncpg.Pool, notification_id: int) -> None:
    await pool.execute(
        "UPDATE notifications SET status = 'delivered', delivered_at = now(), last_error = NULL WHERE id = $1",
        notification_id,
    )


async def mark_retry(pool: asyncpg.Pool, notification_id: int, *, delay_s: float, error: str) -> None:
    await pool.execute(
        """UPDATE notifications SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3
           WHERE id = $1 AND status = 'pending'""",
        notification_id,
        delay_s,
        error[:500],
    )


async def mark_failed(pool: asyncpg.Pool, notification_id: int, *, error: str) -> None:
    await pool.execute(
        "UPDATE notifications SET status = 'failed', last_error = $2 WHERE id = $1", notification_id, error[:500]
    )
