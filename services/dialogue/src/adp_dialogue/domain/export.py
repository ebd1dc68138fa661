"""Markdown export with user and model text sanitised against markup injection (pure)."""

from __future__ import annotations

import html
import re
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_escape(text: str) -> str:
    """Render untrusted text inert in Markdown: HTML escaped, Markdown punctuation backslash-escaped."""
    escaped = html.escape(text or "", quote=True)
    escaped = escaped.replace("&gt;", "\0GT\0").replace("&lt;", "\0LT\0").replace("&amp;", "\0AMP\0")
    escaped = escaped.replace("&quot;", '"').replace("&#x27;", "'")
    escaped = _MD_SPECIAL.sub(r"\\\1", escaped)
    escaped = escaped.replace("\0GT\0", "&gt;").replace("\0LT\0", "&lt;").replace("\0AMP\0", "&amp;")
    # Keep paragraphs, but no line may start a block construct (indentation would make a code block).
    lines = [ln.strip() for ln in escaped.splitlines()]
    return "  \n".join(lines)


def to_markdown(view: dict[str, Any]) -> str:
    """A readable Markdown document of a discussion view (DiscussionView.model_dump())."""
    out = [f"# Discussion: {md_escape(view['topic'])}", ""]
    out.append(f"- Status: {md_escape(str(view['status']))}")
    out.append(f"- Rounds: {view['currentRound']} of {view['maxRounds']}")
    out.append(f"- Participants: {', '.join(md_escape(p['name']) for p in view.get('personas', []))}")
    if view.get("createdAt"):
        out.append(f"- Created: {md_escape(str(view['createdAt']))}")
    out.append("")
    summaries = {s["roundNumber"]: s for s in view.get("summaries", [])}
    questions = {q["roundNumber"]: q for q in view.get("questions", [])}
    by_round: dict[int, list[dict[str, Any]]] = {}
    for m in view.get("messages", []):
        by_round.setdefault(m["round"], []).append(m)
    for rnd in sorted(set(by_round) | set(summaries) | set(questions)):
        out.append(f"## Round {rnd}")
        out.append("")
        for m in sorted(by_round.get(rnd, []), key=lambda m: m["turn"] if m["persona"] != "User" else -1):
            out.append(f"### {md_escape(m['persona'])} (turn {m['turn']})")
            out.append("")
            out.append(md_escape(m["content"]))
            out.append("")
        if rnd in questions:
            qs = questions[rnd]
            out.append("### Questions for the user")
            out.append("")
            answers = qs.get("answers") or {}
            for q in qs["questions"]:
                out.append(f"- {md_escape(q['text'])}")
                for o in q["options"]:
                    mark = "x" if o["id"] in answers.get(q["id"], []) else " "
                    out.append(f"  - [{mark}] {md_escape(o['text'])}")
            out.append("")
        if rnd in summaries:
            out.append(f"### Summary after round {rnd}")
            out.append("")
            out.append(md_escape(summaries[rnd]["content"]))
            out.append("")
    res = view.get("resolution")
    if res:
        out.append("## Resolution")
        out.append("")
        if res.get("solution"):
            out.append(f"**Solution:** {md_escape(res['solution'])}")
            out.append("")
        if res.get("finalAnswer"):
            out.append(md_escape(res["finalAnswer"]))
            out.append("")
    return "\n".join(out).rstrip() + "\n"
