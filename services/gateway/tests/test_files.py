"""Uploads: content sniffing, size and type checks, safe file names."""

from __future__ import annotations

import pytest

from adp_common.errors import ErrorCode, PlatformError
from adp_gateway import files


@pytest.mark.parametrize(
    ("data", "ctype"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 10, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 10, "image/jpeg"),
        (b"GIF89a" + b"\0" * 10, "image/gif"),
        (b"RIFF\x10\0\0\0WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf"),
        ("héllo wörld\n".encode(), "text/plain"),
        (b"MZ\x90\x00\x03", None),  # an executable, whatever its name says
        (b"\x00\x01\x02", None),
        (b"\xff\xfe\xfa", None),
    ],
)
def test_sniff_type_by_content(data: bytes, ctype: str | None) -> None:
    assert files.sniff_type(data) == ctype


def test_check_upload_size_and_type() -> None:
    with pytest.raises(PlatformError) as e:
        files.check_upload(b"a" * 11, 10)
    assert e.value.code == ErrorCode.INVALID_FILE_SIZE
    with pytest.raises(PlatformError) as e:
        files.check_upload(b"", 10)
    assert e.value.code == ErrorCode.VALIDATION_ERROR  # nothing was sent: a bad request, not a size problem
    with pytest.raises(PlatformError) as e:
        files.check_upload(b"MZ\x90\x00", 10)
    assert e.value.code == ErrorCode.INVALID_FILE_TYPE
    assert files.check_upload(b"plain", 10) == "text/plain"


def test_safe_filename() -> None:
    assert files.safe_filename("../../etc/passwd") == "passwd"
    assert files.safe_filename("a<script>.txt") == "a_script_.txt"
    assert files.safe_filename(None) == "upload"
