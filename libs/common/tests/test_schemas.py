from __future__ import annotations

import pytest
from pydantic import ValidationError

from adp_common.schemas.dialogue import DialogueCommand, FileRef


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
    with pytest.raises(ValidationError, match="NUL"):
        DialogueCommand(action="create", user_id="u", **kw)


def test_nul_characters_are_dropped_from_extracted_file_text() -> None:
    f = FileRef(name="a\x00.pdf", content_type="application/pdf", size=3, text="x\x00y")
    cmd = DialogueCommand(action="create", user_id="u", topic="a valid topic here", files=[f])
    assert cmd.files[0].text == "xy" and cmd.files[0].name == "a.pdf"
