"""Browser tests of the web console against the fake contract server (fast, deterministic client behaviour).

What needs exact control of the server side lives here: model output carrying markup, the event stream cut
mid-message, the requests the console sends. test_console_platform.py runs the console on the real platform.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser]


async def new_page(browser: Any, **kw: Any) -> tuple[Any, Any, list[str]]:
    context = await browser.new_context(viewport=kw.pop("viewport", {"width": 1100, "height": 900}), **kw)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
    return context, page, errors


async def sign_in(page: Any, url: str, key: str = "admin-key") -> None:
    await page.goto(url + "/")
    await page.fill("#api-key", key)
    await page.press("#api-key", "Enter")  # keyboard: Enter submits the form
    await page.wait_for_selector("#view-new:not([hidden])")


async def start(page: Any, topic: str) -> None:
    await page.fill("#topic", topic)
    await page.click("#start-btn")
    await page.wait_for_selector("#view-discussion:not([hidden])")


async def bubbles(page: Any) -> list[dict[str, str]]:
    return await page.eval_on_selector_all(
        "#rounds .msg",
        """els => els.map(e => ({persona: e.dataset.persona, round: e.dataset.round, cls: e.className,
                              text: e.querySelector('.content').textContent}))""",
    )


async def test_sign_in_stream_answer_questions(browser: Any, fake_gateway: Any) -> None:
    gw = fake_gateway
    context, page, errors = await new_page(browser)
    try:
        await page.goto(gw.url + "/")
        await page.fill("#api-key", "wrong")
        await page.click("#signin-form button")
        await page.wait_for_selector("#signin-error:not([hidden])")
        assert "not accepted" in await page.text_content("#signin-error")
        await sign_in(page, gw.url)
        assert await page.evaluate("sessionStorage.getItem('adp.apiKey')") == "admin-key"

        await start(page, "How should we shard the chat service?")
        assert await page.text_content("#topic-title") == "How should we shard the chat service?"
        await page.wait_for_selector("#rounds .round.complete[data-round='1']")
        d = next(iter(gw.discussions.values()))
        shown = await bubbles(page)
        assert [b["persona"] for b in shown] == ["Analyzer", "Solver", "Moderator"]
        for b, m in zip(shown, d.messages, strict=True):
            assert b["text"] == m["content"]
            assert f"persona-{b['persona'].lower()}" in b["cls"]
        # distinct colours per persona
        colours = await page.eval_on_selector_all(
            "#rounds .msg", "els => els.map(e => getComputedStyle(e).borderLeftColor)"
        )
        assert len(set(colours)) == 3

        # questions form built from the question set; answer it
        await page.wait_for_selector("#questions:not([hidden])")
        assert await page.locator("#questions-fields fieldset").count() == 2
        await page.check("#questions-fields label:has-text('Speed') input")
        await page.check("#questions-fields label:has-text('Operators') input")
        await page.click("#questions-form button[type=submit]")
        await page.wait_for_selector("#rounds .round.complete[data-round='2']")
        answers = [b for (_, path, b) in gw.requests if path.endswith("/answers")]
        assert answers == [{"roundNumber": 1, "answers": {"q1-1": ["o2"], "q1-2": ["o4"]}}]

        # free input joins as a User message; summary shows as a banner
        await page.wait_for_selector("#questions:not([hidden])")
        await page.click("#actions [data-action=summary]")
        await page.wait_for_selector("#banners .banner.summary")
        await page.fill("#user-input", "Mind the EU data residency rules")
        await page.click("#input-form button")
        await page.wait_for_selector("#banners .banner.resolution")
        user = page.locator("#rounds .msg.persona-user")
        assert await user.count() == 1
        assert await user.locator(".content").text_content() == "Mind the EU data residency rules"
        assert "Final answer" in await page.text_content("#banners .banner.resolution")
        assert await page.is_hidden("#actions")
        assert errors == []
    finally:
        await context.close()


async def test_network_drop_mid_stream_recovers_without_loss_or_repeat(browser: Any, fake_gateway: Any) -> None:
    gw = fake_gateway
    gw.chunk_delay = 0.03
    gw.words = 40
    context, page, errors = await new_page(browser)
    try:
        await sign_in(page, gw.url)
        await start(page, "Drop test")
        # wait until the Analyzer is half-way through its message, then drop the network
        await page.wait_for_function(
            "() => { const c = document.querySelector('#rounds .msg .content');"
            " return c && c.textContent.split(' ').length > 10; }"
        )
        await context.set_offline(True)
        await gw.drop_streams()
        await page.wait_for_selector("#conn-status[data-state=reconnecting]")
        await asyncio.sleep(0.8)  # stay offline while the server keeps producing tokens
        await context.set_offline(False)
        await page.wait_for_selector("#conn-status[data-state=live]")
        await page.wait_for_selector("#rounds .round.complete[data-round='1']", timeout=20000)
        d = next(iter(gw.discussions.values()))
        shown = await bubbles(page)
        assert [b["persona"] for b in shown] == ["Analyzer", "Solver", "Moderator"]
        assert [b["text"] for b in shown] == [m["content"] for m in d.messages]
        assert await page.locator("#questions-fields fieldset").count() == 2  # one question set, not two
        # it resumed with Last-Event-ID rather than starting over
        resumed = [x for x in gw.sse_connects[1:] if x is not None]
        assert resumed and int(resumed[-1]) > 0
        assert errors == []
    finally:
        await context.close()


async def test_markup_in_topic_and_model_output_is_inert(browser: Any, fake_gateway: Any) -> None:
    gw = fake_gateway
    context, page, errors = await new_page(browser)
    topic = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'
    try:
        await sign_in(page, gw.url)
        await start(page, topic)
        await page.wait_for_selector("#rounds .round.complete[data-round='1']")
        # the fake echoes the topic into every model message, the summary and the history list
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator("#main img, #main script:not([src]), #rounds b, #topic-title b").count() == 0
        assert await page.text_content("#topic-title") == topic
        shown = await bubbles(page)
        assert all(topic in b["text"] for b in shown)
        await page.click("#nav [data-view=history]")
        await page.wait_for_selector("#history-list li")
        assert topic in await page.text_content("#history-list")
        assert await page.evaluate("window.__pwned") is None
        assert errors == []
    finally:
        await context.close()


async def test_history_open_and_export(browser: Any, fake_gateway: Any, tmp_path: Path) -> None:
    gw = fake_gateway
    context, page, errors = await new_page(browser, accept_downloads=True)
    try:
        await sign_in(page, gw.url)
        await start(page, "Export me")
        await page.wait_for_selector("#rounds .round.complete[data-round='1']")
        await page.click("#nav [data-view=new]")
        await page.click("#nav [data-view=history]")
        await page.click("#history-list li button")
        await page.wait_for_selector("#rounds .round.complete[data-round='1']")
        assert len(await bubbles(page)) == 3  # snapshot + replayed stream: still once each
        async with page.expect_download() as info:
            await page.click("#export-json")
        dl = await info.value
        path = tmp_path / dl.suggested_filename
        await dl.save_as(path)
        assert path.suffix == ".json"
        assert json.loads(path.read_text())["topic"] == "Export me"
        async with page.expect_download() as info:
            await page.click("#export-md")
        dl = await info.value
        assert dl.suggested_filename.endswith(".md")
        await dl.save_as(tmp_path / "x.md")
        assert (tmp_path / "x.md").read_text().startswith("# Export me")
        assert errors == []
    finally:
        await context.close()


async def test_operator_view_chart_and_ack(browser: Any, fake_gateway: Any) -> None:
    gw = fake_gateway
    context, page, errors = await new_page(browser)
    try:
        await sign_in(page, gw.url)
        await page.click("#nav [data-view=operator]")
        await page.wait_for_selector("#cost-chart svg rect")
        assert await page.locator("#health-list li").count() == 6
        rows = await page.eval_on_selector_all("#providers-table tbody tr", "rs => rs.map(r => r.innerText)")
        assert any("groq" in r and "open" in r and "58.0%" in r for r in rows)
        assert await page.locator("#cost-chart svg g.bar").count() == 7
        assert "35.0%" in await page.text_content("#budget")
        await page.click("#alerts-list button.ack")
        await page.wait_for_selector("#alerts-list .acked")
        assert gw.alerts[0]["acknowledged"] is True
        assert errors == []
    finally:
        await context.close()


async def test_user_key_gets_clear_message_in_operator_view(browser: Any, fake_gateway: Any) -> None:
    context, page, _ = await new_page(browser)
    try:
        await sign_in(page, fake_gateway.url, key="user-key")
        await page.click("#nav [data-view=operator]")
        await page.wait_for_selector("#operator-error:not([hidden])")
        assert "admin" in await page.text_content("#operator-error")
    finally:
        await context.close()


async def test_phone_width_has_no_horizontal_scroll(browser: Any, fake_gateway: Any) -> None:
    context, page, errors = await new_page(browser, viewport={"width": 375, "height": 740})
    try:
        await sign_in(page, fake_gateway.url)
        await start(page, "A rather long topic " * 8)
        await page.wait_for_selector("#rounds .round.complete[data-round='1']")
        for view in ("discussion", "operator"):
            if view == "operator":
                await page.click("#nav [data-view=operator]")
                await page.wait_for_selector("#cost-chart svg")
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{view} view overflows at phone width: {width}px"
        assert errors == []
    finally:
        await context.close()
