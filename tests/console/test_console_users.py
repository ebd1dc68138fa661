"""The console's users-and-keys page against the real platform: create a user and a key, see its spend,
disable and enable the user, revoke the key — each visible in the page and in what the key can do."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from adp_platform import Platform, start_platform, stop_platform  # noqa: E402

pytestmark = [pytest.mark.slow]
CHAT = {"model": "default", "messages": [{"role": "user", "content": "Say something useful"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(nats_url: str, pg_dsn: str, redis_url: str) -> AsyncIterator[Platform]:
    p = await start_platform(nats_url, pg_dsn, redis_url)
    try:
        yield p
    finally:
        await stop_platform(p, nats_url)


async def chat_status(p: Platform, key: str) -> int:
    async with httpx.AsyncClient(base_url=p.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        return (await c.post("/v1/chat/completions", json=CHAT)).status_code


@pytest.mark.browser
async def test_users_and_keys_page(browser: Any, platform: Platform) -> None:
    p = platform
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await page.goto(f"{p.url}/")
        await page.fill("#api-key", p.key)
        await page.press("#api-key", "Enter")
        await page.wait_for_selector("#view-new:not([hidden])")
        await page.click("#nav [data-view=users]")
        await page.wait_for_selector("#users-table tbody tr[data-user-id]")

        await page.fill("#user-name", "pat")
        await page.click("#user-form button[type=submit]")
        row = page.locator("#users-table tbody tr", has_text="pat")
        await row.wait_for()
        user_id = await row.get_attribute("data-user-id")
        await page.select_option("#key-user", user_id)
        await page.fill("#key-name", "pat laptop")
        await page.fill("#key-budget", "5")
        await page.click("#key-form button[type=submit]")
        await page.wait_for_selector("#new-key:not([hidden])")
        key = (await page.text_content("#new-key-value") or "").strip()
        assert key.startswith("adp_")
        key_row = page.locator("#keys-table tbody tr", has_text="pat laptop")
        await key_row.wait_for()
        assert "active" in (await key_row.text_content() or "")

        # spend shows per key once the call is charged
        assert await chat_status(p, key) == 200
        for _ in range(40):
            await page.click("#users-refresh")
            await page.wait_for_timeout(250)
            if "(1 calls)" in (await key_row.locator(".spend").text_content() or ""):
                break
        assert "(1 calls)" in (await key_row.locator(".spend").text_content() or "")
        assert "(1 calls)" in (await row.locator(".spend").text_content() or "")

        await row.locator("button.disable").click()
        await row.locator(".badge", has_text="disabled").wait_for()
        assert await chat_status(p, key) == 401
        await row.locator("button.enable").click()
        await row.locator(".badge", has_text="active").wait_for()
        assert await chat_status(p, key) == 200

        await key_row.locator("button.revoke").click()
        await key_row.locator(".badge", has_text="revoked").wait_for()
        assert await chat_status(p, key) == 401
        assert errors == []
    finally:
        await context.close()
