"""Serverless handlers: deliver what an invocation tracked before the platform freezes or recycles it.

AWS Lambda freezes the sandbox as soon as the handler returns: the consumer threads stop with it, and a
sandbox that is recycled instead of thawed takes its queue with it. Cloud Functions and Cloud Run may
starve the instance of CPU once the response is sent. :func:`flush_after` flushes after every
invocation, whether the handler returned or raised::

    @analytics.flush_after
    def handler(event, context): ...          # a Lambda context: its remaining time, less a margin

    @analytics.flush_after(timeout=2.0, client=client)
    async def handle(request): ...             # awaits client.aflush(): the event loop is not blocked

    with analytics.flush_after(timeout=2.0) as flushed:
        ...
    flushed.left                               # events the flush could not deliver (also logged)

The flush may take ``timeout`` seconds (default 5), or less when the handler received an object with a
``get_remaining_time_in_millis()`` method (AWS Lambda's context): what it returns after the handler,
less ``margin`` (default 0.5 s), so the invocation never runs out of time because of the flush. Events
it could not deliver are logged (one WARNING with the count) and stay queued: they are sent if the
sandbox runs again, and lost if it is recycled (a spool on the sandbox's own disk goes with it).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, cast, overload

from segment.analytics.config import check_timeout
from segment.analytics.errors import ArgumentError

if TYPE_CHECKING:
    from segment.analytics.client import Client

__all__ = ["DEFAULT_MARGIN", "DEFAULT_TIMEOUT", "FlushAfter", "flush_after"]

log = logging.getLogger("segment")

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TIMEOUT = 5.0  # seconds a flush may take when the platform does not say how much time is left
DEFAULT_MARGIN = 0.5  # seconds left to the platform when it says how much time is left


class FlushAfter:
    """A decorator for handlers (plain or ``async``) and a context manager (``with`` or ``async with``).

    ``left`` is the number of events still undelivered after the latest flush (``None`` before the first).
    """

    def __init__(self, timeout: Optional[float], margin: float, client: Optional[Client], context: Any) -> None:
        self.timeout = check_timeout(timeout)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0 or math.isinf(margin):
            raise ArgumentError("margin", f"margin must be a number of seconds >= 0, got {margin!r}")
        self.margin = float(margin)
        self.client = client
        self.context = context
        self.left: Optional[int] = None

    def __call__(self, handler: F) -> F:
        """Wrap ``handler`` so that every invocation ends with a flush."""
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await handler(*args, **kwargs)
                finally:
                    await self._aflush(self._context_of(args, kwargs))

            return cast(F, async_wrapper)

        @functools.wraps(handler)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            finally:
                self._flush(self._context_of(args, kwargs))

        return cast(F, wrapper)

    def __enter__(self) -> FlushAfter:
        return self

    def __exit__(
        self, kind: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self._flush(self.context)

    async def __aenter__(self) -> FlushAfter:
        return self

    async def __aexit__(
        self, kind: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self._aflush(self.context)

    def _context_of(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        found = _find_context(args, kwargs)
        return self.context if found is None else found

    def budget(self, context: Any = None) -> Optional[float]:
        """Seconds the flush may take: ``timeout``, or less if ``context`` says how much time is left."""
        remaining = _remaining_seconds(context)
        if remaining is None:
            return self.timeout
        room = max(0.0, remaining - self.margin)
        return room if self.timeout is None else min(self.timeout, room)

    def _flush(self, context: Any) -> None:
        budget = self.budget(context)
        try:
            if self.client is not None:
                left = self.client.flush(budget)
            else:
                import segment.analytics as analytics

                left = analytics.flush(budget)
        except Exception:  # a flush raises nothing for data; never mask the handler's own outcome
            log.exception("flush_after: the flush failed")
            return
        self._report(left, budget)

    async def _aflush(self, context: Any) -> None:
        budget = self.budget(context)
        try:
            if self.client is not None:
                left = await self.client.aflush(budget)
            else:
                import segment.analytics as analytics

                left = await analytics.aflush(budget)
        except Exception:
            log.exception("flush_after: the flush failed")
            return
        self._report(left, budget)

    def _report(self, left: int, budget: Optional[float]) -> None:
        self.left = left
        if left:
            within = "" if budget is None else f" within {budget:.3f} s"
            log.warning(
                "segment: %d event(s) not delivered%s after the handler (flush_after); they stay queued, "
                "and are sent only if this instance runs again",
                left,
                within,
            )


@overload
def flush_after(
    handler: F,
    *,
    timeout: Optional[float] = ...,
    margin: float = ...,
    client: Optional[Client] = ...,
    context: Any = ...,
) -> F: ...


@overload
def flush_after(
    handler: None = None,
    *,
    timeout: Optional[float] = ...,
    margin: float = ...,
    client: Optional[Client] = ...,
    context: Any = ...,
) -> FlushAfter: ...


def flush_after(
    handler: Optional[F] = None,
    *,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    margin: float = DEFAULT_MARGIN,
    client: Optional[Client] = None,
    context: Any = None,
) -> Any:
    """Flush after each invocation of ``handler`` (or after a ``with`` block) within the time left.

    ``client`` defaults to the module-level default client (looked up at each flush). ``timeout=None``
    lets the flush take all the time the platform leaves (without a Lambda context: until everything
    is delivered). ``context`` gives a ``with`` block the Lambda context to read the remaining time from.
    """
    if handler is not None and not callable(handler):
        raise ArgumentError(
            "handler", f"flush_after takes a handler to wrap, got {handler!r} (timeout=... is a keyword)"
        )
    flusher = FlushAfter(timeout, margin, client, context)
    return flusher if handler is None else flusher(handler)


def _find_context(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The first argument with a ``get_remaining_time_in_millis`` method (AWS Lambda's context), if any."""
    for value in (*args, *kwargs.values()):
        try:
            if callable(getattr(value, "get_remaining_time_in_millis", None)):
                return value
        except Exception:  # noqa: BLE001 - an exotic object (a proxy outside its context) is no Lambda context
            continue
    return None


def _remaining_seconds(context: Any) -> Optional[float]:
    if context is None:
        return None
    try:
        millis = context.get_remaining_time_in_millis()
    except Exception:
        log.debug("flush_after: get_remaining_time_in_millis() failed; using the timeout", exc_info=True)
        return None
    if isinstance(millis, bool) or not isinstance(millis, (int, float)) or math.isnan(millis):
        return None
    return max(0.0, float(millis) / 1000.0)
