"""Webhook bodies and their signatures."""

from __future__ import annotations

from adp_alerts.notify import render_body, sign, verify
from adp_common.envelope import utcnow
from adp_common.schemas.alerts import AlertEvent


def test_signature_round_trip() -> None:
    ev = AlertEvent(id="x", rule="r", subject="s", severity="info", state="firing", message="m", started_at=utcnow())
    body = render_body("firing", ev, "x:firing:webhook:u").encode()
    header = sign("s3cret", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify("s3cret", body, header)
    assert not verify("other", body, header)
    assert not verify("s3cret", body + b" ", header)
    assert not verify("s3cret", body, None)
