"""Personas and turn numbering."""

from __future__ import annotations

from adp_common.schemas.dialogue import PersonaSpec

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
    """The discussion's cast: the default three when none given; names must be unique and not 'User'."""
    if not personas:
        return default_personas()
    names = [p.name.strip() for p in personas]
    if len(set(n.lower() for n in names)) != len(names):
        raise ValueError("persona names must be unique")
    if any(n.lower() == USER_PERSONA.lower() for n in names):
        raise ValueError("'User' is reserved for the user's own messages")
    if len(personas) > 8:
        raise ValueError("at most 8 personas")
    out = []
    for p, name in zip(personas, names, strict=True):
        route = p.route if p.route and p.route != "default" else name.lower()
        out.append(PersonaSpec(name=name, role_prompt=p.role_prompt, route=route))
    return out


def turn_number(round_number: int, position: int, persona_count: int) -> int:
    """Turn of the persona at 1-based `position` in `round_number`: (round - 1) * personas + position."""
    if round_number < 1 or persona_count < 1 or not 1 <= position <= persona_count:
        raise ValueError("round >= 1 and 1 <= position <= persona_count required")
    return (round_number - 1) * persona_count + position


def position_of_turn(turn: int, persona_count: int) -> tuple[int, int]:
    """Inverse of turn_number: (round, position)."""
    if turn < 1:
        raise ValueError("turn >= 1 required")
    return (turn - 1) // persona_count + 1, (turn - 1) % persona_count + 1


def user_turn_number(round_number: int, persona_count: int) -> int:
    """A User message joins before the first persona of `round_number` (position 0)."""
    return (round_number - 1) * persona_count


def turn_step_key(round_number: int, position: int) -> str:
    return f"r{round_number}t{position}"
