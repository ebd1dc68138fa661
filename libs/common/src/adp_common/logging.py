"""Structured JSON logs with service name, trace id and correlation id; secrets redacted.

With ADP_LOG_DIR set, logs also go to `error.log` (errors only) and `combined.log` there, rotated by size.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authorization|credential|cookie)", re.I)
_SECRET_PATTERNS = [
    # Bearer tokens and API keys in free text
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1[REDACTED]"),
    (re.compile(r"\b(sk|adp|gsk|pk)[-_][A-Za-z0-9_-]{8,}"), "[REDACTED]"),
    # password in URLs: scheme://user:secret@host
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1[REDACTED]@"),
    # key=value / "key": "value" forms
    (
        re.compile(r"(?i)((?:pass(?:word)?|secret|token|api[_-]?key)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}&]+"),
        r"\1[REDACTED]",
    ),
]


def redact_text(text: str) -> str:
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    if key is not None and _SECRET_KEYS.search(key) and value not in (None, ""):
        return "[REDACTED]"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


slow_log = logging.getLogger("adp.slow")
_slow_threshold_s: float | None = 2.0


def set_slow_threshold(ms: float) -> None:
    """Operations taking `ms` or longer are logged by `log_slow` (0 turns the log off)."""
    global _slow_threshold_s
    _slow_threshold_s = ms / 1000 if ms > 0 else None


def log_slow(kind: str, operation: str, elapsed_s: float, **fields: Any) -> bool:
    """One WARNING line `slow <kind> <operation> took N ms` (with the correlation id of the context) when
    `elapsed_s` reaches the threshold (ADP_SLOW_OPERATION_MS). `kind`: request, bus or llm."""
    if _slow_threshold_s is None or elapsed_s < _slow_threshold_s:
        return False
    ms = round(elapsed_s * 1000, 1)
    slow_log.warning(
        "slow %s %s took %.0f ms",
        kind,
        operation,
        ms,
        extra={"event": "slow_operation", "kind": kind, "operation": operation, "duration_ms": ms, **fields},
    )
    return True


_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, instance: str = "") -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        from adp_common.telemetry import current_trace_id

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "instance": self.instance,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        trace_id = current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        cid = correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                entry[key] = redact(value, key)
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def setup_logging(
    service: str,
    instance: str = "",
    *,
    level: str = "INFO",
    log_dir: str | None = None,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 5,
    slow_operation_ms: float = 2000.0,
) -> None:
    set_slow_threshold(slow_operation_ms)
    formatter = JsonFormatter(service, instance)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(formatter)
    root.addHandler(stdout)
    if log_dir:
        path = Path(log_dir)
        path.mkdir(parents=True, exist_ok=True)
        combined = RotatingFileHandler(path / "combined.log", maxBytes=max_bytes, backupCount=backups)
        combined.setFormatter(formatter)
        errors = RotatingFileHandler(path / "error.log", maxBytes=max_bytes, backupCount=backups)
        errors.setLevel(logging.ERROR)
        errors.setFormatter(formatter)
        root.addHandler(combined)
        root.addHandler(errors)
    root.setLevel(level)
    for noisy in ("nats", "httpx", "httpcore", "uvicorn.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
