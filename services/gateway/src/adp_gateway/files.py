"""Upload checks: type by content (magic bytes, not by name), size, and text extraction (PDFs in a
confined child process, see pdf_text)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys

from adp_common.errors import ErrorCode, PlatformError
from adp_gateway.pdf_text import MAX_TEXT_CHARS, Limits

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
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "file is empty")
    ctype = sniff_type(data)
    if ctype is None:
        raise PlatformError(
            ErrorCode.INVALID_FILE_TYPE, "unsupported file type (allowed: PNG, JPEG, WebP, GIF, PDF, plain text)"
        )
    return ctype


class PdfSandbox:
    """Runs `adp_gateway.pdf_text` in a child process per file, a few at a time, and kills it when it
    overruns: the gateway's event loop and thread pool never do PDF work."""

    def __init__(self, limits: Limits, *, wall_s: float, concurrency: int) -> None:
        self.limits = limits
        self.wall_s = wall_s
        self._slots = asyncio.Semaphore(concurrency)

    async def extract(self, data: bytes) -> str:
        """The PDF's text; FILE_UNREADABLE when it is unreadable or over a limit, SERVICE_UNAVAILABLE when
        every slot stayed busy for the whole wall-clock budget."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wall_s)
        except TimeoutError:
            raise PlatformError(ErrorCode.SERVICE_UNAVAILABLE, "too many files being read; retry shortly") from None
        try:
            return await self._run(data)
        finally:
            self._slots.release()

    async def _run(self, data: bytes) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adp_gateway.pdf_text",
            *self.limits.argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(data), self.wall_s)
        except TimeoutError:
            raise PlatformError(ErrorCode.FILE_UNREADABLE, "the PDF took too long to read") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return parse_extraction(proc.returncode or 0, out)


def parse_extraction(returncode: int, out: bytes) -> str:
    """The text from the extractor's output; FILE_UNREADABLE when it failed or was killed by a limit."""
    if returncode != 0:
        raise PlatformError(ErrorCode.FILE_UNREADABLE, "the PDF needs more work or memory than allowed")
    try:
        reply = json.loads(out)
    except ValueError:
        raise PlatformError(ErrorCode.FILE_UNREADABLE, "the PDF could not be read") from None
    if isinstance(reply, dict) and isinstance(reply.get("text"), str):
        return str(reply["text"])
    message = reply.get("error") if isinstance(reply, dict) else None
    raise PlatformError(ErrorCode.FILE_UNREADABLE, str(message or "the PDF could not be read")[:200])


async def extract_text(data: bytes, content_type: str, pdf: PdfSandbox) -> str:
    if content_type == "application/pdf":
        return await pdf.extract(data)
    if content_type == "text/plain":
        return data.decode("utf-8")[:MAX_TEXT_CHARS]
    return ""
