"""The console and the terminal client against the real platform (all five services as OS processes)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adp_common.schemas.ops import BudgetEvent
from adp_testing.tcpproxy import TcpProxy

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from adp_platform import Platform, start_platform, stop_platform  # noqa: E402

pytestmark = [pytest.mark.slow]
SCREENSHOTS = HERE.parents[1] / "docs" / "screenshots"
SHOOT = bool(os.environ.get("ADP_CONSOLE_SCREENSHOTS"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(nats_url: str, pg_dsn: str, redis_url: str) -> AsyncIterator[Platform]:
    p = await start_platform(nats_url, pg_dsn, redis_url)
    try:
        yield p
    finally:
        await stop_platform(p, nats_url)


async def shot(page: Any, name: str, full: bool = True) -> None:
    if SHOOT:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full)


async def api(p: Platform, method: str, path: str, **kw: Any) -> Any:
    async with httpx.AsyncClient(base_url=p.url, headers={"Authorization": f"Bearer {p.key}"}, timeout=20) as c:
        r = await c.request(method, path, **kw)
        r.raise_for_status()
        return r.json()


async def shown_messages(page: Any) -> list[tuple[str, str, str]]:
    return [
        (m["round"], m["persona"], m["text"])
        for m in await page.eval_on_selector_all(
            "#rounds .msg",
            "els => els.map(e => ({round: e.dataset.round, persona: e.dataset.persona,"
            " text: e.querySelector('.content').textContent}))",
        )
    ]


@pytest.mark.browser
async def test_console_live_discussion_drop_and_operator_view(browser: Any, platform: Platform) -> None:
    p = platform
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
    topic = 'Scale a chat service <img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    host, port = p.url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))  # the browser reaches the gateway through a relay the test can cut
    await proxy.start()
    try:
        await page.goto(f"http://127.0.0.1:{proxy.port}/")
        await shot(page, "sign-in", full=False)
        await page.fill("#api-key", p.key)
        await page.press("#api-key", "Enter")
        await page.wait_for_selector("#view-new:not([hidden])")
        await page.fill("#topic", topic)
        await page.click("#start-btn")

        # the three personas stream into their own bubbles and the round completes
        await page.wait_for_selector("#rounds .msg.streaming")
        await shot(page, "live-discussion-streaming")
        await page.wait_for_selector("#rounds .round.complete[data-round='1']", timeout=30000)
        shown = await shown_messages(page)
        assert [(r, who) for r, who, _ in shown] == [("1", "Analyzer"), ("1", "Solver"), ("1", "Moderator")]
        assert await page.text_content("#topic-title") == topic
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator("#main img").count() == 0

        # ask for questions, answer them from the generated form
        await page.click("#actions [data-action=questions]")
        await page.wait_for_selector("#questions:not([hidden])", timeout=30000)
        n_questions = await page.locator("#questions-fields fieldset").count()
        assert n_questions >= 1
        for i in range(n_questions):
            await page.locator("#questions-fields fieldset").nth(i).locator("input").first.check()
        await shot(page, "questions-form")
        await page.click("#questions-form button[type=submit]")

        # drop the network while round 2 streams; it must recover with nothing missing or repeated
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#rounds .msg[data-round=\"2\"] .content')]"
            ".some(c => c.textContent.length > 40)",
            timeout=30000,
        )
        await context.set_offline(True)
        proxy.cut()
        await page.wait_for_selector("#conn-status[data-state=reconnecting]", timeout=10000)
        await asyncio.sleep(1.0)  # tokens keep flowing on the server meanwhile
        proxy.restore()
        await context.set_offline(False)
        await page.wait_for_selector("#conn-status[data-state=live]", timeout=30000)
        await page.wait_for_selector("#rounds .round.complete[data-round='2']", timeout=60000)
        await asyncio.sleep(0.5)  # let any straggling (duplicate) event arrive before comparing
        discussions = (await api(p, "GET", "/api/discussions"))["discussions"]
        did = next(d["id"] for d in discussions if d["topic"] == topic)
        stored = (await api(p, "GET", f"/api/discussions/{did}"))["messages"]
        expected = [(str(m.get("round")), m["persona"], m["content"]) for m in stored]
        assert await shown_messages(page) == expected
        assert [who for _, who, _ in expected][-3:] == ["Analyzer", "Solver", "Moderator"]
        assert await page.evaluate("window.__pwned") is None
        await shot(page, "live-discussion")

        # phone width
        await page.set_viewport_size({"width": 390, "height": 844})
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await shot(page, "phone-discussion", full=False)
        await page.set_viewport_size({"width": 1100, "height": 900})

        # an alert to acknowledge: a synthetic "budget exceeded" fact on the OPS stream crosses a default rule
        today = datetime.now(UTC).date().isoformat()
        ev = BudgetEvent(scope="global", day=today, kind="exceeded", spent_usd="10.5", limit_usd="10", percentage=105.0)
        await p.bus.publish_event(p.bus.catalog.ops("budget"), ev)
        for _ in range(100):
            alerts = (await api(p, "GET", "/api/alerts"))["alerts"]
            if any(a["rule"] == "budget_exceeded" and a["state"] == "firing" for a in alerts):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the budget_exceeded alert did not fire")

        await page.click("#nav [data-view=operator]")
        await page.wait_for_selector("#cost-chart svg rect[data-provider=simulated]", timeout=10000)
        assert await page.locator("#health-list li").count() >= 5
        assert await page.locator("#providers-table tbody tr[data-provider=simulated]").count() == 1
        assert await page.locator("#metrics-list dt", has_text=re.compile(r"^Latency P95 Ms$")).count() == 1
        item = page.locator("#alerts-list li", has_text="budget_exceeded")
        await shot(page, "operator-view")
        await item.locator("button.ack").click()
        await page.wait_for_selector("#alerts-list li:has-text('budget_exceeded') .acked")
        alerts = (await api(p, "GET", "/api/alerts"))["alerts"]
        assert any(a["rule"] == "budget_exceeded" and a["acknowledged"] for a in alerts)
        await page.set_viewport_size({"width": 390, "height": 844})
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await shot(page, "phone-operator", full=False)
        assert errors == []
    finally:
        await context.close()
        await proxy.stop()


@pytest.mark.browser
async def test_console_shows_a_discussion_stopped_elsewhere_as_finished(browser: Any, platform: Platform) -> None:
    """Stopped by another client: the console learns it from the stream's terminal event (no polling),
    says so, and its stream is closed for good (no reconnect)."""
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
        await page.fill("#topic", "Should the team adopt trunk-based development?")
        await page.click("#start-btn")
        await page.wait_for_selector("#rounds .round.complete[data-round='1']", timeout=30000)
        did = (await page.evaluate("location.hash")).split("/")[-1]
        assert (await api(p, "POST", f"/api/discussions/{did}/stop"))["status"] == "stopped"
        await page.wait_for_selector("#conn-status[data-state=ended]", timeout=10000)
        assert await page.text_content("#disc-status") == "stopped"
        assert await page.is_hidden("#actions")
        await asyncio.sleep(2.5)  # a reconnect (after the 2 s retry) would flip the state back
        assert await page.get_attribute("#conn-status", "data-state") == "ended"
        assert errors == []
    finally:
        await context.close()


async def run_cli(*args: str, stdin: str = "", timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adp_cli.main",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("ADP_")},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


async def test_terminal_client_discuss_costs_alerts(platform: Platform) -> None:
    p = platform
    conn = ["--url", p.url, "--key", p.key]
    # round 1 streams; then the prompt: free input -> round 2 (with the User message) -> stop
    rc, out, err = await run_cli(
        "discuss", "Plan a <b>migration</b>", *conn, "--color", "always", stdin="i\nKeep it cheap\nx\n"
    )
    assert rc == 0, err + out
    plain = out
    for code in ("\x1b[1;35m", "\x1b[1;34m", "\x1b[1;33m", "\x1b[1;90m"):  # Analyzer, Solver, Moderator, User
        assert code in out
        plain = plain.replace(code, "")
    plain = plain.replace("\x1b[0m", "").replace("\x1b[1m", "").replace("\x1b[2m", "").replace("\x1b[1;32m", "")
    assert "Topic: Plan a <b>migration</b>" in plain
    r1 = plain.index("── Round 1 ──")
    order = [plain.index(f"● {who}", r1) for who in ("Analyzer", "Solver", "Moderator")]
    assert order == sorted(order)
    assert plain.index("── round 1 complete ──") > order[-1]
    assert "Next? [p]roceed" in plain
    r2 = plain.index("── Round 2 ──")
    assert plain.index("● User", r2 - 200) < plain.index("● Analyzer", r2)
    assert "Keep it cheap" in plain[r2 - 200 :]
    assert "── round 2 complete ──" in plain
    assert "stopped discussion" in plain
    discussions = (await api(p, "GET", "/api/discussions"))["discussions"]
    d = next(d for d in discussions if d["topic"] == "Plan a <b>migration</b>")
    assert d["status"] == "stopped"
    # every stored message was printed exactly once
    stored = (await api(p, "GET", f"/api/discussions/{d['id']}"))["messages"]
    for m in stored:
        if m["persona"] == "User":  # also echoed once at the "Your input:" prompt
            assert plain.count("● User\n" + m["content"]) == 1
        else:
            assert plain.count(m["content"]) == 1, m["persona"]

    # --no-color (and not a TTY): no escape codes, no spinner
    rc, out, err = await run_cli("discuss", "A short second topic", *conn, "--no-color", "--auto", "--rounds", "1")
    assert rc == 0, err + out
    assert "\x1b" not in out
    assert "── round 1 complete ──" in out and "reached 1 round(s)" in out

    rc, out, err = await run_cli("costs", *conn)
    assert rc == 0, err
    assert "Budget today:" in out and "PROVIDER" in out and "simulated" in out and "DATE" in out

    rc, out, err = await run_cli("alerts-list", *conn, "--all")
    assert rc == 0, err
    assert out.startswith("ID") or out.startswith("no alerts")

    rc, out, err = await run_cli("costs", "--url", p.url, "--key", "wrong-key")
    assert rc == 1 and "UNAUTHORIZED" in err
