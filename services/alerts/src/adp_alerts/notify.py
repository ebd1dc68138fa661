"""Notification channels (bus, log, webhook) and the outbox dispatcher.

A notification is a row of the outbox holding the exact body to send. The dispatcher of every copy claims
due rows, hands each to its channel, records every attempt, and either marks the row delivered or
schedules the next round with exponential backoff (so a receiver that is down for a while gets its
notifications when it comes back). Inside one round a webhook is tried a few times (adp_common.retry).

Add a channel by implementing `Channel` (name, the events it wants, `send`) and listing it in the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import httpx

from adp_alerts import store
from adp_alerts.store import AlertRow, NewNotification, NotificationRow
from adp_common.bus import Bus
from adp_common.retry import Backoff, retry
from adp_common.schemas.alerts import AlertEvent

log = logging.getLogger("adp.alerts.notify")

SIGNATURE_HEADER = "X-ADP-Signature"
EVENT_HEADER = "X-ADP-Event"
DELIVERY_HEADER = "X-ADP-Delivery"
ALL_EVENTS = frozenset({"firing", "resolved", "reminder", "acknowledged"})


def sign(secret: str, body: bytes) -> str:
    """Header value `sha256=<hex>`: HMAC-SHA256 of the raw request body with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute the signature over the raw body and compare in constant time."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body), header)


def render_body(event: str, alert: AlertEvent, dedup_key: str) -> str:
    """The JSON body every channel sends (fixed at enqueue time, so retries send identical bytes)."""
    return json.dumps(
        {
            "id": dedup_key,
            "event": event,
            "alert": alert.model_dump(mode="json"),
            "created_at": datetime.now(UTC).isoformat(),
        },
        separators=(",", ":"),
        sort_keys=True,
    )


@dataclass
class SendResult:
    ok: bool
    status_code: int | None = None
    error: str | None = None


class DeliveryFailed(Exception):
    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error or f"status {result.status_code}")
        self.result = result


class Channel(Protocol):
    name: str
    target: str
    events: frozenset[str]

    async def send(self, n: NotificationRow) -> SendResult: ...


class LogChannel:
    """A structured log line per notification."""

    name = "log"
    target = ""

    def __init__(self, events: frozenset[str] = ALL_EVENTS) -> None:
        self.events = events

    async def send(self, n: NotificationRow) -> SendResult:
        body = json.loads(n.body)
        a = body["alert"]
        log.warning(
            "alert %s: %s [%s] %s",
            n.event,
            a["rule"],
            a["severity"],
            a["message"],
            extra={
                "alert_id": a["id"],
                "alert_rule": a["rule"],
                "alert_subject": a["subject"],
                "alert_severity": a["severity"],
                "alert_event": n.event,
                "alert_state": a["state"],
                "notification": n.dedup_key,
            },
        )
        return SendResult(ok=True)


class BusChannel:
    """Publishes the AlertEvent on `<prefix>.alerts.events.<firing|resolved|acknowledged>` (ALERTS stream);
    Nats-Msg-Id = the notification key, so a re-send after a crash is de-duplicated."""

    name = "bus"
    target = ""
    events = frozenset({"firing", "resolved", "acknowledged"})

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def send(self, n: NotificationRow) -> SendResult:
        alert = AlertEvent.model_validate(json.loads(n.body)["alert"])
        subject_state = "acknowledged" if n.event == "acknowledged" else alert.state
        await self.bus.publish_event(self.bus.catalog.alert_event(subject_state), alert, msg_id=n.dedup_key)
        return SendResult(ok=True)


class WebhookChannel:
    """JSON POST with an HMAC-SHA256 signature of the raw body."""

    name = "webhook"

    def __init__(
        self, url: str, client: httpx.AsyncClient, *, secret: str | None, events: frozenset[str] = ALL_EVENTS
    ) -> None:
        self.target = url
        self.client = client
        self.secret = secret
        self.events = events

    async def send(self, n: NotificationRow) -> SendResult:
        raw = n.body.encode()
        headers = {"Content-Type": "application/json", EVENT_HEADER: n.event, DELIVERY_HEADER: n.dedup_key}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, raw)
        try:
            resp = await self.client.post(self.target, content=raw, headers=headers)
        except httpx.HTTPError as err:
            return SendResult(ok=False, error=f"{type(err).__name__}: {err}"[:300])
        if 200 <= resp.status_code < 300:
            return SendResult(ok=True, status_code=resp.status_code)
        return SendResult(ok=False, status_code=resp.status_code, error=f"HTTP {resp.status_code}")


def notifications_for(channels: list[Channel], event: str, *, suffix: str = "") -> Callable[[AlertRow], list]:
    """The outbox rows for an alert event: one per channel that wants it."""

    def build(row: AlertRow) -> list[NewNotification]:
        out = []
        ev = row.event()
        for ch in channels:
            if event not in ch.events:
                continue
            key = f"{row.id}:{event}{suffix}:{ch.name}:{ch.target}"
            out.append(NewNotification(key, event, ch.name, ch.target, render_body(event, ev, key)))
        return out

    return build


@dataclass
class DispatchPolicy:
    attempts_per_round: int = 3  # tries within one round
    attempt_wait_s: float = 0.5  # pause after a round's first failed try, doubled after each next one
    attempt_wait_max_s: float = 5.0
    round_backoff_s: float = 5.0  # outbox: delay before the next round, doubled each round
    round_backoff_max_s: float = 300.0
    max_age_s: float = 24 * 3600.0  # give up (status failed) after this long
    claim_s: float = 60.0  # how long a claimed row is reserved for this dispatcher
    batch: int = 32
    concurrency: int = 8

    @property
    def within_round(self) -> Backoff:
        return Backoff(self.attempt_wait_s, self.attempt_wait_max_s, attempts=self.attempts_per_round)

    @property
    def between_rounds(self) -> Backoff:
        return Backoff(self.round_backoff_s, self.round_backoff_max_s)


class Dispatcher:
    """Delivers due outbox rows; every copy runs one (claims keep them from sending a row twice)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: list[Channel],
        policy: DispatchPolicy,
        *,
        instance: str,
        poll_s: float = 1.0,
        on_result: Callable[[NotificationRow, bool], None] | None = None,
    ) -> None:
        self.pool = pool
        self.channels = {(c.name, c.target): c for c in channels}
        self.policy = policy
        self.instance = instance
        self.poll_s = poll_s
        self.on_result = on_result
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def kick(self) -> None:
        self.wake.set()

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        self.wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self.run_once()
            except Exception:
                log.exception("notification dispatch failed")
                busy = False
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_s)
            self.wake.clear()

    async def run_once(self) -> bool:
        """Claim and deliver one batch; True when a full batch was claimed (more may be waiting)."""
        mine = [f"{n}|{t}" for n, t in self.channels]
        rows = await store.claim_due(self.pool, limit=self.policy.batch, claim_s=self.policy.claim_s)
        if not rows:
            return False
        slots = asyncio.Semaphore(self.policy.concurrency)

        async def one(n: NotificationRow) -> None:
            async with slots:
                await self.deliver(n)

        # Rows of a channel this copy does not have (config differs between copies) are left for others.
        await asyncio.gather(*(one(n) for n in rows if f"{n.channel}|{n.target}" in mine))
        return len(rows) >= self.policy.batch

    async def deliver(self, n: NotificationRow) -> bool:
        channel = self.channels[(n.channel, n.target)]
        p = self.policy
        attempt_no = 0

        async def attempt() -> SendResult:
            nonlocal attempt_no
            attempt_no += 1
            started = time.perf_counter()
            try:
                result = await channel.send(n)
            except Exception as err:
                result = SendResult(ok=False, error=f"{type(err).__name__}: {err}"[:300])
            await store.record_attempt(
                self.pool,
                n.id,
                attempt=(n.rounds - 1) * p.attempts_per_round + attempt_no,
                ok=result.ok,
                status_code=result.status_code,
                error=result.error,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                instance=self.instance,
            )
            if not result.ok:
                raise DeliveryFailed(result)
            return result

        error = ""
        try:
            await retry(p.within_round, attempt, retry_on=(DeliveryFailed,))
        except DeliveryFailed as err:
            error = str(err) or "failed"
        if not error:
            await store.mark_delivered(self.pool, n.id)
            if self.on_result:
                self.on_result(n, True)
            return True
        age = (datetime.now(UTC) - n.created_at).total_seconds()
        if self.on_result:
            self.on_result(n, False)
        if age >= p.max_age_s:
            await store.mark_failed(self.pool, n.id, error=error)
            log.error("giving up on notification %s after %d rounds: %s", n.dedup_key, n.rounds, error)
        else:
            delay = p.between_rounds.pause(n.rounds)
            await store.mark_retry(self.pool, n.id, delay_s=delay, error=error)
            log.warning(
                "notification %s to %s %s failed (round %d): %s; next round in %.1fs",
                n.dedup_key,
                n.channel,
                n.target,
                n.rounds,
                error,
                delay,
            )
        return False
