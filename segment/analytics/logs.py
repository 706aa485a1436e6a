"""Keeping secrets out of log lines and exception texts (docs/delivery.md §6).

A secret (a write key, its Basic value, an OAuth token, a proxy password) is registered with
:func:`register_secret`, which also registers the forms it takes when a server echoes it back or when
it is written inside other text: JSON-escaped (``\\uXXXX`` in either case, ``\\/``), URL-encoded
(``%XX`` in either case, ``+`` for spaces), HTML-escaped, inside a Python ``repr`` or ``ascii``, and its
UTF-8 bytes read as Latin-1 (how ``http.client`` decodes header values). Secrets shorter than four
characters are ignored: they would mangle every line.

A filter on the ``segment`` logger replaces every form in each record's message, in the traceback of a
``log.exception`` record and in its ``stack_info``. With nothing registered it returns at once;
otherwise it costs one substring search per registered form on the formatted message.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from typing import Optional
from urllib.parse import quote, quote_plus

__all__ = ["SecretFilter", "redact", "register_secret", "secret_forms", "trim_partial_secret"]

_MIN_SECRET_LENGTH = 4
_REDACTED = "[REDACTED]"
_UNICODE_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")
_TRACEBACKS = logging.Formatter()


def secret_forms(secret: str) -> set[str]:
    """``secret`` and the forms it takes escaped or encoded inside other text (none if it is too short)."""
    if len(secret) < _MIN_SECRET_LENGTH:
        return set()
    forms = {secret, html.escape(secret), repr(secret)[1:-1], ascii(secret)[1:-1], repr(secret.encode())[2:-1]}
    for ensure_ascii in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        forms.update((escaped, escaped.replace("/", "\\/"), _UNICODE_ESCAPE.sub(lambda m: m[0].upper(), escaped)))
    for quoted in (quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")):
        forms.update((quoted, _PERCENT_ESCAPE.sub(lambda m: m[0].lower(), quoted)))
    forms.add(secret.encode("utf-8").decode("latin-1"))
    return {form for form in forms if len(form) >= _MIN_SECRET_LENGTH}


class SecretFilter(logging.Filter):
    """Replaces every registered secret in a record's message, traceback and stack."""

    def __init__(self) -> None:
        super().__init__("segment")
        self._lock = threading.Lock()
        self._slots: dict[str, tuple[frozenset[str], ...]] = {}
        self._secrets: tuple[str, ...] = ()  # longest first, so a secret inside a longer one goes with it
        self._encoded: tuple[bytes, ...] = ()

    def add(self, secret: str, slot: Optional[str] = None) -> None:
        """Start redacting ``secret`` and its forms; a ``slot`` holds one secret (a new one replaces the last)."""
        forms = secret_forms(secret)
        if not forms:
            return
        with self._lock:
            slots = dict(self._slots)
            key = slot if slot is not None else f"secret:{secret}"
            held = slots.get(key, ())
            if held and held[-1] == forms:
                return
            # a slot keeps its previous secret too: another thread may still be logging an answer to it
            slots[key] = (*held[-1:], frozenset(forms))
            known = set().union(*(group for groups in slots.values() for group in groups))
            self._slots = slots
            self._secrets = tuple(sorted(known, key=len, reverse=True))
            self._encoded = tuple(form.encode("utf-8") for form in self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops a record."""
        if not self._secrets:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logging's problem, not ours
            return True
        redacted = self.redact(text)
        if redacted is not text:
            record.msg = redacted
            record.args = None
        if record.exc_info or record.exc_text or record.stack_info:
            self._redact_traceback(record)
        return True

    def _redact_traceback(self, record: logging.LogRecord) -> None:
        text = record.exc_text
        if not text and record.exc_info and record.exc_info[0] is not None:
            try:
                text = _TRACEBACKS.formatException(record.exc_info)
            except Exception:  # noqa: BLE001 - leave an unformattable exception to the handler
                text = None
        if text:
            redacted = self.redact(text)
            if redacted is not text:
                # the handler uses exc_text; without exc_info it cannot format the exception again
                record.exc_text = redacted
                record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced (the same object when there was none)."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    def trim_partial_secret(self, data: bytes) -> bytes:
        """``data`` (cut short) without a tail that could be the beginning of a registered secret."""
        cut = 0
        for secret in self._encoded:
            for length in range(min(len(secret) - 1, len(data)), cut, -1):
                if data.endswith(secret[:length]):
                    cut = length
                    break
        return data[: len(data) - cut] if cut else data


_filter = SecretFilter()
logging.getLogger("segment").addFilter(_filter)


def redact(text: str) -> str:
    """``text`` with every registered secret (write keys, their Basic forms, tokens) replaced."""
    return _filter.redact(text)


def register_secret(secret: str, slot: Optional[str] = None) -> None:
    """Make sure ``secret`` (in any of its :func:`secret_forms`) never appears in a ``segment`` log line.

    A ``slot`` names a secret that replaces itself, such as the current OAuth token of one client, so
    a long-lived process does not accumulate every token it ever had (the slot's previous secret is
    still redacted until the next replacement).
    """
    _filter.add(secret, slot)


def trim_partial_secret(data: bytes) -> bytes:
    """Drop a tail of ``data`` that could be the start of a registered secret cut off by a truncation."""
    return _filter.trim_partial_secret(data)
