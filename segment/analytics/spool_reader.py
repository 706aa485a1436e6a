"""Handing out one owner's spooled rows, oldest first, each once while it is in flight.

:class:`SpoolReader` is the in-memory bookkeeping a pipeline needs over
:meth:`SpoolStore.read`, which is a pure query: a cursor (the highest id handed
out), the set of ids in flight (handed out, or appended and sent straight from
memory, and not yet deleted), and a rescan from the start whenever rows older
than the cursor appear (rows adopted from a dead owner, rows given back with
:meth:`release`). A rescan skips the ids in flight, so nothing is handed out
twice by one process; nothing is written to the spool to hand rows out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Optional

from .spool import ReadResult, SpoolStore
from .spool_db import Dropped, Row


class SpoolReader:
    """The pipeline's view of its spool: append, take batches, mark them done (thread-safe).

    Not fork-safe by itself: a forked child makes a new reader (over the same store object).
    """

    def __init__(self, store: SpoolStore) -> None:
        """Read ``store``'s rows of this owner from the oldest."""
        self.store = store
        self._lock = threading.Lock()
        self._after = 0
        self._in_flight: set[int] = set()
        self._seen_adoptions = -1  # forces a first scan from the start
        self._exhausted = False  # the last read found nothing past the cursor (and nothing was appended since)

    def append(self, items: Sequence[bytes], *, hold: bool) -> list[int]:
        """Append ``items``; with ``hold=True`` they count as in flight (the caller sends them from memory)."""
        with self._lock:
            ids = self.store.append(items)
            self._exhausted = False
            if hold:
                self._in_flight.update(ids)
            return ids

    def next_batch(self, max_count: int, max_bytes: int) -> ReadResult:
        """The oldest rows not in flight (at most ``max_count`` rows / ``max_bytes``), now marked in flight.

        At least one row when any is available, whatever its size. ``corrupt`` rows are
        marked in flight too: report them, then pass their ids to :meth:`done`.
        """
        with self._lock:
            if self.store.adoptions != self._seen_adoptions:
                self._seen_adoptions = self.store.adoptions
                self._after = 0
                self._exhausted = False
            rows: list[Row] = []
            corrupt: list[Row] = []
            size = 0
            while len(rows) + len(corrupt) < max_count:
                result = self.store.read(self._after, max_count - len(rows) - len(corrupt), max(1, max_bytes - size))
                found = sorted(result.rows + result.corrupt)
                if not found:
                    self._exhausted = True
                    break
                bad = {row.id for row in result.corrupt}
                for row in found:
                    if row.id not in self._in_flight:
                        if row.id in bad:
                            corrupt.append(row)
                        elif rows and size + len(row.data) > max_bytes:
                            found = []
                            break
                        else:
                            rows.append(row)
                            size += len(row.data)
                    self._after = row.id
                if not found:
                    break
            self._in_flight.update(row.id for row in rows)
            self._in_flight.update(row.id for row in corrupt)
            return ReadResult(rows, corrupt, self._after)

    def done(self, ids: Iterable[int]) -> int:
        """Delete rows that were delivered or reported; return how many were deleted."""
        ids = list(ids)
        deleted = self.store.delete(ids)
        with self._lock:
            self._in_flight.difference_update(ids)
        return deleted

    def release(self, ids: Iterable[int]) -> None:
        """Give rows back without deleting them: they will be handed out again, oldest first."""
        with self._lock:
            self._in_flight.difference_update(ids)
            self._after = 0
            self._exhausted = False

    def settled_through(self, mark: int) -> bool:
        """Whether every row with ``id <= mark`` was handed out and is done (none left to read, none in flight)."""
        with self._lock:
            if self.store.adoptions != self._seen_adoptions:
                return False  # adopted rows are waiting to be read
            scanned = self._after >= mark or self._exhausted
            return scanned and all(row_id > mark for row_id in self._in_flight)

    def in_flight(self) -> frozenset[int]:
        """Ids handed out and not yet done or released."""
        with self._lock:
            return frozenset(self._in_flight)

    def enforce_limits(self, now: Optional[float] = None) -> list[Dropped]:
        """``store.enforce_limits`` sparing every row in flight."""
        return self.store.enforce_limits(now, keep=self.in_flight())

    def adopt(self) -> int:
        """``store.adopt()``; the next batch rescans from the oldest row when anything was adopted."""
        return self.store.adopt()


__all__ = ["SpoolReader"]
