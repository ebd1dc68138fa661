"""Run a service inside the test's event loop (fast integration tests over the real bus)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from adp_common.service import ServiceApp, ServiceRuntime, run_service
from adp_common.settings import ServiceSettings


@contextlib.asynccontextmanager
async def running_service(
    service: str,
    settings: ServiceSettings,
    app: ServiceApp,
    *,
    migrations_dir: Path | None = None,
    use_database: bool = True,
    **runtime_kwargs: Any,
) -> AsyncIterator[ServiceRuntime]:
    """Start `app` with its runtime, yield the runtime once ready, stop it (draining) on exit.

    Build `settings` with the test's isolation, e.g.
    `CostSettings(nats_url=nats_url, database_url=pg_dsn, subject_prefix=prefix, db_suffix=prefix)`."""
    rt = ServiceRuntime(
        settings, service=service, migrations_dir=migrations_dir, use_database=use_database, **runtime_kwargs
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(rt, app, stop))
    try:
        while not rt.checks.ready:
            if task.done():
                task.result()
                raise RuntimeError(f"{service} stopped before it was ready")
            await asyncio.sleep(0.02)
        yield rt
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
