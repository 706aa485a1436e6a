"""A fork in the middle of the parent's spool transaction: the child's own spool still works.

SQLite keeps a process's file-lock state in memory shared by all its connections. A child forked
while a parent thread is inside a transaction inherits locks no thread of it will ever release; its
own connection then found the database "locked" (for the 10 s busy timeout, then for good), and a
pool worker forked right after ``Client(storage=...)`` lost what it tracked. The spool makes a fork
wait (briefly) for an operation in progress to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from segment.analytics import spool_fork
    from segment.analytics.spool import SpoolStore

    spool_fork.FORK_WAIT = float(sys.argv[2])
    path = sys.argv[1]
    store = SpoolStore(path)
    started = threading.Event()

    def write():
        started.set()
        store.append([b'{"messageId":"m%d","type":"track"}' % i for i in range(200000)])  # a long transaction

    writer = threading.Thread(target=write)
    writer.start()
    started.wait()
    time.sleep(0.02)
    pid = os.fork()
    if pid == 0:
        began = time.monotonic()
        try:
            child = SpoolStore(path)
            child.append([b'{"messageId":"child","type":"track"}'])
            result = {"ok": True, "seconds": time.monotonic() - began}
        except Exception as exc:
            result = {"ok": False, "error": repr(exc), "seconds": time.monotonic() - began}
        print(json.dumps(result), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    writer.join()
    """
)


def run(tmp_path: Path, fork_wait: float) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "spool"), str(fork_wait)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_child_forked_during_a_parent_transaction_can_use_the_spool(tmp_path: Path) -> None:
    result = run(tmp_path, fork_wait=5.0)
    assert result["ok"] is True, result
    assert float(result["seconds"]) < 5, result  # not a busy wait for a lock nobody holds
