"""Fault rehearsal (admin): inject faults into simulated providers. Entries live in the KV bucket `faults`,
which every router copy watches; `adp faults` writes the same entries."""

from __future__ import annotations

import contextlib
import re
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from nats.js.errors import KeyNotFoundError, NoKeysError

from adp_common.catalog import KV_FAULTS
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.faults import ProviderFault, ProviderFaultEntry, ProviderFaultList
from adp_gateway.context import GatewayContext
from adp_gateway.deps import Admin, Ctx
from adp_gateway.errors import error_responses

router = APIRouter(tags=["admin"], responses=error_responses(403))
# A KV key: NATS splits keys into tokens at dots, so a name with dots (or ending in one) is refused.
PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ProviderName = Annotated[str, Path(json_schema_extra={"pattern": PROVIDER_NAME.pattern})]


def _checked(provider: str) -> str:
    if not PROVIDER_NAME.match(provider):
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "invalid provider name")
    return provider


async def _list(ctx: GatewayContext) -> ProviderFaultList:
    kv = await ctx.bus.kv(KV_FAULTS)
    try:
        keys = sorted(await kv.keys())
    except NoKeysError:
        keys = []
    entries = []
    for key in keys:
        with contextlib.suppress(KeyNotFoundError, ValueError):
            entry = await kv.get(key)
            if entry.value:
                entries.append(ProviderFaultEntry(provider=key, fault=ProviderFault.model_validate_json(entry.value)))
    return ProviderFaultList(faults=entries)


@router.get("/api/admin/faults", response_model=ProviderFaultList, summary="Faults injected into simulated providers")
async def list_faults(ctx: Ctx, p: Admin) -> JSONResponse:
    return JSONResponse((await _list(ctx)).model_dump(mode="json"))


@router.put("/api/admin/faults/{provider}", response_model=ProviderFaultEntry, summary="Inject a fault")
async def set_fault(provider: ProviderName, body: ProviderFault, ctx: Ctx, p: Admin) -> JSONResponse:
    kv = await ctx.bus.kv(KV_FAULTS)
    await kv.put(_checked(provider), body.model_dump_json().encode())
    return JSONResponse(ProviderFaultEntry(provider=provider, fault=body).model_dump(mode="json"))


@router.delete("/api/admin/faults/{provider}", response_model=ProviderFaultList, summary="Clear a provider's fault")
async def clear_fault(provider: ProviderName, ctx: Ctx, p: Admin) -> JSONResponse:
    kv = await ctx.bus.kv(KV_FAULTS)
    with contextlib.suppress(KeyNotFoundError):
        await kv.delete(_checked(provider))
    return JSONResponse((await _list(ctx)).model_dump(mode="json"))
