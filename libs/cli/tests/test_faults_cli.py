"""`adp faults`: sets, lists and clears faults in the KV bucket the routers watch, or on a fake provider."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx

from adp_common.bus import Bus
from adp_common.catalog import KV_FAULTS
from adp_common.schemas.faults import ProviderFault
from adp_testing.fake_provider import FakeProvider


def adp(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adp_cli.main", "faults", *argv], env=env, capture_output=True, text=True, timeout=60
    )


async def test_faults_in_the_kv_bucket(bus: Bus, nats_url: str, prefix: str) -> None:
    env = {**os.environ, "ADP_NATS_URL": nats_url, "ADP_SUBJECT_PREFIX": prefix}
    out = await asyncio.to_thread(adp, "simulated", "--rate-limit-rate", "0.5", "--retry-after", "3", env=env)
    assert out.returncode == 0, out.stderr
    assert "simulated  429 50% (Retry-After 3s)" in out.stdout
    entry = await (await bus.kv(KV_FAULTS)).get("simulated")
    assert ProviderFault.model_validate_json(entry.value or b"") == ProviderFault(rate_limit_rate=0.5, retry_after_s=3)
    listed = await asyncio.to_thread(adp, env=env)
    assert listed.returncode == 1 and "simulated" in listed.stdout  # a fault in force: exit 1
    bad = await asyncio.to_thread(adp, "simulated", "--error-rate", "2", env=env)
    assert bad.returncode == 2 and "error_rate" in bad.stdout
    cleared = await asyncio.to_thread(adp, "--clear", env=env)
    assert cleared.returncode == 0 and "no faults injected" in cleared.stdout
    assert (await asyncio.to_thread(adp, env=env)).returncode == 0


async def test_faults_on_a_fake_provider() -> None:
    async with FakeProvider() as fake:
        env = dict(os.environ)
        out = await asyncio.to_thread(adp, "fake", "--fake-provider", fake.url, "--outage", env=env)
        assert out.returncode == 0 and "fake      outage" in out.stdout, out.stdout + out.stderr
        async with httpx.AsyncClient(base_url=fake.url) as http:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            assert (await http.post("/v1/chat/completions", json=body)).status_code == 503
            out = await asyncio.to_thread(adp, "--fake-provider", fake.url, "--clear", env=env)
            assert out.returncode == 0, out.stderr
            assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
