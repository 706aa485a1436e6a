"""The public :class:`Client`: the six calls, over a frozen :class:`Config` and a :class:`Pipeline`.

A call such as ``client.track(...)`` validates its arguments (raising
:class:`~segment.analytics.errors.ArgumentError` in the caller's thread),
builds the message, encodes it once to JSON bytes and hands the bytes to the
pipeline. Nothing here knows HTTP or threads.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from segment.analytics import encoding, message
from segment.analytics.buffer import EventBuffer
from segment.analytics.config import Config, DefaultConfig, ErrorCallback, Message, SuccessCallback, check_timeout
from segment.analytics.consumer import Consumer
from segment.analytics.pipeline import Pipeline
from segment.analytics.retry import DropReason
from segment.analytics.wire import MAX_MSG_SIZE

__all__ = ["MAX_MSG_SIZE", "Client"]

_OPTIONS = frozenset(Config.__dataclass_fields__)


class Client:
    """A Segment client: the six calls, ``flush``, ``join``, ``shutdown`` and ``stats``.

    Every option of analytics-python's ``Client`` is accepted with the same
    default; see README.md for the table. The options are fixed when the
    client is built and readable as attributes (``client.host``,
    ``client.gzip``, ...). The calls return ``(True, message)`` when the event
    was accepted and ``(False, message)`` when it was not queued.
    """

    DefaultConfig = DefaultConfig

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
        config = Config(
            write_key=write_key,  # type: ignore[arg-type]  # checked by Config
            host=host,
            on_error=on_error or None,
            on_success=on_success or None,
            debug=debug,
            log_handler=log_handler,
            send=send,
            sync_mode=sync_mode,
            max_queue_size=max_queue_size,
            gzip=gzip,
            timeout=timeout,
            max_retries=max_retries,
            max_total_backoff_duration=max_total_backoff_duration,
            max_rate_limit_duration=max_rate_limit_duration,
            proxies=proxies,
            thread=thread,
            upload_interval=upload_interval,
            upload_size=upload_size,
            exit_timeout=exit_timeout,
            oauth_client_id=oauth_client_id,
            oauth_client_key=oauth_client_key,
            oauth_key_id=oauth_key_id,
            oauth_auth_server=oauth_auth_server,
            oauth_scope=oauth_scope,
        )
        if log_handler:
            self.log.addHandler(log_handler)
        if debug:
            self.log.setLevel(logging.DEBUG)
            if not self.log.handlers:
                self.log.addHandler(logging.StreamHandler())
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "_pipeline", Pipeline(config))
        object.__setattr__(self, "_warned_full", False)

    config: Config
    _pipeline: Pipeline

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not attributes: the options, read from the frozen config
        if name in _OPTIONS:
            return getattr(self.config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OPTIONS or name in ("config", "queue", "consumers"):
            raise AttributeError(f"{name} is fixed when the client is built: create a new Client to change it")
        object.__setattr__(self, name, value)

    @property
    def queue(self) -> EventBuffer:
        """The bounded queue of encoded events (``empty()``, ``qsize()``, ``full()``, ``maxsize``)."""
        return self._pipeline.buffer

    @property
    def consumers(self) -> Optional[list[Consumer]]:
        """The consumer threads (``None`` in sync mode)."""
        return None if self.config.sync_mode else self._pipeline.consumers

    @property
    def oauth_manager(self) -> Any:
        """The OAuth token source, or ``None`` when OAuth is not configured."""
        return self._pipeline.auth

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
        pipeline = self._pipeline
        if pipeline.closed:
            return pipeline.refuse(DropReason.CLIENT_CLOSED, msg, "the client was shut down")
        config = self.config
        if not config.send:
            return True, msg
        data = encoding.encode(msg)
        if len(data) > MAX_MSG_SIZE:
            text = f"message is {len(data)} bytes once encoded; the limit is {MAX_MSG_SIZE}"
            return pipeline.refuse(DropReason.MESSAGE_TOO_LARGE, msg, text)
        if config.sync_mode:
            return pipeline.send_now(data), msg
        reason = pipeline.put(data)
        if reason is None:
            return True, msg
        if reason is DropReason.CLIENT_CLOSED:
            return pipeline.refuse(reason, msg, "the client was shut down")
        if not self._warned_full:
            object.__setattr__(self, "_warned_full", True)
            self.log.warning("queue is full (max_queue_size=%d): events are being dropped", config.max_queue_size)
        return pipeline.refuse(reason, msg, f"queue is full (max_queue_size={config.max_queue_size})")

    # -- flush, join, shutdown ------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> int:
        """Wait until everything queued before this call is delivered or reported.

        With ``timeout`` (seconds) it returns within it. Returns the number of
        accepted events still neither delivered nor reported (0 when all are done).
        Called from an ``on_error``/``on_success`` callback it does not wait.
        """
        return self._pipeline.flush(check_timeout(timeout))

    def join(self, timeout: Optional[float] = None) -> None:
        """Stop the consumer threads and wait for them to exit.

        Waits are interrupted; a batch a consumer was holding goes back to the
        queue. Events still queued stay queued: call :meth:`flush` first (or
        :meth:`shutdown`, which does both) to deliver them.
        """
        self._pipeline.join(check_timeout(timeout))

    def shutdown(self, timeout: Optional[float] = None) -> int:
        """Stop accepting events, deliver what was accepted, stop the consumers; returns the events left.

        With ``timeout`` it returns within it. Later calls return ``(False, message)``
        and are reported as ``client_closed``.
        """
        return self._pipeline.shutdown(check_timeout(timeout))

    async def aflush(self, timeout: Optional[float] = None) -> int:
        """:meth:`flush` for asyncio: the same wait and return value, without blocking the event loop."""
        from segment.analytics import aio  # asyncio is imported only by those who use it

        return await aio.aflush(self._pipeline, check_timeout(timeout))

    async def ashutdown(self, timeout: Optional[float] = None) -> int:
        """:meth:`shutdown` for asyncio: the same steps and return value, without blocking the event loop."""
        from segment.analytics import aio

        return await aio.ashutdown(self._pipeline, check_timeout(timeout))

    def stats(self) -> dict[str, Any]:
        """A snapshot of the delivery counters; ``accepted == delivered + dropped + pending``."""
        return self._pipeline.stats()
