"""The public :class:`Client`: argument checks, the queue, consumer lifecycle, flush and shutdown.

A call such as ``client.track(...)`` validates its arguments (raising
:class:`~segment.analytics.errors.ArgumentError` in the caller's thread),
builds the message, encodes it once to JSON bytes and puts the bytes in a
bounded buffer. Consumer threads batch and send them. Nothing here knows HTTP.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Optional

from segment.analytics import encoding, errors, message
from segment.analytics.buffer import EventBuffer, Lease
from segment.analytics.consumer import BATCH_SIZE_LIMIT, Consumer
from segment.analytics.errors import ArgumentError, DeliveryError
from segment.analytics.logs import register_secret
from segment.analytics.request import BatchResult, BatchSender, RateLimitGate, Transport
from segment.analytics.retry import (
    DEFAULT_MAX_RATE_LIMIT_DURATION,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_TOTAL_BACKOFF_DURATION,
    RetryPolicy,
)
from segment.analytics.stats import DeliveryStats

__all__ = ["MAX_MSG_SIZE", "Client"]

#: The largest message the Tracking API accepts, once encoded.
MAX_MSG_SIZE = 32 << 10

Message = dict[str, Any]
ErrorCallback = Callable[[BaseException, list[Message]], Any]
SuccessCallback = Callable[[list[Message]], Any]

_clients: weakref.WeakSet[Client] = weakref.WeakSet()


class Client:
    """A Segment client: the six calls, ``flush``, ``join``, ``shutdown`` and ``stats``.

    Every option of analytics-python's ``Client`` is accepted with the same
    default; see README.md for the table. The calls return ``(True, message)``
    when the event was accepted and ``(False, message)`` when it was not queued.
    """

    class DefaultConfig:
        """Defaults of every option (the module-level settings read these too)."""

        write_key: Optional[str] = None
        host: Optional[str] = None
        on_error: Optional[ErrorCallback] = None
        on_success: Optional[SuccessCallback] = None
        debug = False
        log_handler: Optional[logging.Handler] = None
        send = True
        sync_mode = False
        max_queue_size = 10000
        gzip = False
        timeout: float = 15
        max_retries = DEFAULT_MAX_RETRIES
        max_total_backoff_duration: float = DEFAULT_MAX_TOTAL_BACKOFF_DURATION
        max_rate_limit_duration: float = DEFAULT_MAX_RATE_LIMIT_DURATION
        proxies: Optional[dict[str, str]] = None
        thread = 1
        upload_interval: float = 0.5
        upload_size = 100
        exit_timeout: float = 5.0
        oauth_client_id: Optional[str] = None
        oauth_client_key: Optional[str] = None
        oauth_key_id: Optional[str] = None
        oauth_auth_server = "https://oauth2.segment.io"
        oauth_scope = "tracking_api:write"

    log = logging.getLogger("segment")

    def __init__(
        self,
        write_key: Optional[str] = DefaultConfig.write_key,
        host: Optional[str] = DefaultConfig.host,
        debug: bool = DefaultConfig.debug,
        max_queue_size: int = DefaultConfig.max_queue_size,
        send: bool = DefaultConfig.send,
        on_error: Optional[ErrorCallback] = DefaultConfig.on_error,
        gzip: bool = DefaultConfig.gzip,
        max_retries: int = DefaultConfig.max_retries,
        sync_mode: bool = DefaultConfig.sync_mode,
        timeout: float = DefaultConfig.timeout,
        proxies: Optional[dict[str, str]] = DefaultConfig.proxies,
        thread: int = DefaultConfig.thread,
        upload_size: int = DefaultConfig.upload_size,
        upload_interval: float = DefaultConfig.upload_interval,
        log_handler: Optional[logging.Handler] = DefaultConfig.log_handler,
        oauth_client_id: Optional[str] = DefaultConfig.oauth_client_id,
        oauth_client_key: Optional[str] = DefaultConfig.oauth_client_key,
        oauth_key_id: Optional[str] = DefaultConfig.oauth_key_id,
        oauth_auth_server: str = DefaultConfig.oauth_auth_server,
        oauth_scope: str = DefaultConfig.oauth_scope,
        max_total_backoff_duration: float = DefaultConfig.max_total_backoff_duration,
        max_rate_limit_duration: float = DefaultConfig.max_rate_limit_duration,
        on_success: Optional[SuccessCallback] = DefaultConfig.on_success,
        exit_timeout: float = DefaultConfig.exit_timeout,
    ) -> None:
        if not isinstance(write_key, str) or not write_key:
            raise ArgumentError("write_key", f"write_key must be a non-empty string, got {write_key!r}")
        _positive_int("max_queue_size", max_queue_size)
        _positive_int("thread", thread)
        _positive_int("upload_size", upload_size)
        _non_negative("upload_interval", upload_interval)
        _non_negative("exit_timeout", exit_timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ArgumentError("timeout", f"timeout must be a positive number of seconds, got {timeout!r}")
        for name, callback in (("on_error", on_error), ("on_success", on_success)):
            if callback and not callable(callback):
                raise ArgumentError(name, f"{name} must be callable, got {type(callback).__name__}")

        self.write_key = write_key
        self.host = host
        self.debug = debug
        self.send = send
        self.sync_mode = sync_mode
        self.gzip = gzip
        self.timeout = timeout
        self.proxies = proxies
        self.on_error = on_error or None
        self.on_success = on_success or None
        self.max_retries = max_retries
        self.max_total_backoff_duration = max_total_backoff_duration
        self.max_rate_limit_duration = max_rate_limit_duration
        self.upload_size = upload_size
        self.upload_interval = upload_interval
        self.thread = thread
        self.exit_timeout = exit_timeout

        register_secret(write_key)
        if log_handler:
            self.log.addHandler(log_handler)
        if debug:
            self.log.setLevel(logging.DEBUG)
            if not self.log.handlers:
                self.log.addHandler(logging.StreamHandler())

        self.oauth_manager = None
        if oauth_client_id and oauth_client_key and oauth_key_id:
            from segment.analytics.oauth_manager import OauthManager

            self.oauth_manager = OauthManager(
                oauth_client_id, oauth_client_key, oauth_key_id, oauth_auth_server, oauth_scope, timeout, max_retries
            )
        self._policy = RetryPolicy(
            max_retries=max_retries,
            max_total_backoff_duration=max_total_backoff_duration,
            max_rate_limit_duration=max_rate_limit_duration,
            oauth=self.oauth_manager is not None,
        )
        self._max_queue_size = max_queue_size
        self._lifecycle = threading.Lock()
        self._closed = False
        self._exiting = False
        self._warned_full = False
        self._setup_pipeline()
        self.consumers: Optional[list[Consumer]] = None if sync_mode else []
        if send and not sync_mode:
            self._start_consumers()
        _clients.add(self)

    # -- pipeline ---------------------------------------------------------------

    def _setup_pipeline(self) -> None:
        """Create the buffer, counters, rate-limit state, transport and sender (again after a fork)."""
        self._buffer = EventBuffer(self._max_queue_size)
        self._stats = DeliveryStats()
        self._gate = RateLimitGate()
        self._stop = threading.Event()
        self._transport = Transport(self.host, self.timeout, self.proxies, pool_size=self.thread)
        self._sender = BatchSender(
            self.write_key,
            self._transport,
            self._policy,
            auth=self.oauth_manager,
            gzip=self.gzip,
            gate=self._gate,
            stats=self._stats,
            sleep=self._interruptible_sleep,
            stopped=self._stop.is_set,
        )
        self._restart_consumers = False

    @property
    def queue(self) -> EventBuffer:
        """The bounded queue of encoded events (``empty()``, ``qsize()``, ``full()``, ``maxsize``)."""
        return self._buffer

    def _interruptible_sleep(self, seconds: float) -> bool:
        return not self._stop.wait(seconds)

    def _start_consumers(self) -> None:
        with self._lifecycle:
            if self._closed or self._exiting or self.consumers is None:
                return
            if any(consumer.is_alive() for consumer in self.consumers):
                return
            self._restart_consumers = False
            self._stop = threading.Event()
            self._sender.stopped = self._stop.is_set
            self._buffer.reopen()
            self.consumers = [
                Consumer(
                    index,
                    self._buffer,
                    self._sender.send,
                    self._settle,
                    self._stop,
                    self.upload_size,
                    self.upload_interval,
                    BATCH_SIZE_LIMIT - self._sender.envelope_size(),
                )
                for index in range(1, self.thread + 1)
            ]
            for consumer in self.consumers:
                consumer.start()

    def _consumers_alive(self) -> bool:
        return bool(self.consumers) and any(consumer.is_alive() for consumer in self.consumers or ())

    def _settle(self, lease: Lease, result: BatchResult) -> None:
        """Called by a consumer when it is done with a batch."""
        if result.pending:
            self._buffer.requeue_front(result.pending)
        self._report(result)
        self._buffer.settle(lease)

    def _report(self, result: BatchResult) -> None:
        """Count what became of a batch and tell the callbacks."""
        stats = self._stats
        for events, after_retry in result.delivered:
            stats.delivered(len(events), after_retry)
        for events, error in result.dropped:
            stats.dropped(error.reason, len(events))
        if self.on_success:
            for events, _ in result.delivered:
                self._call(self.on_success, [encoding.decode(item) for item in events])
        if self.on_error:
            for events, error in result.dropped:
                self._call(self.on_error, error, [encoding.decode(item) for item in events])

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            self.log.exception("exception raised by the %s callback (ignored)", getattr(callback, "__name__", "user"))

    def _refuse(self, reason: str, msg: Message, text: str) -> tuple[bool, Message]:
        self._stats.refuse(reason)
        if self.on_error:
            self._call(self.on_error, DeliveryError(reason, text), [msg])
        return False, msg

    # -- the six calls --------------------------------------------------------

    def identify(
        self,
        user_id: Any = None,
        traits: Optional[dict[str, Any]] = None,
        context: Optional[dict[str, Any]] = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Optional[dict[str, Any]] = None,
        message_id: Any = None,
    ) -> tuple[bool, Message]:
        """Record who the user is and their traits."""
        uid, aid = message.require_user(user_id, anonymous_id)
        traits = message.mapping("traits", traits)
        ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
        return self._enqueue(
            {
                "integrations": integ,
                "messageId": mid,
                "traits": traits,
                "timestamp": stamp,
                "anonymousId": aid,
                "context": ctx,
                "type": "identify",
                "userId": uid,
            }
        )

    def track(
        self,
        user_id: Any = None,
        event: Optional[str] = None,
        properties: Optional[dict[str, Any]] = None,
        context: Optional[dict[str, Any]] = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Optional[dict[str, Any]] = None,
        message_id: Any = None,
    ) -> tuple[bool, Message]:
        """Record an action the user performed."""
        uid, aid = message.require_user(user_id, anonymous_id)
        event = message.require_event(event)
        properties = message.mapping("properties", properties)
        ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
        # field order chosen for gzip: constant and random fields interleaved compress best across a batch
        return self._enqueue(
            {
                "integrations": integ,
                "messageId": mid,
                "properties": properties,
                "timestamp": stamp,
                "anonymousId": aid,
                "context": ctx,
                "type": "track",
                "userId": uid,
                "event": event,
            }
        )

    def alias(
        self,
        previous_id: Any = None,
        user_id: Any = None,
        context: Optional[dict[str, Any]] = None,
        timestamp: Any = None,
        integrations: Optional[dict[str, Any]] = None,
        message_id: Any = None,
    ) -> tuple[bool, Message]:
        """Merge two user identities."""
        previous = message.require_id("previous_id", previous_id)
        uid = message.id_string("user_id", user_id, required=True)
        ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
        return self._enqueue(
            {
                "integrations": integ,
                "messageId": mid,
                "previousId": previous,
                "timestamp": stamp,
                "context": ctx,
                "type": "alias",
                "userId": uid,
            }
        )

    def group(
        self,
        user_id: Any = None,
        group_id: Any = None,
        traits: Optional[dict[str, Any]] = None,
        context: Optional[dict[str, Any]] = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Optional[dict[str, Any]] = None,
        message_id: Any = None,
    ) -> tuple[bool, Message]:
        """Associate the user with a group (an account, a company)."""
        uid, aid = message.require_user(user_id, anonymous_id)
        gid = message.require_id("group_id", group_id)
        traits = message.mapping("traits", traits)
        ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
        return self._enqueue(
            {
                "integrations": integ,
                "messageId": mid,
                "traits": traits,
                "timestamp": stamp,
                "anonymousId": aid,
                "groupId": gid,
                "context": ctx,
                "type": "group",
                "userId": uid,
            }
        )

    def page(
        self,
        user_id: Any = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Optional[dict[str, Any]] = None,
        context: Optional[dict[str, Any]] = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Optional[dict[str, Any]] = None,
        message_id: Any = None,
    ) -> tuple[bool, Message]:
        """Record a page view."""
        return self._view(
            "page", user_id, category, name, properties, context, timestamp, anonymous_id, integrations, message_id
        )

    def screen(
        self,
        user_id: Any = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Optional[dict[str, Any]] = None,
        context: Optional[dict[str, Any]] = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Optional[dict[str, Any]] = None,
        message_id: Any = None,
    ) -> tuple[bool, Message]:
        """Record a mobile screen view."""
        return self._view(
            "screen", user_id, category, name, properties, context, timestamp, anonymous_id, integrations, message_id
        )

    def _view(
        self,
        kind: str,
        user_id: Any,
        category: Any,
        name: Any,
        properties: Any,
        context: Any,
        timestamp: Any,
        anonymous_id: Any,
        integrations: Any,
        message_id: Any,
    ) -> tuple[bool, Message]:
        uid, aid = message.require_user(user_id, anonymous_id)
        name = message.optional_str("name", name)
        category = message.optional_str("category", category)
        properties = message.mapping("properties", properties)
        ctx, integ, stamp, mid = message.common(context, timestamp, message_id, integrations)
        return self._enqueue(
            {
                "integrations": integ,
                "messageId": mid,
                "properties": properties,
                "timestamp": stamp,
                "anonymousId": aid,
                "category": category,
                "context": ctx,
                "type": kind,
                "userId": uid,
                "name": name,
            }
        )

    def _enqueue(self, msg: Message) -> tuple[bool, Message]:
        """Encode once and queue (or send now in sync mode); never raises for the data."""
        if self._closed:
            return self._refuse(errors.CLIENT_CLOSED, msg, "the client was shut down")
        if not self.send:
            return True, msg
        data = encoding.encode(msg)
        if len(data) > MAX_MSG_SIZE:
            return self._refuse(
                errors.MESSAGE_TOO_LARGE, msg, f"message is {len(data)} bytes once encoded; the limit is {MAX_MSG_SIZE}"
            )
        if self.sync_mode:
            self._stats.accept_unqueued()
            result = self._sender.send([data])
            self._report(result)
            return bool(result.delivered) and not result.dropped, msg
        if self._restart_consumers:  # first event in a forked child
            self._start_consumers()
        if self._buffer.put(data):
            self._warned_full = False
            return True, msg
        if not self._warned_full:
            self._warned_full = True
            self.log.warning("queue is full (max_queue_size=%d): events are being dropped", self._max_queue_size)
        return self._refuse(errors.QUEUE_FULL, msg, f"queue is full (max_queue_size={self._max_queue_size})")

    # -- flush, join, shutdown ------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> int:
        """Wait until everything queued before this call is delivered or reported.

        With ``timeout`` (seconds) it returns within it. Returns the number of
        accepted events still neither delivered nor reported (0 when all are done).
        """
        if not self.sync_mode and self.send and not self._closed and not self._consumers_alive():
            self._start_consumers()
        if not self.sync_mode and self.send:
            mark = self._buffer.request_flush()
            self._buffer.wait_settled(mark, timeout, self._consumers_alive)
        return self._pending()

    def join(self, timeout: Optional[float] = None) -> None:
        """Stop the consumer threads and wait for them to exit.

        Waits are interrupted; a batch a consumer was holding goes back to the
        queue. Events still queued stay queued: call :meth:`flush` first (or
        :meth:`shutdown`, which does both) to deliver them.
        """
        consumers = self.consumers or []
        self._stop.set()
        self._buffer.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        for consumer in consumers:
            if consumer is threading.current_thread() or not consumer.is_alive():
                continue
            consumer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: Optional[float] = None) -> int:
        """Flush, stop the consumers and close the client; returns the events left undelivered.

        With ``timeout`` it returns within it. Later calls return ``(False, message)``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.flush(timeout)
        self._closed = True
        self.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        pending = self._pending()
        if not any(consumer.is_alive() for consumer in self.consumers or ()):
            self._transport.close()
        return pending

    def stats(self) -> dict[str, Any]:
        """A snapshot of the delivery counters (SPEC 4); ``accepted = delivered + dropped + pending``."""
        buffer = self._buffer
        return self._stats.snapshot(lambda: (buffer.put_total, len(buffer), buffer.in_flight()))

    def _pending(self) -> int:
        return int(self.stats()["pending"])

    # -- process events -------------------------------------------------------

    def _at_exit(self) -> None:
        """Bounded drain at interpreter exit; starts no thread; logs what is left."""
        self._exiting = True
        if self._consumers_alive():
            self.flush(self.exit_timeout)
        self._stop.set()
        self._buffer.close()
        pending = self._pending()
        if pending:
            self.log.warning("segment: %d event(s) could not be delivered before exit", pending)

    def _after_fork_in_child(self) -> None:
        """Fresh locks, queue, session and (lazily started) consumers in a forked child."""
        was_running = self.send and not self.sync_mode and not self._closed
        self._lifecycle = threading.Lock()
        self._setup_pipeline()
        if self.consumers is not None:
            self.consumers = []
        self._restart_consumers = was_running


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(name, f"{name} must be a positive whole number, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ArgumentError(name, f"{name} must be a non-negative number, got {value!r}")


def _exit_all() -> None:
    for client in list(_clients):
        try:
            client._at_exit()
        except Exception:
            logging.getLogger("segment").exception("error while draining at exit")


def _fork_child_all() -> None:
    encoding.reset_after_fork()
    for client in list(_clients):
        client._after_fork_in_child()


atexit.register(_exit_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fork_child_all)
