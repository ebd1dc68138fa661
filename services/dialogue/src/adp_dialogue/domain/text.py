"""Small text helpers shared by the domain modules."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"""[.!?…](?:["'”’)\]*_]*)\s*$""")
_WORD = re.compile(r"[a-z0-9']+")


def estimate_tokens(text: str) -> int:
    """Rough token estimate (about 4 characters per token) when the provider reports none."""
    return max(1, (len(text) + 3) // 4) if text else 0


def ends_with_sentence(text: str) -> bool:
    stripped = text.rstrip()
    if not stripped:
        return False
    if stripped.endswith("```"):
        return True
    return bool(_SENTENCE_END.search(stripped))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip() for p in parts if p.strip()]


def trim_to_sentence(text: str, limit: int) -> str:
    """At most `limit` characters, cut after the last complete sentence when there is one."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    best = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "), cut.rfind(".\n"))
    if cut.endswith((".", "!", "?")):
        return cut
    if best >= limit // 3:
        return cut[: best + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(",;: ") + "…"
