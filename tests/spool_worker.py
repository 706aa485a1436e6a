"""Processes for tests/test_spool_processes.py: ``python tests/spool_worker.py MODE PATH [ARGS]``.

Each mode prints what the test needs on stdout (one line per fact, flushed at once,
so a SIGKILL loses nothing that was printed) and never tracebacks on spool errors.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import resource
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segment.analytics.spool import SpoolStore, SpoolUnavailable
from segment.analytics.spool_cli import cmd_export, cmd_status
from segment.analytics.spool_reader import SpoolReader


def event(tag: str, n: int, pad: int = 40) -> bytes:
    """The bytes of event ``n`` of writer ``tag`` (the test rebuilds them to compare)."""
    return json.dumps({"messageId": f"{tag}-{n}", "n": n, "tag": tag, "pad": "p" * pad}).encode()


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def appender(path: str, tag: str) -> None:
    """Append groups of random size for ever; print ``C first last`` after each commit."""
    rng = random.Random(tag)
    store = SpoolStore(path)
    say("READY", store.recovered)
    n = 0
    while True:
        size = rng.randint(1, 40)
        store.append([event(tag, i, rng.randint(10, 600)) for i in range(n, n + size)])
        say("C", n, n + size - 1)
        n += size


def burst(path: str, tag: str, count: str) -> None:
    """Open (maybe creating) the spool at the same moment as others, append, exit without closing."""
    store = SpoolStore(path)
    ids = store.append([event(tag, i) for i in range(int(count))])
    say(json.dumps({"ids": ids}))


def sharer(path: str, tag: str, stop: str, drain: str) -> None:
    """Append, adopt, read own rows and delete them (as delivered) until ``stop`` exists.

    Reads fewer rows than it appends, so a backlog builds up; once ``drain`` exists it
    only adopts and reads, and prints ``DRAINED`` when it has nothing left. Prints
    ``A id...`` after each commit and ``R <time> id...`` for each batch read.
    """
    reader = SpoolReader(SpoolStore(path))
    say("READY")
    n = 0
    drained = False
    while not os.path.exists(stop):
        draining = os.path.exists(drain)
        if not draining:
            ids = reader.append([event(tag, i) for i in range(n, n + 5)], hold=False)
            n += 5
            say("A", *ids)
        reader.adopt()
        batch = reader.next_batch(3, 1 << 20)
        if batch.rows:
            say("R", repr(time.time()), *(row.id for row in batch.rows))
            reader.done(row.id for row in batch.rows)
        elif draining and not drained:
            drained = True
            say("DRAINED")
        time.sleep(0.005)
    say("DONE")


def forker(path: str, explicit: str) -> None:
    """A parent and an ``os.fork`` child each write their own rows; print one JSON result."""
    store = SpoolStore(path)
    parent_key = store.owner_key
    parent_ids = store.append([event("parent", i) for i in range(10)])
    held = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:  # another thread is mid-call when the fork happens
        with store._lock:
            held.set()
            release.wait(5)

    threading.Thread(target=hold_lock, daemon=True).start()
    held.wait(5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            if explicit == "explicit":
                store.after_fork_in_child()
            ids = store.append([event("child", i) for i in range(5)])
            rows = store.read(0, 100, 1 << 20).rows
            result = {"ids": ids, "read": [row.id for row in rows], "key": store.owner_key}
            os.write(w, json.dumps(result).encode())
        except BaseException as exc:  # report anything to the parent, never run the parent's code
            os.write(w, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    release.set()
    with os.fdopen(r) as f:
        child = json.loads(f.read())
    os.waitpid(pid, 0)
    own = [row.id for row in store.read(0, 100, 1 << 20).rows]
    adopted = store.adopt()
    third = SpoolStore(path)  # the parent is alive: a newcomer must not take its rows
    say(
        json.dumps(
            {
                "parent_key": parent_key,
                "parent_ids": parent_ids,
                "own_before_adopt": own,
                "child": child,
                "adopted": adopted,
                "third_adopted": third.recovered,
                "own_after": [row.id for row in store.read(0, 100, 1 << 20).rows],
            }
        )
    )


def fork_and_hang(path: str) -> None:
    """Write rows, fork a child that never touches the spool and sleeps, then wait to be killed."""
    store = SpoolStore(path)
    store.append([event("hang", i) for i in range(7)])
    if os.fork() == 0:
        say("CHILD", os.getpid())  # the fork hooks have run once fork() returns here
        time.sleep(30)
        os._exit(0)
    time.sleep(60)


_pool_store: SpoolStore | None = None


def _pool_task(i: int) -> tuple[int, str | None, list[int]]:
    assert _pool_store is not None
    ids = _pool_store.append([event(f"w{i}", j) for j in range(20)])
    return os.getpid(), _pool_store.owner_key, ids


def pool(path: str) -> None:
    """A fork-start multiprocessing Pool whose workers use the parent's store object."""
    global _pool_store
    _pool_store = SpoolStore(path)
    mine = _pool_store.append([event("main", j) for j in range(3)])
    p = multiprocessing.get_context("fork").Pool(2)
    results = p.map(_pool_task, range(6), chunksize=1)
    p.close()
    p.join()  # the workers end with os._exit, as fork-pool workers do
    adopted = _pool_store.adopt()
    rows = _pool_store.read(0, 1000, 1 << 30).rows
    say(
        json.dumps(
            {
                "mine": mine,
                "results": results,
                "adopted": adopted,
                "rows": [[row.id, row.data.decode()] for row in rows],
                "main_key": _pool_store.owner_key,
            }
        )
    )


def fsize(path: str, room: str) -> None:
    """Append until the file-size limit (a full disk) stops the store; print the outcome."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    store = SpoolStore(path)
    store.append([event("fs", i, 600) for i in range(20)])
    used = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith("spool.db"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (used + int(room), resource.RLIM_INFINITY))
    committed, reason = 20, None
    for _ in range(10_000):
        try:
            store.append([event("fs", i, 600) for i in range(committed, committed + 50)])
        except SpoolUnavailable as exc:
            reason = exc.reason
            break
        committed += 50
    try:
        store.append([event("fs", 99999)])
        after = "accepted"
    except SpoolUnavailable as exc:
        after = exc.reason
    say(json.dumps({"committed": committed, "reason": reason, "after": after}))


def read_only(path: str) -> None:
    """As an unprivileged user: open a read-only spool, a spool in a read-only directory, then read it."""
    import argparse

    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    outcome: dict[str, object] = {}
    for name in ("existing", "new"):
        target = os.path.join(path, "existing" if name == "existing" else "locked/new")
        try:
            SpoolStore(target)
            outcome[name] = "opened"
        except SpoolUnavailable as exc:
            outcome[name] = exc.reason
    sys.stdout.flush()
    outcome["status"] = cmd_status(argparse.Namespace(path=os.path.join(path, "existing"), json=True))
    outcome["export"] = cmd_export(argparse.Namespace(path=os.path.join(path, "existing")))
    say(json.dumps(outcome))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {
        "appender": appender,
        "burst": burst,
        "sharer": sharer,
        "fork": forker,
        "fork_and_hang": fork_and_hang,
        "pool": pool,
        "fsize": fsize,
        "read_only": read_only,
    }[mode](*args)
