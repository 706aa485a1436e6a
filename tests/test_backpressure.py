"""Back-pressure: on_full (drop_new, drop_oldest, block), block_timeout and max_queue_bytes (README "Configuration")."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import segment.analytics as analytics
from segment.analytics import ArgumentError, Client
from segment.analytics.testing import MockTrackingAPI
from tests.conftest import WRITE_KEY, ErrorLog

ROOT = Path(__file__).resolve().parent.parent
GUARD = 20.0  # hang guard (seconds); never a measure of speed


def law(client: Client) -> None:
    stats = client.stats()
    assert stats["accepted"] == stats["delivered"] + stats["dropped"] + stats["pending"]


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("on_full", "drop"),
        ("on_full", None),
        ("on_full", "BLOCK"),
        ("block_timeout", -1),
        ("block_timeout", math.nan),
        ("block_timeout", math.inf),
        ("block_timeout", "5"),
        ("block_timeout", True),
        ("max_queue_bytes", 0),
        ("max_queue_bytes", -5),
        ("max_queue_bytes", 1000),  # smaller than one event of the largest size
        ("max_queue_bytes", 64.5 * 2**20),
        ("max_queue_bytes", True),
    ],
)
def test_misuse_raises_an_argument_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ArgumentError) as info:
        Client(WRITE_KEY, send=False, **{field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_defaults_and_module_level_settings(monkeypatch: pytest.MonkeyPatch, api: MockTrackingAPI) -> None:
    client = Client(WRITE_KEY, send=False)
    assert (client.on_full, client.block_timeout, client.max_queue_bytes) == ("drop_new", 5.0, 64 * 2**20)
    assert client.queue.max_bytes == 64 * 2**20
    monkeypatch.setattr(analytics, "write_key", WRITE_KEY)
    monkeypatch.setattr(analytics, "host", api.url)
    monkeypatch.setattr(analytics, "on_full", "block")
    monkeypatch.setattr(analytics, "block_timeout", 0.5)
    monkeypatch.setattr(analytics, "max_queue_bytes", 1 << 20)
    monkeypatch.setattr(analytics, "default_client", None)
    try:
        default = analytics._client()
        assert (default.on_full, default.block_timeout, default.max_queue_bytes) == ("block", 0.5, 1 << 20)
    finally:
        analytics.shutdown(timeout=5)


# -- max_queue_bytes -------------------------------------------------------------------------------


def test_max_queue_bytes_bounds_the_queue_memory(make_client: Callable[..., Client], errors: ErrorLog) -> None:
    client = make_client(max_queue_bytes=40_000, max_queue_size=10_000)
    client.join()  # nothing consumes
    payload = {"blob": "x" * 900}
    results = [client.track("u", "e", payload)[0] for _ in range(100)]
    queued = results.count(True)
    assert 0 < queued < 100 and results[queued:] == [False] * (100 - queued)  # refused once full, not before
    assert client.queue.nbytes <= 40_000 < client.queue.nbytes + 1000
    assert errors.reasons() == ["queue_full"] * (100 - queued)
    assert "max_queue_bytes=40000" in str(errors.errors[0][0])
    law(client)
    assert client.flush(timeout=GUARD) == 0
    assert client.queue.nbytes == 0
    assert client.stats()["delivered"] == queued


# -- drop_oldest -----------------------------------------------------------------------------------


def test_drop_oldest_drops_and_reports_the_oldest_and_keeps_the_newest(
    make_client: Callable[..., Client], errors: ErrorLog, api: MockTrackingAPI
) -> None:
    client = make_client(on_full="drop_oldest", max_queue_size=3)
    client.join()
    for i in range(7):
        assert client.track("u", "e", message_id=f"m{i}")[0]  # the new event is always queued
    assert errors.dropped_ids() == ["m0", "m1", "m2", "m3"]
    assert errors.reasons() == ["queue_full"] * 4
    assert "oldest event dropped" in str(errors.errors[0][0])
    law(client)
    assert client.flush(timeout=GUARD) == 0
    assert api.message_ids() == ["m4", "m5", "m6"]
    stats = client.stats()
    assert (stats["accepted"], stats["delivered"], stats["dropped_by_reason"]) == (7, 3, {"queue_full": 4})


def test_drop_oldest_makes_room_by_bytes_too(make_client: Callable[..., Client], errors: ErrorLog) -> None:
    client = make_client(on_full="drop_oldest", max_queue_bytes=40_000)
    client.join()
    big = {"blob": "x" * 9_000}
    for i in range(10):
        assert client.track("u", "e", big, message_id=f"b{i}")[0]
    assert client.queue.nbytes <= 40_000
    kept = client.queue.qsize()
    assert errors.dropped_ids() == [f"b{i}" for i in range(10 - kept)]
    law(client)


def test_drop_oldest_after_shutdown_refuses_as_client_closed(
    make_client: Callable[..., Client], errors: ErrorLog
) -> None:
    client = make_client(on_full="drop_oldest", max_queue_size=1)
    client.shutdown(timeout=GUARD)
    assert client.track("u", "late")[0] is False
    assert errors.reasons() == ["client_closed"]


# -- block -----------------------------------------------------------------------------------------


class Gate:
    """An on_success callback that holds the (only) consumer until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self, events: list[dict[str, Any]]) -> None:
        self.entered.set()
        self.open.wait(GUARD)


def held_client(make_client: Callable[..., Client], gate: Gate, **options: Any) -> Client:
    """A client whose single consumer is stuck in a callback, with a full queue of 2 behind it."""
    client = make_client(
        on_full="block", max_queue_size=2, upload_size=1, upload_interval=0, on_success=gate, **options
    )
    assert client.track("u", "in-flight", message_id="f0")[0]
    assert gate.entered.wait(GUARD)
    assert client.track("u", "queued", message_id="q1")[0]
    assert client.track("u", "queued", message_id="q2")[0]
    assert client.queue.full()
    return client


def track_in_thread(client: Client, message_id: str) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(client.track("u", "blocked", message_id=message_id)[0]))
    thread.start()
    return thread, result


def test_block_waits_for_room_and_loses_nothing(
    make_client: Callable[..., Client], errors: ErrorLog, api: MockTrackingAPI
) -> None:
    gate = Gate()
    client = held_client(make_client, gate, block_timeout=GUARD)
    thread, result = track_in_thread(client, "b3")
    thread.join(0.3)
    assert thread.is_alive() and result == []  # waiting for room, not refused
    gate.open.set()
    thread.join(GUARD)
    assert result == [True]
    assert client.flush(timeout=GUARD) == 0
    assert sorted(api.message_ids()) == ["b3", "f0", "q1", "q2"]
    assert errors.errors == []


def test_block_gives_up_after_block_timeout_as_queue_full(
    make_client: Callable[..., Client], errors: ErrorLog, api: MockTrackingAPI
) -> None:
    gate = Gate()
    client = held_client(make_client, gate, block_timeout=0.2)
    thread, result = track_in_thread(client, "b3")
    thread.join(GUARD)
    assert result == [False]
    assert errors.reasons() == ["queue_full"] and errors.dropped_ids() == ["b3"]
    assert "block_timeout=0.2s" in str(errors.errors[0][0])
    gate.open.set()
    assert client.flush(timeout=GUARD) == 0
    law(client)


def test_shutdown_wakes_blocked_callers_and_refuses_their_events_as_client_closed(
    make_client: Callable[..., Client], errors: ErrorLog, api: MockTrackingAPI
) -> None:
    gate = Gate()
    client = held_client(make_client, gate, block_timeout=GUARD)
    waiters = [track_in_thread(client, f"b{i}") for i in range(3)]
    time.sleep(0.1)
    closer = threading.Thread(target=client.shutdown, kwargs={"timeout": GUARD})
    closer.start()
    for thread, _ in waiters:
        thread.join(GUARD)
        assert not thread.is_alive()
    assert [result for _, result in waiters] == [[False]] * 3
    assert sorted(errors.dropped_ids()) == ["b0", "b1", "b2"] and set(errors.reasons()) == {"client_closed"}
    gate.open.set()
    closer.join(GUARD)
    assert sorted(api.message_ids()) == ["f0", "q1", "q2"]  # what was accepted is still delivered
    law(client)


def test_join_wakes_blocked_callers(make_client: Callable[..., Client], errors: ErrorLog) -> None:
    gate = Gate()
    client = held_client(make_client, gate, block_timeout=GUARD)
    thread, result = track_in_thread(client, "b3")
    time.sleep(0.1)
    joiner = threading.Thread(target=client.join, kwargs={"timeout": GUARD})
    joiner.start()
    thread.join(GUARD)
    assert result == [False] and errors.reasons() == ["queue_full"]  # no consumer left to make room
    gate.open.set()
    joiner.join(GUARD)
    assert client.track("u", "after join")[0] is False  # still full, and nobody consumes: no wait
    assert client.flush(timeout=GUARD) == 0


def test_a_callback_on_the_consumer_thread_never_waits_on_itself(
    make_client: Callable[..., Client], errors: ErrorLog, api: MockTrackingAPI
) -> None:
    gate = Gate()
    from_callback: list[bool] = []
    box: list[Client] = []

    def on_success(events: list[dict[str, Any]]) -> None:
        gate(events)
        if not from_callback:
            from_callback.append(box[0].track("u", "from callback", message_id="cb")[0])

    client = make_client(
        on_full="block", max_queue_size=1, upload_size=1, upload_interval=0, block_timeout=GUARD, on_success=on_success
    )
    box.append(client)
    client.track("u", "first", message_id="m0")
    assert gate.entered.wait(GUARD)
    client.track("u", "fills the queue", message_id="m1")
    gate.open.set()
    assert client.flush(timeout=GUARD) == 0
    assert from_callback == [False]  # refused at once: waiting would have waited for itself
    assert errors.dropped_ids() == ["cb"] and errors.reasons() == ["queue_full"]
    assert sorted(api.message_ids()) == ["m0", "m1"]


def test_an_on_error_that_tracks_again_never_waits_for_room(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    retracked: list[bool] = []
    box: list[Client] = []
    calls: list[str] = []

    def on_error(exc: BaseException, events: list[dict[str, Any]]) -> None:
        calls.append(events[0]["messageId"])
        if len(calls) == 1:  # a naive "try again", once: on the caller's thread, inside the refusal
            retracked.append(box[0].track("u", "again", message_id="again")[0])

    client = held_client(make_client, gate, block_timeout=0.2, on_error=on_error)
    box.append(client)
    waits: list[bytes] = []
    real_put_wait = client.queue.put_wait

    def counting_put_wait(item: bytes, timeout: float) -> bool:
        waits.append(item)
        return real_put_wait(item, timeout)

    monkeypatch.setattr(client.queue, "put_wait", counting_put_wait)
    assert client.track("u", "refused", message_id="r")[0] is False
    assert retracked == [False] and len(waits) == 1  # the callback's call was refused without a second wait
    assert calls == ["r", "again"]
    gate.open.set()
    assert client.flush(timeout=GUARD) == 0
    law(client)


def test_an_on_error_that_tracks_again_for_ever_ends_and_counts_every_event(
    make_client: Callable[..., Client],
) -> None:
    box: list[Client] = []

    def on_error(exc: BaseException, events: list[dict[str, Any]]) -> None:
        box[0].track("u", "again")  # recursion, ended by the interpreter's limit (logged, ignored)

    for on_full in ("drop_new", "drop_oldest", "block"):
        client = make_client(on_full=on_full, max_queue_size=2, block_timeout=0.05, on_error=on_error)
        box[:] = [client]
        client.join()
        results = [client.track("u", "e")[0] for _ in range(3)]
        assert results[:2] == [True, True]
        law(client)
        assert client.shutdown(timeout=GUARD) <= 3


@pytest.mark.parametrize("library", ["gevent", "eventlet"])
def test_a_blocked_caller_yields_to_the_hub(library: str, api: MockTrackingAPI) -> None:
    patch = (
        "from gevent import monkey; monkey.patch_all()"
        if library == "gevent"
        else "import eventlet; eventlet.monkey_patch()"
    )
    sleep = "gevent.sleep" if library == "gevent" else "eventlet.sleep"
    spawn = "gevent.spawn" if library == "gevent" else "eventlet.spawn"
    script = textwrap.dedent(
        f"""
        import warnings; warnings.simplefilter("ignore")
        {patch}
        import {library}, json, os
        from segment.analytics import Client
        ticks = [0]
        def ticker():
            while True:
                ticks[0] += 1
                {sleep}(0.001)
        {spawn}(ticker)
        client = Client("green-key", host=os.environ["MOCK_URL"], on_full="block", max_queue_size=10,
                        upload_size=5, upload_interval=0)
        results = [client.track("u", "e")[0] for _ in range(2000)]
        left = client.flush(timeout=30)
        stats = client.stats()
        print(json.dumps({{"refused": results.count(False), "left": left, "delivered": stats["delivered"],
                          "ticks": ticks[0]}}))
        client.shutdown(timeout=10)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
        env=dict(os.environ, PYTHONPATH=str(ROOT), MOCK_URL=api.url),
    )
    assert done.returncode == 0, done.stderr
    import json

    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["refused"] == 0 and report["left"] == 0 and report["delivered"] == 2000
    assert report["ticks"] > 0  # other greenlets ran while the caller was blocked
    assert len(api.events()) == 2000


def test_block_with_a_spool_stages_at_the_writers_pace_and_loses_none(tmp_path: Path) -> None:
    with MockTrackingAPI(record=False) as api:
        client = Client(
            WRITE_KEY,
            host=api.url,
            storage=str(tmp_path / "spool"),
            on_full="block",
            max_queue_size=50,
            upload_size=200,
        )
        results = [client.track(anonymous_id="a", event="e")[0] for _ in range(20_000)]
        assert client.flush(timeout=60) == 0
        stats = client.stats()
        client.shutdown(timeout=GUARD)
        assert results.count(False) == 0 and stats["dropped"] == 0
        assert stats["delivered"] == api.event_count() == 20_000


def test_a_million_events_from_a_tight_loop_with_block_lose_none() -> None:
    """A bulk loop with ``block`` runs at delivery speed and loses nothing (its wall time is printed)."""
    n = 1_000_000
    with MockTrackingAPI(record=False) as api:
        client = Client(WRITE_KEY, host=api.url, on_full="block", upload_size=1000, thread=2)
        track = client.track
        started = time.perf_counter()
        refused = 0
        for _ in range(n):
            if not track(anonymous_id="a", event="e")[0]:
                refused += 1
        left = client.flush(timeout=120)
        wall = time.perf_counter() - started
        stats = client.stats()
        client.shutdown(timeout=GUARD)
        delivered_by_api = api.event_count()
    print(f"\n1,000,000 events with on_full='block': {wall:.1f} s, {n / wall:,.0f} events/s")
    assert (refused, left, stats["dropped"]) == (0, 0, 0)
    assert stats["delivered"] == n and delivered_by_api == n
