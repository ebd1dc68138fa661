"""Administration: users, API keys and the budget (admin role only)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.cost import BudgetState, SetBudget
from adp_gateway.auth import hash_key, new_api_key, new_key_id, new_user_id
from adp_gateway.deps import ID_PATTERN, Admin, Ctx

router = APIRouter(tags=["admin"])


class CreateUser(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")
    role: Literal["user", "admin"] = "user"


class UserOut(BaseModel):
    id: str
    name: str
    role: str
    createdAt: datetime | None = None


class KeyOut(BaseModel):
    id: str
    key: str = Field(description="shown only once")
    userId: str
    createdAt: datetime | None = None


class RevokedOut(BaseModel):
    id: str
    revoked: bool


@router.post("/api/admin/users", status_code=201, response_model=UserOut)
async def create_user(body: CreateUser, ctx: Ctx, p: Admin) -> JSONResponse:
    row = await ctx.store.create_user(new_user_id(), body.name, body.role)
    out = UserOut(id=str(row["id"]), name=str(row["name"]), role=str(row["role"]), createdAt=row["created_at"])
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.post("/api/admin/users/{user_id}/keys", status_code=201, response_model=KeyOut)
async def create_key(user_id: str, ctx: Ctx, p: Admin) -> JSONResponse:
    if not ID_PATTERN.match(user_id) or not await ctx.store.user_exists(user_id):
        raise PlatformError(ErrorCode.NOT_FOUND, "no such user")
    key = new_api_key()
    row = await ctx.store.create_key(new_key_id(), user_id, hash_key(key), key[:8])
    out = KeyOut(id=str(row["id"]), key=key, userId=user_id, createdAt=row["created_at"])
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.delete("/api/admin/keys/{key_id}", response_model=RevokedOut)
async def revoke_key(key_id: str, ctx: Ctx, p: Admin) -> JSONResponse:
    if not ID_PATTERN.match(key_id) or not await ctx.store.revoke_key(key_id):
        raise PlatformError(ErrorCode.NOT_FOUND, "no such key")
    ctx.cache.drop_key_id(key_id)
    await ctx.broadcast_revocation(key_id)
    return JSONResponse(RevokedOut(id=key_id, revoked=True).model_dump())


@router.put("/api/admin/budget", response_model=BudgetState)
async def set_budget(body: SetBudget, ctx: Ctx, p: Admin) -> JSONResponse:
    result = await ctx.request(ctx.bus.catalog.cost_budget_set, body, BudgetState)
    return JSONResponse(result.model_dump(mode="json"))
