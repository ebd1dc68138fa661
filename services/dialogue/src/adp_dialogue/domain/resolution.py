"""Resolution detection: has the discussion reached an agreed, actionable solution? (pure)

Scoring over the latest rounds:
- resolution keywords ("consensus", "agreed", "resolved", ...) in the last round, ignoring negated ones
  ("no consensus", "not resolved", "haven't agreed");
- agreement phrases ("I agree", "building on", ...) per persona in the last round;
- consensus: every persona expressed agreement in each of the last `consensus_rounds` rounds.
A discussion is resolved only when, in addition, a solution statement can be extracted and validated.
Never before `min_round`. At the last round it is resolved exactly when a solution can be extracted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from adp_dialogue.domain.prompts import Msg

RESOLUTION_KEYWORDS = (
    "consensus",
    "agreed",
    "agreement",
    "resolved",
    "resolution",
    "settled",
    "converged",
    "final recommendation",
    "in conclusion",
    "we all agree",
    "way forward",
)
AGREEMENT_PHRASES = (
    "i agree",
    "we agree",
    "all agree",
    "i concur",
    "agree with",
    "agreed",
    "fully support",
    "i support",
    "good point",
    "well said",
    "exactly right",
    "building on",
    "builds on",
    "that works",
    "on the same page",
    "makes sense",
    "aligned",
)
NEGATIONS = (
    "no",
    "not",
    "nothing",
    "neither",
    "never",
    "without",
    "lack",
    "lacks",
    "nor",
    "yet",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "didn't",
    "haven't",
    "hasn't",
    "isn't",
    "aren't",
    "wasn't",
    "won't",
    "far",
    "dis",
)
_CLAUSE_BREAKS = {"but", "however", "although", "though", "whereas", "now"}
SOLUTION_MARKERS = (
    "final solution",
    "agreed solution",
    "proposed solution",
    "solution",
    "recommendation",
    "final answer",
    "conclusion",
)
_SOLUTION_LINE = re.compile(
    r"(?:^|[.!?]\s+)\s*(?:[*_#>\-\s]*)(?:"
    + "|".join(re.escape(m) for m in SOLUTION_MARKERS)
    + r")\s*(?:[*_]*)\s*[:\-–—]\s*(.+)$",
    re.IGNORECASE | re.MULTILINE,
)
_PLACEHOLDERS = re.compile(r"^(?:tbd|todo|n/?a|none|unknown|to be (?:decided|determined)|\.\.\.|…)\W*$", re.I)
_NEGATED_SOLUTION = re.compile(r"^(?:no|not|none|there is no|we have no|nothing)\b", re.I)


@dataclass(frozen=True)
class ResolutionConfig:
    min_round: int = 5
    consensus_rounds: int = 2
    threshold: float = 0.55
    keyword_weight: float = 0.35
    agreement_weight: float = 0.35
    consensus_weight: float = 0.30
    keyword_cap: int = 3
    negation_window: int = 3


@dataclass
class Assessment:
    resolved: bool
    score: float
    solution: str | None
    keyword_hits: int = 0
    agreement_ratio: float = 0.0
    consensus: bool = False
    reasons: list[str] = field(default_factory=list)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("’", "'"))


def _is_negated(tokens: list[str], start: int, window: int) -> bool:
    for t in reversed(tokens[max(0, start - window) : start]):
        if t in _CLAUSE_BREAKS:
            return False
        if t in NEGATIONS or t.endswith("n't"):
            return True
    return False


def _find_phrase(tokens: list[str], phrase: list[str]) -> list[int]:
    n = len(phrase)
    return [i for i in range(len(tokens) - n + 1) if tokens[i : i + n] == phrase]


def count_keywords(text: str, window: int = 3) -> int:
    """Non-negated occurrences of resolution keywords."""
    tokens = _tokens(text)
    hits = 0
    for kw in RESOLUTION_KEYWORDS:
        for i in _find_phrase(tokens, kw.split()):
            if not _is_negated(tokens, i, window):
                hits += 1
    return hits


def expresses_agreement(text: str, window: int = 3) -> bool:
    tokens = _tokens(text)
    for phrase in AGREEMENT_PHRASES:
        for i in _find_phrase(tokens, phrase.split()):
            # "I don't agree", "we do not agree", "not aligned": the negation sits inside or just before.
            inner = tokens[i : i + len(phrase.split())]
            if any(t in NEGATIONS or t.endswith("n't") for t in inner[1:]):
                continue
            if not _is_negated(tokens, i + (1 if inner[0] in ("i", "we") else 0), window):
                return True
    return False


def validate_solution(candidate: str) -> str | None:
    """A usable solution statement, or None: 20-1000 chars, at least 4 words, not a question or placeholder."""
    s = candidate.strip().strip("*_").strip()
    s = re.sub(r"\s+", " ", s)
    if _PLACEHOLDERS.match(s) or _NEGATED_SOLUTION.match(s):
        return None
    if s.endswith("?") or len(s) < 20 or len(s.split()) < 4:
        return None
    if len(s) > 1000:
        s = s[:1000].rsplit(" ", 1)[0] + "…"
    return s


def extract_solution(messages: list[Msg]) -> str | None:
    """The latest validated solution statement (a line like 'Solution: ...'), newest message first."""
    for m in sorted(messages, key=lambda m: (m.round, m.turn), reverse=True):
        for match in reversed(list(_SOLUTION_LINE.finditer(m.content))):
            found = validate_solution(match.group(1))
            if found:
                return found
    return None


def assess(
    messages: list[Msg],
    personas: list[str],
    round_number: int,
    max_rounds: int,
    config: ResolutionConfig | None = None,
) -> Assessment:
    """Judge whether the discussion is resolved after `round_number` (messages of every round so far)."""
    cfg = config or ResolutionConfig()
    ai = [m for m in messages if m.persona in personas]
    at_max = round_number >= max_rounds
    if round_number < cfg.min_round and not at_max:
        return Assessment(False, 0.0, None, reasons=[f"not before round {cfg.min_round}"])
    last = [m for m in ai if m.round == round_number]
    recent = [m for m in ai if m.round > round_number - cfg.consensus_rounds]
    solution = extract_solution(recent)
    if at_max:
        solution = solution or extract_solution(ai)
        return Assessment(
            solution is not None,
            1.0 if solution else 0.0,
            solution,
            reasons=["max rounds reached", "solution found" if solution else "no solution could be extracted"],
        )
    hits = sum(count_keywords(m.content, cfg.negation_window) for m in last)
    agreeing = {m.persona for m in last if expresses_agreement(m.content, cfg.negation_window)}
    ratio = len(agreeing) / len(personas) if personas else 0.0
    consensus = True
    for r in range(round_number - cfg.consensus_rounds + 1, round_number + 1):
        agreed = {m.persona for m in ai if m.round == r and expresses_agreement(m.content, cfg.negation_window)}
        if r < 1 or not set(personas) <= agreed:
            consensus = False
            break
    score = (
        cfg.keyword_weight * min(hits, cfg.keyword_cap) / cfg.keyword_cap
        + cfg.agreement_weight * ratio
        + cfg.consensus_weight * (1.0 if consensus else 0.0)
    )
    reasons = [f"keywords={hits}", f"agreement={ratio:.2f}", f"consensus={consensus}"]
    if solution is None:
        reasons.append("no solution statement")
    resolved = solution is not None and score >= cfg.threshold
    return Assessment(resolved, round(score, 4), solution, hits, ratio, consensus, reasons)


_PADDING = (
    "The participants reached this answer after weighing the risks, the implementation steps and the open "
    "questions raised during the discussion.",
    "Start with a small, measurable first step of the agreed approach, check the result against the goals set out "
    "at the beginning, and adjust the details before rolling it out fully.",
    "Keep the main caveat in mind: the answer rests on the assumptions stated in the discussion, so revisit it if "
    "the constraints, the budget or the expected load change.",
    "Document the decision and the reasons for it so that the people who implement it can follow the same reasoning.",
)


def fit_final_answer(text: str, solution: str, low: int = 500, high: int = 1000) -> str:
    """The final answer within [low, high] characters: trimmed at a sentence, or completed with the solution."""
    from adp_dialogue.domain.text import trim_to_sentence

    t = re.sub(r"[ \t]+", " ", text.strip())
    if len(t) < low:
        extra = f" Agreed solution: {solution.strip()}"
        if solution.strip() and solution.strip() not in t:
            t = (t + extra).strip()
    for extra_sentence in _PADDING:
        if len(t) >= low:
            break
        t = f"{t} {extra_sentence}".strip()
    return trim_to_sentence(t, high)
