"""Personas and turn numbering."""

from __future__ import annotations

from adp_common.schemas.dialogue import MAX_PERSONAS, PersonaSpec

USER_PERSONA = "User"

ANALYZER_PROMPT = (
    "You are the Analyzer. You examine the assumptions behind the topic and behind what the others propose, "
    "look for edge cases, risks and missing information, and challenge ideas constructively: say what would "
    "break and how it could be made sturdier."
)
SOLVER_PROMPT = (
    "You are the Solver. You break the problem down into manageable parts and propose concrete, implementable "
    "solutions with clear steps, building on the Analyzer's points and answering the concerns raised."
)
MODERATOR_PROMPT = (
    "You are the Moderator and a full participant. You synthesise what the others said, check that the "
    "discussion stays on the user's topic, point out agreement and open questions, and steer toward actionable "
    "conclusions. When the group has genuinely converged, say so and state the agreed solution on a line "
    "starting with 'Solution:'."
)


def default_personas() -> list[PersonaSpec]:
    return [
        PersonaSpec(name="Analyzer", role_prompt=ANALYZER_PROMPT, route="analyzer"),
        PersonaSpec(name="Solver", role_prompt=SOLVER_PROMPT, route="solver"),
        PersonaSpec(name="Moderator", role_prompt=MODERATOR_PROMPT, route="moderator"),
    ]


def normalise_personas(personas: list[PersonaSpec] | None) -> list[PersonaSpec]:
    """The discussion's cast: the default three when none given; names must be unique and not 'User'.
    A default persona named without a prompt keeps its own prompt and route (the Moderator's prompt holds
    the `Solution:` instruction resolution depends on); a route left at 'default' becomes the name."""
    if not personas:
        return default_personas()
    names = [p.name.strip() for p in personas]
    if len(set(n.lower() for n in names)) != len(names):
        raise ValueError("persona names must be unique")
    if any(n.lower() == USER_PERSONA.lower() for n in names):
        raise ValueError("'User' is reserved for the user's own messages")
    if len(personas) > MAX_PERSONAS:
        raise ValueError(f"at most {MAX_PERSONAS} personas")
    defaults = {d.name.lower(): d for d in default_personas()}
    out = []
    for p, name in zip(personas, names, strict=True):
        known = defaults.get(name.lower())
        route = p.route if p.route and p.route != "default" else (known.route if known else name.lower())
        prompt = p.role_prompt or (known.role_prompt if known else "")
        out.append(PersonaSpec(name=name, role_prompt=prompt, route=route))
    return out


def turn_number(round_number: int, position: int, persona_count: int, user_turns: int = 0) -> int:
    """Turn of the persona at 1-based `position` in `round_number`: (round - 1) * personas + position, plus
    `user_turns`, the User messages in rounds up to this one (each takes a turn of its own before its round's
    first persona, so no two messages share a turn number)."""
    if round_number < 1 or persona_count < 1 or not 1 <= position <= persona_count or user_turns < 0:
        raise ValueError("round >= 1, 1 <= position <= persona_count and user_turns >= 0 required")
    return (round_number - 1) * persona_count + position + user_turns


def position_of_turn(turn: int, persona_count: int) -> tuple[int, int]:
    """Inverse of turn_number without User messages: (round, position)."""
    if turn < 1:
        raise ValueError("turn >= 1 required")
    return (turn - 1) // persona_count + 1, (turn - 1) % persona_count + 1


def user_turn_number(round_number: int, persona_count: int, earlier_user_turns: int) -> int:
    """A User message joins before the first persona of `round_number` (position 0), in a turn of its own
    after every earlier message (`earlier_user_turns`: the User messages of earlier rounds)."""
    return (round_number - 1) * persona_count + earlier_user_turns + 1


def user_turns_up_to(round_number: int, user_rounds: list[int]) -> int:
    """How many User messages (one at most per round, listed by round) come before or in `round_number`."""
    return sum(1 for r in user_rounds if r <= round_number)


def turn_step_key(round_number: int, position: int) -> str:
    return f"r{round_number}t{position}"
