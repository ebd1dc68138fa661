"""PDF text extraction in its confined child process: text out, broken or over-budget PDFs refused."""

from __future__ import annotations

import pytest

from adp_common.errors import ErrorCode, PlatformError
from adp_gateway import files, pdf_text
from adp_testing.gateway import tiny_pdf
from adp_testing.hostile import empty_text_operators_pdf


def test_pdf_text_extracted_and_broken_pdf_refused() -> None:
    assert "Quarterly numbers" in pdf_text.extract(tiny_pdf("Quarterly numbers"), pdf_text.Limits())
    with pytest.raises(pdf_text.Unreadable):
        pdf_text.extract(b"%PDF-1.4\ngarbage that is no pdf", pdf_text.Limits())


def test_pdf_page_over_its_cpu_budget_is_unreadable() -> None:
    with pytest.raises(pdf_text.Unreadable, match="page 1 needs more work"):
        pdf_text.extract(empty_text_operators_pdf(pages=2), pdf_text.Limits(page_cpu_s=0.2))


def test_pdf_extraction_reply_parsed() -> None:
    assert files.parse_extraction(0, b'{"text": "abc"}') == "abc"
    for code, out in ((0, b'{"error": "encrypted PDFs are not supported"}'), (-24, b""), (0, b"{garbage")):
        with pytest.raises(PlatformError) as e:
            files.parse_extraction(code, out)
        assert e.value.code == ErrorCode.FILE_UNREADABLE
