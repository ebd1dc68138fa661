"""The contract's error envelope `{"error": {"code", "message"}}` and the exception handlers that produce it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from adp_common.errors import HTTP_STATUS, ErrorCode, PlatformError

log = logging.getLogger("adp.gateway")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request (VALIDATION_ERROR, INVALID_DISCUSSION_ID)",
    401: "Missing or invalid API key (UNAUTHORIZED)",
    402: "The daily budget is spent (BUDGET_EXCEEDED)",
    403: "The caller's role may not do this (FORBIDDEN)",
    404: "No such resource for this caller (NOT_FOUND, DISCUSSION_NOT_FOUND; model_not_found on /v1)",
    405: "The path does not take this method (METHOD_NOT_ALLOWED); see Allow",
    409: "Conflicts with the resource's state (CONFLICT, ACTIVE_DISCUSSION_LIMIT)",
    413: "Request body too large (INVALID_FILE_SIZE for uploads, else VALIDATION_ERROR)",
    415: "File type not accepted (INVALID_FILE_TYPE)",
    429: "Rate limit exceeded (RATE_LIMIT_EXCEEDED), see Retry-After",
    502: "Every provider failed (LLM_PROVIDER_ERROR)",
    503: "A service the request needs is unavailable, or the gateway sheds load",
    504: "The completion did not finish in time (LLM_TIMEOUT)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries: the error envelope for each status."""
    return {status: {"description": ERROR_DESCRIPTIONS[status], "content": _ENVELOPE} for status in statuses}


# Every route: bad input, auth, the body limit, rate limits, shedding.
ERROR_RESPONSES = error_responses(400, 401, 413, 429, 503)


def error_body(code: ErrorCode | str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": str(ErrorCode(code).value), "message": message}}


def error_response(
    code: ErrorCode | str, message: str, status: int | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    code = ErrorCode(code)
    return JSONResponse(error_body(code, message), status_code=status or HTTP_STATUS[code], headers=headers)


def code_for_status(status: int) -> ErrorCode:
    return {
        401: ErrorCode.UNAUTHORIZED,
        403: ErrorCode.FORBIDDEN,
        404: ErrorCode.NOT_FOUND,
        405: ErrorCode.METHOD_NOT_ALLOWED,
        409: ErrorCode.CONFLICT,
        413: ErrorCode.VALIDATION_ERROR,
        429: ErrorCode.RATE_LIMIT_EXCEEDED,
        503: ErrorCode.SERVICE_UNAVAILABLE,
    }.get(status, ErrorCode.INTERNAL_ERROR if status >= 500 else ErrorCode.VALIDATION_ERROR)


def validation_message(err: RequestValidationError | ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    async def platform_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PlatformError)
        headers = {"Retry-After": "1"} if exc.code == ErrorCode.SERVICE_UNAVAILABLE else None
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            headers = {"Retry-After": str(retry_after)}
        return error_response(exc.code, exc.message, headers=headers)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(
            code_for_status(exc.status_code), detail, exc.status_code, headers=dict(exc.headers or {})
        )

    async def request_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError | ValidationError)
        return error_response(ErrorCode.VALIDATION_ERROR, validation_message(exc))

    app.add_exception_handler(PlatformError, platform_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(ValidationError, request_validation)
