"""Property-based run of schemathesis against the live gateway's /openapi.json, with every built-in check
(real services behind it: llm-router with the simulated provider, cost, alerts, dialogue)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, gateway_settings, platform_services

pytestmark = pytest.mark.slow

EXAMPLES = 6
SKIP_SUFFIXES = ("/events",)  # an endless stream, covered by the SSE tests


@pytest_asyncio.fixture
async def stack(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str
) -> AsyncIterator[GatewayServer]:
    services = ("llm-router", "cost", "alerts", "dialogue")
    async with platform_services(nats_url, pg_dsn, prefix, databases, services=services):
        settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
        async with running_gateway(settings) as gw:
            yield gw


def run_schemathesis(schema_dict: dict[str, Any], base_url: str) -> list[str]:
    import schemathesis

    schema = schemathesis.openapi.from_dict(schema_dict)
    failures: list[str] = []
    for result in schema.get_all_operations():
        _run_operation(result.ok(), base_url, failures)
    return failures


def _run_operation(op: Any, base_url: str, failures: list[str]) -> None:
    """Every built-in check of schemathesis (status codes, content types, headers and bodies against the
    document, negative data rejected, positive data accepted, 405 + Allow on other methods, auth enforced...)
    on positive and negative cases; a failing case is recorded and the next one runs."""
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    if op.path.endswith(SKIP_SUFFIXES):
        return
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            _run_cases(op, mode, base_url, failures)
        except Unsatisfiable:
            continue  # e.g. no negative inputs exist for an operation without parameters


def _run_cases(op: Any, mode: Any, base_url: str, failures: list[str]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.core.parameters import ParameterLocation
    from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

    # What a schema cannot describe. An upload is accepted by its bytes (PDF, text, image magic): generated
    # files are rejected as 413/415 although "schema-valid", and multipart has no non-string file to reject.
    # A cost date range is checked as a whole (start <= end, at most ten years). Persona names given as plain
    # strings (an anyOf of an object and a patterned string) are sometimes drawn without their pattern, so a
    # name with a control character the server refuses comes as "valid"; the pattern and the validator are one
    # definition, checked against unicodedata in libs/common/tests/test_schemas.py.
    uncheckable = {
        "POST /api/discussions": [positive_data_acceptance],
        "POST /api/files": [positive_data_acceptance, negative_data_rejection],
        "GET /api/costs": [positive_data_acceptance],
    }

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        # The key as the caller's explicit credentials (the auth checks also probe without it), unless the
        # case is about a missing or malformed Authorization header.
        negative_header = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
        auth = {} if negative_header else {"Authorization": f"Bearer {ADMIN_KEY}"}
        response = case.call(base_url=base_url, headers=auth, timeout=15)
        try:
            case.validate_response(
                response,
                headers=auth,
                transport_kwargs={"base_url": base_url, "timeout": 15},
                excluded_checks=uncheckable.get(op.label, []),
            )
        except (AssertionError, BaseExceptionGroup) as err:  # failed checks: record them with the exchange
            found = err.exceptions if isinstance(err, BaseExceptionGroup) else (err,)
            answer = f"{response.status_code} {response.text[:600]}"
            for failure in found:
                title = getattr(failure, "title", type(failure).__name__)
                detail = " ".join(str(getattr(failure, "message", failure)).split())[:200]
                failures.append(
                    f"{op.label} ({mode.name.lower()}) {title}: {detail} [{case.formatted_path} -> {answer}]"
                )

    check()


@pytest.mark.timeout(240)  # bounded: about a minute and a half on a busy two-core machine
async def test_schemathesis_all_checks_pass(stack: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as c:
        schema = (await c.get("/openapi.json")).json()
    failures = await asyncio.to_thread(run_schemathesis, schema, stack.url)
    kinds = {f.split(":", 1)[0]: f for f in failures}  # one example of each operation and failed check
    assert not failures, f"{len(failures)} failures, {len(kinds)} kinds:\n" + "\n".join(sorted(kinds.values()))
