"""Ledger: records priced and stored once, duplicates charged once, two copies agree, breakdowns add up."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from adp_common.schemas.cost import CostQuery, CostSummary
from adp_cost.pricing import load_price_table, nusd_to_usd

from .conftest import T0, CostEnv, make_record, random_records, run_cost


async def test_records_priced_and_stored(cost_env: CostEnv) -> None:
    recs = [
        make_record(provider="groq", model="llama-3.3-70b-versatile", input_tokens=1000, output_tokens=500),
        make_record(provider="mistral", model="brand-new-model", input_tokens=2000, output_tokens=1000),
        make_record(provider="simulated", model="sim", input_tokens=300, output_tokens=700, discussion_id="d1"),
        make_record(provider="nobody", model="x", input_tokens=10, output_tokens=10, status="error"),
    ]
    async with run_cost(cost_env) as app:
        await cost_env.publish(recs)
        await cost_env.wait_ledger(4)
        rows = {
            r["request_id"]: r
            for r in await (await cost_env.conn()).fetch(
                "SELECT request_id, cost_nusd, price_source, input_tokens, output_tokens, input_price, output_price,"
                " status, day, discussion_id FROM usage_ledger"
            )
        }
        g, m, s, u = (rows[r.request_id] for r in recs)
        assert g["cost_nusd"] == 1500 * 270  # 0.27 USD per 1M tokens = 270 nUSD per token
        assert g["price_source"] == "provider_default" and g["input_price"] == Decimal("0.27")
        assert m["cost_nusd"] == 2000 * 2500 + 1000 * 7500 and m["price_source"] == "provider_default"
        assert s["cost_nusd"] == 0 and (s["input_tokens"], s["output_tokens"]) == (300, 700)
        assert s["discussion_id"] == "d1"
        assert u["price_source"] == "unknown_provider" and u["status"] == "error"
        assert g["day"] == T0.date()
        t = await cost_env.totals()
        assert t["ledger"] == t["daily"] == 1500 * 270 + 2000 * 2500 + 1000 * 7500
        assert app.m_records.labels("inserted")._value.get() == 4


async def test_same_record_delivered_twice_is_charged_once(cost_env: CostEnv) -> None:
    rec = make_record(input_tokens=1000, output_tokens=1000)
    other = make_record(input_tokens=10, output_tokens=10)
    async with run_cost(cost_env) as app:
        # Different Nats-Msg-Ids so JetStream stores (and delivers) every copy; the ledger must still count one.
        await cost_env.publish([rec, rec, other], msg_ids=["a", "b", "c"])
        await cost_env.wait_ledger(2)
        await cost_env.publish([rec], msg_ids=["d"])  # a late redelivery after the first was committed

        async def all_seen() -> bool:
            return app.m_records.labels("duplicate")._value.get() >= 2

        from adp_common.bus import wait_for

        assert await wait_for(all_seen, 10)
        t = await cost_env.totals()
        assert t["ledger_rows"] == 2 and t["daily_requests"] == 2
        assert t["ledger"] == t["daily"] == 2000 * 270 + 20 * 270


async def test_two_copies_produce_the_same_ledger(cost_env: CostEnv) -> None:
    recs = random_records(4000, seed=11)
    prices = load_price_table(environ={})
    expected = sum(prices.price(r.provider, r.model, r.input_tokens, r.output_tokens).cost_nusd for r in recs)
    async with run_cost(cost_env, cost_ingest_batch=100) as a, run_cost(cost_env, cost_ingest_batch=100) as b:
        await cost_env.publish_fast(recs)
        await cost_env.wait_ledger(len(recs), timeout=60)
        t = await cost_env.totals()
        assert t["ledger_rows"] == len(recs) and t["daily_requests"] == len(recs)
        assert t["ledger"] == t["daily"] == expected
        assert t["disc"] == t["with_disc_cost"] and t["disc_requests"] == t["with_disc"]
        done_a = a.m_records.labels("inserted")._value.get()
        done_b = b.m_records.labels("inserted")._value.get()
        assert done_a + done_b == len(recs)
        assert done_a > 0 and done_b > 0, (done_a, done_b)


def _hand(recs: list, start: date, end: date) -> dict[str, dict[str, int]]:
    prices = load_price_table(environ={})
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in recs:
        d = r.time.date()
        if not (start <= d <= end):
            continue
        c = prices.price(r.provider, r.model, r.input_tokens, r.output_tokens).cost_nusd
        out["provider"][r.provider] += c
        out["model"][f"{r.provider}/{r.model}"] += c
        out["user"][r.user_id or "(none)"] += c
        if r.discussion_id:
            out["discussion"][r.discussion_id] += c
        out["daily"][f"{d}|{r.provider}"] += c
        out["total"]["all"] += c
        if r.user_id == "user1":
            out["user1"]["all"] += c
            out["user1_provider"][r.provider] += c
    return out


async def test_breakdowns_match_hand_computed_sums(cost_env: CostEnv) -> None:
    recs = random_records(600, seed=3, days=6)
    async with run_cost(cost_env):
        await cost_env.publish_fast(recs)
        await cost_env.wait_ledger(len(recs))
        start, end = T0.date() - timedelta(days=3), T0.date() - timedelta(days=1)
        hand = _hand(recs, start, end)

        async def q(**kw: object) -> CostSummary:
            return await cost_env.bus.request(
                cost_env.bus.catalog.cost_query,
                CostQuery(start_date=start, end_date=end, **kw),
                response_model=CostSummary,
            )

        def usd(d: dict[str, int]) -> dict[str, Decimal]:
            return {k: nusd_to_usd(v) for k, v in d.items()}

        for kind, key in [
            ("by_provider", "provider"),
            ("by_model", "model"),
            ("by_user", "user"),
            ("by_discussion", "discussion"),
        ]:
            res = await q(kind=kind)
            assert {r.key: r.cost_usd for r in res.rows} == usd(hand[key]), kind
            assert [r.cost_usd for r in res.rows] == sorted((r.cost_usd for r in res.rows), reverse=True)
        summary = await q(kind="summary", user_id="user1")
        assert {r.key: r.cost_usd for r in summary.costByProvider} == usd(hand["user1_provider"])
        assert summary.userCost == nusd_to_usd(hand["user1"]["all"])
        assert summary.budget is not None and summary.budget.limit == Decimal("10.000000000")
        full = await q(kind="summary")
        assert full.totalCost == nusd_to_usd(hand["total"]["all"])
        assert {f"{d.date}|{d.provider}": d.cost_usd for d in full.dailyCosts} == usd(hand["daily"])
        assert {d.date for d in full.dailyCosts} <= {start + timedelta(days=i) for i in range(3)}
        user = await q(kind="user", user_id="user1")
        assert user.userCost == nusd_to_usd(hand["user1"]["all"])
        limited = await q(kind="by_model", limit=2)
        assert len(limited.rows) == 2
        # default range: the 30 days ending "today" (the injected clock) covers everything
        default = await cost_env.bus.request(
            cost_env.bus.catalog.cost_query, CostQuery(kind="by_provider"), response_model=CostSummary
        )
        everything = _hand(recs, T0.date() - timedelta(days=29), T0.date())
        assert {r.key: r.cost_usd for r in default.rows} == usd(everything["provider"])
        from adp_common.errors import ErrorCode, PlatformError

        try:
            await q(kind="user")
            raise AssertionError("expected a validation error")
        except PlatformError as err:
            assert err.code == ErrorCode.VALIDATION_ERROR
