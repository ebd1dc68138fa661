"""PDF text extraction, run as its own short-lived process (`python -m adp_gateway.pdf_text`).

A crafted PDF can make a text extractor work for hours or allocate gigabytes, so this never runs in
the gateway: the gateway starts this module with limits on its command line, writes the file to its
stdin and reads one JSON line from its stdout. The process first caps itself (CPU seconds and address
space through setrlimit, a lower scheduling priority), then gives every page a CPU budget of its own
(a page over it makes the file unreadable) and stops at a page and character cap. The kernel kills it
when the total CPU budget runs out; the gateway kills it when the wall-clock budget runs out. Only the
standard library and pypdf are imported here.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported only where the sandboxed process reads a PDF
    from pypdf import PageObject

# One source for the caps: the gateway's settings default to these.
MAX_TEXT_CHARS = 200_000
MAX_PDF_PAGES = 200


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 5
    memory_mb: int = 512
    page_cpu_s: float = 0.5
    max_pages: int = MAX_PDF_PAGES
    max_chars: int = MAX_TEXT_CHARS
    nice: int = 10

    def argv(self) -> list[str]:
        fields = (self.cpu_s, self.memory_mb, self.page_cpu_s, self.max_pages, self.max_chars, self.nice)
        return [str(f) for f in fields]

    @classmethod
    def from_argv(cls, args: list[str]) -> Limits:
        cpu, mem, page, pages, chars, nice = args
        return cls(int(cpu), int(mem), float(page), int(pages), int(chars), int(nice))


class PageOverBudget(BaseException):
    """A page used up its CPU budget (raised from the profiling timer's signal handler; a BaseException so
    that no `except Exception` inside the PDF library swallows it)."""


class Unreadable(Exception):
    """The file is not a PDF this extractor can read (message for the client)."""


def confine(limits: Limits) -> None:
    """Cap this process: CPU seconds (SIGXCPU at the soft limit, SIGKILL at the hard one), memory, priority."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    mem = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    os.nice(limits.nice)  # the gateway's own work goes first on a busy machine


_budget_spent: list[bool] = []  # set by the timer's handler: an exception alone can be caught by the library


def _over_budget(signum: int, frame: object) -> None:
    _budget_spent.append(True)
    raise PageOverBudget


def _page_text(page: PageObject, budget_s: float) -> str:
    """One page's text; PageOverBudget when it takes more than `budget_s` CPU seconds."""
    _budget_spent.clear()
    signal.setitimer(signal.ITIMER_PROF, budget_s)
    try:
        text = page.extract_text() or ""
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    if _budget_spent:
        raise PageOverBudget
    return str(text)


def extract(data: bytes, limits: Limits) -> str:
    """The text of the first pages (up to the caps); raises Unreadable, also when a page is over budget."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    signal.signal(signal.SIGPROF, _over_budget)
    parts: list[str] = []
    size = 0
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unreadable("encrypted PDFs are not supported")
        for i, page in enumerate(reader.pages):
            if i >= limits.max_pages or size >= limits.max_chars:
                break
            text = _page_text(page, limits.page_cpu_s)
            parts.append(text)
            size += len(text)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as err:
        raise Unreadable(f"not a readable PDF: {type(err).__name__}") from None
    except PageOverBudget:
        raise Unreadable(f"page {len(parts) + 1} needs more work than allowed") from None
    except MemoryError:
        raise Unreadable("the PDF needs more memory than allowed") from None
    return "\n".join(parts)[: limits.max_chars]


def main() -> None:
    limits = Limits.from_argv(sys.argv[1:])
    confine(limits)
    data = sys.stdin.buffer.read()
    try:
        text = extract(data, limits)
        out = {"text": text}
    except Unreadable as err:
        out = {"error": str(err)}
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
