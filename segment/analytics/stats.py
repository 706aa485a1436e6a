"""Delivery counters (delivery.md §4): cheap, thread-safe, never blocking a producer for long."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable

from segment.analytics.retry import NETWORK_ERROR_KINDS


class DeliveryStats:
    """Counters behind ``Client.stats()``.

    Events that reach the queue are counted by the buffer (``put_total``);
    events accepted but never queued (refused for their data, a full queue,
    a closed client, or sent in sync mode) are counted here, so that
    ``accepted = delivered + dropped + pending`` always holds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted_unqueued = 0
        self.delivered_first_attempt = 0
        self.delivered_after_retry = 0
        self.dropped_by_reason: Counter[str] = Counter()
        self.retries_by_status: Counter[str] = Counter()
        self.network_errors: Counter[str] = Counter({kind: 0 for kind in NETWORK_ERROR_KINDS})
        self.rate_limited_waits = 0
        self.requests = 0
        self.batches_delivered = 0
        self.bytes_sent = 0

    def accept_unqueued(self, count: int = 1) -> None:
        """Count events accepted without going through the queue."""
        with self._lock:
            self.accepted_unqueued += count

    def refuse(self, reason: str, count: int = 1) -> None:
        """Count events accepted and dropped before reaching the queue."""
        with self._lock:
            self.accepted_unqueued += count
            self.dropped_by_reason[str(reason)] += count  # a plain str, even for a DropReason

    def delivered(self, count: int, after_retry: bool) -> None:
        """Count events the API accepted."""
        with self._lock:
            if after_retry:
                self.delivered_after_retry += count
            else:
                self.delivered_first_attempt += count
            self.batches_delivered += 1

    def dropped(self, reason: str, count: int) -> None:
        """Count events dropped after they were queued."""
        with self._lock:
            self.dropped_by_reason[str(reason)] += count

    def request_sent(self, body_bytes: int) -> None:
        """Count one HTTP request and its body size on the wire."""
        with self._lock:
            self.requests += 1
            self.bytes_sent += body_bytes

    def retry(self, cause: str) -> None:
        """Count one retry, by status code or network error kind."""
        with self._lock:
            self.retries_by_status[cause] += 1

    def network_error(self, kind: str) -> None:
        """Count one network error by kind."""
        with self._lock:
            self.network_errors[kind if kind in self.network_errors else "other"] += 1

    def rate_limited_wait(self) -> None:
        """Count one wait imposed by Retry-After."""
        with self._lock:
            self.rate_limited_waits += 1

    def snapshot(self, queue_state: Callable[[], tuple[int, int, int, int]]) -> dict[str, Any]:
        """A plain dict of every counter; ``pending`` is what is neither delivered nor dropped.

        ``queue_state()`` returns (events ever queued, queue depth, events in
        flight, events recovered from the spool); it is read under this object's
        lock, after which no event can be counted delivered or dropped without
        first having been counted queued or recovered.
        """
        with self._lock:
            queued_total, queue_depth, in_flight, recovered = queue_state()
            delivered = self.delivered_first_attempt + self.delivered_after_retry
            dropped = sum(self.dropped_by_reason.values())
            accepted = queued_total + self.accepted_unqueued
            return {
                "accepted": accepted,
                "recovered": recovered,
                "stored": 0,
                "storage_bytes": 0,
                "delivered": delivered,
                "delivered_first_attempt": self.delivered_first_attempt,
                "delivered_after_retry": self.delivered_after_retry,
                "dropped": dropped,
                "dropped_by_reason": dict(self.dropped_by_reason),
                "pending": accepted + recovered - delivered - dropped,
                "queue_depth": queue_depth,
                "in_flight": in_flight,
                "retries": sum(self.retries_by_status.values()),
                "retries_by_status": dict(self.retries_by_status),
                "rate_limited_waits": self.rate_limited_waits,
                "network_errors": dict(self.network_errors),
                "requests": self.requests,
                "batches_sent": self.requests,
                "batches_delivered": self.batches_delivered,
                "bytes_sent": self.bytes_sent,
            }
