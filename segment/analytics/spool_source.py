"""Where consumers take batches from when ``storage=PATH`` is set: the durable spool (delivery.md §7).

Callers still only put bytes into the in-memory staging buffer. A writer thread
(``segment-spool-writer``) takes what is staged at most ``storage_sync_interval``
after it arrived and appends it to the :class:`~segment.analytics.spool.SpoolStore`
in one transaction, applies the spool's limits and adopts dead owners' rows
every few seconds. Consumers read batches back oldest first; a batch's rows are
deleted once each of its events is delivered or dropped, and given back (kept
for a later read, or the next start) when a stop interrupts it.

When the spool cannot be used (a read-only path, no space, a damaged file) it
logs one WARNING and the pipeline carries on in memory: consumers take from the
staging buffer directly, as they do without a spool.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from segment.analytics.buffer import EventBuffer, Lease
from segment.analytics.retry import DropReason
from segment.analytics.spool import SpoolStore, SpoolUnavailable
from segment.analytics.spool_reader import SpoolReader
from segment.analytics.spool_writer import SpoolState, SpoolWriter

__all__ = ["SpoolSource"]

Report = Callable[[list[bytes], DropReason], None]


class SpoolSource:
    """Staging buffer -> writer thread -> spool -> consumers; the same interface consumers use on a buffer."""

    def __init__(
        self,
        path: str,
        staging: EventBuffer,
        report: Report,
        *,
        max_bytes: int,
        max_age: float,
        sync_interval: float,
        store: Optional[SpoolStore] = None,
    ) -> None:
        self.path = path
        self.staging = staging
        self._report = report
        self._state = state = SpoolState(path, store)
        self._cond = state.cond
        self.writer = SpoolWriter(
            state,
            staging,
            report,
            lambda: self._release_if_idle(writer_done=True),
            max_bytes=max_bytes,
            max_age=max_age,
            sync_interval=sync_interval,
        )
        self._closed = False
        self._urgent_through = 0  # rows up to this id are sent without lingering (a flush asked)
        self._leases: set[Lease] = set()
        self._release_when_idle = False  # shut down: close the store once the writer and consumers are done
        self.handed_over = False  # the store was closed with everything staged committed: the next client's now

    @property
    def store(self) -> Optional[SpoolStore]:
        """The open store (``None`` until the writer has opened it)."""
        return self._state.store

    @property
    def degraded(self) -> bool:
        """Whether the spool could not be used (the pipeline carries on in memory)."""
        return self._state.degraded

    def start(self) -> None:
        """Start the writer thread (with the consumers)."""
        self.writer.start()

    # -- the consumers' side -------------------------------------------------------------------

    def take(self, max_count: int, max_bytes: int, linger: float) -> Optional[Lease]:
        """The oldest spooled events not in flight, as a batch; ``None`` once closed with nothing to read."""
        lease = Lease([], 0, 0)
        lease.rows = {}
        deadline: Optional[float] = None
        while True:
            reader = self._wait_ready()
            if reader is None and not self.degraded:
                return self._handed_out(lease) if lease.items else None  # closed before the spool opened
            if reader is None:  # degraded: memory only from now on
                return self._handed_out(lease) if lease.items else self.staging.take(max_count, max_bytes, linger)
            try:
                result = reader.next_batch(max_count - len(lease.items), max(1, max_bytes - lease.size))
            except SpoolUnavailable as exc:
                self._state.degrade(exc)
                continue
            if result.corrupt:
                self._drop_corrupt(reader, [row.data for row in result.corrupt], [row.id for row in result.corrupt])
            for row in result.rows:
                lease.items.append(row.data)
                lease.rows[id(row.data)] = row.id
                lease.size += len(row.data) + 1
            if lease.items and deadline is None:
                deadline = time.monotonic() + linger
            with self._cond:
                full = len(lease.items) >= max_count or (result.rows and lease.size >= max_bytes)
                urgent = bool(lease.items) and min(lease.rows.values()) <= self._urgent_through
                if lease.items and (full or urgent or self._closed or time.monotonic() >= (deadline or 0)):
                    return self._handed_out(lease)
                if not lease.items and self._closed:
                    return None
                if not result.rows:
                    wait = 0.25 if deadline is None else min(0.25, max(0.0, deadline - time.monotonic()))
                    self._cond.wait(wait)

    def _wait_ready(self, deadline: Optional[float] = None) -> Optional[SpoolReader]:
        """The reader once the writer has opened the spool; ``None`` if it cannot be (or on ``deadline``)."""
        with self._cond:
            while self._state.reader is None and not self.degraded and not self._closed:
                wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                if wait <= 0:
                    break
                self._cond.wait(wait)
            return None if self.degraded else self._state.reader

    def _handed_out(self, lease: Lease) -> Lease:
        with self._cond:
            self._leases.add(lease)
        return lease

    def _drop_corrupt(self, reader: SpoolReader, data: list[bytes], ids: list[int]) -> None:
        self._report(data, DropReason.STORAGE_CORRUPT)
        self._done(reader, ids)

    def _done(self, reader: SpoolReader, ids: list[int]) -> None:
        try:
            reader.done(ids)
        except SpoolUnavailable as exc:
            self._state.degrade(exc)
            return
        with self._cond:
            self._state.deleted += len(ids)

    def finish(self, lease: Lease, pending: list[bytes]) -> None:
        """Delete the rows of ``lease`` that were delivered or dropped; give back ``pending`` ones."""
        if lease.rows is None:  # taken from memory after degrading
            self.staging.finish(lease, pending)
            return
        reader = self._state.reader
        if reader is not None:
            if lease.acked:
                self._done(reader, lease.acked)
            if pending:
                reader.release(lease.rows[id(event)] for event in pending)
        with self._cond:
            self._leases.discard(lease)
            self._cond.notify_all()
        self._release_if_idle()

    # -- flush, stop ---------------------------------------------------------------------------

    def request_flush(self) -> int:
        """Ask for what is staged to be committed and sent without lingering; the mark to wait for."""
        mark = self.staging.request_flush()
        with self._cond:
            self._urgent_through = max(self._urgent_through, self._state.committed_through)
            self._cond.notify_all()
        return mark

    def wait_settled(self, mark: int, timeout: Optional[float], alive: Callable[[], bool]) -> bool:
        """Wait until everything staged before ``mark`` is committed, then sent or reported."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.staging.wait_settled(mark, timeout, lambda: alive() or self.writer.alive()):
            return False
        reader = self._wait_ready(deadline)
        try:
            newest = reader.store.last_id() if reader is not None else 0  # recovered rows included
        except SpoolUnavailable as exc:
            self._state.degrade(exc)
            newest = 0
        with self._cond:
            through = self._urgent_through = max(self._urgent_through, self._state.committed_through, newest)
            self._cond.notify_all()
            while not self._settled_through(through):
                if self.degraded or not alive():
                    return self.degraded and self.staging.wait_settled(mark, _left(deadline), alive)
                wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                if wait <= 0:
                    return False
                self._cond.wait(wait)
        return True

    def _settled_through(self, through: int) -> bool:
        reader = self._state.reader
        return reader is None or reader.settled_through(through)

    def in_flight(self) -> int:
        """Events handed to consumers and not yet finished."""
        with self._cond:
            leases = list(self._leases)
        return sum(len(lease.items) - lease.done for lease in leases) + self.staging.in_flight()

    def close(self) -> None:
        """Stop: the writer commits what is staged and ends; consumers end once nothing is left to read."""
        self.staging.close()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Allow taking again after :meth:`close`."""
        self.staging.reopen()
        with self._cond:
            self._closed = False

    def stored(self) -> int:
        """Events this process holds in the spool now (appended or recovered, not yet deleted)."""
        return self._state.stored()

    def recovered(self) -> int:
        """Events adopted from an earlier or a dead process, or salvaged from a damaged file."""
        return self._state.recovered()

    def disk_bytes(self) -> int:
        """Bytes the spool directory holds on disk (0 when it cannot be read)."""
        if self.store is None:
            return 0
        try:
            return self.store.disk_bytes()
        except OSError:
            return 0

    def release(self) -> None:
        """Close the store as soon as the writer has committed what is staged and no batch is in flight.

        What it still holds is then adopted by the next client that opens the spool, in this process or
        another.
        """
        with self._cond:
            self._release_when_idle = True
        self._release_if_idle()

    def _release_if_idle(self, writer_done: bool = False) -> None:
        with self._cond:
            if not self._release_when_idle or self._leases:
                return
            if not writer_done and self.writer.alive():
                return
            self._release_when_idle = False
        if self.store is not None:
            self.writer.commit_staged()
            self._state.released = True
            try:
                self.store.close()
            except SpoolUnavailable:
                return
            self.handed_over = not self.staging.qsize()


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
