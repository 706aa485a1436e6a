"""Exceptions raised to callers and handed to ``on_error``.

Two families:

* :class:`ArgumentError` is raised in the caller's thread when the API is
  misused (a missing ``user_id``, a wrong type). It names the field. It
  subclasses ``AssertionError`` (what analytics-python raised, so existing
  ``except`` clauses keep working) as well as ``TypeError`` and ``ValueError``.
* :class:`DeliveryError` is never raised to the caller: it is passed to
  ``on_error(exc, events)`` when events are dropped, and carries the HTTP
  ``status`` (or ``None``), the ``reason`` (a :class:`DropReason`), the
  network error ``kind`` where there was one, and the original exception.

Exception texts are redacted: a write key, its Basic form or a token echoed by
a server never appears in ``str(exc)``.
"""

from __future__ import annotations

from typing import Optional

from segment.analytics.logs import redact
from segment.analytics.retry import DropReason

__all__ = ["APIError", "ArgumentError", "DeliveryError", "DropReason"]


class ArgumentError(AssertionError, TypeError, ValueError):
    """A call was made with a missing or wrongly typed argument.

    ``field`` names the offending argument (for example ``"user_id"``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class APIError(Exception):
    """An error answer from the Tracking API (kept for analytics-python compatibility)."""

    def __init__(self, status: Optional[int], code: str, message: str, response: object = None) -> None:
        message = redact(message)
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.response = response

    def __str__(self) -> str:
        return f"[Segment] {self.code}: {self.message} ({self.status})"


class DeliveryError(APIError):
    """Why a group of events was dropped; the first argument of ``on_error``.

    Attributes: ``status`` (HTTP status or ``None``), ``reason`` (a
    :class:`DropReason`, equal to its string, e.g. ``"retries_exhausted"``),
    ``kind`` (the network error kind of the last failure: ``refused``,
    ``reset``, ``timeout``, ``dns``, ``tls``, ``other``, or ``None``),
    ``cause`` (the underlying exception, if any, also chained as
    ``__cause__``) and ``attempts`` (HTTP requests made for the batch).
    """

    def __init__(
        self,
        reason: DropReason,
        message: str,
        *,
        status: Optional[int] = None,
        cause: Optional[BaseException] = None,
        attempts: int = 0,
        kind: Optional[str] = None,
    ) -> None:
        super().__init__(status, reason.value, message)
        self.reason = reason
        self.cause = cause
        self.attempts = attempts
        self.kind = kind
        self.__cause__ = cause

    def __str__(self) -> str:
        status = "" if self.status is None else f" (status {self.status})"
        return f"[Segment] {self.reason}{status}: {self.message}"

    def __repr__(self) -> str:
        return f"DeliveryError(reason={self.reason.value!r}, status={self.status!r}, message={self.message!r})"
