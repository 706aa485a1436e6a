"""The spool's writer thread, and the state it shares with the consumers (delivery.md §7).

The writer (``segment-spool-writer``) opens the :class:`~segment.analytics.spool.SpoolStore` (off the
caller's thread: opening may wait on another process), then takes what callers staged in memory at
most ``storage_sync_interval`` after it arrived and appends it in one transaction (group commit). It
applies the spool's limits after each append, and adopts dead owners' rows every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from segment.analytics.buffer import EventBuffer, Lease
from segment.analytics.retry import DropReason
from segment.analytics.spool import SpoolStore, SpoolUnavailable
from segment.analytics.spool_reader import SpoolReader

__all__ = ["SpoolState", "SpoolWriter"]

log = logging.getLogger("segment")

#: Events appended in one transaction at most.
WRITE_GROUP = 5000
#: Seconds between adoptions of dead owners' rows and idle limit checks (the promise is 30).
MAINTENANCE_INTERVAL = 5.0

Report = Callable[[list[bytes], DropReason], None]


class SpoolState:
    """What the writer and the consumers share about one spool, under one condition."""

    def __init__(self, path: str, store: Optional[SpoolStore]) -> None:
        self.path = path
        self.store = store
        self.reader: Optional[SpoolReader] = SpoolReader(store) if store is not None else None
        self.cond = threading.Condition()
        self.degraded = False  # the spool cannot be used: memory only from now on
        self.released = False  # closed at shutdown: what it holds is the next client's
        self.appended = 0  # rows this process appended
        self.deleted = 0  # rows this process deleted (delivered, dropped, expired, undecodable)
        self.committed_through = 0  # the newest row this process appended

    def degrade(self, exc: BaseException) -> None:
        """Stop using the spool (one WARNING): consumers take from memory from now on."""
        with self.cond:
            if self.degraded or self.released:
                return
            self.degraded = True
            self.cond.notify_all()
        log.warning("the spool at %s cannot be used (%s): events are kept in memory only", self.path, exc)

    def recovered(self) -> int:
        """Rows adopted from an earlier or a dead process, or salvaged from a damaged file."""
        return self.store.recovered if self.store is not None else 0

    def stored(self) -> int:
        """Rows this process holds in the spool now."""
        return max(0, self.appended + self.recovered() - self.deleted)


class SpoolWriter:
    """Group-commits staged events into the spool, and keeps the spool within its limits."""

    def __init__(
        self,
        state: SpoolState,
        staging: EventBuffer,
        report: Report,
        finished: Callable[[], None],
        *,
        max_bytes: int,
        max_age: float,
        sync_interval: float,
    ) -> None:
        self._state = state
        self._staging = staging
        self._report = report
        self._finished = finished  # called when the writer ends with everything staged committed
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._sync_interval = sync_interval
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Start the thread (with the consumers)."""
        if self._state.degraded or self.alive():
            return
        self._thread = threading.Thread(target=self._loop, name="segment-spool-writer", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: Optional[float]) -> None:
        """Wait for the thread to end (it ends once the staging buffer is closed and committed)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _open(self) -> Optional[SpoolReader]:
        state = self._state
        reader = state.reader
        if reader is None:
            try:
                state.store = SpoolStore(
                    state.path, max_bytes=self._max_bytes, max_age=self._max_age, trust_appended=True
                )
            except (SpoolUnavailable, ValueError) as exc:
                state.degrade(exc)
                return None
            reader = SpoolReader(state.store)
            self._enforce(reader)  # what an earlier process left too long expires before anything is sent
        with state.cond:
            state.reader = reader
            state.cond.notify_all()
        return reader

    def _loop(self) -> None:
        reader = self._open()
        next_maintenance = 0.0
        while reader is not None and not self._state.degraded:
            lease = self._staging.take(WRITE_GROUP, 1 << 62, self._sync_interval, first_wait=1.0)
            if lease is None:  # staging closed and empty: everything is committed
                self._finished()
                return
            if lease.items and not self._commit(reader, lease):
                return
            if time.monotonic() >= next_maintenance:
                next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL
                self._maintain(reader)

    def _commit(self, reader: SpoolReader, lease: Lease) -> bool:
        """Append a staged batch; on a disk error give it back to memory (and degrade)."""
        if not self._append(reader, lease.items):
            self._staging.finish(lease, lease.items)
            return False
        self._staging.settle(lease)
        self._enforce(reader)
        return True

    def _append(self, reader: SpoolReader, items: list[bytes]) -> bool:
        state = self._state
        try:
            ids = reader.append(items, hold=False)
        except SpoolUnavailable as exc:
            state.degrade(exc)
            return False
        with state.cond:
            state.appended += len(ids)
            state.committed_through = max(state.committed_through, ids[-1])
            state.cond.notify_all()
        return True

    def _maintain(self, reader: SpoolReader) -> None:
        try:
            adopted = reader.adopt()
        except SpoolUnavailable as exc:
            self._state.degrade(exc)
            return
        if adopted:
            log.info("adopted %d event(s) from the spool of a process that ended", adopted)
            with self._state.cond:
                self._state.cond.notify_all()
        self._enforce(reader)

    def _enforce(self, reader: SpoolReader) -> None:
        try:
            dropped = reader.enforce_limits()
        except SpoolUnavailable as exc:
            self._state.degrade(exc)
            return
        if not dropped:
            return
        with self._state.cond:
            self._state.deleted += len(dropped)
        for reason in {item.reason for item in dropped}:
            self._report([item.row.data for item in dropped if item.reason == reason], reason)

    def commit_staged(self) -> None:
        """Append whatever is staged now, in the calling thread (at exit and at release)."""
        state = self._state
        reader = state.reader
        if reader is None or state.degraded or state.released:
            return
        items = self._staging.drain()
        if items and not self._append(reader, items):
            self._staging.requeue_front(items)

    def keep_at_exit(self, seconds: Optional[float]) -> int:
        """At exit: let the thread commit what it took, then commit what is staged; how many are kept.

        The thread gets ``seconds`` (a second at least: writing to a local disk is not delivery); one
        stuck on a database a busy peer holds keeps what it took in memory, and that is lost.
        """
        self.join(max(1.0, seconds or 0.0))
        if not self.alive():
            self.commit_staged()  # a new thread may not start now
        return 0 if self._state.degraded else self._state.stored()
