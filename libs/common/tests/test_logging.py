from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from adp_common.logging import correlation_id, redact, redact_text, setup_logging


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer adp_abcdefghijklmnop", "adp_abcdefghijklmnop"),
        ("using key sk-proj-1234567890abcdef", "sk-proj-1234567890abcdef"),
        ("dsn postgresql://app:s3cretpw@db:5432/x", "s3cretpw"),
        ('{"api_key": "zzzzzzzzzz1"}', "zzzzzzzzzz1"),
        ("password=opensesame&user=x", "opensesame"),
    ],
)
def test_redact_text(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert "[REDACTED]" in out


def test_redact_structures_by_key() -> None:
    out = redact({"user": "ann", "token": "abc", "nested": {"Authorization": "Bearer x"}, "n": 3})
    assert out == {"user": "ann", "token": "[REDACTED]", "nested": {"Authorization": "[REDACTED]"}, "n": 3}


def test_json_lines_and_log_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("svc", "svc-1", level="INFO", log_dir=str(tmp_path), max_bytes=2048, backups=2)
    log = logging.getLogger("t")
    token = correlation_id.set("req-42")
    try:
        log.info("login with Bearer adp_secretsecretsecret", extra={"api_key": "adp_x1234567890", "user_id": "u1"})
        log.error("boom")
        for i in range(200):
            log.info("filler %d %s", i, "x" * 50)
    finally:
        correlation_id.reset(token)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    first = lines[0]
    assert first["service"] == "svc" and first["instance"] == "svc-1"
    assert first["correlation_id"] == "req-42"
    assert first["api_key"] == "[REDACTED]" and first["user_id"] == "u1"
    assert "adp_secretsecretsecret" not in first["message"]
    errors = (tmp_path / "error.log").read_text().splitlines()
    assert len(errors) == 1 and json.loads(errors[0])["message"] == "boom"
    # size-based rotation kept backups
    assert (tmp_path / "combined.log.1").exists()
    logging.getLogger().handlers.clear()
