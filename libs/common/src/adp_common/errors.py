"""Error codes of the client contract and the exception every service raises with one."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class ErrorCode(StrEnum):
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    INVALID_DISCUSSION_ID = "INVALID_DISCUSSION_ID"
    INVALID_FILE_SIZE = "INVALID_FILE_SIZE"
    INVALID_FILE_TYPE = "INVALID_FILE_TYPE"
    DISCUSSION_NOT_FOUND = "DISCUSSION_NOT_FOUND"
    DATABASE_ERROR = "DATABASE_ERROR"
    LLM_PROVIDER_ERROR = "LLM_PROVIDER_ERROR"
    LLM_TIMEOUT = "LLM_TIMEOUT"
    NO_LLM_PROVIDER_AVAILABLE = "NO_LLM_PROVIDER_AVAILABLE"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # Extensions of the contract (added, nothing renamed).
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    ACTIVE_DISCUSSION_LIMIT = "ACTIVE_DISCUSSION_LIMIT"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    FILE_UNREADABLE = "FILE_UNREADABLE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"


# HTTP status the gateway answers for each code.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.INVALID_DISCUSSION_ID: 400,
    ErrorCode.INVALID_FILE_SIZE: 413,
    ErrorCode.INVALID_FILE_TYPE: 415,
    ErrorCode.DISCUSSION_NOT_FOUND: 404,
    ErrorCode.DATABASE_ERROR: 503,
    ErrorCode.LLM_PROVIDER_ERROR: 502,
    ErrorCode.LLM_TIMEOUT: 504,
    ErrorCode.NO_LLM_PROVIDER_AVAILABLE: 503,
    ErrorCode.BUDGET_EXCEEDED: 402,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.ACTIVE_DISCUSSION_LIMIT: 409,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.FILE_UNREADABLE: 422,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.REQUEST_TIMEOUT: 408,
}


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str


class PlatformError(Exception):
    """An error with a contract code; crosses the bus as an error reply and reaches clients as-is."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message)

    def __repr__(self) -> str:
        return f"PlatformError({self.code.value}, {self.message!r})"
