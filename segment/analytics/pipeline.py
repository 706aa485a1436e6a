"""The delivery pipeline behind one client, and its lifecycle (``docs/delivery.md``).

One object owns the buffer (and the spool), the consumer threads, the sender, the transport and the
outcomes. Its :class:`State` changes under one lock. Every delivery and every drop goes through
:meth:`Outcomes.record <segment.analytics.outcomes.Outcomes.record>`, which counts it and then calls
the user's callbacks outside any lock; a batch is settled in a ``finally`` whatever they do. A
callback may call any public method of the client: a flush made from a consumer thread does not wait
for itself, a shutdown made there does not join itself.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import threading
import time
from typing import Any, Optional, Union

from segment.analytics import process_hooks
from segment.analytics.auth import Auth
from segment.analytics.backpressure import FullQueue
from segment.analytics.buffer import EventBuffer, Lease
from segment.analytics.config import Config, Message
from segment.analytics.consumer import Consumer, ConsumerPool
from segment.analytics.errors import DeliveryError
from segment.analytics.oauth_manager import oauth_from
from segment.analytics.outcomes import Outcomes
from segment.analytics.request import BatchSender, RateLimitGate
from segment.analytics.retry import DropReason
from segment.analytics.spool import SpoolStore
from segment.analytics.spool_source import SpoolSource
from segment.analytics.transport import Transport
from segment.analytics.wire import BATCH_SIZE_LIMIT

__all__ = ["Pipeline", "State"]

log = logging.getLogger("segment")


class State(enum.Enum):
    """Where a pipeline stands."""

    STOPPED = "stopped"  # no consumer threads: not started yet (send=False, sync_mode) or after join()
    RUNNING = "running"  # consumers are sending
    FORKED = "forked"  # in a forked child: consumers start with the first event or flush
    CLOSING = "closing"  # shutdown began: no new events; what was accepted is being delivered
    CLOSED = "closed"  # shut down: every call is refused (client_closed)


class Pipeline:
    """Buffer -> consumers -> sender -> transport, with one lifecycle and one place that records outcomes."""

    def __init__(self, config: Config) -> None:
        process_hooks.catch_up()  # forked since the last call: rebuild first (process_hooks)
        self.config = config
        self.auth: Optional[Auth] = oauth_from(config)
        self._policy = config.policy()
        self.full = FullQueue(config)
        self._stop = threading.Event()
        self._exiting = False
        self._drained = False
        self._build()
        self.state = State.RUNNING if self._sending else State.STOPPED
        if self.state is State.RUNNING:
            self._start_consumers_locked()
        process_hooks.register(self)

    @property
    def _sending(self) -> bool:
        return self.config.send and not self.config.sync_mode

    def _build(self, store: Optional[SpoolStore] = None) -> None:
        """Create the lock, buffer (and spool), counters, gate, transport and sender (again after a fork)."""
        config = self.config
        self._lock = threading.Lock()
        self.pid = os.getpid()  # the process that built this state (the doctor compares it after a fork)
        self.buffer = EventBuffer(config.max_queue_size, max_bytes=config.max_queue_bytes)
        self.spool: Optional[SpoolSource] = None
        if config.storage is not None and self._sending:
            self.spool = SpoolSource(
                config.storage,
                self.buffer,
                lambda events, reason: self.outcomes.storage_dropped(events, reason),
                max_bytes=config.storage_max_bytes,
                max_age=config.storage_max_age,
                sync_interval=config.storage_sync_interval,
                store=store,
            )
        self.source: Union[EventBuffer, SpoolSource] = self.spool or self.buffer
        self.outcomes = Outcomes(config)
        self.workers = ConsumerPool()
        self.transport = Transport(config.host, config.timeout, config.proxies, pool_size=config.thread)
        self.sender = BatchSender(
            config.write_key,
            self.transport,
            self._policy,
            auth=self.auth,
            gzip=config.gzip,
            gate=RateLimitGate(),
            stats=self.outcomes.counters,
            sleep=self._sleep,
            stopped=self._stop.is_set,
        )

    def _sleep(self, seconds: float) -> bool:
        return not self._stop.wait(seconds)

    # -- consumers ------------------------------------------------------------

    def _start_consumers_locked(self) -> None:
        """Start ``thread`` consumers (the caller holds the lock or owns the pipeline alone)."""
        self._stop.clear()
        self.source.reopen()
        if self.spool is not None:
            self.spool.start()
        self.outcomes.drops.restart()
        config = self.config
        self.workers.start(
            config.thread,
            self.source,
            self._upload,
            self._stop,
            upload_size=config.upload_size,
            upload_interval=config.upload_interval,
            max_bytes=BATCH_SIZE_LIMIT - self.sender.envelope_size(),
            timeout=config.timeout,
            retries=config.max_retries,
        )
        self.state = State.RUNNING

    def _ensure_running(self) -> None:
        """Start the consumers if the pipeline is stopped or freshly forked (never at exit, never when closed)."""
        with self._lock:
            if self.state not in (State.STOPPED, State.FORKED) or self._exiting or not self._sending:
                return
            if self._alive():
                return  # a join() that timed out left a consumer finishing its request
            if self.state is State.FORKED:
                process_hooks.register_worker_drain(self)
            self._start_consumers_locked()

    @property
    def consumers(self) -> list[Consumer]:
        """The consumer threads."""
        return self.workers.threads

    def _alive(self) -> bool:
        return self.workers.alive()

    def _on_consumer_thread(self) -> bool:
        return self.workers.on_own_thread()

    def _upload(self, lease: Lease) -> None:
        """Send one batch; settle it in ``finally``, putting back what shutdown interrupted."""
        pending: list[bytes] = []
        try:
            result = self.sender.send(lease.items, functools.partial(self._settled, lease))
            pending = result.pending
        finally:
            self.source.finish(lease, pending)

    def _settled(self, lease: Lease, events: list[bytes], error: Optional[DeliveryError], after_retry: bool) -> None:
        lease.settled(events)
        self.outcomes.record(events, error, after_retry)

    # -- outcomes (outcomes.py) ------------------------------------------------

    def record(self, events: list[bytes], error: Optional[DeliveryError], after_retry: bool = False) -> None:
        """Count a group of events delivered (``error`` is None) or dropped, then tell the callbacks."""
        self.outcomes.record(events, error, after_retry)

    def refuse(self, reason: DropReason, msg: Message, text: str) -> tuple[bool, Message]:
        """Count and report an event accepted but not queued; the call returns ``(False, msg)``."""
        return self.outcomes.refuse(reason, msg, text)

    # -- the calls' side ------------------------------------------------------

    def put(self, data: bytes) -> Optional[DropReason]:
        """Queue one encoded event; ``None`` when queued, else why it was not."""
        full = self.full
        if self.buffer.put(data) or (full.acts and full.make_room(self.buffer, data, self.record, self._may_wait())):
            if self.state is State.FORKED:
                self._ensure_running()
            return None
        return DropReason.CLIENT_CLOSED if self.buffer.sealed else DropReason.QUEUE_FULL

    def _may_wait(self) -> bool:
        """Whether a put may block here: not in a callback or a consumer (it could wait for itself)."""
        return not (self.outcomes.in_callback() or self._exiting or self._on_consumer_thread() or not self._alive())

    def send_now(self, data: bytes) -> bool:
        """Sync mode: deliver one event in the caller's thread; whether it was delivered."""
        self.outcomes.counters.accept_unqueued()
        result = self.sender.send([data], self.record)
        return bool(result.delivered) and not result.dropped

    @property
    def closed(self) -> bool:
        """Whether shutdown has begun (new events are refused); every call asks this first."""
        if process_hooks.watch:
            process_hooks.catch_up()
        return self.state in (State.CLOSING, State.CLOSED)

    # -- flush, join, shutdown --------------------------------------------------

    def start_flush(self) -> Optional[int]:
        """Ask for what is queued now to be sent; the buffer mark to wait for, ``None`` if there is none."""
        process_hooks.catch_up()
        if not self._sending:
            return None
        self._ensure_running()
        mark = self.source.request_flush()
        return None if self._on_consumer_thread() else mark  # a consumer cannot wait for itself

    def flush(self, timeout: Optional[float]) -> int:
        """Send what is queued now; wait (within ``timeout``) until it is delivered or reported."""
        mark = self.start_flush()
        if mark is not None:
            self.source.wait_settled(mark, timeout, self._alive)
        return self.pending()

    def join(self, timeout: Optional[float]) -> None:
        """Stop the consumers (a held batch goes back to the queue) and wait for them within ``timeout``."""
        process_hooks.catch_up()
        with self._lock:
            if self.state is State.RUNNING:
                self.state = State.STOPPED
            self._stop.set()
            self.source.close()
        self.outcomes.drops.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.workers.join(deadline)
        if self.spool is not None:
            self.spool.writer.join(_remaining(deadline))  # it commits what is staged, then ends

    def shutdown(self, timeout: Optional[float]) -> int:
        """Refuse new events, deliver what was accepted (within ``timeout``), stop; returns what is left.

        Called again (from another thread) while a shutdown runs, it waits for the same events.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        mark = self.start_shutdown()
        if mark is not None:
            self.source.wait_settled(mark, _remaining(deadline), self._alive)
        return self.finish_shutdown(_remaining(deadline))

    def start_shutdown(self) -> Optional[int]:
        """Refuse new events and get what was accepted delivered; the buffer mark to wait for, or ``None``."""
        process_hooks.catch_up()
        with self._lock:
            if self.state is State.CLOSED:
                return None
            self.state = State.CLOSING
        self.buffer.seal()
        mark = self.source.request_flush()
        if self._on_consumer_thread() or not self._sending or self._exiting:
            return None
        with self._lock:
            if not self._alive() and self.buffer.qsize():
                self._start_consumers_locked()  # after join() or in a fresh fork: deliver first
                self.state = State.CLOSING
        return mark

    def finish_shutdown(self, timeout: Optional[float]) -> int:
        """Stop the consumers (waiting within ``timeout``) and close; returns the events left."""
        with self._lock:
            if self.state is State.CLOSED:
                return self.pending()
        if self._on_consumer_thread():
            self.source.close()  # the consumers drain what is queued, then stop
            return self.pending()
        self.join(timeout)
        with self._lock:
            self.state = State.CLOSED
        if not self._alive():
            self.transport.close()
        if self.spool is not None:
            self.spool.release()  # what it still holds goes to the next client that opens the spool
        self.outcomes.drops.flush()
        return self.pending()

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (``accepted + recovered == delivered + dropped + pending``)."""
        process_hooks.catch_up()
        buffer, spool = self.buffer, self.spool
        if spool is None:
            return self.outcomes.counters.snapshot(lambda: (buffer.put_total, len(buffer), buffer.in_flight(), 0))
        snapshot = self.outcomes.counters.snapshot(
            lambda: (buffer.put_total, len(buffer), spool.in_flight(), spool.recovered())
        )
        snapshot["stored"] = spool.stored()
        snapshot["storage_bytes"] = spool.disk_bytes()
        return snapshot

    def pending(self) -> int:
        """Accepted events neither delivered nor reported yet."""
        return int(self.stats()["pending"])

    # -- process events ---------------------------------------------------------

    def at_exit(self) -> None:
        """Bounded drain at interpreter (or pool worker) exit; starts no thread; logs what is left."""
        with self._lock:
            if self._drained or (self.state is State.CLOSED and self.spool is not None and self.spool.handed_over):
                return  # a spool handed over at shutdown: its events are the next client's now
            self._drained = True
            self._exiting = True
        self.outcomes.drops.stop()  # starts no thread at exit
        deadline = time.monotonic() + self.config.exit_timeout
        if self._alive():
            self.source.wait_settled(self.source.request_flush(), self.config.exit_timeout, self._alive)
        self._stop.set()
        self.source.close()
        kept = self.spool.writer.keep_at_exit(_remaining(deadline)) if self.spool is not None else 0
        self.outcomes.drops.flush()
        pending = self.pending()
        if pending and kept:
            text = (
                "segment: %d event(s) could not be delivered before exit; %d kept in the spool at %s for the next start"
            )
            log.warning(text, pending, min(pending, kept), self.config.storage)
        elif pending:
            log.warning("segment: %d event(s) could not be delivered before exit", pending)

    def after_fork_in_child(self) -> None:
        """Fresh locks, queue, counters and session in a forked child; consumers start on first use."""
        if self.auth is not None:
            after_fork = getattr(self.auth, "after_fork_in_child", None)
            if after_fork is not None:
                after_fork()
        was_closed = self.state in (State.CLOSING, State.CLOSED)  # not self.closed: it would catch up again
        self._stop = threading.Event()  # the parent's may have been locked at fork time
        self._build(self.spool.store if self.spool is not None else None)
        self._drained = False
        self._exiting = False
        if was_closed:
            self.state = State.CLOSED
            self.buffer.seal()
        else:
            self.state = State.FORKED if self._sending else State.STOPPED


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
