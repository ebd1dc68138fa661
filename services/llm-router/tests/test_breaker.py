"""Circuit-breaker decisions: opening, the failure window, half-open probes, closing."""

from __future__ import annotations

from adp_common.schemas.llm import BreakerState
from adp_router.breaker import BreakerPolicy, admit, on_failure, on_success

P = BreakerPolicy(failure_threshold=5, window_s=60, cooldown_s=30, success_threshold=2)


def test_breaker_opens_on_fifth_failure_within_window() -> None:
    st = BreakerState(provider="p")
    for i in range(4):
        st = on_failure(st, 100.0 + i, P)
        assert st.state == "closed"
    st = on_failure(st, 104.0, P)
    assert st.state == "open" and st.opened_at == 104.0
    assert admit(st, 120.0, P) == (False, None)


def test_breaker_old_failures_fall_out_of_window() -> None:
    st = BreakerState(provider="p")
    for t in (0.0, 1.0, 2.0, 3.0):
        st = on_failure(st, t, P)
    st = on_failure(st, 70.0, P)  # the first four are older than 60 s
    assert st.state == "closed"
    assert len(st.failures) == 1


def test_breaker_half_open_after_cooldown_then_closes_after_two_successes() -> None:
    st = BreakerState(provider="p", state="open", opened_at=100.0, failures=[100.0] * 5)
    ok, new = admit(st, 129.9, P)
    assert not ok and new is None
    ok, new = admit(st, 130.0, P)
    assert ok and new is not None and new.state == "half_open"
    one = on_success(new, 131.0, P)
    assert one is not None and one.state == "half_open" and one.successes_in_half_open == 1
    two = on_success(one, 132.0, P)
    assert two is not None and two.state == "closed" and two.failures == []


def test_breaker_half_open_failure_reopens() -> None:
    st = BreakerState(provider="p", state="half_open", opened_at=100.0, successes_in_half_open=1)
    again = on_failure(st, 140.0, P)
    assert again.state == "open" and again.opened_at == 140.0


def test_success_when_closed_writes_nothing() -> None:
    assert on_success(BreakerState(provider="p", failures=[1.0]), 2.0, P) is None
