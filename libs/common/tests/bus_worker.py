"""A bus worker run as a separate process by test_bus_processes.py.

usage: bus_worker.py serve NATS_URL PREFIX NAME
       bus_worker.py consume NATS_URL PREFIX NAME OUTFILE   (hangs forever on request_id 'hang-<NAME>')
"""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import BaseModel

from adp_common.bus import Bus, Delivery, RequestContext


class Who(BaseModel):
    who: str


async def main() -> None:
    mode, url, prefix, name = sys.argv[1:5]
    bus = await Bus.connect(url, prefix=prefix, name="worker", instance=name)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if mode == "serve":

        async def handle(_: object, ctx: RequestContext) -> Who:
            await asyncio.sleep(0.01)
            return Who(who=name)

        await bus.serve(bus.catalog.subject("worker", "who"), handle)
    else:
        outfile = sys.argv[5]

        async def consume(d: Delivery) -> None:
            rid = d.payload.request_id
            with open(outfile, "a") as f:
                f.write(f"{name} {rid} {d.num_delivered}\n")
            if rid == f"hang-{name}":
                await asyncio.Event().wait()

        await bus.consume(bus.catalog.stream_name("USAGE"), "shared", consume, ack_wait=2.0, concurrency=4)
    print("ready", flush=True)
    await stop.wait()
    await bus.close(grace=2)


if __name__ == "__main__":
    asyncio.run(main())
