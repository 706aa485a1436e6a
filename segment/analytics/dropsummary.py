"""Drops made visible without DEBUG: at most one WARNING a minute on the ``segment`` logger.

Every dropped group of events is counted here by reason and status (or network error kind) as it is
reported (:meth:`DropSummary.add`, called by the pipeline next to ``on_error``). The first drop after
a quiet period is logged at once, so a user sees it; later ones are accumulated and summarised in one
line when the minute is up::

    segment: dropped 1,204 events in the last 60 s: 1,200 queue_full, 4 non_retryable_status (400)

What is still pending when the client shuts down or the interpreter exits is logged then
(:meth:`DropSummary.flush`). During a storm of drops :meth:`add` costs one locked counter increment:
the end of the minute is noticed by a one-shot timer thread (``segment-drop-summary``), started at
most once a minute and never while the summary is stopped (after ``join()``, during the exit drain).
Without a timer, the next drop after the minute logs what accumulated. The clock and the timer are
parameters, so tests never sleep through a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Protocol, Union

__all__ = ["DEFAULT_INTERVAL", "DropSummary", "format_summary"]

DEFAULT_INTERVAL = 60.0

log = logging.getLogger("segment")

#: What qualifies a reason in the summary: an HTTP status, a network error kind, or nothing.
Detail = Union[int, str, None]
Key = tuple[str, Detail]


class Cancellable(Protocol):
    """A started timer: :class:`threading.Timer` or a test's fake."""

    def cancel(self) -> None:
        """Stop it from firing."""

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait for it to end."""


def _thread_timer(delay: float, callback: Callable[[], None]) -> Cancellable:
    timer = threading.Timer(delay, callback)
    timer.name = "segment-drop-summary"
    timer.daemon = True
    timer.start()
    return timer


def format_summary(counts: dict[Key, int], window: Optional[float]) -> str:
    """``dropped 1,204 events in the last 60 s: 1,200 queue_full, 4 non_retryable_status (400)``.

    Largest counts first; ``window`` ``None`` leaves out "in the last ... s".
    """
    total = sum(counts.values())
    parts = []
    for (reason, detail), count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0], str(kv[0][1]))):
        parts.append(f"{count:,} {reason}" + ("" if detail is None else f" ({detail})"))
    noun = "event" if total == 1 else "events"
    when = "" if window is None else f" in the last {max(1, round(window)):,} s"
    return f"dropped {total:,} {noun}{when}: {', '.join(parts)}"


class DropSummary:
    """Counts drops by (reason, status or kind) and logs them at most once per ``interval`` seconds."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[float, Callable[[], None]], Cancellable] = _thread_timer,
        logger: logging.Logger = log,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._start_timer = timer
        self._log = logger
        self._lock = threading.Lock()
        self._counts: dict[Key, int] = {}
        self._armed = False  # a timer will log what accumulates: add() only counts
        self._timer: Optional[Cancellable] = None
        self._stopped = False
        self._last_logged: Optional[float] = None  # when the last line was logged
        self._since: Optional[float] = None  # start of the window the pending counts belong to

    def add(self, reason: str, detail: Detail = None, count: int = 1) -> None:
        """Count ``count`` events dropped for ``reason`` (with the HTTP status or network error kind)."""
        key = (reason, detail)  # a DropReason is its string: the same key
        with self._lock:
            counts = self._counts
            counts[key] = counts.get(key, 0) + count
            if self._armed:
                return  # the storm path: one counter increment
            now = self._clock()
            if self._since is None:
                self._since = now
            last = self._last_logged
            if last is None or now - last >= self.interval:
                alone = len(counts) == 1 and counts[key] == count
                line = self._take_locked(now, None if alone else now - (self._since if last is None else last))
            else:
                line = None
                if not self._stopped:
                    try:
                        self._timer = self._start_timer(last + self.interval - now, self._fire)
                        self._armed = True
                    except Exception:  # noqa: BLE001 - no thread to be had (exit, limits): the next drop logs
                        self._timer = None
        if line:
            every = "a minute" if self.interval == DEFAULT_INTERVAL else f"every {self.interval:g} s"
            self._emit(f"{line} (later drops are summarised here at most once {every})")

    def _take_locked(self, now: float, window: Optional[float]) -> Optional[str]:
        """The line for what is pending (``None`` if nothing is), and start a new window at ``now``."""
        counts = self._counts
        if not counts:
            return None
        self._last_logged = now
        self._since = None
        self._counts = {}
        return format_summary(counts, window)

    def _fire(self) -> None:
        """The timer: log what accumulated during the minute."""
        with self._lock:
            if not self._armed:
                return  # stopped or flushed meanwhile
            self._armed = False
            self._timer = None
            now = self._clock()
            line = self._take_locked(now, None if self._last_logged is None else now - self._last_logged)
        if line:
            self._emit(line)

    def flush(self) -> None:
        """Log what is pending now, whatever the rate (shutdown, interpreter exit)."""
        with self._lock:
            now = self._clock()
            start = self._last_logged if self._last_logged is not None else self._since
            window = None if start is None else now - start
            line = self._take_locked(now, window)
        if line:
            self._emit(line)

    def stop(self) -> None:
        """Start no timer from now on and cancel the one armed (its counts stay pending)."""
        with self._lock:
            self._stopped = True
            self._armed = False
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            current: object = threading.current_thread()
            if timer is not current:  # a log handler run by the timer may shut the client down
                timer.join(1.0)

    def restart(self) -> None:
        """Allow timers again (the consumers were started again)."""
        with self._lock:
            self._stopped = False

    def close(self) -> None:
        """:meth:`stop`, then :meth:`flush`: the final summary."""
        self.stop()
        self.flush()

    def pending(self) -> dict[Key, int]:
        """A copy of the counts not logged yet."""
        with self._lock:
            return dict(self._counts)

    def _emit(self, line: str) -> None:
        try:
            self._log.warning("segment: %s", line)
        except Exception:  # noqa: BLE001 - a broken handler must not break the caller that dropped events
            pass
