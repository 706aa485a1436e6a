"""The one place where what became of events is counted and reported (delivery.md §4).

Every delivery and every drop of one client goes through :meth:`Outcomes.record` (or
:meth:`Outcomes.refuse` for an event that never reached the queue): it updates the counters and the
once-a-minute drop summary, then calls the user's callbacks, outside any lock, each guarded so that
nothing a callback does (raise, ``sys.exit``, call the client back) reaches the pipeline.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

from segment.analytics import encoding
from segment.analytics.config import Config, Message
from segment.analytics.dropsummary import DropSummary
from segment.analytics.errors import DeliveryError
from segment.analytics.retry import DropReason
from segment.analytics.stats import DeliveryStats

__all__ = ["Outcomes"]

log = logging.getLogger("segment")

_STORAGE_TEXTS = {
    DropReason.STORAGE_FULL: "the spool is full (storage_max_bytes): its oldest events make room",
    DropReason.STORAGE_EXPIRED: "the events waited in the spool longer than storage_max_age",
    DropReason.STORAGE_CORRUPT: "the spooled events could not be decoded",
}


class Outcomes:
    """Counters, drop summary and callbacks of one client."""

    def __init__(self, config: Config) -> None:
        self.counters = DeliveryStats()
        self.drops = DropSummary()
        self._on_success = config.on_success
        self._on_error = config.on_error
        self._local = threading.local()  # callbacks running on each thread

    def record(self, events: list[bytes], error: Optional[DeliveryError], after_retry: bool = False) -> None:
        """Count a group of events delivered (``error`` is None) or dropped, then tell the callbacks."""
        if error is None:
            self.counters.delivered(len(events), after_retry)
            if self._on_success:
                self._notify(self._on_success, None, events)
        else:
            self.counters.dropped(error.reason, len(events))
            self.drops.add(error.reason, error.status if error.status is not None else error.kind, len(events))
            if self._on_error:
                self._notify(self._on_error, error, events)

    def refuse(self, reason: DropReason, msg: Message, text: str) -> tuple[bool, Message]:
        """Count and report an event accepted but not queued; the call returns ``(False, msg)``."""
        self.counters.refuse(reason)
        self.drops.add(reason)
        if self._on_error:
            self._call(self._on_error, DeliveryError(reason, text), [msg])
        return False, msg

    def storage_dropped(self, events: list[bytes], reason: DropReason) -> None:
        """Report spooled events the spool gave up (full, expired, undecodable)."""
        self.record(events, DeliveryError(reason, _STORAGE_TEXTS.get(reason, str(reason))))

    def in_callback(self) -> bool:
        """Whether the current thread is inside one of the user's callbacks."""
        return bool(getattr(self._local, "callbacks", 0))

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


def _name(callback: Callable[..., Any]) -> str:
    return str(getattr(callback, "__name__", "user"))
