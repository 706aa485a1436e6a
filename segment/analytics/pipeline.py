"""The delivery pipeline behind one client, and its lifecycle (``docs/delivery.md``).

One object owns the buffer, the consumer threads, the sender, the transport and the counters. Its
:class:`State` changes under one lock. Every delivery and every drop goes through :meth:`Pipeline.record`,
which counts it and then calls the user's callbacks outside any lock; a batch is settled in a
``finally`` whatever the callbacks do. A callback may call any public method of the client: a flush
made from a consumer thread does not wait for itself, a shutdown made there does not join itself.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import threading
import time
from typing import Any, Callable, Optional, Union

from segment.analytics import encoding, process_hooks
from segment.analytics.auth import Auth
from segment.analytics.buffer import EventBuffer, Lease
from segment.analytics.config import Config, Message
from segment.analytics.consumer import Consumer
from segment.analytics.dropsummary import DropSummary
from segment.analytics.errors import DeliveryError
from segment.analytics.request import BatchSender, RateLimitGate
from segment.analytics.retry import DropReason
from segment.analytics.spool import SpoolStore
from segment.analytics.spool_source import SpoolSource
from segment.analytics.stats import DeliveryStats
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
        if process_hooks.watch:
            process_hooks.catch_up()  # forked since the last call: rebuild first (process_hooks)
        self.config = config
        self.auth: Optional[Auth] = None
        if config.oauth:
            from segment.analytics.oauth_manager import OauthManager

            self.auth = OauthManager(
                config.oauth_client_id or "",
                config.oauth_client_key or "",
                config.oauth_key_id or "",
                config.oauth_auth_server,
                config.oauth_scope,
                config.timeout,
                config.max_retries,
            )
        self._policy = config.policy()
        limits = f"max_queue_size={config.max_queue_size}, max_queue_bytes={config.max_queue_bytes}"
        if config.on_full == "block":
            limits += f", waited up to block_timeout={config.block_timeout:g}s"
        self._full_limits = f"queue is full ({limits})"
        self._full_refused = self.full_text("event refused")
        self._on_full_acts = config.on_full != "drop_new"  # drop_new: a failed put is the answer
        self._stop = threading.Event()
        self._exiting = False
        self._drained = False
        self._local = threading.local()  # callbacks running on this thread (a callback never blocks on a full queue)
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
                self._storage_dropped,
                max_bytes=config.storage_max_bytes,
                max_age=config.storage_max_age,
                sync_interval=config.storage_sync_interval,
                store=store,
            )
        self.source: Union[EventBuffer, SpoolSource] = self.spool or self.buffer
        self.counters = DeliveryStats()
        self.drops = DropSummary()
        self.consumers: list[Consumer] = []
        self.transport = Transport(config.host, config.timeout, config.proxies, pool_size=config.thread)
        self.sender = BatchSender(
            config.write_key,
            self.transport,
            self._policy,
            auth=self.auth,
            gzip=config.gzip,
            gate=RateLimitGate(),
            stats=self.counters,
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
        self.drops.restart()
        config = self.config
        max_bytes = BATCH_SIZE_LIMIT - self.sender.envelope_size()
        self.consumers = [
            Consumer(
                index,
                self.source,
                self._upload,
                self._stop,
                upload_size=config.upload_size,
                upload_interval=config.upload_interval,
                max_bytes=max_bytes,
                timeout=config.timeout,
                retries=config.max_retries,
                owner=self,
            )
            for index in range(1, config.thread + 1)
        ]
        for consumer in self.consumers:
            consumer.start()
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

    def _alive(self) -> bool:
        return any(consumer.is_alive() for consumer in self.consumers)

    def _on_consumer_thread(self) -> bool:
        return getattr(threading.current_thread(), "owner", None) is self

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
        self.record(events, error, after_retry)

    def _storage_dropped(self, events: list[bytes], reason: DropReason) -> None:
        texts = {
            DropReason.STORAGE_FULL: "the spool is full (storage_max_bytes): its oldest events make room",
            DropReason.STORAGE_EXPIRED: "the events waited in the spool longer than storage_max_age",
            DropReason.STORAGE_CORRUPT: "the spooled events could not be decoded",
        }
        self.record(events, DeliveryError(reason, texts.get(reason, str(reason))))

    # -- outcomes -------------------------------------------------------------

    def record(self, events: list[bytes], error: Optional[DeliveryError], after_retry: bool = False) -> None:
        """Count a group of events delivered (``error`` is None) or dropped, then tell the callbacks."""
        if error is None:
            self.counters.delivered(len(events), after_retry)
            if self.config.on_success:
                self._notify(self.config.on_success, None, events)
        else:
            self.counters.dropped(error.reason, len(events))
            self.drops.add(error.reason, error.status if error.status is not None else error.kind, len(events))
            if self.config.on_error:
                self._notify(self.config.on_error, error, events)

    def refuse(self, reason: DropReason, msg: Message, text: str) -> tuple[bool, Message]:
        """Count and report an event accepted but not queued; the call returns ``(False, msg)``."""
        self.counters.refuse(reason)
        self.drops.add(reason)
        if self.config.on_error:
            self._call(self.config.on_error, DeliveryError(reason, text), [msg])
        return False, msg

    def _notify(self, callback: Callable[..., Any], error: Optional[DeliveryError], events: list[bytes]) -> None:
        try:
            messages = [encoding.decode_safely(item) for item in events]
        except Exception:
            log.exception("could not decode %d event(s) for the %s callback", len(events), _name(callback))
            return
        if error is None:
            self._call(callback, messages)
        else:
            self._call(callback, error, messages)

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        local = self._local
        local.callbacks = getattr(local, "callbacks", 0) + 1
        try:
            callback(*args)
        except (Exception, SystemExit):
            log.exception("exception raised by the %s callback (ignored)", _name(callback))
        finally:
            local.callbacks -= 1

    # -- the calls' side ------------------------------------------------------

    def put(self, data: bytes) -> Optional[DropReason]:
        """Queue one encoded event; ``None`` when queued, else why it was not."""
        if self.buffer.put(data) or (self._on_full_acts and self._put_when_full(data)):
            if self.state is State.FORKED:
                self._ensure_running()
            return None
        return DropReason.CLIENT_CLOSED if self.buffer.sealed else DropReason.QUEUE_FULL

    def _put_when_full(self, data: bytes) -> bool:
        """The queue was full: apply ``on_full``; whether ``data`` was queued after all.

        ``block`` never waits in a callback or on a consumer thread (it could wait for itself), at exit,
        or when no consumer runs to make room; shutdown and ``join()`` wake the waiters.
        """
        on_full = self.config.on_full
        if self.buffer.sealed:
            return False
        if on_full == "block":
            in_callback: int = getattr(self._local, "callbacks", 0)
            if in_callback or self._exiting or self._on_consumer_thread() or not self._alive():
                return False
            return self.buffer.put_wait(data, self.config.block_timeout)
        evicted = self.buffer.put_evicting(data)
        if evicted is None:
            return False
        if evicted.items:
            try:
                self.record(evicted.items, DeliveryError(DropReason.QUEUE_FULL, self.full_text("oldest event dropped")))
            finally:
                self.buffer.settle(evicted)
        return True

    def full_text(self, what: Optional[str] = None) -> str:
        """Why the queue had no room, for a ``queue_full`` report (``what`` ``None``: the event was refused)."""
        return self._full_refused if what is None else f"{self._full_limits}: {what}"

    def send_now(self, data: bytes) -> bool:
        """Sync mode: deliver one event in the caller's thread; whether it was delivered."""
        self.counters.accept_unqueued()
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
        if process_hooks.watch:
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
        if process_hooks.watch:
            process_hooks.catch_up()
        with self._lock:
            if self.state is State.RUNNING:
                self.state = State.STOPPED
            consumers = list(self.consumers)
            self._stop.set()
            self.source.close()
        self.drops.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        for consumer in consumers:
            if consumer is threading.current_thread() or not consumer.is_alive():
                continue
            consumer.join(_remaining(deadline))
        if self.spool is not None:
            self.spool.join_writer(_remaining(deadline))  # it commits what is staged, then ends

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
        if process_hooks.watch:
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
        self.drops.flush()
        return self.pending()

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (``accepted + recovered == delivered + dropped + pending``)."""
        if process_hooks.watch:
            process_hooks.catch_up()
        buffer, spool = self.buffer, self.spool
        if spool is None:
            return self.counters.snapshot(lambda: (buffer.put_total, len(buffer), buffer.in_flight(), 0))
        snapshot = self.counters.snapshot(lambda: (buffer.put_total, len(buffer), spool.in_flight(), spool.recovered()))
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
        self.drops.stop()  # starts no thread at exit
        deadline = time.monotonic() + self.config.exit_timeout
        if self._alive():
            self.source.wait_settled(self.source.request_flush(), self.config.exit_timeout, self._alive)
        self._stop.set()
        self.source.close()
        spool = self.spool
        if spool is not None:
            spool.join_writer(_remaining(deadline))  # within the exit budget, it commits what it took and ends
            if not spool.writer_alive():  # (one stuck on a busy database keeps what it holds in memory)
                spool.commit_staged()  # whatever the writer did not take: a new thread may not start now
        self.drops.flush()
        pending = self.pending()
        kept = min(pending, spool.stored()) if spool is not None and not spool.degraded else 0
        if kept:
            where = spool.path if spool is not None else ""
            text = (
                "segment: %d event(s) could not be delivered before exit; %d kept in the spool at %s for the next start"
            )
            log.warning(text, pending, kept, where)
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


def _name(callback: Callable[..., Any]) -> str:
    return str(getattr(callback, "__name__", "user"))
