"""The retry policy as data: pure, no I/O, no clock of its own (``docs/delivery.md``).

Everything here is a function of its arguments. Each batch carries a frozen
:class:`RetryState`; after every attempt the loop in ``request.py`` hands the
policy the :data:`Outcome` and gets back one :data:`Step` (deliver, split,
drop with a :class:`DropReason`, or wait), the way urllib3's
``Retry.increment()`` returns the next ``Retry``. The loop only executes steps.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import NamedTuple, Optional, Union

DELIVERED = "delivered"
RETRY = "retry"
DROP = "drop"

#: Statuses retried although they are 4xx (delivery.md §3.1).
RETRYABLE_4XX = frozenset({408, 410, 429, 460})
#: 5xx statuses that are never retried.
NON_RETRYABLE_5XX = frozenset({501, 505})
#: Needs a new OAuth token: retried only when OAuth is configured.
NETWORK_AUTH_REQUIRED = 511

#: Network error kinds reported in ``stats()["network_errors"]``.
NETWORK_ERROR_KINDS = ("refused", "reset", "timeout", "dns", "tls", "other")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0
JITTER_FRACTION = 0.1
RETRY_AFTER_CAP = 300.0

#: Longest delay-seconds Retry-After read as a number; longer is treated as unparsable.
RETRY_AFTER_MAX_DIGITS = 18

DEFAULT_MAX_RETRIES = 10
DEFAULT_MAX_TOTAL_BACKOFF_DURATION = 43200.0
DEFAULT_MAX_RATE_LIMIT_DURATION = 1800.0


class DropReason(str, enum.Enum):
    """Why accepted events were dropped: the only reasons the library reports (``DeliveryError.reason``).

    Members compare equal to their string values (``DropReason.QUEUE_FULL == "queue_full"``).
    """

    NON_RETRYABLE_STATUS = "non_retryable_status"
    RETRIES_EXHAUSTED = "retries_exhausted"
    BACKOFF_DURATION_EXCEEDED = "backoff_duration_exceeded"
    RATE_LIMIT_DURATION_EXCEEDED = "rate_limit_duration_exceeded"
    QUEUE_FULL = "queue_full"
    MESSAGE_TOO_LARGE = "message_too_large"
    CLIENT_CLOSED = "client_closed"
    CONFIGURATION_ERROR = "configuration_error"
    STORAGE_FULL = "storage_full"
    STORAGE_EXPIRED = "storage_expired"
    STORAGE_CORRUPT = "storage_corrupt"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class Verdict:
    """What to do with a batch after one attempt: ``action`` is delivered, retry or drop."""

    action: str
    reason: Optional[DropReason] = None


_DELIVERED = Verdict(DELIVERED)
_RETRY = Verdict(RETRY)
_DROP_STATUS = Verdict(DROP, DropReason.NON_RETRYABLE_STATUS)
_DROP_CONFIG = Verdict(DROP, DropReason.CONFIGURATION_ERROR)


def classify_status(status: int, oauth: bool = False) -> Verdict:
    """Classify a final HTTP status code (delivery.md §3.1).

    2xx is delivered; 408, 410, 429, 460 and every 5xx except 501 and 505 are
    retried (511 only when ``oauth`` is configured); everything else,
    including 1xx, 3xx and codes outside 100-599, is dropped.
    """
    if 200 <= status <= 299:
        return _DELIVERED
    if 400 <= status <= 499:
        return _RETRY if status in RETRYABLE_4XX else _DROP_STATUS
    if 500 <= status <= 599:
        if status in NON_RETRYABLE_5XX:
            return _DROP_STATUS
        if status == NETWORK_AUTH_REQUIRED:
            return _RETRY if oauth else _DROP_STATUS
        return _RETRY
    return _DROP_STATUS


def classify_network_error(kind: str) -> Verdict:
    """Network errors of every kind are retried; a configuration error is dropped at once."""
    if kind == "configuration":
        return _DROP_CONFIG
    return _RETRY


def backoff_delay(retry: int, rand: float) -> float:
    """Seconds to wait before counted retry ``retry`` (1, 2, ...), delivery.md §3.3.

    ``min(60, 0.5 * 2**(retry-1))`` plus jitter of up to 10% of that delay,
    where ``rand`` is uniform in [0, 1). Never negative, never above 60 s.
    """
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    exponent = min(retry - 1, 16)  # 0.5 * 2**16 is far past the cap; avoids huge floats
    base = min(BACKOFF_CAP, BACKOFF_BASE * (2.0**exponent))
    rand = min(max(rand, 0.0), 1.0)
    return min(BACKOFF_CAP, base + base * JITTER_FRACTION * rand)


class RetryAfter(NamedTuple):
    """A parsed Retry-After header: ``delay`` in seconds (``None`` = treat as absent).

    ``malformed`` is true when a value was present but could not be parsed, so
    the caller can warn (once) about it.
    """

    delay: Optional[float]
    malformed: bool = False


_ABSENT = RetryAfter(None)


def parse_retry_after(value: Optional[str], now_wall: float) -> RetryAfter:
    """Parse a Retry-After value (delivery.md §3.4): integer seconds or an HTTP-date.

    ``now_wall`` is the current wall-clock time (``time.time()``), used only
    for HTTP-dates. The delay is capped at 300 s. Absent, ``0``, negative and
    past values are treated as absent; anything unparsable is treated as
    absent and flagged ``malformed``, and so is a number of more than
    :data:`RETRY_AFTER_MAX_DIGITS` digits.
    """
    if value is None:
        return _ABSENT
    text = value.strip()
    if not text:
        return _ABSENT
    sign = text[0] in "+-"
    digits = text[1:] if sign else text
    if digits.isdigit() and digits.isascii():
        if len(digits.lstrip("0")) > RETRY_AFTER_MAX_DIGITS:
            return RetryAfter(None, True)  # absurdly long: unparsable, and never a huge int conversion
        seconds = int(digits)
        if text[0] == "-" or seconds == 0:
            return _ABSENT
        return RetryAfter(min(float(seconds), RETRY_AFTER_CAP))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return RetryAfter(None, True)
    if when is None:  # some Python versions return None instead of raising
        return RetryAfter(None, True)
    if when.tzinfo is None:  # "-0000" means UTC with unknown origin zone
        when = when.replace(tzinfo=timezone.utc)
    try:
        delay = when.timestamp() - now_wall
    except (OverflowError, OSError, ValueError):
        return RetryAfter(None, True)
    if not math.isfinite(delay) or delay <= 0:
        return _ABSENT
    return RetryAfter(min(delay, RETRY_AFTER_CAP))


# -- one batch's state, the outcomes of an attempt, and the steps ---------------------------------


@dataclass(frozen=True)
class RetryState:
    """Where one batch stands: requests made, counted retries spent, when it first failed (monotonic)."""

    requests: int = 0
    retries: int = 0
    first_failure: Optional[float] = None

    def sent(self) -> RetryState:
        """The state after one more request (its ``X-Retry-Count`` was ``requests``)."""
        return replace(self, requests=self.requests + 1)


@dataclass(frozen=True)
class Answered:
    """The API answered ``status`` for a group of ``events``, at monotonic time ``at``.

    ``rate_limit`` is ``(episode_start, wait)`` when a retryable answer carried a usable Retry-After:
    when the client's rate-limit episode began and how long until the client may send again.
    """

    status: int
    at: float
    events: int = 1
    rate_limit: Optional[tuple[float, float]] = None


@dataclass(frozen=True)
class NoAnswer:
    """No HTTP answer: a network error of ``kind`` (or ``configuration``)."""

    kind: str
    at: float

    @property
    def status(self) -> Optional[int]:
        """Always ``None``: there was no HTTP status."""
        return None


@dataclass(frozen=True)
class NoAuth:
    """No Authorization header could be had; ``status`` is the token endpoint's answer, if any.

    ``unusable`` says the credentials cannot work whatever the endpoint does (a key that cannot sign).
    """

    status: Optional[int]
    at: float
    unusable: bool = False

    @property
    def final(self) -> bool:
        """Retrying won't help: unusable credentials, or a 4xx other than 408/429 from the token endpoint."""
        rejected = self.status is not None and 400 <= self.status <= 499 and self.status not in (408, 429)
        return self.unusable or rejected


Outcome = Union[Answered, NoAnswer, NoAuth]


@dataclass(frozen=True)
class Deliver:
    """The group was delivered (a 2xx; per-event results are read by the loop)."""

    state: RetryState


@dataclass(frozen=True)
class Split:
    """413 on a group of several events: send each half (no retry spent)."""

    state: RetryState


@dataclass(frozen=True)
class Drop:
    """Give the group up and report it with ``reason``; ``detail`` says why in words."""

    reason: DropReason
    detail: str
    state: RetryState


@dataclass(frozen=True)
class Wait:
    """Retry after ``seconds``; ``rate_limited`` waits are spent at the client's shared gate."""

    seconds: float
    rate_limited: bool
    state: RetryState


Step = Union[Deliver, Split, Drop, Wait]


def _check_budget(name: str, value: object) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if math.isnan(value) or value < 0 or (name == "max_retries" and math.isinf(value)):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """The three budgets of delivery.md §3.3/§3.4 and whether OAuth is configured.

    Construction validates the budgets: ``None`` or a negative value raises
    ``ValueError``; ``0`` means "no retry of that kind".
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    max_total_backoff_duration: float = DEFAULT_MAX_TOTAL_BACKOFF_DURATION
    max_rate_limit_duration: float = DEFAULT_MAX_RATE_LIMIT_DURATION
    oauth: bool = False

    def __post_init__(self) -> None:
        retries = _check_budget("max_retries", self.max_retries)
        if retries != int(retries):
            raise ValueError(f"max_retries must be a whole number, got {self.max_retries!r}")
        _check_budget("max_total_backoff_duration", self.max_total_backoff_duration)
        _check_budget("max_rate_limit_duration", self.max_rate_limit_duration)

    def classify(self, status: int) -> Verdict:
        """Classify a status with this policy's OAuth setting."""
        return classify_status(status, self.oauth)

    def may_retry(self, retry: int) -> bool:
        """Whether counted retry number ``retry`` (1, 2, ...) is within ``max_retries``."""
        return retry <= self.max_retries

    def backoff_fits(self, first_failure: float, now: float, delay: float) -> bool:
        """Whether a wait of ``delay`` from ``now`` ends within the total backoff budget."""
        return (now + delay) - first_failure <= self.max_total_backoff_duration and self.max_total_backoff_duration > 0

    def rate_limit_fits(self, episode_start: float, now: float, delay: float) -> bool:
        """Whether a Retry-After wait of ``delay`` ends within the rate-limit budget."""
        return self.max_rate_limit_duration > 0 and (now + delay) - episode_start <= self.max_rate_limit_duration

    def next_step(self, state: RetryState, outcome: Outcome, rand: float = 0.0) -> Step:
        """What to do with a batch after one attempt (``rand`` is uniform in [0, 1), for the jitter).

        Every retryable failure starts budget 2's clock (the batch's first failure); a Retry-After
        wait is checked against budget 3 and spends no counted retry; anything else spends one.
        """
        if isinstance(outcome, Answered):
            action = self.classify(outcome.status).action
            if action == DELIVERED:
                return Deliver(state)
            if outcome.status == 413 and outcome.events > 1:
                return Split(state)
            if action == DROP:
                return Drop(DropReason.NON_RETRYABLE_STATUS, f"HTTP {outcome.status}", state)
        elif isinstance(outcome, NoAnswer):
            if classify_network_error(outcome.kind).action == DROP:
                return Drop(DropReason.CONFIGURATION_ERROR, "cannot send to the configured host", state)
        elif outcome.final:
            if outcome.status is None:
                return Drop(DropReason.CONFIGURATION_ERROR, "the OAuth credentials cannot be used", state)
            return Drop(DropReason.CONFIGURATION_ERROR, f"the OAuth token endpoint answered {outcome.status}", state)
        first_failure = outcome.at if state.first_failure is None else state.first_failure
        state = replace(state, first_failure=first_failure)
        if isinstance(outcome, Answered) and outcome.rate_limit is not None:
            episode_start, wait = outcome.rate_limit
            if not self.rate_limit_fits(episode_start, outcome.at, wait):
                budget = self.max_rate_limit_duration
                detail = f"Retry-After wait {wait:g}s does not fit max_rate_limit_duration ({budget:g}s)"
                return Drop(DropReason.RATE_LIMIT_DURATION_EXCEEDED, detail, state)
            return Wait(wait, True, state)
        retries = state.retries + 1
        if not self.may_retry(retries):
            return Drop(DropReason.RETRIES_EXHAUSTED, f"gave up after {state.requests} attempt(s)", state)
        delay = backoff_delay(retries, rand)
        if not self.backoff_fits(first_failure, outcome.at, delay):
            detail = f"the next retry would end past max_total_backoff_duration ({self.max_total_backoff_duration:g}s)"
            return Drop(DropReason.BACKOFF_DURATION_EXCEEDED, detail, state)
        return Wait(delay, False, replace(state, retries=retries))
