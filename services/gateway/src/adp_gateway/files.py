"""Upload checks: type by content (magic bytes, not by name), size, and PDF text extraction."""

from __future__ import annotations

import io
import re

from adp_common.errors import ErrorCode, PlatformError

MAX_TEXT_CHARS = 200_000
MAX_PDF_PAGES = 200
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SAFE_NAME = re.compile(r"[^\w.\- ()]+")


def sniff_type(data: bytes) -> str | None:
    """The content type the bytes really are (PNG, JPEG, WebP, GIF, PDF, plain text), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if is_plain_text(data):
        return "text/plain"
    return None


def is_plain_text(data: bytes) -> bool:
    if not data:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _CONTROL.search(text) is None


def safe_filename(name: str | None) -> str:
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SAFE_NAME.sub("_", base).strip() or "upload"
    return cleaned[:255]


def check_upload(data: bytes, max_bytes: int) -> str:
    """Validate size and type; returns the detected content type or raises PlatformError."""
    if len(data) > max_bytes:
        raise PlatformError(ErrorCode.INVALID_FILE_SIZE, f"file is larger than {max_bytes} bytes")
    if not data:
        raise PlatformError(ErrorCode.INVALID_FILE_SIZE, "file is empty")
    ctype = sniff_type(data)
    if ctype is None:
        raise PlatformError(
            ErrorCode.INVALID_FILE_TYPE, "unsupported file type (allowed: PNG, JPEG, WebP, GIF, PDF, plain text)"
        )
    return ctype


def extract_pdf_text(data: bytes) -> str:
    """Text of a PDF (CPU-bound: call it in a thread). Raises INVALID_FILE_TYPE for unreadable files."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise PlatformError(ErrorCode.INVALID_FILE_TYPE, "encrypted PDFs are not supported")
        parts: list[str] = []
        size = 0
        for i, page in enumerate(reader.pages):
            if i >= MAX_PDF_PAGES or size >= MAX_TEXT_CHARS:
                break
            text = page.extract_text() or ""
            parts.append(text)
            size += len(text)
    except PlatformError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as err:
        raise PlatformError(ErrorCode.INVALID_FILE_TYPE, f"not a readable PDF: {type(err).__name__}") from None
    return "\n".join(parts)[:MAX_TEXT_CHARS]


def extract_text(data: bytes, content_type: str) -> str:
    if content_type == "application/pdf":
        return extract_pdf_text(data)
    if content_type == "text/plain":
        return data.decode("utf-8")[:MAX_TEXT_CHARS]
    return ""
