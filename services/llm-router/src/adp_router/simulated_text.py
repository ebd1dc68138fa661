"""Text of the built-in `simulated` provider (pure and deterministic for a given input).

It answers in kind using the request's task / persona / round so the whole platform can run offline:
persona turns that read like an analyzer, a solver or a moderator; from round 5 on everybody agrees and
the moderator declares consensus with an explicit `Solution:` line; JSON questions; summaries; a final
answer; a continuation of cut-off text.
"""

from __future__ import annotations

import hashlib
import json
import random
import re

from adp_common.schemas.llm import CompletionRequest

CONSENSUS_ROUND = 5
_QUESTION_WORDS = {"how", "what", "why", "should", "can", "which", "when", "where", "who", "is", "are", "do", "does"}
_TOPIC_LINE = re.compile(r"^\s*(?:topic|question|problem)\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def seed_of(req: CompletionRequest) -> int:
    key = json.dumps(
        [req.route, req.persona, req.task, req.round, [(m.role, m.content) for m in req.messages]],
        separators=(",", ":"),
    )
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def extract_topic(req: CompletionRequest) -> str:
    for m in req.messages:
        found = _TOPIC_LINE.search(m.content)
        if found:
            return _shorten(found.group(1))
    users = [m.content for m in req.messages if m.role == "user"] or [req.messages[-1].content]
    return _shorten(users[0])


def _shorten(text: str, words: int = 12) -> str:
    first = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]
    parts = first.split()
    if parts and parts[0].lower() in _QUESTION_WORDS:
        parts[0] = parts[0].lower()
    short = " ".join(parts[:words]) if parts else "the problem at hand"
    return short.rstrip(".,;:!?") or "the problem at hand"


def word_count(text: str) -> int:
    return len(text.split())


def _fit(rng: random.Random, core: list[str], fillers: list[str], lo: int = 60, hi: int = 150) -> str:
    text = " ".join(core)
    pool = list(fillers)
    rng.shuffle(pool)
    while word_count(text) < lo and pool:
        text = f"{text} {pool.pop()}"
    while word_count(text) > hi and len(core) > 1:
        core = core[:-1]
        text = " ".join(core)
    return text


def solution_for(topic: str) -> str:
    return (
        f"Adopt Solver's phased plan for {topic}: agree on clear success criteria, run a small pilot first, "
        "measure the results, and expand only once the risks Analyzer identified are under control."
    )


def _analyzer(rng: random.Random, topic: str, rnd: int) -> str:
    if rnd >= CONSENSUS_ROUND:
        core = [
            f"I agree with Solver's plan for {topic}.",
            "The assumptions I questioned earlier are now stated explicitly, and the pilot gives us an early "
            "signal if one of them turns out to be wrong.",
            "The remaining risks are small and each has an owner and a check.",
            "I agree with Moderator's synthesis, so from my side we have reached consensus.",
        ]
    else:
        opener = rng.choice(
            [
                f"Before we settle on anything for {topic}, I want to examine the assumptions we are making.",
                f"Let me question what we are taking for granted about {topic}.",
                f"I see several hidden assumptions in how we are framing {topic}.",
            ]
        )
        core = [
            opener,
            rng.choice(
                [
                    "We assume the constraints are fixed, but if budget or time change, the plan must absorb that.",
                    "We assume everyone affected wants the same outcome, and that may not hold.",
                    "We assume the current data is reliable, yet nobody has checked how it was collected.",
                ]
            ),
            rng.choice(
                [
                    "An edge case worth naming is what happens when the inputs are incomplete or contradictory.",
                    "One edge case is a sudden spike in demand that the first version was never designed for.",
                    "An edge case we should not ignore is a partial failure that leaves things half done.",
                ]
            ),
            "The main risk I see is committing too early to one approach without a way to measure whether it works.",
            "Solver, could your steps include a check that catches such a failure early?",
            "Moderator, I suggest we agree on the success criteria before we go further.",
        ]
    fillers = [
        "I would also like us to write down what we will not do, so the scope stays honest.",
        "A cheap experiment now is better than an expensive correction later.",
        "We should also ask who bears the cost if the plan goes wrong.",
    ]
    return _fit(rng, core, fillers)


def _solver(rng: random.Random, topic: str, rnd: int) -> str:
    if rnd >= CONSENSUS_ROUND:
        core = [
            f"I agree with Analyzer's refinements and with Moderator's summary, so I think we have reached consensus "
            f"on {topic}.",
            "To restate the agreed plan: 1. Define the success criteria and the limits we will respect. "
            "2. Run a small pilot with a clear owner. 3. Measure the results against the criteria. "
            "4. Expand step by step while the checks stay green.",
            "Each step has a checkpoint, so the risks Analyzer raised are covered.",
        ]
    else:
        core = [
            f"Building on Analyzer's points, here is a concrete plan for {topic}.",
            rng.choice(
                [
                    "1. Write down the goal and two or three measurable success criteria.",
                    "1. Clarify the goal and agree on how we will measure success.",
                ]
            ),
            rng.choice(
                [
                    "2. Break the work into small pieces that can each be finished in a week.",
                    "2. Split the problem into independent parts and order them by value and risk.",
                ]
            ),
            "3. Start with a small pilot on the riskiest part, so we learn early.",
            "4. Review the results, adjust the plan, and only then scale it up.",
            "This keeps the risk Analyzer raised under control, and Moderator can check our progress after step 3.",
        ]
    fillers = [
        "If a step fails its check, we roll it back and try the next option instead of pushing on.",
        "I can draft the first two steps in detail for the next round.",
        "None of these steps needs special tools, so we can begin right away.",
    ]
    return _fit(rng, core, fillers)


def _moderator(rng: random.Random, topic: str, rnd: int) -> str:
    if rnd >= CONSENSUS_ROUND:
        core = [
            f"We have reached consensus on {topic}.",
            "Analyzer agrees that the risks are covered, and Solver agrees with the refined, phased plan, "
            "so I agree as well and consider the discussion resolved.",
            "We all agree on the approach, the order of the steps and how success will be measured.",
            "The next step is to put the plan into practice and review it after the pilot.",
        ]
        return f"{' '.join(core)} Solution: {solution_for(topic)}"
    core = [
        f"Let me synthesise where we are on {topic}.",
        "Analyzer has highlighted untested assumptions, edge cases and the risk of committing too early.",
        "Solver has proposed concrete numbered steps that start small and build on evidence.",
        rng.choice(
            [
                "These views fit together well: the plan gives us a way to test the assumptions.",
                "The two perspectives are complementary, because each step can answer one of the open risks.",
            ]
        ),
        "The open question is how we define success, so let us stay focused on that.",
        "For the next round, I would like Analyzer to name the one risk that matters most, and Solver to attach "
        "a check to each step.",
    ]
    fillers = [
        "We are making good progress and the discussion is converging.",
        "Let us keep each contribution short and concrete.",
    ]
    return _fit(rng, core, fillers)


def _generic_turn(rng: random.Random, topic: str, rnd: int, persona: str) -> str:
    core = [
        f"As {persona}, I want to add a perspective on {topic}.",
        "Analyzer's concerns about assumptions and risks are well founded, and Solver's steps give us a practical "
        "way forward.",
        "I would add that we should involve the people affected early and keep the first version small.",
        "Moderator, I think we can combine these ideas into one plan.",
    ]
    if rnd >= CONSENSUS_ROUND:
        core.append("I agree with the plan, and I believe we have reached consensus.")
    fillers = ["A short feedback loop will tell us quickly whether we are on the right track."]
    return _fit(rng, core, fillers)


def questions_json(rng: random.Random, topic: str) -> str:
    qs = [
        {
            "text": f"What matters most to you about {topic}?",
            "options": ["Speed of delivery", "Low cost", "Long-term quality", "Low risk"],
        },
        {
            "text": "What budget or resources are available?",
            "options": ["Very limited", "Moderate", "Generous"],
        },
        {
            "text": "How soon do you need a first result?",
            "options": ["Within a week", "Within a month", "No fixed deadline"],
        },
        {
            "text": "Who will be most affected by the decision?",
            "options": ["Only me", "My team", "Customers or the public"],
        },
    ]
    rng.shuffle(qs)
    return json.dumps({"questions": qs[:3]})


def summary_text(topic: str, rnd: int) -> str:
    state = (
        "They have reached consensus on a phased plan."
        if rnd >= CONSENSUS_ROUND
        else "Agreement is forming, but the success criteria are still open."
    )
    return (
        f"Summary: the discussion on {topic} has so far covered the key assumptions and risks raised by Analyzer, "
        f"the concrete step-by-step plan proposed by Solver, and Moderator's synthesis of both. {state} "
        "The next step is to confirm how success will be measured and to start with a small pilot."
    )


def final_text(topic: str) -> str:
    text = (
        f"Final answer on {topic}: the participants agree on a phased, evidence-driven approach. "
        "First, define the goal and a few measurable success criteria, together with the limits that must be "
        "respected, such as budget and time. Second, split the work into small parts and order them by value and "
        "risk. Third, run a small pilot on the riskiest part, with a clear owner and a check that catches failure "
        "early. Fourth, review the results honestly, adjust the plan and only then expand it step by step. "
        "Analyzer's main concerns, untested assumptions, edge cases and committing too early, are addressed by the "
        "pilot and the checkpoints. Solver's plan provides the concrete steps, and Moderator's synthesis keeps the "
        "effort focused on the agreed criteria."
    )
    return text[:1000]


def continue_text(rng: random.Random) -> str:
    return rng.choice(
        [
            " and that completes the point: the plan stays practical, measurable and focused on the agreed goal.",
            " which is why we should move forward step by step and check the results as we go.",
        ]
    )


def generic_answer(topic: str) -> str:
    return (
        f"Here is a short answer about {topic}. Start by stating the goal clearly, list the constraints, and "
        "compare two or three options against them. Choose the simplest option that meets the goal, try it on a "
        "small scale, and adjust based on what you learn."
    )


def resolution_text(topic: str, rnd: int) -> str:
    if rnd >= CONSENSUS_ROUND:
        return (
            f"Yes, the discussion is resolved: the participants have reached consensus. Solution: {solution_for(topic)}"
        )
    return "Not yet: the participants are still refining the plan and have not reached consensus."


def generate(req: CompletionRequest) -> str:
    """The complete simulated answer for a request."""
    rng = random.Random(seed_of(req))
    topic = extract_topic(req)
    rnd = req.round if req.round is not None else 1
    task = (req.task or "").lower()
    persona = (req.persona or "").strip()
    if task == "turn":
        who = persona.lower() or req.route.lower().removeprefix("simulated/")
        if who == "analyzer":
            return _analyzer(rng, topic, rnd)
        if who == "solver":
            return _solver(rng, topic, rnd)
        if who == "moderator":
            return _moderator(rng, topic, rnd)
        return _generic_turn(rng, topic, rnd, persona or "a participant")
    if task == "questions":
        return questions_json(rng, topic)
    if task == "summary":
        return summary_text(topic, rnd)
    if task == "final":
        return final_text(topic)
    if task == "continue":
        return continue_text(rng)
    if task == "resolution":
        return resolution_text(topic, rnd)
    return generic_answer(topic)


_TOKEN = re.compile(r"\S+\s*|\s+")


def tokens_of(text: str) -> list[str]:
    """Word-level pieces (each with its trailing whitespace) that concatenate back to `text`."""
    return _TOKEN.findall(text)


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0
