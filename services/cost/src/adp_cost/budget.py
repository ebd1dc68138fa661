"""Budget logic (pure): state of a budget from spend and limit, and which once-a-day events are due."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from adp_common.schemas.cost import BudgetState
from adp_cost.pricing import nusd_to_usd

Clock = Callable[[], datetime]
EventKind = Literal["threshold", "exceeded"]

GLOBAL = "global"


def system_clock() -> datetime:
    return datetime.now(UTC)


def utc_day(t: datetime) -> date:
    """The UTC calendar day of `t` (naive datetimes are taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).date()


def user_scope(user_id: str) -> str:
    """Scope name used in the database and in BudgetEvent.scope."""
    return f"user:{user_id}"


def key_scope(key_id: str) -> str:
    """Scope of an API key's own daily budget."""
    return f"key:{key_id}"


def kv_key(scope: str) -> str:
    """Key in the budget KV bucket: 'global', 'user.<id>' or 'key.<id>'."""
    if scope == GLOBAL:
        return GLOBAL
    kind, _, ident = scope.partition(":")
    return f"{kind}.{ident}"


def scope_of_key(key: str) -> str:
    if key == GLOBAL:
        return GLOBAL
    kind, _, ident = key.partition(".")
    return f"{kind}:{ident}"


@dataclass(frozen=True)
class Budget:
    scope: str
    limit_nusd: int
    threshold: float


@dataclass(frozen=True)
class Evaluation:
    scope: str
    day: date
    spent_nusd: int
    limit_nusd: int
    threshold: float

    @property
    def percentage(self) -> float:
        """Spend as a percentage of the limit (0..100+); a zero limit with spend counts as 100."""
        if self.limit_nusd <= 0:
            return 100.0 if self.spent_nusd > 0 else 0.0
        return round(self.spent_nusd * 100 / self.limit_nusd, 2)

    @property
    def exceeded(self) -> bool:
        if self.limit_nusd <= 0:
            return self.spent_nusd > 0
        return self.spent_nusd >= self.limit_nusd

    @property
    def over_threshold(self) -> bool:
        if self.limit_nusd <= 0:
            return self.spent_nusd > 0
        # exact: spent >= threshold * limit, threshold as a decimal fraction
        return Decimal(self.spent_nusd) >= Decimal(str(self.threshold)) * self.limit_nusd

    def due_events(self) -> list[EventKind]:
        """Kinds whose condition holds now (the caller records each once per scope and day)."""
        kinds: list[EventKind] = []
        if self.over_threshold:
            kinds.append("threshold")
        if self.exceeded:
            kinds.append("exceeded")
        return kinds

    def state(self) -> BudgetState:
        return BudgetState(
            scope=self.scope,
            day=self.day.isoformat(),
            spent_usd=nusd_to_usd(self.spent_nusd),
            limit_usd=nusd_to_usd(self.limit_nusd),
            percentage=self.percentage,
            exceeded=self.exceeded,
            threshold=self.threshold,
        )


def should_replace(current: BudgetState | None, new: BudgetState) -> bool:
    """Whether a computed state may overwrite the one in KV. Within a day spend only grows, so a copy holding
    an older (smaller) total must not overwrite a newer one; a new day, limit or threshold always wins."""
    if current is None:
        return True
    if current.day != new.day:
        return new.day > current.day
    if current.limit_usd != new.limit_usd or current.threshold != new.threshold:
        return True
    return new.spent_usd > current.spent_usd
