from __future__ import annotations

import pytest

from adp_common.settings import ConfigError, ServiceSettings, load_settings


def test_defaults_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ADP_NATS_URL", "ADP_SUBJECT_PREFIX", "ADP_HTTP_PORT"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(ServiceSettings)
    assert s.subject_prefix == "adp"
    assert s.nats_url.startswith("nats://")


def test_bad_variables_are_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ADP_HTTP_PORT", "not-a-port")
    monkeypatch.setenv("ADP_SUBJECT_PREFIX", "bad prefix!")
    with pytest.raises(ConfigError) as err:
        load_settings(ServiceSettings)
    message = str(err.value)
    assert "ADP_HTTP_PORT" in message
    assert "ADP_SUBJECT_PREFIX" in message
    assert "ADP_HTTP_PORT" in capsys.readouterr().err


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADP_DATABASE_URL", "postgresql://u:hunter2@db/x")
    s = load_settings(ServiceSettings)
    assert "hunter2" not in repr(s)
    assert s.database_url.get_secret_value().endswith("@db/x")
