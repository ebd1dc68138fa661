"""What reading a step's prompt context costs the dialogue service's commit: the locked load of a discussion
(`store.load_step(..., for_update=True)` inside BEGIN/COMMIT) with the context (every message so far, as
JSON) against without it, as the discussion grows. A turn before the round's last commits without it.

    .venv/bin/python bench/step_context_bench.py [--messages 3,12,30] [--repeat 300]

Uses a throw-away database on the local PostgreSQL (`ADP_DATABASE_URL`), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path

import asyncpg

import adp_dialogue
from adp_common import db
from adp_dialogue import store

ANSWER = "word " * 200  # a 200-token answer, ~1 KB


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", default="3,12,30", help="discussion sizes (messages so far)")
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--pg", default=os.environ.get("ADP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    name = "ctxbench_" + uuid.uuid4().hex[:8]
    await db.ensure_database(args.pg, name)
    try:
        conn = await asyncpg.connect(db.with_database(args.pg, name))
        try:
            await db.migrate(conn, db.load_migrations(Path(adp_dialogue.__file__).parent / "migrations"))
            did = uuid.uuid4().hex
            await store.create_discussion(
                conn, id=did, user_id="u", topic="t", personas=[{"name": "A"}], max_rounds=100, auto_mode=True,
                token_limit=10**9, status="running", current_round=1, current_job=None,
            )  # fmt: skip
            stored = 0
            print(f"{'messages':>8} {'with context':>13} {'without':>8}  (ms per locked load, BEGIN/COMMIT included)")
            for size in (int(x) for x in args.messages.split(",")):
                for i in range(stored, size):
                    await store.insert_message(
                        conn, id=uuid.uuid4().hex, discussion_id=did, persona="A", content=ANSWER, round=i // 3 + 1,
                        turn=i + 1, position=i % 3 + 1, provider="p", model="m", input_tokens=1, output_tokens=200,
                    )  # fmt: skip
                stored = max(stored, size)
                times = {}
                for context in (True, False):
                    t0 = time.perf_counter()
                    for _ in range(args.repeat):
                        async with conn.transaction():
                            await store.load_step(conn, did, "x", for_update=True, context=context)
                    times[context] = (time.perf_counter() - t0) / args.repeat * 1000
                print(f"{size:>8} {times[True]:>13.3f} {times[False]:>8.3f}")
        finally:
            await conn.close()
    finally:
        await db.drop_database(args.pg, name)


if __name__ == "__main__":
    asyncio.run(main())
