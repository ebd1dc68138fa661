"""The llm-router service shell: wires bus handlers to the routing engine."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time

import aiohttp

from adp_common.bus import Bus, RequestContext
from adp_common.catalog import KV_BREAKERS, KV_BUDGET, KV_FAULTS, KV_LLM_RESULTS
from adp_common.clock import RepeatClock
from adp_common.schemas.llm import (
    BreakerStateName,
    CallOwnerQuery,
    CallOwnerReply,
    CancelCalls,
    CompletionRequest,
    CompletionResult,
    ModelInfo,
    ModelList,
    ProviderStatus,
    ProviderStatusList,
)
from adp_common.schemas.ops import BreakerChange, ProviderHealthEvent
from adp_common.service import ServiceRuntime
from adp_router.breaker import BreakerBoard, BreakerPolicy
from adp_router.budget import BudgetGate
from adp_router.callers import CallerWatch
from adp_router.calls import OnceCalls
from adp_router.config import RouterConfig, load_config
from adp_router.faults import FaultBook
from adp_router.health import HealthBoard
from adp_router.metrics import BREAKER_VALUE, RouterMetrics
from adp_router.providers import Provider, build_provider
from adp_router.providers.base import new_http_session
from adp_router.router import Router
from adp_router.settings import RouterSettings

log = logging.getLogger("adp.router.app")

KEEPALIVE_CHECKS = 8  # times per keepalive period the clock looks for calls due one (see RepeatClock)


class RouterApp:
    def __init__(self, settings: RouterSettings, config: RouterConfig | None = None) -> None:
        self.settings = settings
        self.config = config
        self.rt: ServiceRuntime | None = None
        self.router: Router | None = None
        self.client: aiohttp.ClientSession | None = None
        self.breakers: BreakerBoard | None = None
        self.budget: BudgetGate | None = None
        self.faults: FaultBook | None = None
        self.health = HealthBoard(settings.router_health_window_s)
        self.metrics: RouterMetrics | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._health_task: asyncio.Task[None] | None = None
        self.keepalives: RepeatClock | None = None  # every call's keepalive, on one clock
        self.callers: CallerWatch | None = None  # whether each streaming caller is still there

    async def start(self, rt: ServiceRuntime) -> None:
        self.rt = rt
        s = self.settings
        bus = rt.bus
        assert bus is not None
        self.keepalives = RepeatClock(s.router_keepalive_s, KEEPALIVE_CHECKS)
        config = self.config or load_config(s, os.environ)
        self.config = config
        self.metrics = RouterMetrics(rt.metrics.registry)
        self.client = new_http_session(s.router_max_connections)
        self.faults = FaultBook(await bus.kv(KV_FAULTS))
        await self.faults.start()
        providers = self._build_providers(config, self.client, self.faults)
        breakers, budget = await self._follow_shared_state(bus)
        for name in providers:
            self.metrics.breaker.labels(name).set(BREAKER_VALUE[breakers.state(name).state])
        self.router = Router(
            s,
            config,
            providers,
            bus=bus,
            breakers=breakers,
            budget=budget,
            health=self.health,
            metrics=self.metrics,
            loop_lag_s=lambda: rt.loop_lag_recent_s,
        )
        await self._serve(bus, rt, self.router)
        rt.checks.info["providers"] = sorted(config.providers)
        rt.checks.info["simulated_only"] = config.simulated_only
        self._health_task = asyncio.create_task(self._publish_health())
        log.info(
            "llm-router routing with providers %s%s",
            ", ".join(sorted(config.providers)),
            " (simulated only: no provider key configured)" if config.simulated_only else "",
        )

    def _build_providers(
        self, config: RouterConfig, client: aiohttp.ClientSession, faults: FaultBook
    ) -> dict[str, Provider]:
        s = self.settings
        return {
            name: build_provider(
                rp,
                client,
                connect_timeout=s.router_connect_timeout_s,
                default_max_tokens=s.router_default_max_tokens,
                simulated_ttft_s=s.simulated_ttft_ms / 1000,
                simulated_tokens_per_s=s.simulated_tokens_per_s,
                faults=faults.get,
            )
            for name, rp in config.providers.items()
        }

    async def _follow_shared_state(self, bus: Bus) -> tuple[BreakerBoard, BudgetGate]:
        """Breaker states and today's budgets, followed from their KV buckets (the budgets read once first)."""
        s = self.settings
        policy = BreakerPolicy(
            failure_threshold=s.breaker_failure_threshold,
            window_s=s.breaker_window_s,
            cooldown_s=s.breaker_cooldown_s,
            success_threshold=s.breaker_success_threshold,
        )
        self.breakers = breakers = BreakerBoard(await bus.kv(KV_BREAKERS), policy, on_change=self._breaker_changed)
        await breakers.start()
        self.budget = budget = BudgetGate(await bus.kv(KV_BUDGET))
        await budget.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(budget.synced.wait(), 5)
        return breakers, budget

    async def _serve(self, bus: Bus, rt: ServiceRuntime, router: Router) -> None:
        s = self.settings
        # one provider call per logical call: finished results kept (with a TTL) and replayed
        results = await bus.kv(KV_LLM_RESULTS, ttl=s.router_result_ttl_s)
        router.once = OnceCalls(bus, results, rt.instance)
        await bus.serve(bus.catalog.llm_call_owner(rt.instance), self._owner_query, CallOwnerQuery, name="call-owner")
        self.callers = CallerWatch(bus, s.router_caller_deadline_s, self._orphaned)
        await self.callers.start()
        # every copy hears every cancel (no queue group): only the copy running the call has it
        await bus.on_notice(bus.catalog.llm_cancel, CancelCalls, self._on_cancel)
        # an LLM call logs its own slow line (time to first token when streamed), not the bus call's length
        await bus.serve(
            bus.catalog.llm_complete, self._complete, CompletionRequest, name="complete", slow_log_kind=None
        )
        await bus.serve(bus.catalog.llm_models, self._models, None, name="models")
        await bus.serve(bus.catalog.llm_providers, self._providers, None, name="providers")

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        if self.keepalives is not None:
            self.keepalives.stop()
        # let in-flight calls finish before the HTTP client goes away
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.shutdown_grace_s)
        if self.breakers is not None:
            await self.breakers.stop()
        if self.budget is not None:
            await self.budget.stop()
        if self.faults is not None:
            await self.faults.stop()
        if self.client is not None:
            await self.client.close()

    # ---- handlers -----------------------------------------------------------------------------------
    async def _complete(self, req: CompletionRequest, _: RequestContext) -> CompletionResult:
        assert self.router is not None and self.keepalives is not None and self.rt is not None
        assert self.rt.bus is not None
        self._inflight += 1
        self._idle.clear()
        # so the caller can tell a slow provider from a dead router copy (and retry on another copy)
        subject = self.rt.bus.catalog.llm_stream(req.request_id)
        data = json.dumps({"request_id": req.request_id, "seq": -1, "keepalive": True}).encode()
        nc = self.rt.bus.nc
        token = None
        if req.stream and self.callers is not None:  # a streaming caller answers: its call stops when it is gone
            token = self.callers.watch(req.request_id)
            self.keepalives.add(req.request_id, functools.partial(self.callers.probe, token, nc, subject, data))
        else:
            self.keepalives.add(req.request_id, functools.partial(nc.publish, subject, data))
        try:
            return await self.router.complete(req)
        finally:
            self.keepalives.remove(req.request_id)
            if token is not None and self.callers is not None:
                self.callers.forget(token)
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _owner_query(self, q: CallOwnerQuery, _: RequestContext) -> CallOwnerReply:
        assert self.router is not None and self.router.once is not None
        return await self.router.once.owner_query(q)

    def _orphaned(self, request_id: str, why: str) -> None:
        if self.router is not None and self.router.inflight.cancel_orphan(request_id, why):
            assert self.metrics is not None
            self.metrics.orphaned.inc()
            log.warning("call %s stopped: %s", request_id, why)

    def _on_cancel(self, cancel: CancelCalls) -> None:
        if self.router is None:
            return
        if cancel.discussion_id:
            self.router.inflight.cancel_discussion(cancel.discussion_id, cancel.reason)
        if cancel.request_id:
            self.router.inflight.cancel_request(cancel.request_id, cancel.reason)

    async def _models(self, _: object, __: RequestContext) -> ModelList:
        assert self.config is not None
        out: list[ModelInfo] = []
        for name, rp in self.config.providers.items():
            sim = rp.config.kind == "simulated"
            if sim and not self.config.simulated_only and self.config.real_providers:
                pass  # still listed: explicit 'simulated/<persona>' routes always work
            for model in rp.config.models:
                out.append(
                    ModelInfo(id=model if sim else f"{name}/{model}", provider=name, simulated=sim, owned_by=name)
                )
        for route, chain in sorted(self.config.routes.items()):
            first = chain[0].provider if chain and not self.config.simulated_only else "simulated"
            out.append(
                ModelInfo(id=route, provider=first, simulated=first == "simulated", owned_by="adp", kind="route")
            )
        return ModelList(models=out)

    def provider_statuses(self) -> list[ProviderStatus]:
        assert self.config is not None and self.breakers is not None
        now = time.time()
        out = []
        for name, rp in self.config.providers.items():
            snap = self.health.snapshot(name, now)
            state = self.breakers.state(name).state
            out.append(
                ProviderStatus(
                    provider=name,
                    available=state != "open",
                    breaker=state,
                    success_rate=snap.success_rate,
                    requests=snap.requests,
                    latency_p50_ms=snap.latency_p50_ms,
                    latency_p95_ms=snap.latency_p95_ms,
                    simulated=rp.config.kind == "simulated",
                    models=list(rp.config.models),
                )
            )
        return out

    async def _providers(self, _: object, __: RequestContext) -> ProviderStatusList:
        return ProviderStatusList(providers=self.provider_statuses())

    # ---- events -------------------------------------------------------------------------------------
    async def _breaker_changed(self, provider: str, state: BreakerStateName, previous: BreakerStateName) -> None:
        assert self.rt is not None and self.rt.bus is not None and self.metrics is not None
        self.metrics.breaker.labels(provider).set(BREAKER_VALUE[state])
        log.warning("circuit breaker of %s: %s -> %s", provider, previous, state)
        bus = self.rt.bus
        await bus.publish_event(
            bus.catalog.ops("breaker"), BreakerChange(provider=provider, state=state, previous=previous)
        )

    async def _publish_health(self) -> None:
        assert self.rt is not None and self.rt.bus is not None
        bus = self.rt.bus
        while True:
            await asyncio.sleep(self.settings.router_health_interval_s)
            try:
                for st in self.provider_statuses():
                    if self.metrics is not None:
                        self.metrics.breaker.labels(st.provider).set(BREAKER_VALUE[st.breaker])
                    await bus.publish_event(
                        bus.catalog.ops("provider-health"),
                        ProviderHealthEvent(
                            provider=st.provider,
                            available=st.available,
                            success_rate=st.success_rate,
                            requests=st.requests,
                            latency_p50_ms=st.latency_p50_ms,
                            latency_p95_ms=st.latency_p95_ms,
                        ),
                    )
            except Exception as err:
                log.warning("provider health publish failed: %s", err)
