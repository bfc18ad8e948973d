"""Structured logs: one JSON object per line, an event name plus fields. Known secrets are
replaced by *** in every line, whatever logged them."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_logger = logging.getLogger("pgpulse")
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """A value that must never appear in a log line (tokens, CRON_SECRET, passwords)."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    # longest first: a secret containing another is replaced whole
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def scrub(value: Any) -> Any:
    """`value` with every known secret replaced, strings inside dicts and lists too.

    Runs before JSON encoding: once encoded, a secret holding `"`, `\\` or non-ASCII
    characters is escaped and no longer matches its registered text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {scrub(key): scrub(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [scrub(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(scrub(entry))


class Throttle(logging.Filter):
    """At most `burst` lines of one kind per `window_s`: a flood of bad requests or of one
    failing retry loop must not fill the disk. A kind is the event name (pgpulse) or the
    message template (other libraries); pgpulse's info lines are never throttled. The first
    line after a throttled window says how many were left out."""

    def __init__(self, burst: int = 50, window_s: float = 10.0, clock=time.monotonic) -> None:
        super().__init__()
        self.burst, self.window_s, self.clock = burst, window_s, clock
        self.kinds: dict[tuple[str, str], list] = {}  # kind -> [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pgpulse") and record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg))
        now = self.clock()
        state = self.kinds.get(kind)
        if state is None or now - state[0] >= self.window_s:
            dropped = state[2] if state else 0
            if len(self.kinds) > 1000:  # bounded: messages may carry variable text
                self.kinds.clear()
            self.kinds[kind] = [now, 1, 0]
            if dropped:
                record.fields = {**getattr(record, "fields", {}), "suppressed_before": dropped}
            return True
        state[1] += 1
        if state[1] <= self.burst:
            return True
        state[2] += 1
        return False


def setup(level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Throttle())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    _logger.setLevel(level.upper())


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    if _logger.isEnabledFor(level):
        _logger.log(level, name, extra={"fields": fields})


def warning(name: str, **fields: Any) -> None:
    event(name, logging.WARNING, **fields)


def error(name: str, **fields: Any) -> None:
    event(name, logging.ERROR, **fields)
