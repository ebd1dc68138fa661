"""Listening sockets for the HTTP servers (gateway, admin endpoints, fake provider)."""

from __future__ import annotations

import socket


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket for uvicorn's `serve(sockets=...)`; port 0 picks a free port. With `reuse_port`
    (SO_REUSEPORT) several processes listen on one port: the kernel spreads new connections over them, and
    a dead one's share goes to the others.

    Created with proto=IPPROTO_TCP on purpose: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    `proto` says TCP, and accepted sockets inherit it from the listener. With the default proto 0, every
    small write after the first (an SSE chunk right after the response headers) waited for the client's
    delayed ACK — about 40 ms on Linux."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock
