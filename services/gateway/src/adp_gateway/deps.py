"""The request dependencies every router shares: the gateway context, the caller's principal (API key),
per-action rate limits and the admin role."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adp_common.errors import ErrorCode, PlatformError
from adp_gateway.auth import Principal
from adp_gateway.context import GatewayContext

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
# A discussion id is a UUID (dialogue's ids), as 32 hex digits or in the dashed form.
DISCUSSION_ID_PATTERN = re.compile(
    r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)

# Ids in paths: the pattern is documented; a path that does not match is answered by the route itself
# (INVALID_DISCUSSION_ID, NOT_FOUND...), not by request validation.
ResourceId = Annotated[str, Path(json_schema_extra={"pattern": ID_PATTERN.pattern})]
DiscussionId = Annotated[str, Path(json_schema_extra={"pattern": DISCUSSION_ID_PATTERN.pattern})]

bearer = HTTPBearer(auto_error=False, description="API key")


async def gateway_context(request: Request) -> GatewayContext:
    """Async: FastAPI runs a plain function dependency in its thread pool, a thread hand-off per request."""
    ctx: GatewayContext = request.app.state.ctx
    return ctx


Ctx = Annotated[GatewayContext, Depends(gateway_context)]


async def principal(
    request: Request,
    ctx: Ctx,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    auth = f"Bearer {creds.credentials}" if creds is not None else request.headers.get("authorization")
    p = await ctx.authenticate_header(auth, x_api_key, request.state.client_ip)
    request.state.principal = p
    return p


@functools.cache
def limited(action: str | None) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the principal, after the rate limit of `action` (None: the general request limit).
    Cached so each action is one dependency (FastAPI resolves it once per request)."""

    async def dep(request: Request, ctx: Ctx, p: Annotated[Principal, Depends(principal)]) -> Principal:
        await ctx.rate_limit(p, request.state.client_ip, action)
        return p

    return dep


async def admin(p: Annotated[Principal, Depends(limited(None))]) -> Principal:
    if not p.is_admin:
        raise PlatformError(ErrorCode.FORBIDDEN, "admin role required")
    return p


User = Annotated[Principal, Depends(principal)]
Limited = Annotated[Principal, Depends(limited(None))]
Admin = Annotated[Principal, Depends(admin)]
