"""docs/gateway.md documents every discussion event and field exactly as the payload models define them."""

from __future__ import annotations

import re
from pathlib import Path

from adp_common import contract_doc
from adp_common.schemas.events import PAYLOADS

DOC = Path(__file__).resolve().parents[3] / "docs" / "gateway.md"


def documented_events(text: str) -> dict[str, set[str]]:
    """{event name: documented field names} from the document's event table."""
    rows = re.findall(r"^\| `([a-z-]+)` \| (.*) \|$", text, flags=re.MULTILINE)
    return {name: {f.split(":")[0].rstrip("?").strip() for f in fields.split(", ")} for name, fields in rows}


def test_gateway_doc_events_match_the_payload_models() -> None:
    section = contract_doc.section_of(DOC.read_text())
    assert section is not None, "docs/gateway.md lost its generated discussion-events section"
    documented = documented_events(section)
    assert set(documented) == set(PAYLOADS), "events documented differently from adp_common.schemas.events"
    for name, model in PAYLOADS.items():
        assert documented[name] == set(model.model_fields), f"{name}: documented fields differ from the model"
    assert section == contract_doc.render(), (
        "docs/gateway.md's discussion events are stale: run `python -m adp_common.contract_doc --write docs/gateway.md`"
    )


def test_a_drifted_document_is_caught() -> None:
    good = contract_doc.render()
    for drifted in (
        good.replace("| `message-chunk` |", "| `message-chunks` |"),
        good.replace("chunk: str, ", ""),
    ):
        documented = documented_events(drifted)
        assert set(documented) != set(PAYLOADS) or any(
            documented[n] != set(m.model_fields) for n, m in PAYLOADS.items()
        )
