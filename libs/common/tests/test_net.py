import asyncio
import socket

from adp_common.net import listening_socket


async def test_accepted_connections_have_nagle_off() -> None:
    """Without TCP_NODELAY on the server side, an SSE chunk written right after the headers waits ~40 ms
    for the client's delayed ACK (what the gateway and the fake provider did before)."""
    seen: list[int] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    sock = listening_socket("127.0.0.1", 0)
    server = await asyncio.start_server(on_conn, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert seen and seen[0] != 0
