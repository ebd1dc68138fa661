"""Rate-limit windows and blocked clients."""

from __future__ import annotations

from adp_gateway.ratelimit import BlockedClients, LocalCounters, retry_after, window_index


def test_fixed_windows() -> None:
    assert window_index(119.9, 60) == 1 and window_index(120, 60) == 2
    assert retry_after(119.2, 60) == 1
    assert retry_after(60.0, 60) == 60
    lc = LocalCounters()
    assert lc.incr(["a", "b"], 1) == [1, 1]
    assert lc.incr(["a"], 1) == [2]
    assert lc.incr(["a"], 2) == [1]  # a new window starts from zero


def test_blocked_clients_expire_and_stay_bounded() -> None:
    blocked = BlockedClients(max_entries=2)
    blocked.block("a", 10, now=0)
    assert blocked.retry_after("a", now=2.5) == 8 and blocked.retry_after("b", now=0) == 0
    assert blocked.retry_after("a", now=10) == 0
    for c in ("a", "b", "c"):
        blocked.block(c, 10, now=20)
    assert blocked.retry_after("a", now=21) == 0 and blocked.retry_after("c", now=21) == 9
