"""Logging for the long-running commands: text or JSON lines on stderr, with secrets redacted.

Every record passes through one `Redactor` before it is formatted, whatever module logged it
(requests and urllib3 put URLs in their exception texts): a webhook URL carries its credential in
the path (Slack) or the query, so any URL in a log line is cut to scheme://host/…, and every
registered secret (DOCKDOC_WEBHOOK_SECRET, the path and query of each configured URL) becomes ***.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import sys
import threading
from urllib.parse import urlsplit

LOGGER_NAME = "dockdoc"
FORMATS = ("text", "json")
_URL = re.compile(r"""\b(https?)://([^\s/'"?#<>]+)([^\s'"<>]*)""")
# The attributes every LogRecord has; anything else came in through `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def redact_url(url: str) -> str:
    """scheme://host[:port]/… : enough to tell sinks apart in a log, nothing that authenticates."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    tail = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{netloc}{tail}"


class Redactor:
    """Replaces secrets and URL credentials in text. Thread-safe; secrets can be added at any time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._secrets: list[str] = []

    def add_secret(self, value: str | None) -> None:
        if not value or len(value) < 4:  # too short to replace without mangling ordinary words
            return
        with self._lock:
            if value not in self._secrets:
                self._secrets.append(value)
                self._secrets.sort(key=len, reverse=True)

    def add_url(self, url: str) -> None:
        """A configured URL: the whole of it, and its path and query on their own (as requests'
        `Max retries exceeded with url: /path?query` shows them) are secret."""
        self.add_secret(url)
        try:
            parts = urlsplit(url)
        except ValueError:
            return
        if parts.path not in ("", "/") or parts.query:
            tail = parts.path + (f"?{parts.query}" if parts.query else "")
            self.add_secret(tail)
        if parts.query:
            self.add_secret(parts.query)
        if parts.password:
            self.add_secret(parts.password)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
        with self._lock:
            secrets = list(self._secrets)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


REDACT = Redactor()


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = REDACT(message), None
        if record.exc_text:
            record.exc_text = REDACT(record.exc_text)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, REDACT(value))
        return True


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value if isinstance(value, (int, float, bool, type(None), list, dict)) else str(value))
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`2026-11-27T08:00:00Z info  message key=value ...`"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def setup(fmt: str = "text", level: str | int = "INFO", stream=None) -> logging.Logger:
    """Configure the root handler once: dockdoc's own logs at `level`, libraries at WARNING."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_dockdoc", False):
            root.removeHandler(old)
    handler._dockdoc = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level if isinstance(level, int) else level.upper())
    return logger


def get(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
