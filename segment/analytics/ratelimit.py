"""The client's shared rate-limit state: while a Retry-After wait runs, no consumer sends (delivery.md §3.4)."""

from __future__ import annotations

import threading
from typing import Optional

__all__ = ["RateLimitGate"]


class RateLimitGate:
    """Rate-limit state shared by every consumer of one client.

    While ``until`` lies in the future nobody sends. An episode starts with
    the first rate-limited response and ends with the first answer that is not
    rate-limited to a request sent after the last rate-limited response arrived.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.until = 0.0
        self.episode_start: Optional[float] = None
        self._last_limited_at = float("-inf")

    def wait_time(self, now: float) -> float:
        """Seconds until sending is allowed again."""
        return max(0.0, self.until - now)

    def preview(self, now: float, delay: float) -> tuple[float, float]:
        """What :meth:`limit` would make of it: (the episode's start, seconds until sending is allowed)."""
        with self._lock:
            start = now if self.episode_start is None else self.episode_start
            return start, max(self.until, now + delay) - now

    def limit(self, now: float, delay: float) -> float:
        """Record a rate-limited response arriving at ``now``; returns the episode's start."""
        with self._lock:
            if self.episode_start is None:
                self.episode_start = now
            self.until = max(self.until, now + delay)
            self._last_limited_at = now
            return self.episode_start

    def release(self, sent_at: float) -> None:
        """Record an answer that is not rate-limited to a request sent at ``sent_at``."""
        with self._lock:
            if self.episode_start is not None and sent_at >= self._last_limited_at:
                self.episode_start = None
