"""The durable spool's storage engine in one process, on real files (its guarantees: segment/analytics/spool.py)."""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from segment.analytics import __main__ as cli
from segment.analytics.spool import (
    STORAGE_EXPIRED,
    STORAGE_FULL,
    SpoolStore,
    SpoolUnavailable,
)
from segment.analytics.spool_db import classify
from segment.analytics.spool_reader import SpoolReader
from segment.analytics.spool_view import iter_rows, read_status

MiB = 1024 * 1024


def event(i: int, pad: int = 0) -> bytes:
    """A deterministic encoded event, as the client would spool it."""
    body = {"messageId": f"m-{i}", "timestamp": "2026-01-01T00:00:00.000Z", "type": "track", "i": i}
    if pad:
        body["properties"] = {"pad": "x" * pad}
    return json.dumps(body, separators=(",", ":")).encode()


def raw_rows(path: Path) -> list[tuple[int, int, bytes]]:
    """Every row as (id, owner, data), read with a plain sqlite3 connection."""
    conn = sqlite3.connect(str(path / "spool.db"))
    try:
        return [(i, o, bytes(d)) for i, o, d in conn.execute("SELECT id, owner, data FROM events ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def test_append_read_delete_keep_bytes_and_order(spool: Path) -> None:
    store = SpoolStore(spool)
    items = [event(i) for i in range(250)]
    ids = store.append(items[:100]) + store.append(items[100:])
    assert ids == sorted(ids) and len(set(ids)) == 250
    got = []
    after = 0
    while True:
        result = store.read(after, 64, 10**6)
        if not result.rows:
            assert result.last_id == after
            break
        assert not result.corrupt and len(result.rows) <= 64
        got += result.rows
        after = result.last_id
    assert [r.data for r in got] == items and [r.id for r in got] == ids
    assert store.delete(ids[:50]) == 50
    assert store.delete(ids[:50]) == 0  # already gone
    assert store.count() == 200
    assert [r.id for r in store.read(0, 10, 10**6).rows] == ids[50:60]
    assert store.append([]) == []
    store.close()


def test_read_respects_max_bytes_but_returns_at_least_one_row(spool: Path) -> None:
    store = SpoolStore(spool)
    big = event(0, pad=5000)
    store.append([big, event(1), event(2)])
    first = store.read(0, 100, 100)
    assert [r.data for r in first.rows] == [big]
    second = store.read(first.last_id, 100, len(event(1)) + len(event(2)))
    assert [r.data for r in second.rows] == [event(1), event(2)]
    third = store.read(0, 100, len(big) + len(event(1)))
    assert [r.data for r in third.rows] == [big, event(1)]
    store.close()


def test_ids_are_never_reused_even_after_emptying_and_reopening(spool: Path) -> None:
    store = SpoolStore(spool)
    ids = store.append([event(i) for i in range(10)])
    store.delete(ids)
    store.close()
    store = SpoolStore(spool)
    assert store.append([event(99)])[0] > ids[-1]
    store.close()


def test_directory_is_created_private_and_files_are_owner_only(spool: Path) -> None:
    nested = spool / "a" / "b"
    store = SpoolStore(nested)
    store.append([event(1)])
    assert stat.S_IMODE(os.stat(nested).st_mode) == 0o700
    for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
        assert stat.S_IMODE(os.stat(nested / name).st_mode) & 0o077 == 0, name
    store.close()


def test_close_leaves_rows_for_the_next_store_which_adopts_them(spool: Path) -> None:
    first = SpoolStore(spool)
    items = [event(i) for i in range(30)]
    first.append(items)
    first.close()
    with pytest.raises(SpoolUnavailable) as info:
        first.append([event(31)])
    assert info.value.reason == "closed"
    second = SpoolStore(spool)
    assert second.recovered == 30 and second.count() == 30
    assert [r.data for r in second.read(0, 100, 10**6).rows] == items
    second.close()


def test_a_live_owner_keeps_its_rows_and_a_dead_ones_are_adopted_in_one_step(spool: Path) -> None:
    a = SpoolStore(spool)
    b = SpoolStore(spool)
    a_ids = a.append([event(i) for i in range(5)])
    b.append([event(i) for i in range(100, 103)])
    assert b.adopt() == 0 and a.adopt() == 0
    assert b.delete(a_ids) == 0  # an owner deletes only its own rows
    assert [r.id for r in b.read(0, 100, 10**6).rows] != a_ids
    assert all(r.id not in a_ids for r in b.read(0, 100, 10**6).rows)
    a.close()  # as good as dead: its lock is released
    assert b.adopt() == 5
    assert b.adopt() == 0
    rows = b.read(0, 100, 10**6).rows
    assert [r.id for r in rows][:5] == a_ids  # oldest first, original ids
    assert b.recovered == 5
    status = read_status(spool)
    assert status.events == 8 and [o.alive for o in status.owners] == [True]
    b.close()


def test_an_owner_whose_lock_file_was_deleted_is_taken_over_then_takes_its_rows_back(spool: Path) -> None:
    a = SpoolStore(spool)
    b = SpoolStore(spool)
    a.append([event(1)])
    os.unlink(spool / "owners" / f"{a.owner_key}.lock")  # someone "cleans up" the directory
    assert b.adopt() == 1  # a looks dead: b takes its rows (at worst sent twice, never lost)
    assert [r.data for r in b.read(0, 10, 10**6).rows] == [event(1)]
    assert a.adopt() == 0  # a notices, publishes its lock file again and takes its rows back
    assert (spool / "owners" / f"{a.owner_key}.lock").exists()
    a.append([event(2)])
    assert [r.data for r in a.read(0, 10, 10**6).rows] == [event(1), event(2)]
    assert b.read(0, 10, 10**6).rows == [] and b.adopt() == 0  # a is alive again
    a.close()
    b.close()


def test_a_tampered_owner_key_never_becomes_a_path(spool: Path) -> None:
    first = SpoolStore(spool)
    first.append([event(1)])
    first.close()
    bait = spool.parent / "bait.lock"
    bait.write_text("not ours")
    outside = sqlite3.connect(str(spool / "spool.db"))
    outside.execute("UPDATE owners SET key = '../../bait'")
    outside.commit()
    outside.close()
    store = SpoolStore(spool)  # the owner with the strange key counts as dead without a file
    assert store.recovered == 1 and bait.read_text() == "not ours"
    assert read_status(spool).events == 1
    store.close()


def test_undecodable_rows_are_returned_apart_with_their_bytes(spool: Path) -> None:
    store = SpoolStore(spool)
    good = store.append([event(1)])
    bad_values = [b"\xff\xfe\x00garbage", b"[1,2,3]", b'{"messageId": "x"', b'{"a": NaN}', b'"string"', b""]
    store.append(bad_values)
    store.append([event(2)])
    result = store.read(0, 100, 10**6)
    assert [r.data for r in result.rows] == [event(1), event(2)]
    assert [r.data for r in result.corrupt] == bad_values
    assert result.rows[0].id == good[0]
    outside = sqlite3.connect(str(spool / "spool.db"))  # rows as a damaged or foreign writer may leave them
    owner = outside.execute("SELECT id FROM owners WHERE key = ?", (store.owner_key,)).fetchone()[0]
    outside.execute("INSERT INTO events(owner, created, data) VALUES (?, 'soon', ?)", (owner, event(3)))
    outside.execute("INSERT INTO events(owner, created, data) VALUES (?, 1, 42)", (owner,))
    outside.execute("INSERT INTO events(owner, created, data) VALUES (?, 1, ?)", (owner, event(4).decode()))
    outside.commit()
    outside.close()
    result = store.read(0, 100, 10**6)
    assert [r.data for r in result.rows] == [event(1), event(2), event(4)]  # text holding a JSON object is fine
    assert [r.data for r in result.corrupt] == [*bad_values, event(3), b"42"]  # a bad append time is damage too
    reader = SpoolReader(store)
    batch = reader.next_batch(100, 10**6)
    assert len(batch.corrupt) == len(bad_values) + 2
    assert reader.done([r.id for r in batch.corrupt + batch.rows]) == len(bad_values) + 5
    assert store.count() == 0
    with pytest.raises(TypeError):
        store.append(["text, not bytes"])  # type: ignore[list-item]
    store.close()


def test_max_bytes_drops_the_oldest_rows_reports_them_and_fits(spool: Path) -> None:
    store = SpoolStore(spool, max_bytes=MiB)
    items = [event(i, pad=600) for i in range(4000)]  # about 2.7 MB of JSON
    ids: list[int] = []
    dropped = []
    for start in range(0, len(items), 200):
        ids += store.append(items[start : start + 200])
        dropped += store.enforce_limits()
        assert store.disk_bytes() <= MiB
    assert dropped and {d.reason for d in dropped} == {STORAGE_FULL}
    kept = [r for r in store.read(0, 10**6, 10**9).rows]
    dropped_ids = [d.row.id for d in dropped]
    assert sorted(dropped_ids + [r.id for r in kept]) == ids  # each row dropped or kept, exactly once
    assert max(dropped_ids) < min(r.id for r in kept)  # the oldest went first
    assert all(d.row.data == items[ids.index(d.row.id)] for d in dropped)
    store.close()


def test_max_bytes_never_drops_rows_in_flight(spool: Path) -> None:
    store = SpoolStore(spool, max_bytes=MiB)
    first = store.append([event(i, pad=600) for i in range(100)])
    for start in range(0, 3000, 500):
        store.append([event(i, pad=600) for i in range(start, start + 500)])
    dropped = store.enforce_limits(keep=set(first))
    assert dropped and not {d.row.id for d in dropped} & set(first)
    assert [r.id for r in store.read(0, 100, 10**9).rows] == first
    store.close()


def test_max_age_expires_rows_appended_before_the_cutoff_only(spool: Path) -> None:
    now = [1_000_000.0]
    store = SpoolStore(spool, max_age=3600, clock=lambda: now[0])
    old = store.append([event(i) for i in range(10)])
    now[0] += 1800
    young = store.append([event(i) for i in range(10, 15)])
    assert store.enforce_limits() == []
    now[0] += 1801  # the first group is now 3601 s old
    dropped = store.enforce_limits(keep={old[0]})
    assert {d.reason for d in dropped} == {STORAGE_EXPIRED}
    assert [d.row.id for d in dropped] == old[1:]
    assert [r.id for r in store.read(0, 100, 10**6).rows] == [old[0], *young]
    store.close()


def test_free_pages_go_back_to_the_filesystem_after_a_drain(spool: Path) -> None:
    store = SpoolStore(spool, max_bytes=64 * MiB)
    ids = store.append([event(i, pad=600) for i in range(8000)])
    full = store.disk_bytes()
    store.delete(ids)
    assert store.enforce_limits() == []
    assert store.disk_bytes() < full / 4
    store.close()


def test_constructor_rejects_bad_limits(spool: Path) -> None:
    bad: list[dict[str, object]] = [
        {"max_bytes": 1000},
        {"max_bytes": 2.5e6},
        {"max_bytes": True},
        {"max_age": 0},
        {"max_age": float("nan")},
        {"max_age": "7d"},
        {"synchronous": "off"},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            SpoolStore(spool, **kwargs)  # type: ignore[arg-type]


def test_a_path_that_is_a_file_or_lies_under_a_file_is_unavailable_and_left_alone(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_bytes(b"user data")
    for path, reason in ((file, "not_a_directory"), (file / "spool", "not_a_directory")):
        with pytest.raises(SpoolUnavailable) as info:
            SpoolStore(path)
        assert info.value.reason == reason
    assert file.read_bytes() == b"user data"


def test_a_database_path_that_is_a_directory_or_a_fifo_is_unavailable(spool: Path) -> None:
    (spool / "spool.db").mkdir(parents=True)
    with pytest.raises(SpoolUnavailable):
        SpoolStore(spool)
    assert (spool / "spool.db").is_dir()
    (spool / "spool.db").rmdir()
    os.mkfifo(spool / "spool.db")  # opening a FIFO to read its header would block for ever
    with pytest.raises(SpoolUnavailable):
        SpoolStore(spool)
    assert stat.S_ISFIFO(os.stat(spool / "spool.db").st_mode)


def test_a_garbage_file_is_set_aside_and_a_fresh_store_started(spool: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool.mkdir(mode=0o700)
    garbage = os.urandom(50_000)
    (spool / "spool.db").write_bytes(garbage)
    (spool / "spool.db-wal").write_bytes(os.urandom(5000))  # a stale WAL must not meet the fresh store
    with caplog.at_level(logging.WARNING, logger="segment"):
        store = SpoolStore(spool)
    assert store.recovered == 0
    assert store.append([event(1)]) and store.read(0, 10, 10**6).rows[0].data == event(1)
    aside = [p for p in spool.iterdir() if p.name.startswith("corrupt-") and p.suffix == ".db"]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert any("set aside" in r.getMessage() for r in caplog.records)
    assert read_status(spool).set_aside == sorted(p.name for p in spool.iterdir() if p.name.startswith("corrupt-"))
    store.close()


def test_a_truncated_database_is_set_aside_and_its_readable_rows_salvaged(spool: Path) -> None:
    store = SpoolStore(spool)
    items = [event(i, pad=300) for i in range(3000)]
    ids = store.append(items)
    store.close()  # checkpoints: everything is in spool.db now
    db = spool / "spool.db"
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    store = SpoolStore(spool)
    rows = store.read(0, 10**6, 10**9).rows
    assert 0 < len(rows) < len(items) and store.recovered == len(rows)
    by_id = dict(zip(ids, items))
    assert all(by_id[r.id] == r.data for r in rows)  # salvaged rows are intact originals
    store.append([event(5000)])  # and the fresh store works
    store.close()


def test_damage_found_while_peers_live_is_unavailable_and_set_aside_by_the_next_lone_opener(spool: Path) -> None:
    first = SpoolStore(spool)
    first.append([event(i, pad=400) for i in range(2000)])
    first.close()  # checkpointed: the rows are in spool.db
    peer = SpoolStore(spool)  # alone: checks the file (healthy), adopts the rows
    assert peer.recovered == 2000
    outside = sqlite3.connect(str(spool / "spool.db"))
    outside.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # adoption rewrote the rows into the WAL: fold it in
    outside.close()
    with open(spool / "spool.db", "r+b") as f:  # the disk goes bad under a live owner (rows' pages only)
        f.seek(4096 * 40)
        f.write(b"\x00" * 4096 * 30)
    second = SpoolStore(spool)  # not alone: no check, and the file must stay where it is
    with pytest.raises(SpoolUnavailable) as info:
        peer.read(0, 10**6, 10**9)  # second's registration made peer reread the damaged pages
    assert info.value.reason == "corrupt"
    assert not [p for p in spool.iterdir() if p.name.startswith("corrupt-")]
    second.close()
    third = SpoolStore(spool)  # alone again: sets the file aside and salvages what it can
    assert [p for p in spool.iterdir() if p.name.startswith("corrupt-")]
    assert 0 < third.recovered < 2000
    assert third.append([event(9999)])
    third.close()


def test_a_foreign_or_newer_database_is_refused_untouched(spool: Path) -> None:
    spool.mkdir(mode=0o700)
    conn = sqlite3.connect(str(spool / "spool.db"))
    conn.execute("CREATE TABLE users(name)")
    conn.commit()
    conn.close()
    with pytest.raises(SpoolUnavailable) as info:
        SpoolStore(spool)
    assert info.value.reason == "foreign"
    assert [p.name for p in spool.iterdir() if p.name.startswith("corrupt-")] == []
    (spool / "spool.db").unlink()
    SpoolStore(spool).close()
    conn = sqlite3.connect(str(spool / "spool.db"))
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(SpoolUnavailable) as info:
        SpoolStore(spool)
    assert info.value.reason == "newer_version"


def test_an_error_closes_the_store_and_frees_its_rows_for_adoption(spool: Path) -> None:
    store = SpoolStore(spool)
    store.append([event(1)])
    owners = spool / "owners"
    (owners / f"{store.owner_key}.lock").unlink()  # adopt() will try to publish it again ...
    owners.rmdir()
    owners.write_bytes(b"")  # ... where that cannot work (a file: fails for root too)
    try:
        with pytest.raises(SpoolUnavailable) as info:
            store.adopt()
        assert info.value.reason == "not_a_directory"
        with pytest.raises(SpoolUnavailable) as info:
            store.append([event(2)])
        assert info.value.reason == "closed"
    finally:
        owners.unlink()
        owners.mkdir(mode=0o700)
    other = SpoolStore(spool)
    assert [r.data for r in other.read(0, 10, 10**6).rows] == [event(1)]
    other.close()


def test_errors_are_classified_by_what_the_user_can_do_about_them(tmp_path: Path) -> None:
    conn = sqlite3.connect(str(tmp_path / "tiny.db"))
    conn.execute("CREATE TABLE t(x)")
    conn.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.Error) as full:
        conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    conn.close()
    assert classify(full.value) == "full"
    assert classify(OSError(errno.ENOSPC, "No space left on device")) == "full"
    assert classify(OSError(errno.EROFS, "Read-only file system")) == "read_only"
    assert classify(OSError(errno.EACCES, "Permission denied")) == "permission"
    assert classify(sqlite3.DatabaseError("database disk image is malformed")) == "corrupt"
    assert classify(sqlite3.OperationalError("database is locked")) == "busy"


def test_reader_hands_out_each_row_once_and_rescans_after_adoption(spool: Path) -> None:
    dead = SpoolStore(spool)
    dead_ids = dead.append([event(i) for i in range(5)])
    store = SpoolStore(spool)
    reader = SpoolReader(store)
    held = reader.append([event(i) for i in range(10, 15)], hold=True)
    spilled = reader.append([event(i) for i in range(20, 25)], hold=False)
    first = reader.next_batch(3, 10**6)
    assert [r.id for r in first.rows] == spilled[:3]  # held rows are in flight already
    dead.close()
    assert reader.adopt() == 5
    second = reader.next_batch(100, 10**6)
    assert [r.id for r in second.rows] == dead_ids + spilled[3:]  # older adopted rows, then the rest
    assert reader.next_batch(100, 10**6).rows == []
    reader.release(spilled[:3])
    assert [r.id for r in reader.next_batch(100, 10**6).rows] == spilled[:3]
    assert reader.in_flight() == set(held + spilled + dead_ids)
    assert reader.done(held + spilled + dead_ids) == 15
    assert reader.in_flight() == frozenset() and store.count() == 0
    store.close()


def test_status_is_read_only_on_a_spool_in_use(spool: Path) -> None:
    store = SpoolStore(spool)
    store.append([event(i) for i in range(7)])
    before = sorted(p.name for p in spool.rglob("*"))
    status = read_status(spool)
    assert status.exists and status.events == 7 and status.bytes == store.disk_bytes()
    assert status.oldest_age is not None and 0 <= status.oldest_age < 60
    assert [(o.key, o.alive, o.events) for o in status.owners] == [(store.owner_key, True, 7)]
    assert store.status().events == 7
    assert sorted(p.name for p in spool.rglob("*")) == before
    assert store.append([event(8)])  # the store was not disturbed
    store.close()
    assert [o.alive for o in read_status(spool).owners] == [False]
    assert read_status(spool / "missing").exists is False


def test_cli_status_and_export(spool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SpoolStore(spool)
    items = [event(i) for i in range(5)]
    store.append(items[:2])
    store.append([b"\xffnot json"])
    store.append(items[2:])
    assert cli.main(["spool", "status", str(spool)]) == 0
    out = capsys.readouterr().out
    assert "events:  6" in out and "1 alive" in out
    assert cli.main(["spool", "status", "--json", str(spool)]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 6
    assert cli.main(["spool", "export", str(spool)]) == 1  # one row skipped
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [i.decode() for i in items]
    assert "1 rows could not be decoded" in captured.err
    assert [r.data for r in iter_rows(spool)][2] == b"\xffnot json"  # export copies: nothing removed
    assert cli.main(["spool", "status", str(spool / "missing")]) == 1
    assert "no spool" in capsys.readouterr().err
    (spool.parent / "plain").write_text("x")
    assert cli.main(["spool", "export", str(spool.parent / "plain")]) == 1
    store.close()
    garbage = spool.parent / "garbage"
    garbage.mkdir()
    (garbage / "spool.db").write_bytes(b"\x00garbage" * 1000)
    capsys.readouterr()
    assert cli.main(["spool", "status", str(garbage)]) == 1
    assert cli.main(["spool", "export", str(garbage)]) == 1
    assert capsys.readouterr().err.count("corrupt") == 2
    assert (garbage / "spool.db").read_bytes() == b"\x00garbage" * 1000  # read-only: left as it was
