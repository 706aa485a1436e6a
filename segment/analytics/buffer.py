"""The bounded in-memory queue between callers and consumer threads (delivery.md §1).

It holds encoded events (``bytes``), bounded by count and by bytes. ``put``
never blocks; when the buffer is full the pipeline may instead wait for room
(:meth:`EventBuffer.put_wait`, ``on_full="block"``) or evict the oldest events
(:meth:`EventBuffer.put_evicting`, ``on_full="drop_oldest"``). Consumers take
whole batches with :meth:`EventBuffer.take`, bounded by count, bytes and a
linger time, and hand them back with :meth:`EventBuffer.settle` once every
event of the batch is delivered, dropped or given up at shutdown. Events are
numbered by the order they leave the queue, so :meth:`wait_settled` can tell
when everything queued before a given moment has been dealt with.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Optional

#: Default bound on the bytes of the events waiting in the queue (``max_queue_bytes``).
DEFAULT_MAX_QUEUE_BYTES = 64 << 20


class Lease:
    """A batch taken from the buffer: its events, the sequence number of its first one, how many are settled."""

    __slots__ = ("acked", "done", "first_seq", "items", "rows", "size")

    def __init__(self, items: list[bytes], first_seq: int, size: int) -> None:
        self.items = items
        self.first_seq = first_seq
        self.size = size
        self.done = 0  # events already delivered or dropped (a batch settles group by group)
        self.rows: Optional[dict[int, int]] = None  # from the spool: id(event bytes) -> row id
        self.acked: list[int] = []  # spool rows delivered or dropped, deleted when the batch is finished

    def settled(self, events: list[bytes]) -> None:
        """Note that ``events`` (some of this batch's) were delivered or dropped."""
        self.done += len(events)
        rows = self.rows
        if rows is not None:
            self.acked.extend(rows[id(event)] for event in events)


class EventBuffer:
    """A bounded FIFO of encoded events, shared by producers and consumer threads."""

    def __init__(
        self, capacity: int, clock: Callable[[], float] = time.monotonic, max_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._put_limit = capacity  # 0 once sealed: one comparison refuses both a full and a sealed buffer
        self._items: deque[bytes] = deque()
        self._free = max_bytes  # max_bytes minus the total length of the queued events
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # consumers wait here for events
        self._room = threading.Condition(self._lock)  # blocked producers wait here for room
        self._blocked = 0
        self._clock = clock
        self.put_total = 0
        self._taken_total = 0
        self._waiting = 0
        self._wake_at = 1
        self._urgent_until = 0  # events with a lower sequence number are sent without lingering
        self._closed = False
        self._sealed = False  # refuses new events (shutdown has begun)
        self._leases: set[Lease] = set()
        self._on_settled: list[tuple[int, Callable[[], None]]] = []  # see when_settled

    def __len__(self) -> int:
        return len(self._items)

    # queue.Queue-style views, for code written against analytics-python's ``client.queue``
    @property
    def maxsize(self) -> int:
        """The capacity (``max_queue_size``)."""
        return self.capacity

    def qsize(self) -> int:
        """Events waiting in the queue."""
        return len(self._items)

    def empty(self) -> bool:
        """Whether no event is waiting."""
        return not self._items

    def full(self) -> bool:
        """Whether the queue holds ``max_queue_size`` events (a ``put`` may also be refused for bytes)."""
        return len(self._items) >= self.capacity

    @property
    def nbytes(self) -> int:
        """Bytes of the events waiting in the queue (bounded by ``max_bytes``)."""
        return self.max_bytes - self._free

    def requeue_front(self, items: list[bytes]) -> None:
        """Put events a stopped consumer could not send back at the front, in order.

        They were counted when first queued, so they are not counted again,
        and they may briefly take the queue over its capacity.
        """
        if not items:
            return
        with self._cond:
            self._items.extendleft(reversed(items))
            self._free -= sum(len(item) for item in items)
            self._taken_total -= len(items)
            self._cond.notify_all()

    def put(self, item: bytes) -> bool:
        """Append an event; ``False`` when the buffer is full (by count or bytes) or sealed. Never blocks."""
        with self._lock:
            items = self._items
            free = self._free - len(item)
            if free < 0 or len(items) >= self._put_limit:
                return False
            items.append(item)
            self._free = free
            self.put_total += 1
            if self._waiting and (len(items) == 1 or len(items) >= self._wake_at):
                self._cond.notify()
        return True

    def _fits_locked(self, size: int) -> bool:
        return len(self._items) < self.capacity and size <= self._free

    def put_wait(self, item: bytes, timeout: float) -> bool:
        """Append an event, waiting up to ``timeout`` seconds for room.

        ``False`` when there is still no room, or as soon as the buffer is sealed or closed (a
        shutdown or ``join()`` wakes every waiting producer). The wait is on a ``threading``
        condition, which gevent's and eventlet's monkey-patching turn into a cooperative one.
        """
        size = len(item)
        with self._lock:
            deadline: Optional[float] = None
            while not self._fits_locked(size):
                if self._sealed or self._closed or size > self.max_bytes:
                    return False
                now = self._clock()
                if deadline is None:
                    deadline = now + timeout
                if now >= deadline:
                    return False
                self._blocked += 1
                try:
                    self._room.wait(deadline - now)
                finally:
                    self._blocked -= 1
            if self._sealed:
                return False
            self._append_locked(item, size)
        return True

    def put_evicting(self, item: bytes) -> Optional[Lease]:
        """Append an event, first removing the oldest queued events until it fits.

        Returns a :class:`Lease` holding the evicted events (maybe none), which the caller must
        report and then :meth:`settle`; ``None`` when the event was not queued (sealed, or larger
        than ``max_bytes``).
        """
        size = len(item)
        with self._lock:
            if self._sealed or size > self.max_bytes:
                return None
            evicted: list[bytes] = []
            lease = Lease(evicted, self._taken_total, 0)
            items = self._items
            while items and not self._fits_locked(size):
                old = items.popleft()
                self._free += len(old)
                evicted.append(old)
            if evicted:
                self._taken_total += len(evicted)  # they left the queue: a flush mark may count them
                self._leases.add(lease)  # until reported, so a flush waits for their report
            self._append_locked(item, size)
        return lease

    def _append_locked(self, item: bytes, size: int) -> None:
        items = self._items
        items.append(item)
        self._free -= size
        self.put_total += 1
        if self._waiting and (len(items) == 1 or len(items) >= self._wake_at):
            self._cond.notify()

    def take(
        self, max_count: int, max_bytes: int, linger: float, first_wait: Optional[float] = None
    ) -> Optional[Lease]:
        """Wait for events and return a batch, or ``None`` once the buffer is closed.

        The batch is returned as soon as it holds ``max_count`` events, would
        exceed ``max_bytes`` (each event counts its length plus a separator)
        with the next one, ``linger`` seconds have passed since its first
        event was taken, a flush asks for it, or the buffer closes. With
        ``first_wait``, an empty batch (to be ignored, not settled) comes back
        when no event arrived within that many seconds.
        """
        with self._cond:
            give_up = None if first_wait is None else self._clock() + first_wait
            while not self._items:
                if self._closed:
                    return None
                if give_up is not None and self._clock() >= give_up:
                    return Lease([], self._taken_total, 0)
                self._wait(1, None if give_up is None else max(0.0, give_up - self._clock()))
            batch: list[bytes] = []
            lease = Lease(batch, self._taken_total, 0)
            self._leases.add(lease)  # before the first pop, so a flush never sees these events as settled
            deadline = self._clock() + linger
            while True:
                items = self._items
                full = False
                while items and len(batch) < max_count:
                    item_size = len(items[0]) + 1
                    if batch and lease.size + item_size > max_bytes:
                        full = True
                        break
                    batch.append(items.popleft())
                    lease.size += item_size
                    self._free += item_size - 1
                    self._taken_total += 1
                if self._blocked and batch:
                    self._room.notify_all()
                if full or len(batch) >= max_count or self._closed or lease.first_seq < self._urgent_until:
                    return lease
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return lease
                self._wait(max_count - len(batch), remaining)

    def _wait(self, wake_at: int, timeout: Optional[float]) -> None:
        self._wake_at = wake_at if not self._waiting else min(wake_at, self._wake_at)
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._wake_at = 1

    def settle(self, lease: Lease) -> None:
        """Hand a batch back: its events are delivered, dropped or abandoned."""
        with self._cond:
            self._leases.discard(lease)
            self._cond.notify_all()
            ready = [entry for entry in self._on_settled if self._settled_locked(entry[0])] if self._on_settled else []
            for entry in ready:
                self._on_settled.remove(entry)
        for _, callback in ready:
            callback()

    def when_settled(self, mark: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` once every event put before ``mark`` is settled; returns a cancel function.

        The callback runs at once in this thread if that is already so, else in the consumer thread that
        settles the last batch (outside the lock): it must be quick and must not raise.
        """
        entry = (mark, callback)
        with self._cond:
            settled = self._settled_locked(mark)
            if not settled:
                self._on_settled.append(entry)
        if settled:
            callback()

        def cancel() -> None:
            with self._cond:
                if entry in self._on_settled:
                    self._on_settled.remove(entry)

        return cancel

    def finish(self, lease: Lease, pending: list[bytes]) -> None:
        """A consumer is done with ``lease``: ``pending`` (interrupted by a stop) goes back to the front."""
        self.requeue_front(pending)
        self.settle(lease)

    def drain(self) -> list[bytes]:
        """Take every queued event at once (the spool commits what is left at exit)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._free = self.max_bytes
            self._taken_total += len(items)
            self._cond.notify_all()
            self._room.notify_all()
            return items

    def request_flush(self) -> int:
        """Ask consumers to send what is queued now without lingering; returns the mark to wait for."""
        with self._cond:
            mark = self.put_total
            self._urgent_until = max(self._urgent_until, mark)
            self._cond.notify_all()
            return mark

    def _settled_locked(self, mark: int) -> bool:
        if self._taken_total < mark:
            return False
        return all(lease.first_seq >= mark for lease in self._leases)

    def wait_settled(self, mark: int, timeout: Optional[float], alive: Callable[[], bool]) -> bool:
        """Wait until every event put before ``mark`` has left the queue and been settled.

        Returns ``False`` on timeout or as soon as ``alive()`` turns false.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._settled_locked(mark):
                if not alive():
                    return False
                if deadline is None:
                    wait = 0.25  # re-check alive() now and then
                else:
                    wait = min(0.25, deadline - self._clock())
                    if wait <= 0:
                        return False
                self._cond.wait(wait)
        return True

    def in_flight(self) -> int:
        """Events taken by consumers and not yet settled."""
        with self._lock:
            return sum(len(lease.items) - lease.done for lease in self._leases)

    def seal(self) -> int:
        """Refuse every later :meth:`put`; returns the flush mark covering everything accepted before."""
        with self._cond:
            self._sealed = True
            self._put_limit = 0
            self._room.notify_all()
        return self.request_flush()

    @property
    def sealed(self) -> bool:
        """Whether :meth:`seal` was called."""
        return self._sealed

    def close(self) -> None:
        """Wake every consumer; ``take`` returns what it holds, then ``None`` once empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._room.notify_all()

    def reopen(self) -> None:
        """Allow consumers to take again after :meth:`close` (used when consumers are restarted)."""
        with self._cond:
            self._closed = False
