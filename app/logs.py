"""Structured JSON logs with a request id and personal data redacted.

Every record leaves as one JSON line. Redaction is applied to the message and to every extra field,
so a personal ID number, a phone number, an e-mail address or a token that slips into a log call is
masked before it is written: the rule is in the formatter, not in each caller.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import sys
from typing import Any

import msgspec

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


# Keys whose values never reach a log, whatever they hold.
SENSITIVE_KEYS = re.compile(
    r"(personal_?id|pin|cccd|cmnd|national_?id|password|secret|token|authorization|cookie|"
    r"phone|email|birth|health|diagnos|record|address|full_?name|bhyt|insurance)",
    re.IGNORECASE,
)
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # JWTs and bearer credentials
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*"), "[jwt]"),
    (re.compile(r"(?i)(bearer\s+)[\w.~+/=-]+"), r"\1[redacted]"),
    # BHYT (health insurance) card numbers: 2 letters, a benefit level 1-5, 12 digits (before the digit runs below)
    (re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[1-5]\d{12}(?![A-Za-z0-9])"), "[bhyt]"),
    # 12-digit personal identification numbers and 9-digit old ID cards
    (re.compile(r"(?<!\d)\d{12}(?!\d)"), "[personal-id]"),
    (re.compile(r"(?<!\d)\d{9}(?!\d)"), "[id]"),
    # Vietnamese phone numbers: 0xxxxxxxxx or +84xxxxxxxxx
    (re.compile(r"(?<![\w])(?:\+?84|0)(?:[35789]\d{8})(?!\d)"), "[phone]"),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "[email]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(key: str, value: Any) -> Any:
    if SENSITIVE_KEYS.search(key):
        return "[redacted]"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(key, v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) in (9, 12):
            return "[id]"
        return value
    return redact(str(value))


_STANDARD = set(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = current_request_id()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact_value(key, value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return msgspec.json.encode(entry).decode()


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log repeats ours without route or request id
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("pgserver").setLevel(logging.WARNING)
