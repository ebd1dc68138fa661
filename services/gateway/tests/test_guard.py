"""The connection guard's bookkeeping, and that it keeps uvicorn's C HTTP parser (httptools): every SSE write
and request of the gateway goes through the protocol, and the pure-Python one costs a tenth of its CPU."""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from adp_gateway.guard import ConnectionGuard


def test_the_guard_counts_connections_per_client_and_uses_httptools() -> None:
    guard = ConnectionGuard(header_timeout_s=10, max_per_client=2)
    assert guard.admit("127.0.0.2") and guard.admit("127.0.0.2")
    assert not guard.admit("127.0.0.2") and guard.refused == 1
    assert guard.admit("127.0.0.3")
    guard.release("127.0.0.2")
    assert guard.admit("127.0.0.2")
    assert issubclass(guard.protocol(), HttpToolsProtocol)
