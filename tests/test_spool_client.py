"""The durable spool through the public ``Client`` (README "Durable spool"): outages, restarts, limits, bad disks.

Real files, real HTTP to MockTrackingAPI, real processes where a process has to end
(tests/spool_client_worker.py). Crashes and processes sharing a path: tests/test_spool_crash.py.
The storage engine alone: tests/test_spool_store.py and tests/test_spool_processes.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from segment.analytics import ArgumentError, Client
from segment.analytics.encoding import encode
from segment.analytics.spool import SpoolStore
from segment.analytics.testing import MockTrackingAPI, Reply
from tests._spool_client_helpers import Worker, closed_port, delivered, is_subsequence, law, raw_bodies, run
from tests.conftest import WRITE_KEY, ErrorLog

DOWN = Reply(503, headers={"Retry-After": "1"})  # an outage whose end the client notices within a second


def spool_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "segment" and r.levelno >= logging.WARNING]


def flush_until_done(client: Client, seconds: float = 20) -> int:
    deadline = time.monotonic() + seconds
    left = client.flush(1)
    while left and time.monotonic() < deadline:
        left = client.flush(1)
    return left


def wait_until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    """Poll ``predicate`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "segment.analytics", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spooled(spool: Path, make_client: Callable[..., Client]) -> Callable[..., Client]:
    """Clients on ``spool`` (small sync interval), shut down after the test."""

    def factory(**options: Any) -> Client:
        options.setdefault("storage", str(spool))
        options.setdefault("storage_sync_interval", 0.05)
        options.setdefault("upload_interval", 0.05)
        return make_client(**options)

    return factory


def track(client: Client, n: int, tag: str = "t", pad: int = 20) -> list[dict[str, Any]]:
    messages = []
    for i in range(n):
        ok, message = client.track(f"user-{i % 5}", "Spool Tested", {"tag": tag, "n": i, "pad": "x" * pad})
        assert ok
        messages.append(message)
    return messages


# -- outages and restarts ------------------------------------------------------------------------------------


def test_an_outage_of_ten_times_the_queue_refuses_nothing_and_keeps_memory_flat(
    tmp_path: Path, api: MockTrackingAPI
) -> None:
    api.set_default(DOWN)
    up = tmp_path / "up"
    cfg = {
        "path": str(tmp_path / "spool"),
        "host": api.url,
        "count": 5000,
        "rate": 1250,  # the staging queue holds 0.4 s of events while the writer thread waits for a core
        "pad": 1500,
        "rss_every": 500,
        "options": {"max_queue_size": 500},
        "then": ["sleep:0.5", "stats", "wait:" + str(up), "until_pending:20", "stats", "shutdown:5"],
    }
    worker = Worker("produce", cfg)
    worker.wait_line("STATS ", timeout=30)
    during = worker.stats(0)
    assert during["accepted"] == 5000 and during["dropped"] == 0, during["dropped_by_reason"]
    assert during["pending"] == 5000 and during["delivered"] == 0
    assert during["stored"] >= 4500, "the outage's backlog is not in the spool"
    assert during["storage_bytes"] >= 4500 * 1500
    rss = [int(line.split()[1]) for line in worker.lines if line.startswith("RSS ")]
    assert len(rss) == 10
    # 4,000 events of 1.6 KB held in memory would add over 6 MB; the spool keeps them on disk
    assert rss[-1] - rss[1] < 3500, f"resident memory grew with the backlog: {rss} kB"
    api.set_default(Reply(200))
    up.touch()
    worker.finish()
    after = worker.stats(-1)
    assert (after["delivered"], after["pending"], after["dropped"], after["stored"]) == (5000, 0, 0, 0)
    assert law(after)
    assert worker.errors() == []  # on_error was never called
    got = delivered(api)
    assert set(got) == set(worker.ids()) and max(got.values()) == 1


def test_the_law_holds_across_a_restart_and_the_backlog_comes_first(tmp_path: Path, api: MockTrackingAPI) -> None:
    path = str(tmp_path / "spool")
    api.set_default(DOWN)
    first = run("produce", {"path": path, "host": api.url, "count": 200, "bytes": True, "tag": "one"})
    kept = [w for w in first.warnings() if "kept in the spool" in w]
    assert len(kept) == 1 and "200" in kept[0], first.warnings()
    api.reset()
    second = run(
        "produce",
        {"path": path, "host": api.url, "count": 50, "tag": "two", "then": ["until_pending:20", "stats", "shutdown:5"]},
    )
    stats = second.stats()
    assert (stats["accepted"], stats["recovered"], stats["delivered"]) == (50, 200, 250)
    assert (stats["pending"], stats["dropped"], stats["stored"]) == (0, 0, 0)
    assert law(stats)
    order = api.message_ids()
    assert sorted(order) == sorted(first.ids() + second.ids())
    assert [mid for mid in order if mid in set(first.ids())] == first.ids(), "the backlog was not sent oldest first"
    bodies = raw_bodies(api)
    assert all(data in bodies for data in first.encoded().values()), "a spooled event's bytes changed"
    assert not [w for w in second.warnings() if "kept" in w or "could not" in w]


def test_flush_and_shutdown_with_a_timeout_leave_the_rest_in_the_spool(
    spooled: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(DOWN)
    client = spooled()
    messages = track(client, 50)
    assert client.flush(0.3) == 50
    wait_until(lambda: client.stats()["stored"] == 50)
    assert client.shutdown(0.3) == 50
    ok, _ = client.track("u", "after shutdown")
    assert not ok and errors.reasons() == ["client_closed"]
    assert client.consumers is not None
    wait_until(lambda: not any(c.is_alive() for c in client.consumers))  # its batch in flight given back
    api.reset()
    later = spooled()
    assert flush_until_done(later) == 0
    stats = later.stats()
    assert (stats["recovered"], stats["delivered"], stats["accepted"]) == (50, 50, 0)
    assert api.message_ids() == [m["messageId"] for m in messages]
    sent = api.events()
    assert sent == [json.loads(encode(m)) for m in messages]  # the same timestamps, ids and bodies


def test_module_level_storage_setting_and_the_command_line(tmp_path: Path, api: MockTrackingAPI) -> None:
    path = str(tmp_path / "spool")
    api.set_default(DOWN)
    worker = run("produce", {"path": path, "host": api.url, "count": 30, "module": True})
    assert any("kept in the spool" in w and "30" in w for w in worker.warnings()), worker.warnings()
    status = cli("spool", "status", path, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["events"] == 30
    export = cli("spool", "export", path)
    assert export.returncode == 0, export.stderr
    assert [json.loads(line)["messageId"] for line in export.stdout.splitlines()] == worker.ids()
    api.reset()
    drain = cli("spool", "drain", path, "--write-key", WRITE_KEY, "--host", api.url)
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert "30" in drain.stdout
    assert WRITE_KEY not in drain.stdout + drain.stderr
    assert api.message_ids() == worker.ids()
    assert json.loads(cli("spool", "status", path, "--json").stdout)["events"] == 0


def test_drain_leaves_a_live_processs_events_alone(tmp_path: Path, api: MockTrackingAPI) -> None:
    path = str(tmp_path / "spool")
    cfg = {"path": path, "host": closed_port(), "count": 20, "then": ["sleep:0.3", "stats", "hang"]}
    alive = Worker("produce", cfg)  # its API is down: whatever of its events reaches `api` came from drain
    try:
        alive.wait_line("STATS ")
        assert alive.stats()["stored"] == 20
        drain = cli("spool", "drain", path, "--write-key", WRITE_KEY, "--host", api.url, "--timeout", "5")
        assert drain.returncode == 1, "the spool did not end empty, yet drain said it did"
        assert "20 events belong to processes still running" in drain.stdout, drain.stdout
        assert api.message_ids() == [], "drain sent a live process's events"
    finally:
        alive.kill9()


def test_drain_refuses_a_missing_spool_or_write_key(tmp_path: Path, api: MockTrackingAPI) -> None:
    missing = cli("spool", "drain", str(tmp_path / "nothing-here"), "--write-key", WRITE_KEY, "--host", api.url)
    assert missing.returncode == 1 and "no spool" in missing.stderr
    assert not (tmp_path / "nothing-here").exists(), "drain created a spool"
    no_key = cli("spool", "drain", str(tmp_path), "--host", api.url)
    assert no_key.returncode == 1 and "write key" in no_key.stderr
    assert api.request_count() == 0


# -- limits --------------------------------------------------------------------------------------------------


def test_storage_max_bytes_drops_the_oldest_and_reports_them(
    spooled: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(DOWN)
    client = spooled(storage_max_bytes=1024 * 1024, upload_size=50)
    messages = track(client, 1200, pad=2500)  # about 3 MB of events for a 1 MiB spool
    order = {m["messageId"]: i for i, m in enumerate(messages)}
    wait_until(lambda: client.stats()["dropped_by_reason"].get("storage_full", 0) > 0)
    client.flush(0.5)
    stats = client.stats()
    assert stats["storage_bytes"] <= 1024 * 1024
    assert law(stats)
    in_flight = {e["messageId"] for r in api.requests() for e in r.batch}  # sent (and refused) during the outage
    api.set_default(Reply(200))
    assert flush_until_done(client) == 0
    dropped = errors.dropped_ids()
    assert set(errors.reasons()) == {"storage_full"}
    got = delivered(api)
    assert not set(dropped) & set(got), "a dropped event was delivered"
    assert sorted(set(dropped) | set(got)) == sorted(order) and len(dropped) == len(set(dropped))
    newest_dropped = max(order[mid] for mid in dropped)
    oldest_kept = min(order[mid] for mid in got if mid not in in_flight)
    assert newest_dropped < oldest_kept, "not the oldest events were dropped"
    final = client.stats()
    assert final["dropped_by_reason"] == {"storage_full": len(dropped)} and law(final)


def test_storage_max_age_expires_what_waits_too_long_in_an_outage(
    spooled: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(DOWN)
    client = spooled(storage_max_age=0.05, upload_size=10)
    messages = track(client, 60)
    order = [m["messageId"] for m in messages]
    # the oldest batch is in flight (retried) and never expired under the consumer; the rest expire
    wait_until(lambda: client.stats()["dropped_by_reason"].get("storage_expired", 0) >= 50)
    api.set_default(Reply(200))
    assert flush_until_done(client) == 0
    stats = client.stats()
    expired = errors.dropped_ids()
    assert set(errors.reasons()) == {"storage_expired"} and len(expired) == stats["dropped"] >= 50
    got = delivered(api)
    assert not set(expired) & set(got) and sorted(set(expired) | set(got)) == sorted(order)
    assert law(stats) and stats["pending"] == 0 and stats["stored"] == 0


def test_storage_max_age_expires_what_an_earlier_process_left_too_long(
    tmp_path: Path, api: MockTrackingAPI, errors: ErrorLog
) -> None:
    path = str(tmp_path / "spool")
    api.set_default(DOWN)
    old = run("produce", {"path": path, "host": api.url, "count": 30})
    api.reset()
    time.sleep(1.1)  # the spool records append times in whole seconds
    client = Client(
        WRITE_KEY, host=api.url, storage=path, storage_max_age=0.5, on_error=errors.on_error, upload_interval=0.05
    )
    try:
        wait_until(lambda: client.stats()["pending"] == 0 and client.stats()["recovered"] == 30)
        stats = client.stats()
        assert api.message_ids() == [], "expired events were delivered"
        assert (stats["recovered"], stats["delivered"], stats["dropped"], stats["stored"]) == (30, 0, 30, 0)
        assert sorted(errors.dropped_ids()) == sorted(old.ids()) and set(errors.reasons()) == {"storage_expired"}
    finally:
        client.shutdown(2)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("storage_max_bytes", 0),
        ("storage_max_bytes", -1),
        ("storage_max_bytes", True),
        ("storage_max_bytes", 1.5e6),
        ("storage_max_age", 0),
        ("storage_max_age", -5),
        ("storage_max_age", math.nan),
        ("storage_max_age", "7d"),
        ("storage_sync_interval", -0.1),
        ("storage_sync_interval", math.nan),
        ("storage_sync_interval", math.inf),
        ("storage", 42),
    ],
)
def test_bad_storage_options_raise_argument_error_naming_them(spool: Path, option: str, value: Any) -> None:
    options: dict[str, Any] = {"storage": str(spool), option: value}
    with pytest.raises(ArgumentError) as raised:
        Client(WRITE_KEY, host="http://127.0.0.1:9", **options)
    assert option in str(raised.value)
    assert not spool.exists()


# -- damaged files and bad disks -----------------------------------------------------------------------------


def test_an_undecodable_row_is_reported_and_the_good_ones_delivered(
    spool: Path, spooled: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    good = [encode({"messageId": f"good-{i}", "type": "track", "event": "e", "userId": "u"}) for i in range(2)]
    store = SpoolStore(spool)
    store.append([good[0], b"\xff\xfe not json", b"[1, 2]", good[1]])
    store.close()
    client = spooled()
    track(client, 3)
    assert flush_until_done(client) == 0
    stats = client.stats()
    assert stats["dropped_by_reason"] == {"storage_corrupt": 2}
    assert (stats["recovered"], stats["delivered"], stats["accepted"]) == (4, 5, 3)
    assert law(stats) and stats["stored"] == 0
    assert set(errors.reasons()) == {"storage_corrupt"}
    assert [mid for mid in api.message_ids() if mid.startswith("good-")] == ["good-0", "good-1"]
    assert all(data in raw_bodies(api) for data in good)


def damage_spool(tmp_path: Path, api: MockTrackingAPI, how: str) -> tuple[Path, Worker]:
    """A spool left by a process that kept 300 events (the API was down), then damaged."""
    path = tmp_path / "spool"
    api.set_default(DOWN)
    first = run("produce", {"path": str(path), "host": api.url, "count": 300, "pad": 400})
    db = path / "spool.db"
    if how == "garbage":  # not a database at all, and no WAL beside it to salvage from
        for extra in ("spool.db-wal", "spool.db-shm"):
            (path / extra).unlink(missing_ok=True)
        db.write_bytes(os.urandom(db.stat().st_size))
    else:
        conn = sqlite3.connect(db)  # everything into the main file first: truncating it then loses real rows
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 2)
    api.reset()
    return path, first


def test_a_garbage_database_is_set_aside_and_the_client_keeps_delivering(
    tmp_path: Path, api: MockTrackingAPI, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = damage_spool(tmp_path, api, "garbage")
    caplog.set_level(logging.WARNING, logger="segment")
    client = Client(WRITE_KEY, host=api.url, storage=str(path), storage_sync_interval=0.05, upload_interval=0.05)
    try:
        new = track(client, 20, tag="new")
        assert flush_until_done(client) == 0
        stats = client.stats()
    finally:
        client.shutdown(2)
    warnings = spool_warnings(caplog)
    assert len(warnings) == 2 and "damaged" in warnings[0] and "salvaged 0" in warnings[1], warnings
    assert list(path.glob("corrupt-*.db")), "the damaged file was not kept for inspection"
    assert api.message_ids() == [m["messageId"] for m in new]
    assert (stats["recovered"], stats["delivered"], stats["stored"]) == (0, 20, 0) and law(stats)


def test_a_truncated_database_is_salvaged_and_the_client_keeps_delivering(
    tmp_path: Path, api: MockTrackingAPI, caplog: pytest.LogCaptureFixture
) -> None:
    path, first = damage_spool(tmp_path, api, "truncated")
    caplog.set_level(logging.WARNING, logger="segment")
    client = Client(WRITE_KEY, host=api.url, storage=str(path), storage_sync_interval=0.05, upload_interval=0.05)
    try:
        new = track(client, 20, tag="new")
        flush_until_done(client, 2)
        stats = client.stats()
    finally:
        client.shutdown(2)
    warnings = spool_warnings(caplog)
    assert len(warnings) >= 2 and "damaged" in warnings[0] and "salvaged" in warnings[1], warnings
    assert all("storage_corrupt" in w for w in warnings[2:]), warnings  # a garbled row, reported once
    got = delivered(api)
    assert {m["messageId"] for m in new} <= set(got)
    salvaged = set(got) - {m["messageId"] for m in new}
    assert salvaged and salvaged <= set(first.ids()), "nothing was salvaged from the readable half"
    assert law(stats)
    assert stats["delivered"] == 20 + len(salvaged)
    assert stats["pending"] == 0 and stats["stored"] == 0, f"a salvaged row is held for ever: {stats}"
    assert stats["recovered"] == len(salvaged) + stats["dropped_by_reason"].get("storage_corrupt", 0)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside pytest's private tree, so that an unprivileged worker can reach it."""
    base = Path(tempfile.mkdtemp(prefix="spool-client-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o700)
        shutil.rmtree(base)


def test_read_only_spools_warn_once_and_the_client_carries_on_in_memory(shared_dir: Path, api: MockTrackingAPI) -> None:
    store = SpoolStore(shared_dir / "existing")  # a spool with events, then made read-only
    store.append([encode({"messageId": f"old-{i}", "type": "track", "event": "e", "userId": "u"}) for i in range(3)])
    store.close()
    (shared_dir / "locked").mkdir()
    if os.geteuid() == 0:  # root ignores modes: the workers drop to nobody, so nobody owns these
        for p in [shared_dir / "locked", shared_dir / "existing", *(shared_dir / "existing").rglob("*")]:
            os.chown(p, 65534, 65534)
    for p in (shared_dir / "existing").rglob("*"):
        os.chmod(p, 0o400)
    os.chmod(shared_dir / "existing", 0o500)
    os.chmod(shared_dir / "locked", 0o500)
    then = ["until_pending:10", "stats"]
    workers = [
        Worker("produce", {"path": str(p), "host": api.url, "count": 30, "drop_privileges": True, "then": then})
        for p in (shared_dir / "existing", shared_dir / "locked" / "spool", shared_dir / "locked")
    ]
    for worker in workers:
        worker.finish()
        assert len(worker.warnings()) == 1, worker.warnings()
        stats = worker.stats()
        assert (stats["delivered"], stats["pending"], stats["stored"]) == (30, 0, 0)
        assert law(stats)
    assert sorted(delivered(api)) == sorted(mid for w in workers for mid in w.ids())
    assert not (shared_dir / "locked" / "spool").exists()
    assert sorted(os.listdir(shared_dir / "locked")) == []


def test_a_full_disk_warns_once_and_nothing_accepted_is_lost(tmp_path: Path, api: MockTrackingAPI) -> None:
    path = tmp_path / "spool"
    up = tmp_path / "up"
    api.set_default(DOWN)
    cfg = {
        "path": str(path),
        "host": api.url,
        "count": 1500,
        "rate": 2000,
        "pad": 1000,
        "fsize_after": 300,  # the spool holds a few hundred events, then the disk is full
        "fsize_room": 150_000,
        "then": ["sleep:0.2", "stats", "wait:" + str(up), "flush:2", "stats", "shutdown:2"],
    }
    worker = Worker("produce", cfg)
    worker.wait_line("STATS ", timeout=30)
    during = worker.stats(0)
    assert during["accepted"] == 1500 and during["dropped"] == 0, during
    assert during["stored"] > 0, "the disk filled before the spool held anything: nothing tested"
    api.set_default(Reply(200))
    up.touch()
    worker.finish()
    assert len(worker.warnings()) == 1 and "cannot be used" in worker.warnings()[0], worker.warnings()
    assert law(worker.stats(-1))
    remaining = Client(WRITE_KEY, host=api.url, storage=str(path), upload_interval=0.05)
    try:  # what the spool held when the disk filled comes with the next start
        assert flush_until_done(remaining) == 0
    finally:
        remaining.shutdown(2)
    assert set(delivered(api)) == set(worker.ids()), "an accepted event was lost to the full disk"


def test_a_path_that_is_a_file_warns_once_and_the_client_carries_on(
    tmp_path: Path, make_client: Callable[..., Client], api: MockTrackingAPI, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "a-file"
    target.write_bytes(b"not a directory")
    caplog.set_level(logging.WARNING, logger="segment")
    client = make_client(storage=str(target), upload_interval=0.05)
    messages = track(client, 10)
    assert flush_until_done(client) == 0
    assert len(spool_warnings(caplog)) == 1
    assert target.read_bytes() == b"not a directory"
    assert is_subsequence([m["messageId"] for m in messages], api.message_ids())
    assert client.stats()["stored"] == 0
