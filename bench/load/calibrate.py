"""How fast this machine runs the platform's kind of work, measured before a benchmark starts: the yardstick
that lets runs on different hosts (or different interpreters) be compared.

The same code under the same load has used ~1.8x the CPU per process from one benchmark host to another
(the fake provider, unchanged, included), which moves added latency across the targets more than most code
changes do. Three figures, each the best of a few repeats, taken in a child process on the otherwise idle
machine with the interpreter the services run on:

- `python_ms`: a fixed piece of pure-Python work (dicts, strings, JSON, small objects);
- `python_busy_ms`: the same while another process keeps a second core busy — on hosts whose two vCPUs share
  a physical core it is markedly slower, and under load every service runs that way;
- `loopback_us`: one round trip of a small message over a loopback TCP connection between two event loops
  in two processes (the services' event loop: uvloop when installed) — system calls, wake-ups, the loop.

Run alone: `.venv/bin/python bench/load/calibrate.py` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import platform
import socket
import subprocess
import sys
import time
from typing import Any

from adp_common.service import run_loop

ROUND_TRIPS = 2000
REPEATS = 5


def python_task() -> float:
    """Milliseconds for a fixed mix of interpreter work."""
    t0 = time.perf_counter()
    events = []
    for i in range(20_000):
        ev = {"discussionId": f"d{i % 97}", "seq": i, "event": "message-chunk", "data": {"chunk": "the " * (i % 7)}}
        text = json.dumps(ev)
        back = json.loads(text)
        events.append((back["seq"], len(back["data"]["chunk"]), text.count("the")))
    total = sum(a + b + c for a, b, c in events)
    words = " ".join(str(x) for x in range(5000)).split()
    total += len({w[::-1]: w for w in words})
    assert total > 0
    return (time.perf_counter() - t0) * 1000


def _spin(stop_at: float) -> None:
    while time.perf_counter() < stop_at:
        pass


def python_busy_task() -> float:
    """`python_task` while another process spins on the other core."""
    ctx = multiprocessing.get_context("spawn")
    spinner = ctx.Process(target=_spin, args=(time.perf_counter() + 30,), daemon=True)
    spinner.start()
    try:
        time.sleep(0.3)  # let it start (spawn imports the interpreter) and take its core
        return min(python_task() for _ in range(REPEATS))
    finally:
        spinner.terminate()
        spinner.join()


ECHO_SERVER = """
import asyncio, sys
from adp_common.service import run_loop
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    srv = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
run_loop(main())
"""


def loopback_task() -> float:
    """Microseconds per round trip of a 64-byte message to an echo server in another process."""
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return min(run_loop(_ping(port)) for _ in range(REPEATS))  # the services' event loop
    finally:
        if server.stdin is not None:
            server.stdin.close()  # the server's cue to exit
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def _ping(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * 64
    t0 = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        writer.write(msg)
        await reader.readexactly(len(msg))
    elapsed = time.perf_counter() - t0
    writer.close()
    return elapsed / ROUND_TRIPS * 1e6


def interpreter() -> dict[str, Any]:
    """Which CPython runs the services, and whether its interpreter is a shared libpython (pyenv's default
    build here) or linked into the executable (Debian's, the official images'): the same code measured
    markedly slower on the former (see bench/README.md)."""
    with open("/proc/self/maps") as maps:
        shared = any("libpython" in line for line in maps)
    return {"version": platform.python_version(), "executable": sys.executable, "libpython_shared": shared}


def measure() -> dict[str, Any]:
    python_task()  # warm-up
    return {
        "python_ms": round(min(python_task() for _ in range(REPEATS)), 1),
        "python_busy_ms": round(python_busy_task(), 1),
        "loopback_us": round(loopback_task(), 1),
        "interpreter": interpreter(),
    }


async def calibrate(timeout: float = 120.0) -> dict[str, Any] | None:
    """`measure()` in a child process (so this process's event loop and imports do not weigh on it); None
    when it fails — the benchmark goes on without a yardstick."""
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, stdout=asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    if proc.returncode != 0:
        return None
    try:
        return json.loads(out)
    except ValueError:
        return None


if __name__ == "__main__":
    print(json.dumps(measure()))
