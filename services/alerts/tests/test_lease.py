"""Lease decisions (pure): who leads, from the lease value and the clock."""

from __future__ import annotations

from adp_alerts.lease import LeaseValue, decide


def test_lease_decisions() -> None:
    assert decide(None, "a", 100) == "create"
    assert decide(LeaseValue("a", 90), "a", 100) == "renew"
    assert decide(LeaseValue("b", 110), "a", 100) == "follow"
    assert decide(LeaseValue("b", 100), "a", 100) == "takeover"
    assert LeaseValue.decode(LeaseValue("a", 1.5).encode()) == LeaseValue("a", 1.5)
    assert LeaseValue.decode(b"junk") is None
