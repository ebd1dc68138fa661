"""The OpenAPI document describes what the server answers (checked without services; schemathesis checks
the running server against it)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from adp_gateway.api import build_api
from adp_testing.gateway import offline_context


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_api(offline_context()).openapi()


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{m.upper()} {p}": op for p, item in doc["paths"].items() for m, op in item.items()}


def test_every_reference_resolves_and_the_envelope_is_defined(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorEnvelope"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', str(doc).replace("'", '"')))
    assert refs <= set(schemas), refs - set(schemas)


def test_error_statuses_documented_per_route(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    for name, op in ops.items():
        assert "422" not in op["responses"], name  # validation errors are 400 VALIDATION_ERROR
        assert {"400", "401", "429", "503"} <= set(op["responses"]), name
    expect = {
        "POST /api/discussions": {"404", "409", "413"},
        "GET /api/discussions/{discussion_id}": {"404"},
        "POST /api/discussions/{discussion_id}/proceed": {"404", "409"},
        "POST /api/files": {"413", "415"},
        "POST /v1/chat/completions": {"402", "404", "502", "504"},
        "GET /api/costs": {"403"},
        "POST /api/alerts/{alert_id}/ack": {"403", "404"},
        "POST /api/admin/users": {"403"},
        "DELETE /api/admin/keys/{key_id}": {"403", "404"},
        "PUT /api/admin/budget": {"403"},
    }
    for name, statuses in expect.items():
        assert statuses <= set(ops[name]["responses"]), (name, sorted(ops[name]["responses"]))
        envelope = ops[name]["responses"][sorted(statuses)[0]]["content"]["application/json"]["schema"]
        assert envelope == {"$ref": "#/components/schemas/ErrorEnvelope"}


def test_ids_in_paths_have_patterns(doc: dict[str, Any]) -> None:
    for name, op in operations(doc).items():
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param["schema"].get("pattern"), (name, param["name"])
    param = operations(doc)["GET /api/discussions/{discussion_id}"]["parameters"][0]
    assert re.match(param["schema"]["pattern"], "3f2b8c1e9d7a4b6c8e0f1a2b3c4d5e6f")
    assert not re.match(param["schema"]["pattern"], "not-a-uuid")


def test_no_dependency_runs_in_the_thread_pool() -> None:
    """FastAPI runs a plain-function dependency in its thread pool: a thread hand-off on every request that
    uses it. Every dependency of every route is a coroutine function (or an object whose call is one)."""
    import inspect

    from fastapi.routing import APIRoute

    def sync_calls(dependant: Any) -> list[str]:
        found = []
        for dep in dependant.dependencies:
            call = dep.call
            target = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__
            if not inspect.iscoroutinefunction(target):
                found.append(getattr(call, "__name__", type(call).__name__))
            found += sync_calls(dep)
        return found

    def api_routes(routes: list[Any]) -> list[APIRoute]:
        out: list[APIRoute] = []
        for r in routes:
            if isinstance(r, APIRoute):
                out.append(r)
            elif hasattr(r, "original_router"):  # a router included in the app
                out += api_routes(r.original_router.routes)
        return out

    routes = api_routes(build_api(offline_context()).routes)
    assert any(r.path == "/v1/chat/completions" for r in routes)
    blocking = {f"{sorted(r.methods)[0]} {r.path}": calls for r in routes if (calls := sync_calls(r.dependant))}
    assert blocking == {}
