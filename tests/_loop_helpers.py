"""Fakes for driving ``BatchSender`` without a server, a real clock or real sleeping.

* :class:`FakeClock` -- monotonic seconds you advance; ``wall()`` is a fixed
  epoch plus the same offset (so HTTP-date Retry-After values are exact).
* :class:`Sleeper` -- records every requested wait and advances the clock; can
  report an interruption (``False``) like a shutdown would.
* :class:`FakePoster` -- answers from a script (``Response`` objects, exceptions
  to raise, or callables of the recorded :class:`Post`) and records every
  request: headers, body on the wire, decoded body, the exact batch bytes.
* :class:`Harness` -- one sender wired to the above; ``send()`` checks the
  conservation law on every result (delivery.md §4).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from requests.structures import CaseInsensitiveDict

from segment.analytics.errors import DeliveryError
from segment.analytics.request import BatchResult, BatchSender, RateLimitGate
from segment.analytics.retry import RetryPolicy
from segment.analytics.stats import DeliveryStats
from segment.analytics.transport import Response

WRITE_KEY = "wk_test_123"
WALL0 = 1_700_000_000.0  # a fixed epoch: Tue, 14 Nov 2023 22:13:20 GMT

#: Drop reasons a BatchSender may report (delivery.md §4), spelled out here, not imported.
LOOP_DROP_REASONS = {
    "non_retryable_status",
    "retries_exhausted",
    "backoff_duration_exceeded",
    "rate_limit_duration_exceeded",
    "configuration_error",
}


def ev(i: int, extra: str = "") -> bytes:
    """An already-encoded event with messageId ``m<i>``."""
    return b'{"messageId":"m%d","type":"track"%s}' % (i, extra.encode())


def evs(n: int) -> list[bytes]:
    return [ev(i) for i in range(n)]


def resp(
    status: int, headers: Optional[Mapping[str, str]] = None, body: Union[bytes, str, dict, None] = None
) -> Response:
    """A ``Response`` with case-insensitive headers (as ``Transport`` returns them)."""
    if isinstance(body, dict):
        raw = json.dumps(body).encode()
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = body or b""
    return Response(status, CaseInsensitiveDict(dict(headers or {})), raw)


def error_responses(*entries: Mapping[str, Any], status: int = 207) -> Response:
    """A 2xx answer listing per-event results (delivery.md §3.5)."""
    return resp(status, body={"errorResponses": [dict(e) for e in entries]})


class FakeClock:
    """Monotonic time under test control; ``wall()`` follows it from :data:`WALL0`."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, f"time cannot go back ({seconds})"
        self.t += seconds


class Sleeper:
    """``sleep(seconds) -> bool`` that never really sleeps.

    ``interrupt`` decides, per call (0-based index, seconds), whether the wait
    is cut short by shutdown; an interrupted wait returns ``False`` at once.
    """

    def __init__(self, clock: FakeClock, interrupt: Optional[Callable[[int, float], bool]] = None) -> None:
        self.clock = clock
        self.interrupt = interrupt
        self.calls: list[float] = []
        self.hook: Optional[Callable[[float], None]] = None

    def __call__(self, seconds: float) -> bool:
        assert seconds > 0, f"asked to sleep {seconds!r}s: a non-positive wait means a tight loop"
        index = len(self.calls)
        assert index < 1000, "runaway wait loop"
        self.calls.append(seconds)
        if self.interrupt is not None and self.interrupt(index, seconds):
            return False
        self.clock.advance(seconds)
        if self.hook is not None:
            self.hook(seconds)
        return True


@dataclass
class Post:
    """One request the fake poster received."""

    wire: bytes
    headers: dict[str, str]
    at: float
    raw: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    batch_bytes: bytes = b""

    @property
    def ids(self) -> list[str]:
        return [e["messageId"] for e in self.body["batch"]]

    @property
    def retry_count(self) -> Optional[str]:
        return self.headers.get("X-Retry-Count")


Step = Union[Response, BaseException, Callable[[Post], Response]]


class FakePoster:
    """Answers each ``post`` with the next script step, then with ``default``.

    A step is a ``Response``, an exception instance (raised), or a callable
    taking the recorded :class:`Post` and returning a ``Response`` (or raising).
    ``latency`` advances the clock during each request.
    """

    def __init__(
        self,
        clock: FakeClock,
        script: Iterable[Step] = (),
        *,
        default: Optional[Step] = None,
        latency: float = 0.0,
    ) -> None:
        self.clock = clock
        self.script = list(script)
        self.default = default
        self.latency = latency
        self.posts: list[Post] = []

    #: More requests than any test needs: a loop that would never end fails instead of hanging.
    MAX_POSTS = 500

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        assert isinstance(body, bytes)
        assert len(self.posts) < self.MAX_POSTS, "runaway retry loop"
        hdrs = dict(headers)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in hdrs.items()), hdrs
        raw = gzip.decompress(body) if hdrs.get("Content-Encoding") == "gzip" else body
        record = Post(wire=body, headers=hdrs, at=self.clock.now(), raw=raw, body=json.loads(raw))
        start, end = raw.find(b"["), raw.rfind(b'],"sentAt":')
        record.batch_bytes = raw[start + 1 : end]
        self.posts.append(record)
        if self.latency:
            self.clock.advance(self.latency)
        if self.script:
            step = self.script.pop(0)
        elif self.default is not None:
            step = self.default
        else:
            raise AssertionError(f"unexpected request #{len(self.posts)} (script exhausted)")
        if isinstance(step, BaseException):
            raise step
        if callable(step) and not isinstance(step, Response):
            return step(record)
        return step

    @property
    def retry_counts(self) -> list[Optional[str]]:
        return [p.retry_count for p in self.posts]


def assert_conserved(result: BatchResult, items: Sequence[bytes]) -> None:
    """Every input event appears exactly once in delivered + dropped + pending (delivery.md §4)."""
    seen: list[bytes] = []
    for group, after_retry in result.delivered:
        assert isinstance(after_retry, bool)
        assert group, "an empty delivered group"
        seen.extend(group)
    for group, error in result.dropped:
        assert group, "an empty dropped group"
        assert isinstance(error, DeliveryError)
        assert error.reason in LOOP_DROP_REASONS, error.reason
        seen.extend(group)
    seen.extend(result.pending)
    assert len(seen) == len(items), f"{len(seen)} events accounted for, {len(items)} sent"
    assert Counter(seen) == Counter(items), "events lost, duplicated or altered"


def delivered_events(result: BatchResult) -> list[bytes]:
    return [e for group, _ in result.delivered for e in group]


def dropped_events(result: BatchResult) -> list[bytes]:
    return [e for group, _ in result.dropped for e in group]


def only_drop(result: BatchResult) -> DeliveryError:
    """The single DeliveryError of a result that dropped exactly one group."""
    assert len(result.dropped) == 1, result.dropped
    return result.dropped[0][1]


class FakeAuth:
    """An OAuth-like Authorization source: ``Bearer t<n>``; ``invalidate()`` moves to the next token."""

    def __init__(self, oauth: bool = True, log: Optional[list[str]] = None) -> None:
        self.oauth = oauth
        self.token = 1
        self.log = log if log is not None else []
        self.invalidations = 0

    def header(self) -> str:
        self.log.append(f"header:t{self.token}")
        return f"Bearer t{self.token}"

    def invalidate(self) -> None:
        self.invalidations += 1
        self.log.append(f"invalidate:t{self.token}")
        self.token += 1


class Harness:
    """A ``BatchSender`` on fakes; ``send()`` asserts conservation and attempts == posts."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        default: Optional[Step] = None,
        clock: Optional[FakeClock] = None,
        gate: Optional[RateLimitGate] = None,
        max_retries: int = 10,
        max_total_backoff_duration: float = 43200.0,
        max_rate_limit_duration: float = 1800.0,
        oauth: bool = False,
        rand: float = 0.0,
        auth: Any = None,
        gzip: bool = False,
        interrupt: Optional[Callable[[int, float], bool]] = None,
        stopped: Optional[Callable[[], bool]] = None,
        latency: float = 0.0,
        write_key: str = WRITE_KEY,
        wall_clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self.clock = clock or FakeClock()
        self.sleeper = Sleeper(self.clock, interrupt)
        self.poster = FakePoster(self.clock, script, default=default, latency=latency)
        self.stats = DeliveryStats()
        self.gate = gate or RateLimitGate()
        self.policy = RetryPolicy(
            max_retries=max_retries,
            max_total_backoff_duration=max_total_backoff_duration,
            max_rate_limit_duration=max_rate_limit_duration,
            oauth=oauth,
        )
        kwargs: dict[str, Any] = {}
        if stopped is not None:
            kwargs["stopped"] = stopped
        self.sender = BatchSender(
            write_key,
            self.poster,
            self.policy,
            auth=auth,
            gzip=gzip,
            gate=self.gate,
            stats=self.stats,
            clock=self.clock.now,
            wall_clock=wall_clock or self.clock.wall,
            sleep=self.sleeper,
            rand=lambda: rand,
            **kwargs,
        )

    def send(self, items: Sequence[bytes]) -> BatchResult:
        before = len(self.poster.posts)
        result = self.sender.send(list(items))
        assert_conserved(result, items)
        assert result.attempts == len(self.poster.posts) - before, "attempts does not match requests made"
        return result

    @property
    def posts(self) -> list[Post]:
        return self.poster.posts

    @property
    def sleeps(self) -> list[float]:
        return self.sleeper.calls

    def retries_by_status(self) -> dict[str, int]:
        return {str(k): v for k, v in self.stats.retries_by_status.items() if v}

    def network_errors(self) -> dict[str, int]:
        return {k: v for k, v in self.stats.network_errors.items() if v}
