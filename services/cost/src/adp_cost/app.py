"""The cost service shell: wires the usage consumer, budget tracker, bus handlers and metrics together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from prometheus_client import Counter, Gauge, Histogram

from adp_common.bus import RequestContext
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.cost import BudgetState, CostQuery, CostSummary, SetBudget
from adp_common.service import ServiceRuntime
from adp_cost import queries
from adp_cost.budget import GLOBAL, Clock, Evaluation, system_clock, user_scope
from adp_cost.ingest import BatchResult, LedgerIngestor
from adp_cost.pricing import NANOS_PER_USD, PriceConfigError, PriceTable, load_price_table
from adp_cost.settings import CostSettings
from adp_cost.store import LedgerRow
from adp_cost.tracker import BudgetTracker

log = logging.getLogger("adp.cost")


class CostApp:
    def __init__(
        self, settings: CostSettings, *, clock: Clock = system_clock, prices: PriceTable | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        try:
            self.prices = prices or load_price_table(settings.cost_prices_file, settings.cost_prices)
        except PriceConfigError as err:
            raise SystemExit(f"cost: invalid price configuration: {err}") from None
        self.rt: ServiceRuntime | None = None
        self.ingestor: LedgerIngestor | None = None
        self.tracker: BudgetTracker | None = None
        self._periodic: asyncio.Task[None] | None = None

    async def start(self, rt: ServiceRuntime) -> None:
        self.rt = rt
        assert rt.bus is not None and rt.pool is not None
        bus, pool, s = rt.bus, rt.pool, self.settings
        reg = rt.metrics.registry
        self.m_spend = Counter(
            "adp_cost_spend_usd", "Spend recorded by this copy (USD)", ["provider", "model"], registry=reg
        )
        self.m_records = Counter(
            "adp_cost_records", "Usage records processed (inserted, duplicate, rejected)", ["outcome"], registry=reg
        )
        self.m_budget = Gauge("adp_cost_budget_percentage", "Budget spent today (percent)", ["scope"], registry=reg)
        self.m_pending = Gauge(
            "adp_cost_consumer_pending", "Usage records not yet acked by the cost-ledger consumer", registry=reg
        )
        self.m_batch = Histogram(
            "adp_cost_batch_seconds",
            "Time to price, store and ack one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=reg,
        )

        self.tracker = BudgetTracker(bus, pool, s, self.clock, on_evaluation=self._on_evaluation)
        await self.tracker.start()
        self.ingestor = LedgerIngestor(
            bus,
            pool,
            self.prices,
            batch=s.cost_ingest_batch,
            workers=s.cost_ingest_workers,
            ack_wait_s=s.cost_ack_wait_s,
            on_batch=self._on_batch,
        )
        await self.ingestor.start()
        await bus.serve(bus.catalog.cost_query, self._query, CostQuery, name="query")
        await bus.serve(bus.catalog.cost_budget_set, self._set_budget, SetBudget, name="budget-set")
        self._periodic = asyncio.create_task(self._periodic_loop(), name="cost-periodic")

    async def stop(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._periodic
        if self.ingestor is not None:
            await self.ingestor.stop(self.settings.shutdown_grace_s)
        if self.tracker is not None:
            await self.tracker.stop()

    # ---- hooks ----------------------------------------------------------------------------------------------
    def _on_batch(self, result: BatchResult, rows: list[LedgerRow]) -> None:
        self.m_batch.observe(result.seconds)
        self.m_records.labels("inserted").inc(len(result.inserted))
        if result.duplicates:
            self.m_records.labels("duplicate").inc(result.duplicates)
        if result.rejected:
            self.m_records.labels("rejected").inc(result.rejected)
        if not result.inserted:
            return
        spend: dict[tuple[str, str], int] = defaultdict(int)
        for r in result.inserted:
            spend[(r.provider, r.model)] += r.cost_nusd
        for (provider, model), nusd in spend.items():
            if nusd:
                self.m_spend.labels(provider, model).inc(nusd / NANOS_PER_USD)
        assert self.tracker is not None
        self.tracker.mark(
            {r.day for r in result.inserted},
            {r.user_key for r in result.inserted if r.user_key},
            {r.key_key for r in result.inserted if r.key_key},
        )

    def _on_evaluation(self, ev: Evaluation) -> None:
        self.m_budget.labels(ev.scope).set(ev.percentage)

    async def _periodic_loop(self) -> None:
        assert self.tracker is not None and self.ingestor is not None
        while True:
            await asyncio.sleep(self.settings.cost_budget_refresh_s)
            try:
                await self.tracker.refresh_all()
                self.m_pending.set(await self.ingestor.pending())
            except Exception:
                log.exception("periodic budget refresh failed")

    # ---- bus handlers ---------------------------------------------------------------------------------------
    async def _query(self, q: CostQuery, _: RequestContext) -> CostSummary:
        assert self.rt is not None and self.rt.pool is not None and self.tracker is not None
        today = self.tracker.today()
        own = user_scope(q.user_id) if q.kind == "budget" and q.user_id else None
        evaluations = {ev.scope: ev for ev in await self.tracker.compute([GLOBAL] + ([own] if own else []), today)}
        try:
            return await queries.answer(
                self.rt.pool,
                q,
                today=today,
                global_budget=evaluations[GLOBAL],
                user_budget=evaluations.get(own) if own else None,
                row_limit=self.settings.cost_query_row_limit,
            )
        except PlatformError:
            raise
        except Exception as err:
            log.exception("cost query failed")
            raise PlatformError(ErrorCode.DATABASE_ERROR, "cost query failed") from err

    async def _set_budget(self, req: SetBudget, _: RequestContext) -> BudgetState:
        assert self.tracker is not None
        return await self.tracker.set_budget(req)
