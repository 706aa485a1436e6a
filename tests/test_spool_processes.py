"""The durable spool across real processes: kill -9, peers sharing a path, fork, pools, full and read-only disks.

The guarantees tested are those of segment/analytics/spool.py; the worker processes are in tests/spool_worker.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from segment.analytics.spool import SpoolStore
from segment.analytics.spool_view import read_status
from tests.spool_worker import event

WORKER = str(Path(__file__).with_name("spool_worker.py"))


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )


def run(*args: str, timeout: float = 30) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def all_rows(path: Path) -> list[tuple[int, bytes]]:
    """Open the spool as a newcomer (adopting every dead owner) and read everything."""
    store = SpoolStore(path)
    try:
        return [(row.id, row.data) for row in store.read(0, 10**7, 1 << 40).rows]
    finally:
        store.close()


class Lines:
    """Collects a child's stdout lines in a thread, with the time each arrived."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self.thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.endswith("\n"):
                with self.cond:
                    self.lines.append(line.rstrip("\n"))
                    self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; lines so far: {self.lines[-5:]}"
                self.cond.wait(left)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_kill_9_at_random_moments_loses_no_committed_row_and_duplicates_none(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "spool"
    rng = random.Random(7)
    committed: dict[str, list[tuple[int, int]]] = {}
    for run_no in range(5):
        tag = f"run{run_no}"
        proc = start("appender", str(path), tag)
        procs.append(proc)
        lines = Lines(proc)
        lines.wait_for(lambda ls: any(line.startswith("C ") for line in ls))
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        lines.thread.join(10)
        groups = [tuple(int(x) for x in line.split()[1:]) for line in lines.lines if line.startswith("C ")]
        committed[tag] = groups  # type: ignore[assignment]
    rows = all_rows(path)
    assert len({row_id for row_id, _ in rows}) == len(rows)
    by_tag: dict[str, dict[int, bytes]] = {}
    for _, data in rows:
        body = json.loads(data)
        assert body["n"] not in by_tag.setdefault(body["tag"], {}), "a row is there twice"
        by_tag[body["tag"]][body["n"]] = data
    rng_check = {tag: random.Random(tag) for tag in committed}
    for tag, groups in committed.items():
        found = by_tag.get(tag, {})
        expected: dict[int, bytes] = {}
        n = 0
        for first, last in groups:  # rebuild the exact bytes each run wrote, from its seed
            size = rng_check[tag].randint(1, 40)
            assert (first, last) == (n, n + size - 1)
            for i in range(first, last + 1):
                expected[i] = event(tag, i, rng_check[tag].randint(10, 600))
            n += size
        for i, data in expected.items():
            assert found.get(i) == data, f"{tag}: committed event {i} lost or changed"
        extra = sorted(set(found) - set(expected))
        if extra:  # the group being committed at the kill: all of it or none
            size = rng_check[tag].randint(1, 40)
            assert extra == list(range(n, n + size))


def test_processes_creating_one_spool_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "spool"
    workers = [start("burst", str(path), f"b{i}", "50") for i in range(4)]
    outputs = [w.communicate(timeout=30) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], [err for _, err in outputs]
    ids = [json.loads(out)["ids"] for out, _ in outputs]
    assert len(set().union(*ids)) == 200
    rows = all_rows(path)
    assert sorted(row_id for row_id, _ in rows) == sorted(set().union(*ids))


def test_four_processes_share_a_path_and_a_killed_ones_rows_are_adopted_by_exactly_one(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    path, stop, drain = tmp_path / "spool", tmp_path / "stop", tmp_path / "drain"
    SpoolStore(path).close()  # create it once (test_processes_creating_one_spool... covers the race)
    workers = [start("sharer", str(path), f"s{i}", str(stop), str(drain)) for i in range(4)]
    procs.extend(workers)
    outs = [Lines(w) for w in workers]
    for out in outs:
        out.wait_for(lambda ls: sum(line.startswith("R ") for line in ls) >= 3)
    victim = workers[0]
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    deadline = time.monotonic() + 30  # the promise: adopted within 30 s (here: a peer's next loop)
    while any(not o.alive and o.events for o in read_status(path).owners):
        assert time.monotonic() < deadline, "the dead owner's rows were not adopted"
        time.sleep(0.05)
    drain.touch()
    for out in outs[1:]:
        out.wait_for(lambda ls: "DRAINED" in ls, timeout=30)
    stop.touch()
    for worker, out in zip(workers[1:], outs[1:]):
        assert worker.wait(15) == 0
        out.thread.join(10)
        assert out.lines[-1] == "DONE"
    outs[0].thread.join(10)

    def parse(out: Lines) -> tuple[set[int], dict[int, float]]:
        appended: set[int] = set()
        read: dict[int, float] = {}
        for line in out.lines:
            kind, *rest = line.split()
            if kind == "A":
                appended.update(int(x) for x in rest)
            elif kind == "R":
                for x in rest[1:]:
                    assert int(x) not in read, "one process read a row twice"
                    read[int(x)] = float(rest[0])
        return appended, read

    parsed = [parse(out) for out in outs]
    victim_appended, victim_read = parsed[0]
    survivors_read = [read for _, read in parsed[1:]]
    for i, read_i in enumerate(survivors_read):
        for read_j in survivors_read[i + 1 :]:
            assert not set(read_i) & set(read_j), "a row was read by two live owners"
    for read in survivors_read:
        for row_id in set(read) & set(victim_read):
            assert read[row_id] >= killed_at, "a survivor read the victim's row while the victim lived"
    backlog = victim_appended - set(victim_read)
    assert backlog, "the victim left nothing to adopt (it reads less than it appends: impossible)"
    assert backlog <= set().union(*survivors_read), "an adopted row was never read"
    assert all_rows(path) == []  # everything was read and deleted
    everything = set().union(*(appended for appended, _ in parsed))
    assert everything <= set().union(*(set(read) for _, read in parsed)), "a row vanished"


@pytest.mark.parametrize("explicit", ["explicit", "automatic"])
def test_os_fork_child_becomes_its_own_owner_and_its_rows_go_to_the_parent_after_it_exits(
    tmp_path: Path, explicit: str
) -> None:
    result = run("fork", str(tmp_path / "spool"), explicit)
    child = result["child"]
    assert "error" not in child, child
    assert child["key"] != result["parent_key"]
    assert sorted(child["read"]) == child["ids"]  # the child saw only its own rows
    assert result["own_before_adopt"] == result["parent_ids"]  # and the parent only its own
    assert result["adopted"] == 5  # the child is gone: its rows are the parent's now
    assert result["third_adopted"] == 0  # the parent is alive: its lock survived the child
    assert result["own_after"] == sorted(result["parent_ids"] + child["ids"])


def test_a_forked_child_does_not_keep_its_dead_parents_lock(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    path = tmp_path / "spool"
    proc = start("fork_and_hang", str(path))
    procs.append(proc)
    lines = Lines(proc)
    lines.wait_for(lambda ls: any(line.startswith("CHILD") for line in ls))
    child = int(lines.lines[0].split()[1])
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        os.kill(child, 0)  # the child still lives ...
        store = SpoolStore(path)
        assert store.recovered == 7  # ... and the dead parent's rows are adopted anyway
        store.close()
    finally:
        os.kill(child, signal.SIGKILL)


def test_fork_pool_workers_write_as_their_own_owners_and_the_parent_adopts_them(tmp_path: Path) -> None:
    result = run("pool", str(tmp_path / "spool"))
    worker_keys = {key for _, key, _ in result["results"]}
    assert result["main_key"] not in worker_keys and len(worker_keys) >= 1
    assert result["adopted"] == 6 * 20
    rows = {row_id: data for row_id, data in result["rows"]}
    for i, (_, _, ids) in enumerate(result["results"]):
        assert [rows[row_id] for row_id in ids] == [event(f"w{i}", j).decode() for j in range(20)]
    assert sorted(rows) == sorted(result["mine"] + [r for _, _, ids in result["results"] for r in ids])


def test_a_full_disk_raises_spool_unavailable_and_keeps_every_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    result = run("fsize", str(path), "400000")
    assert result["reason"] in ("full", "io")
    assert result["after"] == "closed"
    assert result["committed"] > 20
    rows = all_rows(path)
    assert [data for _, data in rows] == [event("fs", i, 600) for i in range(result["committed"])]


def test_a_read_only_spool_and_directory_are_unavailable_but_status_and_export_work() -> None:
    base = Path(tempfile.mkdtemp(prefix="spool-ro-"))  # not under pytest's 0700 tree: another user must reach it
    try:
        os.chmod(base, 0o755)
        store = SpoolStore(base / "existing")
        store.append([event("ro", i) for i in range(3)])
        store.close()
        (base / "locked").mkdir()
        if os.geteuid() == 0:  # root ignores modes: the worker drops to nobody, so make nobody the owner
            for p in [base / "locked", *(base / "existing").rglob("*"), base / "existing"]:
                os.chown(p, 65534, 65534)
        for p in (base / "existing").rglob("*"):
            os.chmod(p, 0o500 if p.is_dir() else 0o400)
        os.chmod(base / "existing", 0o500)
        os.chmod(base / "locked", 0o500)
        done = subprocess.run([sys.executable, WORKER, "read_only", str(base)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        outcome = json.loads(lines[-1])
        assert outcome["existing"] in ("read_only", "permission", "cannot_open"), outcome
        assert outcome["new"] == "permission", outcome
        assert outcome["status"] == 0 and json.loads(lines[0])["events"] == 3
        assert outcome["export"] == 0 and lines[1:4] == [event("ro", i).decode() for i in range(3)]
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o700)
        shutil.rmtree(base)
