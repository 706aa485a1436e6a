"""The public :class:`Client`: the six calls, over a frozen :class:`Config` and a :class:`Pipeline`.

A call such as ``client.track(...)`` validates its arguments (raising
:class:`~segment.analytics.errors.ArgumentError` in the caller's thread),
builds the message, encodes it once to JSON bytes and hands the bytes to the
pipeline. Nothing here knows HTTP or threads.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from segment.analytics import calls, encoding
from segment.analytics.buffer import EventBuffer
from segment.analytics.config import Config, DefaultConfig, ErrorCallback, Message, SuccessCallback, check_timeout
from segment.analytics.consumer import Consumer
from segment.analytics.pipeline import Pipeline
from segment.analytics.retry import DropReason
from segment.analytics.wire import MAX_MSG_SIZE

__all__ = ["MAX_MSG_SIZE", "Client"]

if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    P = ParamSpec("P")

_OPTIONS = frozenset(Config.__dataclass_fields__)


def _call(build: Callable[P, Message]) -> Callable[Concatenate[Client, P], tuple[bool, Message]]:
    """A ``Client`` method taking ``build``'s arguments: it builds the message and queues it.

    Returns ``(True, message)`` when the event was accepted, ``(False, message)`` when it was not queued.
    """

    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> tuple[bool, Message]:
        return self._enqueue(build(*args, **kwargs))

    call.__name__ = build.__name__
    call.__qualname__ = f"Client.{build.__name__}"
    call.__doc__ = build.__doc__
    parameters = list(inspect.signature(build).parameters.values())
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    call.__signature__ = inspect.Signature([self_parameter, *parameters])  # type: ignore[attr-defined]
    return call


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
        storage: Optional[str] = DefaultConfig.storage,
        storage_max_bytes: int = DefaultConfig.storage_max_bytes,
        storage_max_age: float = DefaultConfig.storage_max_age,
        storage_sync_interval: float = DefaultConfig.storage_sync_interval,
        max_queue_bytes: int = DefaultConfig.max_queue_bytes,
        on_full: str = DefaultConfig.on_full,
        block_timeout: float = DefaultConfig.block_timeout,
    ) -> None:
        options = dict(locals())
        del options["self"]
        options["on_error"], options["on_success"] = on_error or None, on_success or None
        config = Config(**options)
        if log_handler:
            self.log.addHandler(log_handler)
        if debug:
            self.log.setLevel(logging.DEBUG)
            if not self.log.handlers:
                self.log.addHandler(logging.StreamHandler())
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "_pipeline", Pipeline(config))

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

    # -- the six calls (their arguments and checks: calls.py) ---------------------------------

    identify = _call(calls.identify)
    track = _call(calls.track)
    alias = _call(calls.alias)
    group = _call(calls.group)
    page = _call(calls.page)
    screen = _call(calls.screen)

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
        return pipeline.refuse(reason, msg, pipeline.full.refused_text)

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
