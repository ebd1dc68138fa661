"""The service runtime's own instruments (in-process, real NATS)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from adp_common.service import ServiceRuntime, freeze_startup_heap
from adp_common.settings import ServiceSettings
from adp_testing.inproc import running_service


class NoApp:
    async def start(self, rt: ServiceRuntime) -> None:
        pass

    async def stop(self) -> None:
        pass


def lag_samples(rt: ServiceRuntime) -> tuple[float, float]:
    reg = rt.metrics.registry
    count = reg.get_sample_value("adp_event_loop_lag_seconds_count") or 0.0
    slow = count - (reg.get_sample_value("adp_event_loop_lag_seconds_bucket", {"le": "0.05"}) or 0.0)
    return count, slow


async def test_event_loop_stall_is_measured_and_logged(
    nats_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServiceSettings(nats_url=nats_url, subject_prefix=prefix, loop_stall_warn_ms=50)
    async with running_service("lagtest", settings, NoApp(), use_database=False) as rt:
        await asyncio.sleep(0.2)
        count, slow = lag_samples(rt)
        assert count > 0 and slow == 0  # an idle loop is on time
        with caplog.at_level(logging.WARNING, logger="adp.service"):
            time.sleep(0.3)  # a blocking call on the event loop
            await asyncio.sleep(0.2)
        count2, slow2 = lag_samples(rt)
        assert count2 > count and slow2 >= 1
        assert any("event loop stalled" in r.getMessage() for r in caplog.records)
        # the moving average (what the router's chunk interval follows) took the stall in: 250 ms of lag
        # weighted 1/40, then decaying; the gauge shows the same value
        stalled = rt.loop_lag_recent_s
        assert stalled > 0.003
        assert rt.metrics.registry.get_sample_value("adp_event_loop_lag_recent_seconds") == pytest.approx(stalled)
        await asyncio.sleep(1.0)
        assert rt.loop_lag_recent_s < stalled  # on time again: it decays


async def test_gc_pauses_are_measured_and_long_ones_logged(
    nats_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServiceSettings(nats_url=nats_url, subject_prefix=prefix, loop_stall_warn_ms=1)
    async with running_service("gctest", settings, NoApp(), use_database=False) as rt:
        reg = rt.metrics.registry

        def full_collections() -> float:
            return reg.get_sample_value("adp_gc_pause_seconds_count", {"generation": "2"}) or 0.0

        before = full_collections()
        # a heap of cycles big enough that a full collection takes over a millisecond
        garbage = [[] for _ in range(300_000)]
        for g in garbage:
            g.append(g)
        del garbage
        with caplog.at_level(logging.WARNING, logger="adp.service"):
            gc.collect()
        assert full_collections() >= before + 1
        assert any("garbage collection (generation 2)" in r.getMessage() for r in caplog.records)
    assert not any(cb.__qualname__.endswith("on_gc") for cb in gc.callbacks)  # removed at stop


def test_freeze_startup_heap_spaces_out_full_collections() -> None:
    before = gc.get_threshold()
    try:
        freeze_startup_heap(1000)
        assert gc.get_threshold() == (before[0], before[1], 1000)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
