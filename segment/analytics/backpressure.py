"""What a put does when the queue is full: ``on_full`` (README, "Bulk imports and backfills").

``drop_new`` (the default) refuses the new event; ``drop_oldest`` makes room by dropping, and
reporting, the oldest queued event; ``block`` waits up to ``block_timeout`` for room, then refuses.
Either way the event or the one it displaced is reported once, as ``queue_full``.
"""

from __future__ import annotations

from typing import Callable, Optional

from segment.analytics.buffer import EventBuffer
from segment.analytics.config import Config
from segment.analytics.errors import DeliveryError
from segment.analytics.retry import DropReason

__all__ = ["FullQueue"]

Record = Callable[[list[bytes], Optional[DeliveryError]], None]


class FullQueue:
    """The ``on_full`` policy of one client, and the words its ``queue_full`` reports use."""

    def __init__(self, config: Config) -> None:
        limits = f"max_queue_size={config.max_queue_size}, max_queue_bytes={config.max_queue_bytes}"
        if config.on_full == "block":
            limits += f", waited up to block_timeout={config.block_timeout:g}s"
        self._limits = f"queue is full ({limits})"
        self._on_full = config.on_full
        self._block_timeout = config.block_timeout
        self.acts = config.on_full != "drop_new"  # drop_new: a failed put is the answer
        self.refused_text = self.text("event refused")

    def text(self, what: str) -> str:
        """Why the queue had no room, and ``what`` followed."""
        return f"{self._limits}: {what}"

    def make_room(self, buffer: EventBuffer, data: bytes, record: Record, may_wait: bool) -> bool:
        """The queue was full: apply ``on_full``; whether ``data`` was queued after all.

        ``block`` waits only when ``may_wait`` (never in a callback, on a consumer thread, at exit, or
        when no consumer runs to make room); shutdown and ``join()`` wake the waiters.
        """
        if buffer.sealed:
            return False
        if self._on_full == "block":
            return may_wait and buffer.put_wait(data, self._block_timeout)
        evicted = buffer.put_evicting(data)
        if evicted is None:
            return False
        if evicted.items:
            try:
                record(evicted.items, DeliveryError(DropReason.QUEUE_FULL, self.text("oldest event dropped")))
            finally:
                buffer.settle(evicted)
        return True
