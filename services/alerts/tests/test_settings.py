"""Settings read from the environment."""

from __future__ import annotations

import pytest

from adp_alerts.settings import AlertsSettings


def test_settings_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADP_ALERTS_WEBHOOK_URLS", "http://a/hook, http://b/hook")
    monkeypatch.setenv("ADP_ALERTS_EXPECTED_SERVICES", '["gateway", "cost"]')
    monkeypatch.setenv("ADP_ALERTS_WEBHOOK_SECRET", "zz-very-secret-zz")
    s = AlertsSettings()
    assert s.alerts_webhook_urls == ["http://a/hook", "http://b/hook"]
    assert s.alerts_expected_services == ["gateway", "cost"]
    assert s.alerts_webhook_secret is not None and "very-secret" not in repr(s)
