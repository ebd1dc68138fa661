"""Security headers on every gateway response: no content sniffing, no referrer to other sites, and a
Content-Security-Policy that keeps pages (the console, the API docs) from being framed or from loading
anything but the gateway's own files."""

from __future__ import annotations

# Pages: own scripts only. The API docs page starts Swagger UI with an inline script and Swagger UI sets
# inline styles, hence 'unsafe-inline' for those two; nothing is loaded from another origin.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Everything else (JSON, event streams, files) is data, never a document to render.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
PAGE_HEADERS = [*_COMMON, (b"content-security-policy", PAGE_POLICY.encode())]
DATA_HEADERS = [*_COMMON, (b"content-security-policy", DATA_POLICY.encode())]


def security_headers(content_type: bytes) -> list[tuple[bytes, bytes]]:
    return PAGE_HEADERS if content_type.startswith(b"text/html") else DATA_HEADERS
