"""File uploads: text is extracted once here and referenced by id when a discussion is created."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from adp_gateway import files as filecheck
from adp_gateway.deps import Ctx, Limited
from adp_gateway.errors import error_responses
from adp_gateway.store import StoredFile

router = APIRouter(tags=["files"], responses=error_responses(415))


class FileOut(BaseModel):
    id: str
    name: str
    contentType: str
    size: int
    sha256: str
    textLength: int
    createdAt: datetime


@router.post("/api/files", status_code=201, response_model=FileOut)
async def upload(ctx: Ctx, p: Limited, file: Annotated[UploadFile, File()]) -> JSONResponse:
    s = ctx.settings
    data = await file.read(s.max_file_bytes + 1)
    ctype = filecheck.check_upload(data, s.max_file_bytes)
    text = await filecheck.extract_text(data, ctype, ctx.pdf)
    stored = StoredFile(
        id="file_" + uuid.uuid4().hex[:20],
        user_id=p.user_id,
        name=filecheck.safe_filename(file.filename),
        content_type=ctype,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        text=text.replace("\x00", ""),
    )
    await ctx.store.save_file(stored)
    out = FileOut(
        id=stored.id,
        name=stored.name,
        contentType=ctype,
        size=stored.size,
        sha256=stored.sha256,
        textLength=len(stored.text),
        createdAt=datetime.now(UTC),
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201)
