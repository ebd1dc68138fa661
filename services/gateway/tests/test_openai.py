"""The OpenAI-compatible API through the official `openai` package, against the real llm-router (simulated
provider): the model reported, unknown models, the models list, unsupported fields, unknown endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, assert_envelope, gateway_settings, platform_services

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=("llm-router",)):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
        async with running_gateway(settings) as gw:
            yield gw


@pytest_asyncio.fixture
async def client(stack: GatewayServer) -> AsyncIterator[Any]:
    from openai import AsyncOpenAI

    c = AsyncOpenAI(api_key=ADMIN_KEY, base_url=stack.url + "/v1", max_retries=0, timeout=30)
    yield c
    await c.close()


async def test_streamed_and_plain_replies_report_the_model_that_answered(client: Any) -> None:
    done = await client.chat.completions.create(model="analyzer", messages=HELLO, max_tokens=20)
    assert done.model == "simulated/analyzer"  # the route's model, not the route name
    stream = await client.chat.completions.create(model="analyzer", messages=HELLO, max_tokens=20, stream=True)
    models = {chunk.model async for chunk in stream}
    assert models == {done.model}


async def test_unknown_model_is_404_model_not_found_in_openai_shape(client: Any, stack: GatewayServer) -> None:
    from openai import NotFoundError

    for stream in (False, True):
        with pytest.raises(NotFoundError) as err:
            await client.chat.completions.create(model="gpt-nonexistent", messages=HELLO, stream=stream)
        assert err.value.code == "model_not_found" and err.value.param == "model"
        assert err.value.body["type"] == "invalid_request_error" and "gpt-nonexistent" in err.value.body["message"]
    # a route name, a listed model and `provider/model` are served
    listed = await client.models.list()
    ids = {m.id for m in listed.data}
    assert {"default", "analyzer", "solver", "moderator"} <= ids, ids
    assert {m.id for m in listed.data if getattr(m, "kind", None) == "route"} >= {"default", "analyzer"}
    for model in ("default", "Moderator", "simulated/solver", listed.data[0].id):
        done = await client.chat.completions.create(model=model, messages=HELLO, max_tokens=5)
        assert done.choices[0].message.content


async def test_unsupported_fields_are_400_naming_the_field(client: Any) -> None:
    from openai import BadRequestError

    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("tools", {"tools": [tool]}),
        ("tool_choice", {"tool_choice": "required"}),
        ("response_format", {"response_format": {"type": "json_object"}}),
    ]
    for field, extra in cases:
        with pytest.raises(BadRequestError) as err:
            await client.chat.completions.create(model="default", messages=HELLO, **extra)
        assert err.value.code == "unsupported_parameter" and err.value.param == field, err.value.body
        assert field in err.value.body["message"]
    # values that ask for nothing are accepted
    done = await client.chat.completions.create(
        model="default", messages=HELLO, max_tokens=5, tool_choice="none", response_format={"type": "text"}
    )
    assert done.choices[0].message.content


async def test_endpoints_not_served_are_404_and_wrong_methods_405(client: Any, stack: GatewayServer) -> None:
    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        await client.embeddings.create(model="default", input="x")
    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        assert_envelope(await http.post("/v1/embeddings", json={"input": "x"}), 404, "NOT_FOUND")
        r = await http.put("/v1/models")
        assert_envelope(r, 405, "METHOD_NOT_ALLOWED")
        assert r.headers["allow"] == "GET"
