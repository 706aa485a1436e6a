"""The pipeline (delivery.md §1): queue, consumers, batching, flush/shutdown, fork, exit, logging."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from segment.analytics import Client
from segment.analytics.testing import MockTrackingAPI, Reply

from .conftest import WRITE_KEY, ErrorLog

ROOT = Path(__file__).resolve().parents[1]


def test_batches_are_bounded_by_upload_size(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    client = make_client(upload_size=10, upload_interval=5)
    for i in range(25):
        client.track("u", "e", {"i": i})
    assert client.flush(timeout=5) == 0
    assert sorted(len(r.batch) for r in api.requests()) == [5, 10, 10]
    assert [e["properties"]["i"] for e in api.events()] == list(range(25))  # order kept with one consumer


def test_upload_interval_sends_a_partial_batch_without_flush(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    client = make_client(upload_interval=0.2)
    client.track("u", "e")
    assert api.wait_for_events(1, timeout=3)
    assert len(api.requests()) == 1


def test_batches_stay_under_475000_bytes(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    client = make_client(upload_interval=5)
    for _ in range(60):
        client.track("u", "big", {"blob": "x" * 30000})
    assert client.flush(timeout=10) == 0
    sizes = [len(r.raw_body) for r in api.requests()]
    assert len(api.events()) == 60
    assert max(sizes) <= 475_000 and len(sizes) >= 4


def test_full_queue_refuses_without_blocking_and_reports(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    client = make_client(max_queue_size=5)
    client.join()  # consumers stopped: nothing leaves the queue
    results = [client.track("u", "e", message_id=f"m{i}")[0] for i in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert errors.reasons() == ["queue_full"] * 3
    assert errors.dropped_ids() == ["m5", "m6", "m7"]
    stats = client.stats()
    assert stats["accepted"] == 8 and stats["dropped_by_reason"] == {"queue_full": 3}
    assert stats["queue_depth"] == 5 and stats["pending"] == 5
    assert client.flush(timeout=5) == 0  # flush starts consumers again and delivers the five
    assert sorted(api.message_ids()) == ["m0", "m1", "m2", "m3", "m4"]


def test_three_consumers_upload_concurrently_and_all_stop(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    api.set_default(Reply(status=200, delay=0.3))
    client = make_client(thread=3, upload_size=10, upload_interval=0.05)
    assert client.consumers is not None
    assert sorted(c.name for c in client.consumers) == [
        "segment-consumer-1",
        "segment-consumer-2",
        "segment-consumer-3",
    ]
    for i in range(60):
        client.track("u", "e", {"i": i})
    started = time.monotonic()
    assert client.flush(timeout=10) == 0
    elapsed = time.monotonic() - started
    # 6 requests of 0.3 s each: about 0.6 s with three consumers in parallel, 1.8 s with one
    assert len(api.requests()) == 6 and elapsed < 1.5
    assert client.shutdown(timeout=5) == 0
    assert not any(c.is_alive() for c in client.consumers)
    assert not [t for t in threading.enumerate() if t.name.startswith("segment-consumer")]


def test_raising_callbacks_are_logged_and_never_stop_delivery(
    api: MockTrackingAPI, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def bad_on_error(exc: BaseException, events: list[Any]) -> None:
        calls.append("error")
        raise RuntimeError("callback exploded")

    def bad_on_success(events: list[Any]) -> None:
        calls.append("success")
        raise ValueError("this one too")

    client = Client(WRITE_KEY, host=api.url, on_error=bad_on_error, on_success=bad_on_success, upload_interval=0.05)
    try:
        api.script(Reply(status=400))
        client.track("u", "rejected")
        assert client.flush(timeout=5) == 0
        for _ in range(3):
            client.track("u", "fine")
            assert client.flush(timeout=5) == 0
        client.track("u", "huge", {"x": "y" * 40000})  # on_error raising in the caller's thread too
        assert "error" in calls and "success" in calls
        assert client.consumers and all(c.is_alive() for c in client.consumers)
        assert len(api.events()) == 3
        assert "callback exploded" in caplog.text
    finally:
        client.shutdown(timeout=2)


def test_flush_with_timeout_returns_in_time_against_a_hanging_server(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    api.set_default(Reply(action="hang"))
    client = make_client(timeout=30)
    client.track("u", "e")
    client.track("u", "e")
    started = time.monotonic()
    pending = client.flush(timeout=1)
    elapsed = time.monotonic() - started
    assert pending == 2
    assert 0.9 <= elapsed < 1.6
    started = time.monotonic()
    assert client.shutdown(timeout=0.5) == 2
    assert time.monotonic() - started < 1.0


def test_calls_after_shutdown_are_refused_as_client_closed(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    client = make_client()
    client.track("u", "before")
    assert client.shutdown(timeout=5) == 0
    ok, msg = client.track("u", "after")
    assert ok is False and msg["event"] == "after"
    assert errors.reasons() == ["client_closed"]
    assert client.stats()["dropped_by_reason"] == {"client_closed": 1}
    assert [e["event"] for e in api.events()] == ["before"]
    assert client.flush(timeout=1) == 0


def test_join_stops_consumers_and_flush_resumes(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    client = make_client()
    client.join()
    assert client.consumers and not any(c.is_alive() for c in client.consumers)
    client.track("u", "queued while stopped")
    assert client.queue.qsize() == 1
    assert client.flush(timeout=5) == 0
    assert len(api.events()) == 1


def test_debug_logging_never_contains_the_write_key(api: MockTrackingAPI, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk_live_super_secret_key"
    api.script(Reply(status=500), Reply(status=400))
    with caplog.at_level(logging.DEBUG, logger="segment"):
        client = Client(secret, host=api.url, debug=True, max_retries=1, upload_interval=0.05)
        try:
            client.track("u", "e", {"note": f"user pasted {secret} here"})
            client.flush(timeout=5)
            client.track("u", "e2")
            client.flush(timeout=5)
        finally:
            client.shutdown(timeout=2)
            logging.getLogger("segment").setLevel(logging.NOTSET)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "request body" in text and "REDACTED" in text  # bodies are logged at DEBUG, redacted
    assert secret not in text
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG and "track" in r.getMessage()]


def test_no_per_event_logging_above_debug(make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture) -> None:
    client = make_client()
    with caplog.at_level(logging.INFO, logger="segment"):
        for _ in range(200):
            client.track("u", "e")
        client.flush(timeout=5)
    assert caplog.records == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_a_fresh_pipeline_and_delivers(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    client = make_client(upload_interval=0.05)
    client.track("u", "parent-before", message_id="p1")
    assert client.flush(timeout=5) == 0
    client.join()  # leave one event queued in the parent, to see that the child does not inherit it
    client.track("u", "parent-queued", message_id="p2")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            stats = client.stats()
            inherited = stats["queue_depth"]
            client.track("u", "from-child", message_id="c1")
            left = client.flush(timeout=5)
            os.write(
                write_end,
                json.dumps({"inherited": inherited, "left": left, "delivered": client.stats()["delivered"]}).encode(),
            )
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = json.loads(os.read(read_end, 4096))
    os.close(read_end)
    assert os.WEXITSTATUS(status) == 0
    assert report == {"inherited": 0, "left": 0, "delivered": 1}
    assert client.flush(timeout=5) == 0  # the parent is unaffected: it still delivers its own queued event
    assert sorted(api.message_ids()) == ["c1", "p1", "p2"]


def run_script(code: str, api: MockTrackingAPI, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MOCK_URL=api.url)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )


def test_exit_drains_what_it_can_and_logs_the_rest(api: MockTrackingAPI) -> None:
    api.set_default(Reply(status=200))
    done = run_script(
        """
        import os, logging
        from segment.analytics import Client
        logging.basicConfig(level=logging.WARNING)
        client = Client("k-exit-test", host=os.environ["MOCK_URL"], upload_interval=5)
        for i in range(30):
            client.track("u", "at-exit")
        """,
        api,
    )
    assert done.returncode == 0, done.stderr
    assert len(api.events()) == 30  # delivered by the exit drain without an explicit flush
    assert "could not be delivered" not in done.stderr


def test_exit_is_bounded_and_states_the_number_left(api: MockTrackingAPI) -> None:
    api.set_default(Reply(action="hang"))
    started = time.monotonic()
    done = run_script(
        """
        import os, logging, threading
        from segment.analytics import Client
        logging.basicConfig(level=logging.WARNING)
        client = Client("k-exit-test", host=os.environ["MOCK_URL"], exit_timeout=1, timeout=60)
        for i in range(7):
            client.track("u", "stuck")
        """,
        api,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 10
    assert "7 event(s) could not be delivered before exit" in done.stderr
    assert "k-exit-test" not in done.stderr
