"""Keeping secrets out of the ``segment`` logger's output (delivery.md §6)."""

from __future__ import annotations

import logging
import threading

_MIN_SECRET_LENGTH = 4
_REDACTED = "[REDACTED]"


class SecretFilter(logging.Filter):
    """Replaces every registered secret (write keys, OAuth tokens) in a record's message."""

    def __init__(self) -> None:
        super().__init__("segment")
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        """Start redacting ``secret`` (very short strings are ignored: they would mangle every line)."""
        if len(secret) >= _MIN_SECRET_LENGTH:
            with self._lock:
                self._secrets = self._secrets | {secret}

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place; never drops a record."""
        secrets = self._secrets
        if not secrets:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logging's problem, not ours
            return True
        redacted = self.redact(text)
        if redacted is not text:
            record.msg = redacted
            record.args = None
        return True

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced (the same object when there was none)."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text


_filter = SecretFilter()
logging.getLogger("segment").addFilter(_filter)


def redact(text: str) -> str:
    """``text`` with every registered secret (write keys, their Basic forms, tokens) replaced."""
    return _filter.redact(text)


def register_secret(secret: str) -> None:
    """Make sure ``secret`` never appears in a message logged on the ``segment`` logger."""
    _filter.add(secret)
