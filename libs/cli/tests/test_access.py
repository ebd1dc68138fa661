"""The security-incident commands of docs/security.md against a real gateway: isolate a user, revoke every
key of a user, rotate the bootstrap admin key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from adp_gateway.server import GatewayServer, running_gateway
from adp_testing.gateway import ADMIN_KEY, gateway_settings, new_user


async def adp(gw: GatewayServer, data_dir: Path, *args: str, key: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")}
    argv = [sys.executable, "-m", "adp_cli.main", *args, "--url", gw.url, "--data-dir", str(data_dir)]
    if key:
        argv += ["--key", key]
    proc = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


async def status(gw: GatewayServer, key: str) -> int:
    async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}) as c:
        return (await c.get("/api/admin/keys")).status_code


async def test_incident_commands(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, redis_url: str, tmp_path: Path
) -> None:
    settings = gateway_settings(nats_url, pg_dsn, prefix, databases.name("gateway"), redis_url)
    async with running_gateway(settings) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            uid, key1, _ = await new_user(admin, "leaky")
            key2 = (await admin.post(f"/api/admin/users/{uid}/keys")).json()["key"]
            _, other_key, _ = await new_user(admin, "bystander")
        for k in (key1, key2, other_key):
            assert await status(gw, k) == 403  # a valid user key (not an admin)

        out = await adp(gw, tmp_path, "disable-user", uid, key=ADMIN_KEY)
        assert f"{uid}: disabled" in out
        assert await status(gw, key1) == 401
        await adp(gw, tmp_path, "disable-user", uid, "--enable", key=ADMIN_KEY)
        assert await status(gw, key1) == 403

        out = await adp(gw, tmp_path, "revoke-user-keys", uid, key=ADMIN_KEY)
        assert f"2 keys of {uid} revoked" in out
        assert await status(gw, key1) == 401 and await status(gw, key2) == 401
        assert await status(gw, other_key) == 403  # nobody else's keys

        # the bootstrap key in DATA_DIR/bootstrap-api-key is replaced and stops working
        (tmp_path / "bootstrap-api-key").write_text(ADMIN_KEY + "\n")
        out = await adp(gw, tmp_path, "rotate-bootstrap-key")
        new_key = (tmp_path / "bootstrap-api-key").read_text().strip()
        assert new_key != ADMIN_KEY and ADMIN_KEY not in out and new_key not in out
        assert await status(gw, new_key) == 200
        assert await status(gw, ADMIN_KEY) == 401
