"""Sending one batch: the loop that executes the retry policy's steps (``docs/delivery.md``).

:class:`BatchSender` makes one attempt at a time through a :class:`~segment.analytics.transport.Poster`,
turns what happened into an :data:`~segment.analytics.retry.Outcome`, asks
:meth:`RetryPolicy.next_step` what to do, and does it: deliver (reading per-event results), split on
413, drop, or wait (interruptibly). Each group of events is reported through ``settled`` the moment it
is delivered or dropped, so counters never lag behind the API. Its clock, sleep and random source are
parameters, so tests run the whole loop in microseconds.

``post``, ``APIError`` and ``DatetimeSerializer`` are analytics-python's names, kept for code that
imports them from here.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from segment.analytics import wire
from segment.analytics.auth import Auth, BasicAuth
from segment.analytics.compat import DatetimeSerializer, post
from segment.analytics.errors import APIError, DeliveryError
from segment.analytics.logs import redact
from segment.analytics.ratelimit import RateLimitGate
from segment.analytics.retry import (
    DELIVERED,
    RETRY,
    Answered,
    Deliver,
    Drop,
    DropReason,
    NoAnswer,
    NoAuth,
    Outcome,
    RetryPolicy,
    RetryState,
    Split,
    Step,
    parse_retry_after,
)
from segment.analytics.transport import NetworkError, Poster, Response

__all__ = ["APIError", "BatchResult", "BatchSender", "DatetimeSerializer", "RateLimitGate", "Settled", "post"]

log = logging.getLogger("segment")

#: Called as each group of a batch settles: ``(events, error or None if delivered, after a retry?)``.
Settled = Callable[[list[bytes], Optional[DeliveryError], bool], None]


@dataclass
class BatchResult:
    """What became of every event of one batch."""

    delivered: list[tuple[list[bytes], bool]] = field(default_factory=list)  # (events, after a retry)
    dropped: list[tuple[list[bytes], DeliveryError]] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)
    attempts: int = 0


class StatsSink(Protocol):
    """The counters the loop updates as it goes."""

    def request_sent(self, body_bytes: int) -> None:
        """One HTTP request."""

    def retry(self, cause: str) -> None:
        """One retry, by status or network error kind."""

    def network_error(self, kind: str) -> None:
        """One network error."""

    def rate_limited_wait(self) -> None:
        """One Retry-After wait."""


class _NoStats:
    def request_sent(self, body_bytes: int) -> None:
        pass

    def retry(self, cause: str) -> None:
        pass

    def network_error(self, kind: str) -> None:
        pass

    def rate_limited_wait(self) -> None:
        pass


class _Batch:
    """One batch in the loop: groups left to send, its retry state, the last failure, its result."""

    def __init__(self, items: list[bytes], settled: Optional[Settled]) -> None:
        self.work = [items] if items else []
        self.state = RetryState()
        self.result = BatchResult()
        self.settled = settled
        self.response: Optional[Response] = None
        self.cause: Optional[BaseException] = None
        self.kind: Optional[str] = None
        self.retry_after = 0.0  # the last usable Retry-After, in seconds

    def settle(self, events: list[bytes], error: Optional[DeliveryError]) -> None:
        after_retry = self.state.requests > 1
        if error is None:
            self.result.delivered.append((events, after_retry))
        else:
            self.result.dropped.append((events, error))
        if self.settled is not None:
            self.settled(events, error, after_retry)


class BatchSender:
    """Delivers batches of encoded events under a :class:`RetryPolicy`.

    ``clock`` is monotonic seconds, ``wall_clock`` is epoch seconds (for
    ``sentAt`` and HTTP-date Retry-After), ``sleep(seconds)`` returns ``False``
    when the wait was interrupted by shutdown, ``stopped()`` tells whether
    shutdown has begun, ``rand()`` is uniform in [0, 1).
    """

    def __init__(
        self,
        write_key: str,
        poster: Poster,
        policy: RetryPolicy,
        *,
        auth: Optional[Auth] = None,
        gzip: bool = False,
        gate: Optional[RateLimitGate] = None,
        stats: Optional[StatsSink] = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Optional[Callable[[float], bool]] = None,
        stopped: Callable[[], bool] = lambda: False,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.poster = poster
        self.auth: Auth = auth or BasicAuth(write_key)
        # whether 511 is retried must follow whether there is a token to clear
        self.policy = policy if policy.oauth == self.auth.oauth else _with_oauth(policy, self.auth.oauth)
        self.gzip = gzip
        self.gate = gate or RateLimitGate()
        self.stats: StatsSink = stats or _NoStats()
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep or _plain_sleep
        self.stopped = stopped
        self.rand = rand
        self.envelope = wire.Envelope(write_key)
        self._warned_retry_after = False
        self._warned_error_responses = False

    def envelope_size(self) -> int:
        """Bytes a body takes besides its events (see :meth:`wire.Envelope.size`)."""
        return self.envelope.size()

    # -- the loop -------------------------------------------------------------

    def send(self, items: list[bytes], settled: Optional[Settled] = None) -> BatchResult:
        """Deliver ``items`` (encoded events), retrying under the policy; never raises.

        ``settled`` hears of each group as soon as it is delivered or dropped. Events left over when
        shutdown interrupts a wait are returned as ``pending``.
        """
        batch = _Batch(items, settled)
        while batch.work:
            if self.stopped() or not self._wait_gate():
                break
            outcome = self._attempt(batch)
            if not self._execute(batch, outcome, self.policy.next_step(batch.state, outcome, self.rand())):
                break
        batch.result.pending = [event for group in batch.work for event in group]
        batch.result.attempts = batch.state.requests
        return batch.result

    def _wait_gate(self) -> bool:
        """Wait while the client is rate-limited; ``False`` if shutdown interrupted the wait."""
        while True:
            remaining = self.gate.wait_time(self.clock())
            if remaining <= 0:
                return True
            log.debug("rate-limited: waiting %.2fs before sending", remaining)
            if not self.sleep(remaining):
                return False

    def _attempt(self, batch: _Batch) -> Outcome:
        """Send the first group once and say what happened."""
        group = batch.work[0]
        batch.response, batch.cause, batch.kind = None, None, None
        try:
            authorization = self.auth.header()
        except Exception as exc:  # noqa: BLE001 - e.g. the OAuth token endpoint failed
            status = getattr(exc, "status", None)
            batch.cause = exc
            log.debug("no Authorization header: %s", exc)
            unusable = getattr(exc, "final", False) is True
            return NoAuth(status if isinstance(status, int) else None, self.clock(), unusable)
        headers = wire.headers(authorization, self.gzip, batch.state.requests)
        body = self.envelope.body(group, self.wall_clock())
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request body: %s", self.envelope.redacted(body))
        payload = wire.gzip(body) if self.gzip else body
        sent_at = self.clock()
        self.stats.request_sent(len(payload))
        batch.state = batch.state.sent()
        try:
            response = self.poster.post(payload, headers)
        except Exception as exc:  # noqa: BLE001 - whatever the poster raised is a failed request
            batch.kind = exc.kind if isinstance(exc, NetworkError) else "other"
            batch.cause = exc.cause if isinstance(exc, NetworkError) else exc
            if batch.kind != "configuration":
                self.stats.network_error(batch.kind)
            log.debug("request %d: network error (%s): %s", batch.state.requests, batch.kind, batch.cause)
            return NoAnswer(batch.kind, self.clock())
        now = self.clock()
        batch.response = response
        status = response.status
        log.debug("request %d: status %d", batch.state.requests, status)
        if self.auth.oauth and status in (401, 403, 511):
            self.auth.invalidate()
        rate_limit = None
        if self.policy.classify(status).action == RETRY:
            header = response.headers.get("Retry-After")
            retry_after = parse_retry_after(header, self.wall_clock())
            if retry_after.malformed and not self._warned_retry_after:
                self._warned_retry_after = True
                log.warning("ignoring unparsable Retry-After header %r", redact(str(header))[:64])
            if retry_after.delay is not None:
                # the wait is until the shared gate opens, which another consumer may have pushed further out;
                # the gate closes only if the policy accepts the wait (a batch it drops holds nobody back)
                rate_limit = self.gate.preview(now, retry_after.delay)
                batch.retry_after = retry_after.delay
        if rate_limit is None:
            self.gate.release(sent_at)
        return Answered(status, now, len(group), rate_limit)

    def _execute(self, batch: _Batch, outcome: Outcome, step: Step) -> bool:
        """Carry out ``step`` for the first group; ``False`` when shutdown interrupted a wait."""
        batch.state = step.state
        group = batch.work[0]
        if isinstance(step, Deliver):
            return self._deliver(batch, outcome)
        if isinstance(step, Split):
            half = len(group) // 2
            batch.work[0:1] = [group[:half], group[half:]]
            log.debug("413 for %d events: sending them in two halves", len(group))
            return True
        if isinstance(step, Drop):
            batch.work.pop(0)
            batch.settle(group, self._error(batch, step, outcome))
            return True
        self.stats.retry(str(outcome.status) if isinstance(outcome, Answered) else (batch.kind or "auth"))
        if step.rate_limited:
            self.gate.limit(outcome.at, batch.retry_after)
            self.stats.rate_limited_wait()
            return True  # the shared gate makes every consumer wait before the next send
        log.debug("retry %d of %d in %.2fs", step.state.retries, self.policy.max_retries, step.seconds)
        return self.sleep(step.seconds)

    def _deliver(self, batch: _Batch, outcome: Outcome) -> bool:
        """Settle a 2xx: the whole group, or per event when the body lists ``errorResponses``."""
        group = batch.work[0]
        response = batch.response
        verdicts = self._error_responses(response, len(group)) if response is not None else None
        if not verdicts:
            batch.work.pop(0)
            batch.settle(group, None)
            return True
        retry_status: Optional[int] = None
        retry_items: list[bytes] = []
        drops: dict[int, list[bytes]] = {}
        delivered: list[bytes] = []
        for index, event in enumerate(group):
            status = verdicts.get(index)
            action = DELIVERED if status is None else self.policy.classify(status).action
            if status is None or action == DELIVERED:
                delivered.append(event)
            elif action == RETRY:
                retry_status = status if retry_status is None else retry_status
                retry_items.append(event)
            else:
                drops.setdefault(status, []).append(event)
        if delivered:
            batch.settle(delivered, None)
        for status, events in drops.items():
            message = f"the API rejected these events with status {status}"
            batch.settle(events, self._make_error(DropReason.NON_RETRYABLE_STATUS, message, batch, status=status))
        if retry_status is None:
            batch.work.pop(0)
            return True
        batch.work[0] = retry_items
        retry_outcome = Answered(retry_status, outcome.at, len(retry_items))
        return self._execute(batch, retry_outcome, self.policy.next_step(batch.state, retry_outcome, self.rand()))

    def _error_responses(self, response: Response, size: int) -> Optional[dict[int, int]]:
        """Per-event statuses listed in a 2xx body (index -> status); warns once about unusable entries."""
        verdicts, ignored = wire.error_responses(response.body, size)
        if ignored and not self._warned_error_responses:
            self._warned_error_responses = True
            log.warning("ignored %d errorResponses entries with a missing status or an index out of range", ignored)
        return verdicts

    def _error(self, batch: _Batch, step: Drop, outcome: Outcome) -> DeliveryError:
        response = batch.response
        status = outcome.status
        if step.reason == DropReason.NON_RETRYABLE_STATUS and response is not None:
            return self._make_error(step.reason, _describe(response), batch, status=status)
        message = step.detail
        if step.reason == DropReason.CONFIGURATION_ERROR and batch.cause is not None:
            message = f"{message}: {batch.cause}"
        return self._make_error(step.reason, message, batch, status=status)

    def _make_error(self, reason: DropReason, message: str, batch: _Batch, *, status: Optional[int]) -> DeliveryError:
        cause = batch.cause
        response = batch.response
        if cause is None and response is not None and not 200 <= response.status <= 299:
            cause = APIError(response.status, "http_error", _describe(response), _redacted(response))
        error = DeliveryError(
            reason, message, status=status, cause=cause, attempts=batch.state.requests, kind=batch.kind
        )
        log.debug("dropping events: %s", error)  # the pipeline's drop summary logs drops at WARNING
        return error


def _with_oauth(policy: RetryPolicy, oauth: bool) -> RetryPolicy:
    return RetryPolicy(policy.max_retries, policy.max_total_backoff_duration, policy.max_rate_limit_duration, oauth)


def _describe(response: Response) -> str:
    """``HTTP <status>: <start of the body>``, with secrets redacted before the body is cut."""
    text = redact(response.body.decode("utf-8", "replace")).strip()
    return f"HTTP {response.status}" + (f": {text[:200]}" if text else "")


def _redacted(response: Response) -> Response:
    return response.redacted()


def _plain_sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True
