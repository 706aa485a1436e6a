"""Hostile responses never break delivery (README, "Delivery" and "Nothing lost silently").

A real server on 127.0.0.1 answers with garbage status lines, statuses 0/99/600/999, duplicate and
enormous headers, non-UTF-8, gigantic, compressed-garbage and cut-off bodies, ``errorResponses`` full of
junk, Retry-After in every odd form, and closes or resets connections at random points. For each of a
few hundred seeded cases the client's books must balance: every tracked event is delivered or reported
through ``on_error`` exactly once, every drop reason is a ``DropReason``, ``stats()`` adds up with
nothing pending after ``flush()``, nothing is logged as an unexpected error, and no consumer thread dies.

Budgets are tiny (``max_retries=1`` and a backoff budget shorter than the first backoff), so no case
sleeps through a backoff. Retry-After values that ask for a real wait are only sent with statuses that
never read them; the deterministic tests at the end follow the ones that do through a fake clock.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from segment.analytics import Client
from segment.analytics.request import BatchSender
from segment.analytics.retry import DropReason, RetryPolicy, classify_status
from segment.analytics.transport import Transport

from ._loop_helpers import FakeClock, Sleeper, assert_conserved, evs
from ._net import Server, Servers

SEED = 20261129
WRITE_KEY = "wk_hostile_4b1d0c2e"
CASES = 240

RETRY_AFTER_ODD = [
    "٣",  # Arabic-Indic digit three
    "\uff11\uff12",  # fullwidth digits
    "1.5",
    "-5",
    "-0",
    "0",
    "1e3",
    "",
    "   ",
    "9" * 5000,
    "0x10",
    "NaN",
    "inf",
    "Fri, 31 Dec 0001 23:59:59 GMT",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Mon, 32 Foo 2024 99:99:99 GMT",
    "5, 5",
    "\u00a0\u2003",
    "garbage\u00ff",
]
RETRY_AFTER_WAITING = ["Fri, 31 Dec 9999 23:59:59 GMT", "300", "86400", "+7", "1"]

STATUSES = [200, 201, 202, 204, 207, 299, 100, 101, 103, 199, 300, 302, 304, 400, 401, 403, 404, 408, 410]
STATUSES += [413, 422, 429, 460, 499, 500, 501, 502, 503, 504, 505, 511, 599, 600, 999]
GARBAGE_STATUS_LINES = [
    b"HTTP/1.1 0 Zero\r\n",
    b"HTTP/1.1 99 Low\r\n",
    b"HTTP/1.1 1000 High\r\n",
    b"HTTP/1.1 -200 Negative\r\n",
    b"HTTP/1.1 +200 Plus\r\n",
    "HTTP/1.1 ٢٠٠ Digits\r\n".encode(),
    b"HTTP/1.1 abc OK\r\n",
    b"HTTP/1.1\r\n",
    b"HTTP/9.9 200 OK\r\n",
    b"ICY 200 OK\r\n",
    b"\x00\xff\xfe\xfd garbage\r\n",
    b"\r\n",
    b"HTTP/1.1 200 OK",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 200 " + b"R" * 70000 + b"\r\n",
]
JUNK = [0, -1, 1.5, True, False, None, "1", [1], {"a": 1}, 10**30, -(10**30), 1e300]


def error_responses(rng: random.Random, size: int) -> Any:
    """An ``errorResponses`` value: sometimes right, mostly junk."""
    if rng.random() < 0.15:
        return rng.choice([{"a": 1}, "all of them", 5, None, [[[]]]])
    entries: list[Any] = []
    for _ in range(rng.randint(0, 6)):
        if rng.random() < 0.15:
            entries.append(rng.choice([1, "x", None, [], [0, 500]]))
            continue
        index = rng.randint(-2, size + 2) if rng.random() < 0.7 else rng.choice(JUNK)
        status = rng.choice([400, 413, 429, 500, 501, 503, 511, 200, 302, 0, 600, 999]) if rng.random() < 0.7 else None
        entry = {"index": index, "status": status if status is not None else rng.choice(JUNK)}
        if rng.random() < 0.5:
            entry["message"] = rng.choice(
                ["bad", "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "x" * 500]
            )
        if rng.random() < 0.1:
            del entry[rng.choice(["index", "status"])]
        entries.append(entry)
    return entries


def body_for(rng: random.Random, size: int) -> bytes:
    choice = rng.randrange(12)
    if choice == 0:
        return b""
    if choice == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))  # not UTF-8, not JSON
    if choice == 2:
        return b"a" * rng.choice([(1 << 20) + 17, 3 << 20])  # larger than the cap
    if choice == 3:
        depth = rng.choice([2000, 100_000])
        return b'{"errorResponses":' + b"[" * depth + b"]" * depth + b"}"  # nests too deeply to parse
    if choice == 4:
        return b'{"errorResponses":[{"index":0,"status":' + b"9" * 5000 + b"}]}"  # a number too long to parse
    if choice == 5:
        return b'{"errorResponses":[{"index":1e400,"status":-1e400},{"index":0,"status":NaN}]}'
    if choice == 6:
        return json.dumps({"errorResponses": error_responses(rng, size), "x": "\u0000\ud800"}).encode()
    if choice == 7:
        return b'{"errorResponses":[{"index":0,"status":500}' + b"," * rng.randint(0, 3)  # cut-off JSON
    if choice == 8:
        return b'{"success":true}'
    return json.dumps({"errorResponses": error_responses(rng, size)}).encode()


def headers_for(rng: random.Random, status: Optional[int]) -> list[bytes]:
    retry_status = status is not None and classify_status(status).action == "retry"
    out: list[bytes] = []
    for _ in range(rng.randint(0, 3)):
        choice = rng.randrange(9)
        if choice == 0:
            waiting = rng.random() < 0.3 and not retry_status
            value = rng.choice(RETRY_AFTER_WAITING if waiting else RETRY_AFTER_ODD)
            out += [b"Retry-After: " + value.encode("utf-8")] * rng.choice([1, 1, 2])
        elif choice == 1:
            out.append(b"X-Big: " + b"b" * rng.choice([1000, 60_000, 70_000]))
        elif choice == 2:
            out += [b"X-Many-%d: v" % i for i in range(rng.choice([50, 150]))]
        elif choice == 3:
            out.append(b"X-Bin: \xff\xfe\x00\x80")
        elif choice == 4:
            out.append(b"No colon here")
        elif choice == 5:
            out.append(b"Content-Encoding: " + rng.choice([b"gzip", b"deflate", b"br", b"x-gzip", b"\xff"]))
        elif choice == 6:
            out.append(b"Connection: " + rng.choice([b"close", b"keep-alive", b"upgrade"]))
        elif choice == 7:
            out.append(b"Content-Type: " + rng.choice([b"application/json", b"text/html; charset=\xff", b""]))
        else:
            out.append(b" folded continuation")
    return out


def framed(rng: random.Random, head: list[bytes], body: bytes) -> tuple[bytes, str]:
    """Status, headers and body with some framing, and what to do afterwards."""
    choice = rng.randrange(8)
    if choice == 0:  # promises more than it sends, then closes
        return b"\r\n".join([*head, b"Content-Length: %d" % (len(body) + 50), b"", body]), "close"
    if choice == 1:  # no length: read until close
        return b"\r\n".join([*head, b"", body]), "close"
    if choice == 2:
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 7000]), body[i : i + 7000]) for i in range(0, len(body), 7000)
        )
        tail = rng.choice([b"0\r\n\r\n", b"zz\r\n", b""])
        return b"\r\n".join([*head, b"Transfer-Encoding: chunked", b"", chunks + tail]), "close"
    if choice == 3:  # two different lengths
        return b"\r\n".join([*head, b"Content-Length: %d" % len(body), b"Content-Length: 3", b"", body]), "close"
    if choice == 4:
        return b"\r\n".join([*head, b"Content-Length: -1", b"", body]), "close"
    return b"\r\n".join([*head, b"Content-Length: %d" % len(body), b"", body]), rng.choice(
        ["keep", "keep", "close", "reset", "cut"]
    )


def hostile(rng: random.Random, size: int) -> tuple[bytes, str]:
    """One hostile answer (bytes) and the action after it: keep, close, reset, cut or hang."""
    if rng.random() < 0.02:
        return b"", "hang"
    status: Optional[int] = None
    if rng.random() < 0.2:
        status_line = rng.choice(GARBAGE_STATUS_LINES)
    else:
        status = rng.choice(STATUSES)
        status_line = b"HTTP/1.1 %d %s\r\n" % (status, rng.choice([b"OK", b"", b"\xff\xfe"]))
    body = body_for(rng, size)
    if rng.random() < 0.08:
        body = gzip.compress(body) if rng.random() < 0.5 else b"\x1f\x8b\x08garbage"
    head = [status_line.rstrip(b"\r\n"), *headers_for(rng, status)]
    return framed(rng, head, body)


class ScriptedServer:
    """Answers each request with the next scripted hostile answer (200 once the script runs out)."""

    OK = b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"success":true}'

    def __init__(self, servers: Servers) -> None:
        self.lock = threading.Lock()
        self.script: list[tuple[bytes, str]] = []
        self.server = servers(self._handle)

    def load(self, script: list[tuple[bytes, str]]) -> None:
        with self.lock:
            self.script = list(script)

    def _next(self) -> tuple[bytes, str]:
        with self.lock:
            return self.script.pop(0) if self.script else (self.OK, "keep")

    def _handle(self, conn: socket.socket, server: Server) -> None:
        while server.read_request(conn) is not None:
            data, action = self._next()
            if action == "hang":
                server.stop.wait(5)
                return
            if action == "cut":
                conn.sendall(data[: random.Random(len(data)).randrange(max(len(data), 1))])
                return
            conn.sendall(data)
            if action == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if action == "close":
                return


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: list[str] = []
        self.dropped: list[str] = []
        self.errors: list[Any] = []

    def on_success(self, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.delivered += [event["messageId"] for event in events]

    def on_error(self, exc: Any, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.dropped += [event["messageId"] for event in events]
            self.errors.append(exc)


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


pytestmark = pytest.mark.usefixtures("no_env_proxy")  # requests to 127.0.0.1 never go through a proxy


@pytest.fixture
def error_records() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    logger = logging.getLogger("segment")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_randomised_hostile_answers_never_break_the_books(serve: Servers, error_records: ErrorRecords) -> None:
    rng = random.Random(SEED)
    server = ScriptedServer(serve)
    reasons: Counter[str] = Counter()
    for case in range(CASES):
        size = rng.randint(1, 5)
        events = rng.randint(1, 8)
        server.load([hostile(rng, size) for _ in range(rng.randint(1, 4))])
        recorder = Recorder()
        client = Client(
            WRITE_KEY,
            host=server.server.url,
            on_success=recorder.on_success,
            on_error=recorder.on_error,
            thread=rng.choice([1, 2]),
            upload_size=size,
            upload_interval=0.001,
            gzip=rng.random() < 0.3,
            timeout=0.3,
            max_retries=1,
            max_total_backoff_duration=0.2,  # shorter than the first backoff: a retry drops at once
            max_rate_limit_duration=0,
        )
        try:
            tracked = [client.track(f"user-{case}", f"Event {i}")[1]["messageId"] for i in range(events)]
            left = client.flush(timeout=15)
            consumers = client.consumers or []
            stats = client.stats()
            where = f"case {case} (seed {SEED})"
            assert left == 0, where
            assert consumers and all(consumer.is_alive() for consumer in consumers), where
            assert stats["accepted"] == events == stats["delivered"] + stats["dropped"] + stats["pending"], where
            assert stats["pending"] == 0, where
            assert sorted(recorder.delivered + recorder.dropped) == sorted(tracked), where
            assert stats["delivered"] == len(recorder.delivered) and stats["dropped"] == len(recorder.dropped), where
            assert all(isinstance(exc.reason, DropReason) for exc in recorder.errors), where
            assert not any(WRITE_KEY in f"{exc} {exc!r} {exc.cause!r}" for exc in recorder.errors), where
            assert set(stats["dropped_by_reason"]) <= {reason.value for reason in DropReason}, where
            reasons.update(exc.reason.value for exc in recorder.errors)
        finally:
            client.shutdown(timeout=5)
    assert error_records.records == [], [record.getMessage() for record in error_records.records[:3]]
    # the generator reaches the interesting places
    assert {"non_retryable_status", "backoff_duration_exceeded"} <= set(reasons)


# -- the forms that do ask for a wait, followed through a fake clock ----------------------------------


def sender_over(url: str, clock: FakeClock, sleeper: Sleeper, **policy: Any) -> tuple[BatchSender, Transport]:
    transport = Transport(url, 2.0)
    sender = BatchSender(
        "wk_hostile",
        transport,
        RetryPolicy(**policy),
        clock=clock.now,
        wall_clock=clock.wall,
        sleep=sleeper,
        rand=lambda: 0.0,
    )
    return sender, transport


def test_a_5000_digit_retry_after_is_unparsable_and_backs_off(serve: Servers, caplog: pytest.LogCaptureFixture) -> None:
    server = ScriptedServer(serve)
    answer = b"HTTP/1.1 429 Slow\r\nRetry-After: " + b"9" * 5000 + b"\r\nContent-Length: 0\r\n\r\n"
    server.load([(answer, "keep"), (answer, "keep")])
    clock = FakeClock()
    sleeper = Sleeper(clock)
    sender, transport = sender_over(server.server.url, clock, sleeper, max_retries=3)
    try:
        with caplog.at_level(logging.WARNING, logger="segment"):
            result = sender.send(evs(3))
    finally:
        transport.close()
    assert_conserved(result, evs(3))
    assert result.delivered == [(evs(3), True)]
    assert sleeper.calls == [0.5, 1.0]  # counted backoff, not a Retry-After wait
    assert sender.gate.until == 0.0
    warnings = [r.getMessage() for r in caplog.records if "Retry-After" in r.getMessage()]
    assert len(warnings) == 1 and len(warnings[0]) < 200


def test_a_5000_digit_retry_after_end_to_end_spends_the_backoff_budget(serve: Servers) -> None:
    server = ScriptedServer(serve)
    server.load([(b"HTTP/1.1 429 Slow\r\nRetry-After: " + b"7" * 5000 + b"\r\nContent-Length: 0\r\n\r\n", "keep")])
    recorder = Recorder()
    client = Client(
        "wk_hostile",
        host=server.server.url,
        on_error=recorder.on_error,
        max_retries=1,
        max_total_backoff_duration=0.2,
        upload_interval=0.001,
    )
    client.track("u", "e")
    assert client.shutdown(timeout=10) == 0
    stats = client.stats()
    assert [exc.reason for exc in recorder.errors] == ["backoff_duration_exceeded"]  # not a rate-limit drop
    assert stats["rate_limited_waits"] == 0 and stats["retries"] == 0


@pytest.mark.parametrize(
    ("value", "waits"),
    [
        ("Fri, 31 Dec 9999 23:59:59 GMT", [300.0]),  # capped
        ("Mon, 01 Jan 0001 00:00:00 GMT", [0.5]),  # in the past: absent, so the counted backoff
        ("٣", [0.5]),  # not ASCII digits: unparsable
        ("+7", [7.0]),
    ],
)
def test_odd_retry_after_dates_and_digits(serve: Servers, value: str, waits: list[float]) -> None:
    server = ScriptedServer(serve)
    server.load([(b"HTTP/1.1 503 Busy\r\nRetry-After: " + value.encode() + b"\r\nContent-Length: 0\r\n\r\n", "keep")])
    clock = FakeClock()
    sleeper = Sleeper(clock)
    sender, transport = sender_over(server.server.url, clock, sleeper, max_retries=2)
    try:
        result = sender.send(evs(2))
    finally:
        transport.close()
    assert result.delivered == [(evs(2), True)]
    assert sleeper.calls == waits


def test_a_2xx_whose_body_nests_too_deeply_is_a_delivery(serve: Servers) -> None:
    server = ScriptedServer(serve)
    deep = b'{"errorResponses":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    server.load([(b"HTTP/1.1 207 Multi\r\nContent-Length: %d\r\n\r\n%s" % (len(deep), deep), "keep")])
    recorder = Recorder()
    client = Client("wk_hostile", host=server.server.url, on_success=recorder.on_success, upload_interval=0.001)
    tracked = [client.track("u", f"e{i}")[1]["messageId"] for i in range(4)]
    assert client.shutdown(timeout=10) == 0
    assert sorted(recorder.delivered) == sorted(tracked)
    assert client.stats()["dropped"] == 0
