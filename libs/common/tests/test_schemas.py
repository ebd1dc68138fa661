from __future__ import annotations

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
