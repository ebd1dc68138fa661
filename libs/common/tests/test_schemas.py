from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from adp_common.schemas.dialogue import CreateCommand, DialogueCommand, FileRef, ProceedCommand


@pytest.mark.parametrize(
    "kw",
    [
        {"topic": "a topic with a \x00 inside"},
        {"input": "hi\x00"},
        {"answers": {"q1": ["o\x001"]}},
        {"personas": [{"name": "Ana\x00", "role_prompt": "x"}]},
    ],
)
def test_nul_characters_in_typed_text_are_refused(kw: dict) -> None:
    action = "input" if "input" in kw else "answers" if "answers" in kw else "create"
    body = {"action": action, "user_id": "u", "discussion_id": "d", "topic": "a fine topic", **kw}
    with pytest.raises(ValidationError, match="NUL"):
        DialogueCommand.model_validate(body)


def test_nul_characters_are_dropped_from_extracted_file_text() -> None:
    f = FileRef(name="a\x00.pdf", content_type="application/pdf", size=3, text="x\x00y")
    cmd = CreateCommand(user_id="u", topic="a valid topic here", files=[f])
    assert cmd.files[0].text == "xy" and cmd.files[0].name == "a.pdf"


def test_each_action_is_its_own_model() -> None:
    """One model per action: what an action does not take is refused or ignored, never carried along."""
    proceed = DialogueCommand.model_validate({"action": "proceed", "user_id": "u", "discussion_id": "d"}).root
    assert isinstance(proceed, ProceedCommand) and set(ProceedCommand.model_fields) == {
        "user_id",
        "discussion_id",
        "action",
    }
    with pytest.raises(ValidationError):
        DialogueCommand.model_validate({"action": "answers", "user_id": "u", "discussion_id": "d"})  # no answers
    with pytest.raises(ValidationError):
        DialogueCommand.model_validate({"action": "fly", "user_id": "u"})


def test_hidden_name_characters_are_exactly_the_unicode_categories() -> None:
    """The written-out ranges stay true to unicodedata (Cc, Cf, Co, Cs, Zl, Zp), and the documented pattern
    and the validator refuse exactly them."""
    import unicodedata

    from adp_common.schemas.dialogue import HIDDEN_NAME_CHAR_RANGES, PRINTABLE_NAME, printable_name

    hidden = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp"}
    expected = {cp for cp in range(0x110000) if unicodedata.category(chr(cp)) in hidden}
    listed = {cp for a, b in HIDDEN_NAME_CHAR_RANGES for cp in range(a, b + 1)}
    assert listed == expected
    pattern = re.compile(PRINTABLE_NAME)
    for ch in ("\u202e", "\u200b", "\x00", "\x1b", "\U000e0041", "\ue000", "\u2028"):
        assert not pattern.match(f"Ana{ch}lyzer")
        with pytest.raises(ValueError):
            printable_name(f"Ana{ch}lyzer")
    for ok in ("Analyzer", "Réviseur", "分析者", "Solver 2", "🙂 Moderator"):
        assert pattern.match(ok) and printable_name(ok) == ok
