"""Cost of the durable spool's storage engine (segment/analytics/spool.py), alone, on this machine's disk.

    .venv/bin/python bench/spool_bench.py [--n 100000] [--dir /path/on/the/disk/to/test] [--json FILE]

What it measures, for a realistic event (the benchmark's ``workloads.make_event``
built and encoded by this library: about 640 bytes) and a small one (about 100 bytes):

* append: groups of 100 events, one transaction each (the pipeline's group commit),
  events/s (wall clock, and per CPU second, which a busy machine disturbs less) and
  microseconds per group, with ``synchronous`` normal (default) and full;
* disk: bytes the spool holds per event (database + WAL + shm while open, and the
  database alone after a clean close), against the event's JSON size;
* read + delete: ``SpoolReader.next_batch(100)`` then ``done()`` (a delete transaction
  per batch), events/s, alone and while a writer thread appends at full speed;
* housekeeping: ``enforce_limits()`` below the limits and ``adopt()`` with nothing to
  adopt (microseconds per call), adopting a dead owner's rows and opening a spool
  that has to be checked (milliseconds).

No figure here is a test: tests/test_spool_*.py check behaviour, this checks cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from workloads import make_event  # noqa: E402

from segment.analytics import Client  # noqa: E402
from segment.analytics.encoding import encode  # noqa: E402
from segment.analytics.spool import SpoolStore  # noqa: E402
from segment.analytics.spool_reader import SpoolReader  # noqa: E402

GROUP = 100


def realistic_events(n: int) -> list[bytes]:
    client = Client("bench-key", send=False)
    out = []
    for i in range(min(n, 1000)):
        user_id, name, properties = make_event(i)
        _, message = client.track(user_id=user_id, event=name, properties=properties)
        out.append(encode(message))
    client.shutdown()
    return [out[i % len(out)] for i in range(n)]


def small_events(n: int) -> list[bytes]:
    return [
        b'{"messageId":"%08d-6f1c-4e2a-9b7d-3c5e8a1f0b2d","timestamp":"2026-11-25T10:00:00.000Z","type":"track"}' % i
        for i in range(n)
    ]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def drain(reader: SpoolReader) -> int:
    """Read and delete everything, 100 events per batch, as consumers would; return how many."""
    total = 0
    while True:
        batch = reader.next_batch(GROUP, 475_000)
        if not batch.rows:
            return total
        total += reader.done([row.id for row in batch.rows])


_cpu: list[float] = [0.0]  # CPU seconds of the last append_all / drain (less sensitive to a busy machine)


def append_all(store: SpoolStore, groups: list[list[bytes]]) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    for group in groups:
        store.append(group)
    _cpu[0] = time.process_time() - cpu
    return time.perf_counter() - start


def bench_size(label: str, events: list[bytes], base: str) -> dict[str, Any]:
    n = len(events)
    json_bytes = sum(len(e) for e in events) / n
    groups = [events[i : i + GROUP] for i in range(0, n, GROUP)]
    result: dict[str, Any] = {"event_bytes": round(json_bytes, 1), "events": n}

    path = os.path.join(tempfile.mkdtemp(dir=base), "s")
    store = SpoolStore(path)
    seconds = append_all(store, groups)
    result["append_normal_events_per_s"] = round(n / seconds)
    result["append_normal_us_per_group"] = round(seconds / len(groups) * 1e6, 1)
    result["append_normal_events_per_cpu_s"] = round(n / _cpu[0])
    open_bytes = store.disk_bytes()
    result["disk_bytes_per_event_open"] = round(open_bytes / n, 1)
    result["disk_ratio_open"] = round(open_bytes / n / json_bytes, 3)
    store.close()
    closed_bytes = os.path.getsize(os.path.join(path, "spool.db"))
    result["disk_bytes_per_event_closed"] = round(closed_bytes / n, 1)
    result["disk_ratio_closed"] = round(closed_bytes / n / json_bytes, 3)
    start = time.perf_counter()
    store = SpoolStore(path)  # alone: checks the whole file, then adopts the closed owner's rows
    result["open_checked_adopting_ms"] = round((time.perf_counter() - start) * 1000, 1)
    start, cpu = time.perf_counter(), time.process_time()
    drained = drain(SpoolReader(store))
    result["read_delete_events_per_s"] = round(drained / (time.perf_counter() - start))
    result["read_delete_events_per_cpu_s"] = round(drained / (time.process_time() - cpu))
    result.update(housekeeping(store))
    store.close()

    full = SpoolStore(os.path.join(tempfile.mkdtemp(dir=base), "s"), synchronous="full")
    some = groups[: max(1, len(groups) // 10)]
    seconds = append_all(full, some)
    result["append_full_events_per_s"] = round(sum(len(g) for g in some) / seconds)
    result["append_full_us_per_group"] = round(seconds / len(some) * 1e6, 1)
    full.close()

    result["concurrent"] = concurrent(groups, base)
    return result


def housekeeping(store: SpoolStore) -> dict[str, Any]:
    """enforce_limits: the first call after a drain gives the free pages back; then the steady state."""
    first = timed(store.enforce_limits)
    for _ in range(1000):  # the rest of the free pages, 8 MB per call, before the steady state is timed
        before = store.disk_bytes()
        store.enforce_limits()
        if store.disk_bytes() >= before:
            break
    store.append(small_events(20_000))
    reps = 2000
    enforce = timed(lambda: [store.enforce_limits() for _ in range(reps)]) / reps
    adopt = timed(lambda: [store.adopt() for _ in range(reps)]) / reps
    return {
        "reclaim_after_drain_ms": round(first * 1000, 1),
        "enforce_limits_us": round(enforce * 1e6, 1),
        "adopt_nothing_us": round(adopt * 1e6, 1),
    }


def concurrent(groups: list[list[bytes]], base: str) -> dict[str, Any]:
    """A writer thread appends every group while a reader thread reads and deletes behind it."""
    path = tempfile.mkdtemp(dir=base)
    store = SpoolStore(os.path.join(path, "s"))
    reader = SpoolReader(store)
    total = sum(len(g) for g in groups)
    done = [0]
    writer_done = threading.Event()

    def write() -> None:
        for g in groups:
            reader.append(g, hold=False)
        writer_done.set()

    def read() -> None:
        while done[0] < total:
            batch = reader.next_batch(GROUP, 475_000)
            if batch.rows:
                done[0] += reader.done([row.id for row in batch.rows])
            elif writer_done.is_set() and done[0] >= total:
                return
            else:
                time.sleep(0.0005)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    threads[0].join()
    write_seconds = time.perf_counter() - start
    threads[1].join()
    seconds = time.perf_counter() - start
    store.close()
    shutil.rmtree(path)
    return {"append_events_per_s": round(total / write_seconds), "through_events_per_s": round(total / seconds)}


def adoption(n: int, base: str) -> dict[str, Any]:
    """A live store adopts the ``n`` rows of a peer that has just died."""
    path = os.path.join(tempfile.mkdtemp(dir=base), "s")
    heir = SpoolStore(path)
    dead = SpoolStore(path)
    for _ in range(0, n, 1000):
        dead.append(small_events(1000))
    dead.close()
    got: list[int] = []
    seconds = timed(lambda: got.append(heir.adopt()))
    heir.close()
    shutil.rmtree(os.path.dirname(path))
    return {"rows": got[0], "ms": round(seconds * 1000, 1)}


def median_of(runs: list[Any]) -> Any:
    """The median of each figure across repetitions (same-shaped nested dicts)."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: median_of([run[key] for run in runs]) for key in first}
    return statistics.median(runs) if isinstance(first, (int, float)) else first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="events per measurement (default 100000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; figures are their medians (default 3)")
    parser.add_argument("--dir", default=None, help="where to create the spools (default: the system temp dir)")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "spool.json"), help="where to write figures")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir)
    try:
        realistic, small = realistic_events(args.n), small_events(args.n)
        runs = [
            {
                "realistic": bench_size("realistic", realistic, base),
                "small": bench_size("small", small, base),
                "adopt_dead_peer": adoption(args.n, base),
            }
            for _ in range(args.reps)
        ]
        results = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "system": platform.platform()},
            "date": time.strftime("%Y-%m-%d"),
            "reps": args.reps,
            "median": median_of(runs),
            "runs": runs,
        }
        print(f"median of {args.reps}: {json.dumps(results['median'], indent=1)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
