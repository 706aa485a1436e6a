"""Drops visible without DEBUG: at most one WARNING a minute summarising them (README "Logging and security")."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from segment.analytics import Client
from segment.analytics.dropsummary import DropSummary, format_summary
from segment.analytics.testing import MockTrackingAPI, Reply

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = "drop-summary-key-5c4b3a"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTimer:
    """Records armed timers; the test fires them."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, Callable[[], None], FakeTimer.Handle]] = []

    class Handle:
        def __init__(self) -> None:
            self.cancelled = False
            self.joined = False

        def cancel(self) -> None:
            self.cancelled = True

        def join(self, timeout: Optional[float] = None) -> None:
            self.joined = True

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimer.Handle:
        handle = FakeTimer.Handle()
        self.armed.append((delay, callback, handle))
        return handle

    def fire_last(self) -> None:
        self.armed[-1][1]()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]


@pytest.fixture
def lines() -> Lines:
    handler = Lines()
    logger = logging.getLogger("segment")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def summary(clock: FakeClock, timer: FakeTimer) -> DropSummary:
    return DropSummary(clock=clock, timer=timer)


def test_the_first_drop_is_logged_at_once_and_the_rest_once_a_minute(lines: Lines) -> None:
    clock, timer = FakeClock(), FakeTimer()
    drops = summary(clock, timer)
    drops.add("queue_full")
    assert lines.warnings() == [
        "segment: dropped 1 event: 1 queue_full (later drops are summarised here at most once a minute)"
    ]
    for _ in range(1199):
        clock.now += 0.01
        drops.add("queue_full")
    drops.add("non_retryable_status", 400, 4)
    drops.add("queue_full")
    assert len(lines.warnings()) == 1  # nothing more until the minute is up
    assert len(timer.armed) == 1 and timer.armed[0][0] == pytest.approx(59.99)  # from the second drop
    clock.now = 1060.0
    timer.fire_last()
    assert lines.warnings()[1] == (
        "segment: dropped 1,204 events in the last 60 s: 1,200 queue_full, 4 non_retryable_status (400)"
    )
    assert drops.pending() == {}


def test_a_storm_costs_one_timer_a_minute_and_no_line_per_event(lines: Lines) -> None:
    clock, timer = FakeClock(), FakeTimer()
    drops = summary(clock, timer)
    for minute in range(3):
        for _ in range(20_000):
            drops.add("queue_full")
        clock.now += 60
        timer.fire_last()
        assert len(timer.armed) == minute + 1
    assert len(lines.warnings()) == 4  # the first drop, then one line per minute
    counted = sum(int(re.search(r"dropped ([\d,]+) event", w).group(1).replace(",", "")) for w in lines.warnings())
    assert counted == 60_000


def test_after_a_quiet_minute_the_next_drop_is_logged_at_once(lines: Lines) -> None:
    clock, timer = FakeClock(), FakeTimer()
    drops = summary(clock, timer)
    drops.add("queue_full")
    drops.add("retries_exhausted", 503, 100)
    clock.now += 60
    timer.fire_last()
    clock.now += 61  # a quiet minute after the last line
    drops.add("retries_exhausted", "timeout", 7)
    assert lines.warnings()[-1].startswith("segment: dropped 7 events: 7 retries_exhausted (timeout) (later")
    assert len(timer.armed) == 1  # logged at once: no timer needed


def test_flush_logs_what_is_pending_and_nothing_when_there_is_nothing(lines: Lines) -> None:
    clock, timer = FakeClock(), FakeTimer()
    drops = summary(clock, timer)
    drops.flush()
    assert lines.warnings() == []
    drops.add("queue_full")
    drops.add("client_closed", None, 3)
    clock.now += 12
    drops.close()
    assert lines.warnings()[-1] == "segment: dropped 3 events in the last 12 s: 3 client_closed"
    assert timer.armed[-1][2].cancelled and timer.armed[-1][2].joined
    timer.fire_last()  # a timer that fires after being cancelled logs nothing
    assert len(lines.warnings()) == 2


def test_stopped_it_arms_no_timer_and_the_next_late_drop_logs_the_backlog(lines: Lines) -> None:
    clock, timer = FakeClock(), FakeTimer()
    drops = summary(clock, timer)
    drops.add("queue_full")
    drops.stop()
    for _ in range(5):
        clock.now += 1
        drops.add("queue_full")
    assert timer.armed == [] and len(lines.warnings()) == 1
    clock.now += 60
    drops.add("message_too_large")
    assert lines.warnings()[-1].startswith(
        "segment: dropped 6 events in the last 65 s: 5 queue_full, 1 message_too_large"
    )
    drops.restart()
    drops.add("queue_full")
    assert len(timer.armed) == 1


def test_format_summary_orders_by_count_and_groups_thousands() -> None:
    counts = {("queue_full", None): 1_200_000, ("non_retryable_status", 400): 4, ("non_retryable_status", 413): 9}
    assert format_summary(counts, 59.6) == (
        "dropped 1,200,013 events in the last 60 s: 1,200,000 queue_full, 9 non_retryable_status (413), "
        "4 non_retryable_status (400)"
    )
    assert format_summary({("queue_full", None): 1}, None) == "dropped 1 event: 1 queue_full"


def test_concurrent_adds_lose_no_count(lines: Lines) -> None:
    clock, timer = FakeClock(), FakeTimer()
    drops = summary(clock, timer)
    drops.add("queue_full")

    def storm() -> None:
        for _ in range(25_000):
            drops.add("queue_full")

    threads = [threading.Thread(target=storm) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert drops.pending() == {("queue_full", None): 100_000}
    assert len(timer.armed) == 1


def test_the_real_timer_logs_the_backlog_and_is_joined_by_stop(lines: Lines) -> None:
    drops = DropSummary(interval=0.2)
    drops.add("queue_full")
    drops.add("queue_full", None, 9)
    deadline = time.monotonic() + 10
    while len(lines.warnings()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lines.warnings()[1].startswith("segment: dropped 9 events in the last ")
    assert "once every 0.2 s" in lines.warnings()[0]
    drops.add("queue_full")
    assert [t.name for t in threading.enumerate()].count("segment-drop-summary") == 1
    drops.stop()
    assert "segment-drop-summary" not in [t.name for t in threading.enumerate()]
    drops.flush()
    assert lines.warnings()[-1].startswith("segment: dropped 1 event in the last ")


# -- through a client ---------------------------------------------------------------------------


def test_a_queue_full_storm_logs_one_line_then_a_final_summary_at_shutdown(lines: Lines, api: MockTrackingAPI) -> None:
    errors: list[str] = []
    client = Client(WRITE_KEY, host=api.url, max_queue_size=5, on_error=lambda exc, events: errors.append(exc.reason))
    client.join()  # nothing consumes: the queue fills
    results = [client.track("u", "e")[0] for _ in range(10_005)]
    assert results.count(False) == 10_000 and len(errors) == 10_000  # every drop still reported, once
    assert lines.warnings() == [
        "segment: dropped 1 event: 1 queue_full (later drops are summarised here at most once a minute)"
    ]
    assert client.shutdown(timeout=5) == 0
    final = lines.warnings()[1:]
    assert len(final) == 1 and re.match(r"segment: dropped 9,999 events in the last \d+ s: 9,999 queue_full$", final[0])
    assert "segment-drop-summary" not in [t.name for t in threading.enumerate()]


def test_per_group_drops_are_summarised_by_status_with_detail_only_at_debug(lines: Lines, api: MockTrackingAPI) -> None:
    api.script(Reply(status=400), Reply(status=413), Reply(status=400))
    client = Client(WRITE_KEY, host=api.url, upload_size=1, upload_interval=0, max_retries=0)
    clock, timer = FakeClock(), FakeTimer()
    client._pipeline.outcomes.drops = DropSummary(clock=clock, timer=timer)
    logging.getLogger("segment").setLevel(logging.DEBUG)
    try:
        for _ in range(4):
            client.track("u", "e")
            client.flush(timeout=5)
    finally:
        logging.getLogger("segment").setLevel(logging.NOTSET)
    assert client.stats()["dropped"] == 3 and client.stats()["delivered"] == 1
    assert lines.warnings() == [
        "segment: dropped 1 event: 1 non_retryable_status (400) (later drops are summarised here at most once a minute)"
    ]
    debug = [
        r.getMessage() for r in lines.records if r.levelno == logging.DEBUG and "dropping events" in r.getMessage()
    ]
    assert len(debug) == 3  # the per-group detail is still there, at DEBUG
    clock.now += 60
    timer.fire_last()
    assert lines.warnings()[-1] == (
        "segment: dropped 2 events in the last 60 s: 1 non_retryable_status (400), 1 non_retryable_status (413)"
    )
    client.shutdown(timeout=5)
    assert len(lines.warnings()) == 2
    assert not any(WRITE_KEY in r.getMessage() for r in lines.records)


def test_network_drops_name_the_error_kind(lines: Lines) -> None:
    with MockTrackingAPI() as api:
        url = api.url
    client = Client(WRITE_KEY, host=url, max_retries=0, upload_interval=0)  # nothing listens there any more
    client.track("u", "e")
    client.flush(timeout=5)
    client.shutdown(timeout=5)
    assert lines.warnings()[0].startswith("segment: dropped 1 event: 1 retries_exhausted (refused)")


def test_pending_drops_are_logged_at_interpreter_exit() -> None:
    script = textwrap.dedent(
        """
        import logging, os, threading
        from segment.analytics import Client
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        client = Client("exit-summary-key", host=os.environ["MOCK_URL"], max_queue_size=2)
        client.join()
        for i in range(50):
            client.track("u", "e")
        """
    )
    with MockTrackingAPI() as api:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT), MOCK_URL=api.url),
        )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING segment: dropped")]
    assert warnings[0].startswith("WARNING segment: dropped 1 event: 1 queue_full")
    assert re.match(r"WARNING segment: dropped 47 events in the last \d+ s: 47 queue_full$", warnings[1])
    assert len(warnings) == 2
    assert "exit-summary-key" not in done.stderr


def test_no_thread_to_be_had_never_reaches_the_caller(lines: Lines) -> None:
    clock = FakeClock()

    def no_threads(delay: float, callback: Callable[[], None]) -> FakeTimer.Handle:
        raise RuntimeError("can't start new thread")

    drops = DropSummary(clock=clock, timer=no_threads)
    for _ in range(3):
        drops.add("queue_full")  # never raises
    assert len(lines.warnings()) == 1 and drops.pending() == {("queue_full", None): 2}
    clock.now += 60
    drops.add("queue_full")
    assert lines.warnings()[-1].startswith("segment: dropped 3 events in the last 60 s: 3 queue_full")


def test_a_client_that_cannot_start_the_timer_still_accepts_calls(
    lines: Lines, api: MockTrackingAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(WRITE_KEY, host=api.url, max_queue_size=1)
    client.join()
    client._pipeline.outcomes.drops.restart()

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Timer, "start", refuse)
    assert [client.track("u", "e")[0] for _ in range(5)] == [True, False, False, False, False]
    client.shutdown(timeout=5)
    assert lines.warnings()[-1].startswith("segment: dropped 3 events in the last ")
