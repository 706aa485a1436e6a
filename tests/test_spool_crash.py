"""Crashes with the durable spool on, through the public ``Client`` (README "Durable spool").

Real processes (tests/spool_client_worker.py), real files, real HTTP to MockTrackingAPI.
The promise checked: an event accepted more than ``storage_sync_interval`` before the
process ended, however it ended, is delivered by the next client opened on the same
path, oldest first, with its original messageId and bytes; several live processes
never send the same event; a dead one's events are adopted.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from segment.analytics import Client
from segment.analytics.spool import SpoolStore
from segment.analytics.spool_view import read_status
from segment.analytics.testing import MockTrackingAPI, Reply
from tests._spool_client_helpers import Worker, closed_port, delivered, is_subsequence, law, raw_bodies, run
from tests.conftest import WRITE_KEY


def deliver_all(path: Path, api: MockTrackingAPI) -> dict[str, Any]:
    """A fresh client on ``path`` in this process, API up: deliver what it adopts; its stats."""
    client = Client(WRITE_KEY, host=api.url, storage=str(path), upload_interval=0.05)
    try:
        deadline = time.monotonic() + 20
        while client.flush(1) and time.monotonic() < deadline:
            pass
        return client.stats()
    finally:
        client.shutdown(5)


def test_kill_9_at_random_moments_during_an_outage_loses_nothing_older_than_the_sync_interval(
    tmp_path: Path, api: MockTrackingAPI
) -> None:
    path = tmp_path / "spool"
    api.set_default(Reply(503))
    rng = random.Random(2024)
    runs: list[tuple[Worker, float]] = []
    for run_no in range(3):  # three producers in a row on one path, each killed; the API down throughout
        host = closed_port() if run_no == 1 else api.url
        cfg = {"path": str(path), "host": host, "rate": 400, "tag": f"run{run_no}", "bytes": True, "count": None}
        worker = Worker("produce", cfg)
        worker.wait_line("A ", 10)
        time.sleep(rng.uniform(0.8, 1.4))
        runs.append((worker, worker.kill9()))
    assert api.message_ids() == []  # nothing was acknowledged: every event is still owed
    api.reset()  # the API is back
    final = run("produce", {"path": str(path), "host": api.url, "count": 0, "then": ["until_pending:20", "stats"]})

    everything = [mid for worker, _ in runs for mid in worker.ids()]
    must = [mid for worker, killed_at in runs for mid in worker.accepted_before(killed_at)]
    got = delivered(api)
    assert len(must) > 100
    assert [mid for mid in must if mid not in got] == [], "an event accepted before the sync window was lost"
    assert set(got) <= set(everything), "an event nobody accepted was delivered"
    assert max(got.values()) == 1, "nothing had been acknowledged, yet an event was delivered twice"
    assert is_subsequence(api.message_ids(), everything), "not delivered oldest first"
    encoded: dict[str, bytes] = {}
    for worker, _ in runs:
        encoded.update(worker.encoded())
    bodies = raw_bodies(api)
    assert [mid for mid in got if encoded[mid] not in bodies] == [], "an event's bytes changed in the spool"
    stats = final.stats()
    assert (stats["accepted"], stats["recovered"], stats["delivered"]) == (0, len(got), len(got))
    assert (stats["pending"], stats["dropped"], stats["stored"]) == (0, 0, 0)
    assert law(stats)


def test_every_way_a_process_ends_keeps_what_it_accepted_for_the_next_start(
    tmp_path: Path, api: MockTrackingAPI
) -> None:
    api.set_default(Reply(503))
    endings = {  # each after a pause longer than the sync interval (and than a busy machine's delays)
        "exit": [],  # the end of the script: the exit drain runs
        "sys_exit": ["sys_exit"],
        "shutdown": ["shutdown:0.3"],
        "sigterm": ["sigterm"],  # unhandled: no atexit, no drain
        "os_exit": ["os_exit"],
    }
    workers = {
        name: Worker(
            "produce", {"path": str(tmp_path / name), "host": api.url, "count": 40, "then": ["sleep:0.6", *steps]}
        )
        for name, steps in endings.items()
    }
    for name, worker in workers.items():
        worker.finish(expect=-15 if name == "sigterm" else 0)
        assert len(worker.ids()) == 40, name
    for name in ("exit", "sys_exit"):
        kept = [w for w in workers[name].warnings() if "kept in the spool" in w]
        assert len(kept) == 1 and "40" in kept[0], (name, workers[name].warnings())
    assert workers["shutdown"].value("SHUTDOWN") == "40"
    assert api.message_ids() == []
    api.reset()
    for name in workers:
        stats = deliver_all(tmp_path / name, api)
        assert stats["recovered"] == 40 and stats["delivered"] == 40 and stats["pending"] == 0, (name, stats)
    got = delivered(api)
    assert got == Counter({mid: 1 for worker in workers.values() for mid in worker.ids()})


def test_shutdown_then_exit_keeps_what_a_late_writer_had_not_committed(tmp_path: Path, api: MockTrackingAPI) -> None:
    path = tmp_path / "spool"
    SpoolStore(path).close()
    holder = subprocess.Popen(  # a peer in a long write transaction: the writer thread waits for the database
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(path / "spool.db")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdin is not None
    holder.stdout.readline()
    cfg = {"path": str(path), "host": closed_port(), "count": 40, "then": ["shutdown:0.3"], "exit_timeout": 5}
    worker = Worker("produce", cfg)
    worker.wait_line("SHUTDOWN")
    time.sleep(1.0)  # well within exit_timeout: a writer given the exit budget commits once the peer is done
    holder.stdin.close()
    holder.wait(10)
    worker.finish()
    stats = deliver_all(path, api)
    assert stats["recovered"] == 40, f"kept {stats['recovered']} of 40; exit lines: {worker.warnings()}"


HOLD_WRITE_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


def test_four_processes_share_a_path_and_one_killed_mid_batch_is_adopted(tmp_path: Path, api: MockTrackingAPI) -> None:
    path, stop = tmp_path / "spool", tmp_path / "stop"
    api.set_default(Reply(200, delay=0.15))  # every batch stays in flight for a while
    cfg: dict[str, Any] = {
        "path": str(path),
        "host": api.url,
        "rate": 150,
        "count": 200,
        "report_success": True,
        "options": {"upload_size": 20},
        "then": ["wait:" + str(stop), "until_pending:20", "stats", "shutdown:5"],
    }
    workers = [Worker("produce", {**cfg, "tag": f"s{i}"}) for i in range(4)]
    victim, survivors = workers[0], workers[1:]
    victim.wait_for(lambda ls: sum(line.startswith("A ") for line in ls) >= 100)
    deadline = time.monotonic() + 10
    while True:  # kill it while a request of its own is unanswered at the API
        mine = set(victim.ids())
        latest = [r for r in api.requests() if any(e.get("messageId") in mine for e in r.batch)][-1:]
        if latest and time.monotonic() - latest[0].arrived < 0.08:
            break
        assert time.monotonic() < deadline, "the victim never had a batch in flight"
        time.sleep(0.005)
    killed_at = victim.kill9()
    victim_ids = set(victim.ids())
    sent_before_kill = set(api.received_message_ids()) & victim_ids
    must = victim.accepted_before(killed_at)
    deadline = time.monotonic() + 35  # the promise: adopted within 30 s
    while any(not o.alive and o.events for o in read_status(path).owners):
        assert time.monotonic() < deadline, "the dead process's events were not adopted within 30 s"
        time.sleep(0.1)
    while [mid for mid in must if mid not in delivered(api)]:
        assert time.monotonic() < deadline, "the dead process's events were adopted but not delivered"
        time.sleep(0.1)
    stop.touch()
    for worker in survivors:
        worker.finish()

    got = delivered(api)
    for worker in survivors:
        assert all(got[mid] == 1 for mid in worker.ids()), "a live process's event was delivered twice"
        assert len(worker.ids()) == 200
    twice = {mid for mid, n in got.items() if n > 1}
    assert twice <= sent_before_kill, "only the killed process's batches in flight may be sent again"
    assert set(got) == set().union(*(set(w.ids()) for w in survivors)) | (set(got) & victim_ids)
    reported = [Counter(w.succeeded()) for w in survivors]
    for i, mine_i in enumerate(reported):
        assert max(mine_i.values()) == 1
        for mine_j in reported[i + 1 :]:
            assert not set(mine_i) & set(mine_j), "two live processes sent the same event"
    adopted = set().union(*reported) & victim_ids
    stats = [w.stats() for w in survivors]
    assert sum(s["recovered"] for s in stats) == len(adopted) > 0
    for s in stats:
        assert law(s) and s["pending"] == 0 and s["dropped"] == 0, s
    assert [w.errors() for w in survivors] == [[], [], []]


def test_a_forked_child_ending_in_os_exit_loses_nothing(tmp_path: Path, api: MockTrackingAPI) -> None:
    path = tmp_path / "spool"
    cfg = {"path": str(path), "host": api.url, "count": 10, "child_count": 15, "then": ["until_pending:10", "stats"]}
    worker = run("fork", cfg)
    deliver_all(path, api)  # whatever the child left is adopted by the next client
    child = worker.ids()[10:25]  # the parent's 10, the child's 15, the parent's 10 more
    got = delivered(api)
    assert set(got) == set(worker.ids()) and len(worker.ids()) == 35
    assert all(got[mid] == 1 for mid in worker.ids() if mid not in child)
    parent = worker.stats()
    assert law(parent) and parent["pending"] == 0


def test_fork_pool_workers_ending_in_os_exit_deliver_or_keep_everything(tmp_path: Path, api: MockTrackingAPI) -> None:
    paths = {"up": tmp_path / "up", "down": tmp_path / "down"}
    down = closed_port()
    workers = {
        "up": Worker("pool", {"path": str(paths["up"]), "host": api.url, "then": ["until_pending:5", "stats"]}),
        "down": Worker("pool", {"path": str(paths["down"]), "host": down, "then": ["flush:0.2", "stats"]}),
    }
    for worker in workers.values():
        worker.finish()
        assert len(worker.ids()) == 5 + 6 * 20
    ids_up = set(workers["up"].ids())
    assert set(delivered(api)) <= ids_up
    assert workers["down"].stats()["delivered"] == 0
    for p in paths.values():
        deliver_all(p, api)
    got = delivered(api)
    assert set(got) == ids_up | set(workers["down"].ids())
    assert all(got[mid] == 1 for mid in workers["down"].ids())
