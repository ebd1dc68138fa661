"""Rows -> client views (camelCase, as in the client contract)."""

from __future__ import annotations

from typing import Any

from adp_common.schemas.dialogue import DiscussionView, PersonaSpec
from adp_common.schemas.events import Message
from adp_dialogue.domain.personas import USER_PERSONA
from adp_dialogue.rows import DiscussionDetail, DiscussionRow, MessageRow, QuestionSetRow, SummaryRow


def message_dict(r: MessageRow) -> dict[str, Any]:
    """A message as clients see it; the User's own messages carry no token counts (no model wrote them)."""
    by_user = r.persona == USER_PERSONA
    out: dict[str, Any] = {
        "id": r.id,
        "persona": r.persona,
        "content": r.content,
        "turn": r.turn,
        "round": r.round,
        "provider": None if by_user else r.provider,
        "model": None if by_user else r.model,
    }
    if not by_user:
        out["inputTokens"] = r.input_tokens
        out["outputTokens"] = r.output_tokens
    out["createdAt"] = r.created_at.isoformat()
    return out


def message(r: MessageRow) -> Message:
    """A message as the events carry it."""
    return Message(**message_dict(r))


def summary_dict(r: SummaryRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "roundNumber": r.round,
        "content": r.content,
        "tokensBefore": r.tokens_before,
        "tokensAfter": r.tokens_after,
        "reason": r.reason,
        "createdAt": r.created_at.isoformat(),
    }


def question_set_dict(r: QuestionSetRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "roundNumber": r.round,
        "questions": r.questions,
        "reason": r.reason,
        "fallback": r.fallback,
        "answers": r.answers,
        "answeredAt": r.answered_at.isoformat() if r.answered_at else None,
        "createdAt": r.created_at.isoformat(),
    }


def round_dict(number: int, msgs: list[dict[str, Any]], completed_at: Any = None) -> dict[str, Any]:
    return {
        "number": number,
        "messages": [m for m in msgs if m["round"] == number],
        "completedAt": completed_at.isoformat() if completed_at else None,
    }


def base_view(d: DiscussionRow, *, has_active: bool) -> DiscussionView:
    """`has_active`: whether the discussion's user has any unfinished (running or waiting) discussion."""
    return DiscussionView(
        id=d.id,
        userId=d.user_id,
        topic=d.topic,
        status=d.status,
        currentRound=d.current_round,
        maxRounds=d.max_rounds,
        personas=[PersonaSpec(**p) for p in d.personas],
        resolution=d.resolution,
        tokenCount=d.token_count,
        tokenLimit=d.token_limit,
        createdAt=d.created_at,
        updatedAt=d.updated_at,
        error=d.error,
        hasActiveDiscussion=has_active,
    )


def full_view(detail: DiscussionDetail, *, has_active: bool) -> DiscussionView:
    """The whole discussion from `store.discussion_with_children`."""
    view = base_view(detail.discussion, has_active=has_active)
    msgs = [message_dict(r) for r in detail.messages]
    view.messages = msgs
    view.rounds = [round_dict(r.number, msgs, r.completed_at) for r in detail.rounds]
    view.summaries = [summary_dict(r) for r in detail.summaries]
    view.questions = [question_set_dict(r) for r in detail.question_sets]
    return view
