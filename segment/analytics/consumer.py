"""Consumer threads: take batches off the buffer and hand each to the pipeline's upload.

A consumer never classifies statuses or sleeps for retries itself: that is the retry loop's job
(``request.BatchSender``). Whatever an upload does, the consumer carries on with the next batch.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional, Protocol

from segment.analytics.buffer import Lease

log = logging.getLogger("segment")


class BatchSource(Protocol):
    """Where a consumer takes batches: the in-memory buffer, or the spool."""

    def take(self, max_count: int, max_bytes: int, linger: float) -> Optional[Lease]:
        """The next batch, or ``None`` once closed and empty."""
        ...


class Consumer(threading.Thread):
    """A daemon thread (``segment-consumer-N``) that uploads batches until ``stop`` is set or the buffer closes.

    ``upload_size``, ``upload_interval``, ``timeout`` and ``retries`` are read-only views of the
    options, under the names analytics-python's consumers have.
    """

    def __init__(
        self,
        index: int,
        source: BatchSource,
        upload: Callable[[Lease], None],
        stop: threading.Event,
        *,
        upload_size: int,
        upload_interval: float,
        max_bytes: int,
        timeout: float,
        retries: int,
        owner: Optional[object] = None,
    ) -> None:
        super().__init__(name=f"segment-consumer-{index}", daemon=True)
        self.source = source
        self._upload = upload
        self._stop_event = stop
        self._upload_size = upload_size
        self._upload_interval = upload_interval
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._retries = retries
        self.owner = owner  # the pipeline this thread works for (lets it recognise a re-entrant call)

    @property
    def upload_size(self) -> int:
        """Events per batch at most."""
        return self._upload_size

    @property
    def upload_interval(self) -> float:
        """Seconds a partial batch waits for more events."""
        return self._upload_interval

    @property
    def timeout(self) -> float:
        """Seconds one HTTP request may take."""
        return self._timeout

    @property
    def retries(self) -> int:
        """Counted retries per batch (``max_retries``)."""
        return self._retries

    @property
    def running(self) -> bool:
        """Whether the thread is alive and not asked to stop."""
        return self.is_alive() and not self._stop_event.is_set()

    def run(self) -> None:
        """Upload batches until stopped."""
        log.debug("%s started", self.name)
        while not self._stop_event.is_set():
            lease = self.source.take(self._upload_size, self._max_bytes, self._upload_interval)
            if lease is None:
                break
            try:
                self._upload(lease)
            except Exception:
                log.exception("unexpected error while uploading a batch (the consumer carries on)")
        log.debug("%s stopped", self.name)


class ConsumerPool:
    """The consumer threads of one pipeline: started together, stopped together."""

    def __init__(self) -> None:
        self.threads: list[Consumer] = []

    def start(
        self,
        count: int,
        source: BatchSource,
        upload: Callable[[Lease], None],
        stop: threading.Event,
        **options: Any,
    ) -> None:
        """Start ``count`` consumers (``segment-consumer-1..count``); ``options`` as for :class:`Consumer`."""
        self.threads = [Consumer(index, source, upload, stop, owner=self, **options) for index in range(1, count + 1)]
        for thread in self.threads:
            thread.start()

    def alive(self) -> bool:
        """Whether any consumer runs."""
        return any(thread.is_alive() for thread in self.threads)

    def on_own_thread(self) -> bool:
        """Whether the caller is one of these consumers (a callback it runs must not wait for it)."""
        return getattr(threading.current_thread(), "owner", None) is self

    def join(self, deadline: Optional[float]) -> None:
        """Wait for the consumers to end, until ``deadline`` (monotonic) at the latest."""
        for thread in self.threads:
            if thread is threading.current_thread() or not thread.is_alive():
                continue
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
