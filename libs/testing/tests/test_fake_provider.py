"""The fake provider's admin API and wire formats over real HTTP."""

from __future__ import annotations

import json

import httpx

from adp_testing.fake_provider import DEFAULT_TEXT, FakeProvider


async def test_admin_faults_stats_and_streams() -> None:
    async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url, timeout=5) as c:
        r = await c.post("/_faults", json={"status": 429, "retry_after": 2, "times": 1})
        assert r.status_code == 200 and len(r.json()["faults"]) == 1
        body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
        lines = []
        async with c.stream("POST", "/v1/messages", json={**body, "stream": True, "max_tokens": 10}) as s:
            async for line in s.aiter_lines():
                if line.startswith("event: "):
                    lines.append(line[7:])
        assert lines[0] == "message_start" and lines[-1] == "message_stop" and "message_delta" in lines
        stats = (await c.get("/_stats")).json()
        assert stats["calls"] == 3 and stats["completed"] == 2
        assert stats["calls_by_protocol"] == {"openai": 2, "anthropic": 1}
        assert stats["output_tokens"] == 2 * len(DEFAULT_TEXT.split(" "))
        await c.post("/_faults", json=[{"malformed_sse": True}])
        async with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            data = [line async for line in s.aiter_lines() if line.startswith("data: ")]
        bad = 0
        for d in data:
            try:
                json.loads(d[6:])
            except ValueError:
                bad += 1
        assert bad == 1
        assert (await c.delete("/_faults")).json() == {"faults": []}
