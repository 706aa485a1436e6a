"""The pipeline's lifecycle under hostile use (issue 8, defects 2, 3, 4, 9 and 10), black-box.

Real HTTP to the local mock Tracking API, real consumer threads; callbacks that re-enter the client.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest

from segment.analytics import ArgumentError, Client
from segment.analytics.testing import MockTrackingAPI, Reply

from .conftest import WRITE_KEY, ErrorLog


def conserved(stats: dict[str, Any]) -> bool:
    return bool(stats["accepted"] == stats["delivered"] + stats["dropped"] + stats["pending"])


def run_in_thread(target: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Run ``target`` in a fresh thread; fail (instead of hanging the suite) if it does not return."""
    box: dict[str, Any] = {}

    def wrapper() -> None:
        try:
            box["value"] = target()
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    thread = threading.Thread(target=wrapper, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{target} did not return within {timeout}s (deadlock?)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- defect 2: a batch is settled whatever the callbacks or their arguments do -------------------


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def deepest_tracked_whole_from_a_fresh_thread() -> int:
    """The deepest list nesting ``track()`` sends as is (not cut to null) when called from a fresh thread.

    Found by tracking in sync mode to a separate mock API and looking at what arrived: one more
    level and the encoder gives up on the caller's stack. A consumer thread's stack is deeper.
    """
    with MockTrackingAPI() as probe_api:
        probe = Client(WRITE_KEY, host=probe_api.url, sync_mode=True)
        for depth in range(1000, 900, -1):
            properties = {"p": nested(depth)}
            run_in_thread(lambda: probe.track("u", "probe", properties))  # noqa: B023 - called at once
            if probe_api.requests()[-1].raw_body.count(b"[") > depth:
                return depth
    raise AssertionError("no depth between 900 and 1000 is sent whole")


def test_a_batch_whose_events_cannot_be_decoded_in_the_consumer_is_still_settled(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    depth = deepest_tracked_whole_from_a_fresh_thread()
    client = make_client(upload_interval=0.05)
    client.track("u", "before")
    run_in_thread(lambda: client.track("u", "deep", {"p": nested(depth)}))
    client.track("u", "after")
    assert run_in_thread(lambda: client.flush()) == 0  # no timeout: it must return by itself
    stats = client.stats()
    assert stats["delivered"] == 3 and stats["in_flight"] == 0 and conserved(stats)
    assert sum(len(batch) for batch in errors.successes) == 3  # on_success heard of all three
    heard = {message.get("event"): message for batch in errors.successes for message in batch}
    assert set(heard) == {"before", "deep", "after"}  # the deep one decoded whole, off the consumer's stack
    assert heard["deep"]["messageId"]
    assert len(api.events()) == 3
    # sent whole (not cut to null): too deep to decode on the consumer's stack
    assert any(request.raw_body.count(b"[") > depth for request in api.requests())
    assert run_in_thread(lambda: client.flush(timeout=5)) == 0


def test_a_callback_that_raises_or_exits_does_not_stop_settling(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    calls: list[str] = []

    def on_success(events: list[dict[str, Any]]) -> None:
        calls.append("success")
        raise SystemExit(3)

    def on_error(exc: BaseException, events: list[dict[str, Any]]) -> None:
        calls.append("error")
        raise RuntimeError("boom")

    api.script(Reply(status=400))
    client = make_client(on_success=on_success, on_error=on_error, upload_interval=0.05)
    client.track("u", "dropped")
    assert run_in_thread(lambda: client.flush()) == 0
    client.track("u", "delivered")
    assert run_in_thread(lambda: client.flush()) == 0
    assert calls == ["error", "success"]
    assert all(consumer.is_alive() for consumer in client.consumers or [])
    assert conserved(client.stats())


# -- defect 3: callbacks may call any public method -----------------------------------------------


@pytest.mark.parametrize("method", ["flush", "flush_timeout", "track", "stats", "join", "shutdown", "shutdown_timeout"])
@pytest.mark.parametrize("callback", ["on_error", "on_success"])
def test_a_callback_may_call_the_client_back(api: MockTrackingAPI, method: str, callback: str) -> None:
    holder: dict[str, Client] = {}
    calls: list[Any] = []

    def reenter(*args: Any) -> None:
        client = holder["client"]
        if method == "flush":
            calls.append(client.flush())
        elif method == "flush_timeout":
            calls.append(client.flush(timeout=30))
        elif method == "track":
            calls.append(client.track("u", "from-callback")[0])
        elif method == "stats":
            calls.append(conserved(client.stats()))
        elif method == "join":
            calls.append(client.join())
        elif method == "shutdown":
            calls.append(client.shutdown())
        else:
            calls.append(client.shutdown(timeout=30))

    if callback == "on_error":
        api.script(Reply(status=400))
    client = Client(WRITE_KEY, host=api.url, upload_interval=0.05, **{callback: reenter})
    holder["client"] = client
    try:
        for i in range(5):
            client.track("u", f"e{i}")
        run_in_thread(lambda: client.flush(timeout=10))
        assert calls, "the callback was not called"
        # the client still works (or is cleanly closed) and every event is accounted for
        later_ok, _ = client.track("u", "later")
        if method not in ("shutdown", "shutdown_timeout"):
            assert later_ok
        remaining = run_in_thread(lambda: client.shutdown(timeout=10))
        assert remaining == 0
        stats = client.stats()
        assert conserved(stats) and stats["pending"] == 0
    finally:
        client.shutdown(timeout=2)


def test_on_error_that_tracks_on_a_closed_client_ends(api: MockTrackingAPI) -> None:
    """A "re-send on drop" callback against a closed client recurses into itself; it must end, not hang."""
    holder: dict[str, Client] = {}
    seen: list[str] = []

    def on_error(exc: BaseException, events: list[dict[str, Any]]) -> None:
        seen.append(str(getattr(exc, "reason", "")))
        holder["client"].track("u", "again")

    client = Client(WRITE_KEY, host=api.url, on_error=on_error)
    holder["client"] = client
    client.shutdown(timeout=5)
    ok, _ = run_in_thread(lambda: client.track("u", "late"))
    assert ok is False
    assert seen and set(seen) == {"client_closed"}
    assert conserved(client.stats())


# -- defect 4: shutdown stops accepting first, then delivers everything accepted before ----------


def test_shutdown_delivers_everything_accepted_before_it_while_a_producer_keeps_going(
    api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(Reply(status=200, delay=0.3))
    client = Client(WRITE_KEY, host=api.url, on_error=errors.on_error, upload_interval=0.1)
    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def producer() -> None:
        i = 0
        while not stop.is_set():
            ok, msg = client.track("u", "e", {"i": i})
            (accepted if ok else refused).append(msg["messageId"])
            i += 1
            time.sleep(0.002)  # about 500 events/s

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    time.sleep(0.6)
    started = time.monotonic()
    left = client.shutdown(timeout=30)
    elapsed = time.monotonic() - started
    time.sleep(0.05)
    stop.set()
    thread.join(5)
    assert left == 0, f"shutdown left {left} of {len(accepted)} accepted events after {elapsed:.1f}s"
    assert elapsed < 30
    assert refused, "calls after shutdown began must be refused"
    delivered = {event["messageId"] for event in api.events()}
    assert set(accepted) <= delivered
    assert set(refused).isdisjoint(delivered)
    assert set(errors.dropped_ids()) == set(refused)
    assert set(errors.reasons()) == {"client_closed"}
    stats = client.stats()
    assert conserved(stats) and stats["pending"] == 0
    assert stats["dropped_by_reason"] == {"client_closed": len(refused)}
    assert all(type(reason) is str for reason in stats["dropped_by_reason"])  # a plain dict: JSON as is


def test_concurrent_shutdowns_wait_for_the_same_events(api: MockTrackingAPI) -> None:
    api.set_default(Reply(status=200, delay=0.2))
    client = Client(WRITE_KEY, host=api.url, upload_size=10, upload_interval=0.05)
    for i in range(50):
        client.track("u", f"e{i}")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(client.shutdown(timeout=20))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(25)
    assert results == [0, 0, 0]
    assert len(api.events()) == 50


def test_shutdown_after_join_still_delivers_what_is_queued(api: MockTrackingAPI) -> None:
    client = Client(WRITE_KEY, host=api.url, upload_interval=0.05)
    client.join()
    for i in range(20):
        client.track("u", f"e{i}")
    assert client.shutdown(timeout=10) == 0
    assert len(api.events()) == 20


# -- defect 9: events the API stored in a partly successful batch are not pending ------------------


def test_partial_success_counts_the_stored_events_at_once(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    client = make_client(upload_interval=0.05)
    messages = [client.track("u", f"e{i}")[1] for i in range(10)]
    last = messages[-1]["messageId"]
    api.script(Reply(status=200, fail_message_ids={last: 503}))
    api.set_default(Reply(status=503))  # the retry keeps failing: its backoff wait is in progress
    assert client.flush(timeout=0.4) == 1
    stats = client.stats()
    assert stats["delivered"] == 9 and stats["pending"] == 1 and stats["in_flight"] == 1


EXIT_SCRIPT = """
import json, sys
import segment.analytics as analytics
from segment.analytics import Client
client = Client({key!r}, host={host!r}, upload_interval=0.05, exit_timeout=0.3)
for i in range(10):
    client.track("u", "e%d" % i, message_id="m%d" % i)
"""


def test_exit_line_counts_only_what_is_left_of_a_partial_batch(api: MockTrackingAPI) -> None:
    api.script(Reply(status=200, fail_message_ids={"m9": 503}))
    api.set_default(Reply(status=503))
    script = EXIT_SCRIPT.format(key=WRITE_KEY, host=api.url)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "1 event(s) could not be delivered before exit" in done.stderr, done.stderr
    assert len(api.events()) == 9
    assert WRITE_KEY not in done.stderr


# -- defect 10: timeouts that are not numbers of seconds are misuse, never a hang ----------------


@pytest.mark.parametrize("bad", [math.nan, -1, -0.001, -math.inf, "5", True, [1]])
@pytest.mark.parametrize("method", ["flush", "join", "shutdown"])
def test_bad_timeouts_raise_argument_error_naming_the_field(method: str, bad: Any) -> None:
    client = Client(WRITE_KEY, send=False)
    with pytest.raises(ArgumentError) as info:
        getattr(client, method)(bad)
    assert info.value.field == "timeout"
    client.shutdown(timeout=1)


def test_infinite_and_zero_timeouts_work(api: MockTrackingAPI) -> None:
    client = Client(WRITE_KEY, host=api.url, upload_interval=0.05)
    client.track("u", "e")
    assert run_in_thread(lambda: client.flush(math.inf)) == 0
    assert run_in_thread(lambda: client.flush(0)) == 0
    assert run_in_thread(lambda: client.shutdown(math.inf)) == 0
    assert json.loads(api.requests()[0].raw_body)["batch"][0]["event"] == "e"
