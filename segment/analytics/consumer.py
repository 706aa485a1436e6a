"""Consumer threads: take batches off the buffer and hand each to the sender (SPEC 2).

A consumer never classifies statuses or sleeps for retries itself: that is
``request.BatchSender``'s job. It survives any exception from a bad batch or
a callback; whatever happens, every event it took is reported once.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from segment.analytics.buffer import EventBuffer, Lease
from segment.analytics.errors import INTERNAL_ERROR, DeliveryError
from segment.analytics.request import BatchResult

log = logging.getLogger("segment")

#: The Tracking API accepts batches under 500 KB; stay below with room for the envelope.
BATCH_SIZE_LIMIT = 475_000


class Consumer(threading.Thread):
    """A daemon thread that uploads batches until ``stop`` is set or the buffer closes."""

    def __init__(
        self,
        index: int,
        buffer: EventBuffer,
        deliver: Callable[[list[bytes]], BatchResult],
        settle: Callable[[Lease, BatchResult], None],
        stop: threading.Event,
        upload_size: int,
        upload_interval: float,
        max_bytes: int = BATCH_SIZE_LIMIT,
    ) -> None:
        super().__init__(name=f"segment-consumer-{index}", daemon=True)
        self.buffer = buffer
        self.deliver = deliver
        self.settle = settle
        self.stop_event = stop
        self.upload_size = upload_size
        self.upload_interval = upload_interval
        self.max_bytes = max_bytes

    def run(self) -> None:
        """Upload batches until stopped."""
        log.debug("%s started", self.name)
        while not self.stop_event.is_set():
            lease = self.buffer.take(self.upload_size, self.max_bytes, self.upload_interval)
            if lease is None:
                break
            self.upload(lease)
        log.debug("%s stopped", self.name)

    def upload(self, lease: Lease) -> None:
        """Send one batch and settle it; never raises."""
        try:
            result = self.deliver(lease.items)
        except Exception as exc:
            log.exception("unexpected error while sending a batch of %d events", len(lease.items))
            error = DeliveryError(INTERNAL_ERROR, f"unexpected error: {exc!r}", cause=exc)
            result = BatchResult(dropped=[(lease.items, error)])
        try:
            self.settle(lease, result)
        except Exception:
            log.exception("unexpected error while reporting a batch")
