"""The committed AsyncAPI document is exactly what the code's schemas generate, and is self-consistent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adp_common.asyncapi import generate, render
from adp_common.envelope import EVENT_TYPES

DOC = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.json"


def test_committed_document_matches_code() -> None:
    assert DOC.read_text() == render(), (
        "docs/asyncapi.json is stale: run `python -m adp_common.asyncapi > docs/asyncapi.json`"
    )


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for v in node.values():
            out += _refs(v)
        return out
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_ref_resolves_and_every_event_type_is_documented() -> None:
    doc = generate()
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    schemas = doc["components"]["schemas"]
    for model in EVENT_TYPES.values():
        assert model.__name__ in schemas, f"{model.__name__} is exchanged but not documented"
    json.dumps(doc)


def test_the_document_names_every_kv_bucket() -> None:
    from adp_common import catalog

    named = {v for k, v in vars(catalog).items() if k.startswith("KV_") and isinstance(v, str)}
    assert named == set(catalog.KV_BUCKETS)
    description = generate()["info"]["description"]
    assert all(f"adp_{bucket}" in description for bucket in named)
