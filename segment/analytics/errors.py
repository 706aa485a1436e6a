"""Exceptions raised to callers and handed to ``on_error``.

Two families:

* :class:`ArgumentError` is raised in the caller's thread when the API is
  misused (a missing ``user_id``, a wrong type). It names the field. It
  subclasses ``AssertionError`` (what analytics-python raised, so existing
  ``except`` clauses keep working) as well as ``TypeError`` and ``ValueError``.
* :class:`DeliveryError` is never raised to the caller: it is passed to
  ``on_error(exc, events)`` when events are dropped, and carries the HTTP
  ``status`` (or ``None``), the ``reason`` and the original exception.
"""

from __future__ import annotations

from typing import Optional

# Reasons an accepted event can be dropped (SPEC 4).
NON_RETRYABLE_STATUS = "non_retryable_status"
RETRIES_EXHAUSTED = "retries_exhausted"
BACKOFF_DURATION_EXCEEDED = "backoff_duration_exceeded"
RATE_LIMIT_DURATION_EXCEEDED = "rate_limit_duration_exceeded"
QUEUE_FULL = "queue_full"
MESSAGE_TOO_LARGE = "message_too_large"
CLIENT_CLOSED = "client_closed"
CONFIGURATION_ERROR = "configuration_error"
INTERNAL_ERROR = "internal_error"


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
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.response = response

    def __str__(self) -> str:
        return f"[Segment] {self.code}: {self.message} ({self.status})"


class DeliveryError(APIError):
    """Why a group of events was dropped; the first argument of ``on_error``.

    Attributes: ``status`` (HTTP status or ``None``), ``reason`` (one of the
    reasons listed in SPEC 4, e.g. ``"retries_exhausted"``), ``cause`` (the
    underlying exception, if any, also chained as ``__cause__``) and
    ``attempts`` (HTTP requests made for the batch).
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: Optional[int] = None,
        cause: Optional[BaseException] = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(status, reason, message)
        self.reason = reason
        self.cause = cause
        self.attempts = attempts
        self.__cause__ = cause

    def __str__(self) -> str:
        status = "" if self.status is None else f" (status {self.status})"
        return f"[Segment] {self.reason}{status}: {self.message}"

    def __repr__(self) -> str:
        return f"DeliveryError(reason={self.reason!r}, status={self.status!r}, message={self.message!r})"
