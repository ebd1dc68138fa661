"""Administration: users, API keys and the budget (admin role only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.cost import BudgetState, SetBudget
from adp_common.schemas.money import Money, money_input
from adp_gateway import accounts
from adp_gateway.accounts import KeyList, UserList, UserOut
from adp_gateway.auth import hash_key, new_api_key, new_key_id, new_user_id
from adp_gateway.deps import ID_PATTERN, Admin, Ctx, ResourceId
from adp_gateway.errors import error_responses

router = APIRouter(tags=["admin"], responses=error_responses(403, 404))


class CreateUser(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")
    role: Literal["user", "admin"] = "user"


class KeyOut(BaseModel):
    id: str
    key: str = Field(description="shown only once")
    userId: str
    createdAt: datetime | None = None
    name: str = ""
    expiresAt: datetime | None = None
    dailyBudgetUsd: Money | None = None


class CreateKey(BaseModel):
    name: str = Field(default="", max_length=100, pattern=r"^[^\x00]*$", description="what the key is for")
    expiresAt: datetime | None = Field(default=None, description="the key stops working at this time")
    expiresInDays: float | None = Field(default=None, gt=0, le=3650, description="or: this many days from now")
    dailyBudgetUsd: Annotated[Decimal, money_input(1_000_000)] | None = Field(
        default=None, ge=0, le=1_000_000, description="the key's own daily limit"
    )


class SetDisabled(BaseModel):
    disabled: bool


class RevokedOut(BaseModel):
    id: str
    revoked: bool


@router.post("/api/admin/users", status_code=201, response_model=UserOut)
async def create_user(body: CreateUser, ctx: Ctx, p: Admin) -> JSONResponse:
    row = await ctx.store.create_user(new_user_id(), body.name, body.role)
    out = UserOut(
        id=str(row["id"]), name=str(row["name"]), role=str(row["role"]), createdAt=row["created_at"], activeKeys=0
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.get("/api/admin/users", response_model=UserList, summary="Every user, with its state and active keys")
async def list_users(ctx: Ctx, p: Admin) -> JSONResponse:
    return JSONResponse(UserList(users=await accounts.list_users(ctx.store.pool)).model_dump(mode="json"))


@router.patch("/api/admin/users/{user_id}", response_model=UserOut, summary="Disable or enable a user")
async def set_user_disabled(user_id: ResourceId, body: SetDisabled, ctx: Ctx, p: Admin) -> JSONResponse:
    if not ID_PATTERN.match(user_id):
        raise PlatformError(ErrorCode.NOT_FOUND, "no such user")
    if body.disabled and user_id == p.user_id:
        raise PlatformError(ErrorCode.CONFLICT, "an administrator cannot disable their own user")
    user = await accounts.set_disabled(ctx.store.pool, user_id, body.disabled)
    if user is None:
        raise PlatformError(ErrorCode.NOT_FOUND, "no such user")
    ctx.cache.drop_user_id(user_id)
    await ctx.broadcast_user_changed(user_id)
    if body.disabled:
        await ctx.end_sessions(user_id=user_id)
    return JSONResponse(user.model_dump(mode="json"))


@router.get("/api/admin/keys", response_model=KeyList, summary="API keys (never their secrets), of one user or all")
async def list_keys(ctx: Ctx, p: Admin, userId: Annotated[str | None, Query(max_length=80)] = None) -> JSONResponse:
    keys = await accounts.list_keys(ctx.store.pool, userId)
    return JSONResponse(KeyList(keys=keys).model_dump(mode="json"))


@router.post("/api/admin/users/{user_id}/keys", status_code=201, response_model=KeyOut)
async def create_key(user_id: ResourceId, ctx: Ctx, p: Admin, body: CreateKey | None = None) -> JSONResponse:
    if not ID_PATTERN.match(user_id) or not await ctx.store.user_exists(user_id):
        raise PlatformError(ErrorCode.NOT_FOUND, "no such user")
    body = body or CreateKey()
    expires = body.expiresAt
    if body.expiresInDays is not None:
        expires = datetime.now(UTC) + timedelta(days=body.expiresInDays)
    if expires is not None and expires.tzinfo is None:
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "expiresAt needs a time zone (e.g. 2027-01-01T00:00:00Z)")
    key, key_id = new_api_key(), new_key_id()
    if body.dailyBudgetUsd is not None:
        # the cost service enforces it like a user's budget; set before the key exists, so no key goes unlimited
        await ctx.request(
            ctx.bus.catalog.cost_budget_set, SetBudget(daily_limit_usd=body.dailyBudgetUsd, key_id=key_id), BudgetState
        )
    info = await accounts.create_key(
        ctx.store.pool, key_id, user_id, hash_key(key), key[:8],
        name=body.name, expires_at=expires, daily_budget_usd=body.dailyBudgetUsd,
    )  # fmt: skip
    out = KeyOut(
        id=info.id,
        key=key,
        userId=user_id,
        createdAt=info.createdAt,
        name=info.name,
        expiresAt=info.expiresAt,
        dailyBudgetUsd=info.dailyBudgetUsd,
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.delete("/api/admin/keys/{key_id}", response_model=RevokedOut)
async def revoke_key(key_id: ResourceId, ctx: Ctx, p: Admin) -> JSONResponse:
    if not ID_PATTERN.match(key_id) or not await ctx.store.revoke_key(key_id):
        raise PlatformError(ErrorCode.NOT_FOUND, "no such key")
    ctx.cache.drop_key_id(key_id)
    await ctx.broadcast_revocation(key_id)
    await ctx.end_sessions(key_id=key_id)
    return JSONResponse(RevokedOut(id=key_id, revoked=True).model_dump())


@router.put("/api/admin/budget", response_model=BudgetState)
async def set_budget(body: SetBudget, ctx: Ctx, p: Admin) -> JSONResponse:
    result = await ctx.request(ctx.bus.catalog.cost_budget_set, body, BudgetState)
    return JSONResponse(result.model_dump(mode="json"))
