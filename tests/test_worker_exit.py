"""Pool workers: their tail is drained or logged, never lost silently (issue 8, defect 11; issue 10).

Fork-started workers end in ``os._exit``, which skips ``atexit``; spawn-started ones exit normally. Each
test runs a real script in a subprocess: a pool's workers track events while the local Tracking API
answers slowly, so events are still queued when the workers exit. The client is either used by the
parent before the pool starts (fork children inherit it) or made by each worker on its first call (the
parent never touches it). The server counts unique messageIds.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segment.analytics.testing import MockTrackingAPI, Reply

from .conftest import WRITE_KEY

SCRIPT = textwrap.dedent(
    """
    import concurrent.futures, multiprocessing, sys
    import segment.analytics as analytics

    analytics.write_key = {key!r}
    analytics.host = {host!r}
    analytics.upload_interval = 0.2
    analytics.exit_timeout = {exit_timeout}

    def work(i):
        analytics.track("worker", "task", {{"i": i}}, message_id="w%d" % i)
        return i

    if __name__ == "__main__":
        if {parent_uses!r}:
            analytics.track("parent", "before-fork", message_id="parent")
            assert analytics.flush(10) == 0
        else:
            assert analytics.default_client is None  # each worker makes its own on its first call
        context = multiprocessing.get_context({method!r})
        if {kind!r} == "pool":
            pool = context.Pool(4)
            assert sum(pool.map(work, range({count}), chunksize=25)) == sum(range({count}))
            pool.close()
            pool.join()
        else:
            with concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as executor:
                assert sum(executor.map(work, range({count}), chunksize=25)) == sum(range({count}))
        print("parent done", flush=True)
    """
)


def run(
    api: MockTrackingAPI,
    kind: str,
    count: int,
    exit_timeout: float,
    tmp_path: Path,
    method: str = "fork",
    parent_uses: bool = True,
) -> subprocess.CompletedProcess[str]:
    script = SCRIPT.format(
        key=WRITE_KEY,
        host=api.url,
        kind=kind,
        count=count,
        exit_timeout=exit_timeout,
        method=method,
        parent_uses=parent_uses,
    )
    path = tmp_path / "pool_script.py"  # a file: spawn-started workers import the main module again
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "parent done" in done.stdout
    return done


@pytest.mark.parametrize(
    ("method", "parent_uses"),
    [("fork", True), ("fork", False), ("spawn", True), ("forkserver", True)],
    ids=["fork-parent-client", "fork-worker-client", "spawn", "forkserver"],
)
@pytest.mark.parametrize("kind", ["pool", "executor"])
def test_pool_workers_deliver_their_tail(kind: str, method: str, parent_uses: bool, tmp_path: Path) -> None:
    with MockTrackingAPI() as api:
        api.set_default(Reply(status=200, delay=0.05))
        done = run(api, kind, count=400, exit_timeout=10, tmp_path=tmp_path, method=method, parent_uses=parent_uses)
        ids = [event["messageId"] for event in api.events()]
    expected = {f"w{i}" for i in range(400)} | ({"parent"} if parent_uses else set())
    assert set(ids) == expected, done.stderr
    assert len(ids) == len(expected)  # and each once
    assert "could not be delivered" not in done.stderr


def test_fork_pool_workers_that_cannot_deliver_say_how_many_they_left(tmp_path: Path) -> None:
    with MockTrackingAPI() as api:
        api.script(Reply(status=200))  # the parent's event
        api.set_default(Reply(status=503))  # then down: nothing a worker tracks gets through
        done = run(api, "pool", count=200, exit_timeout=0.2, tmp_path=tmp_path)
        delivered = {event["messageId"] for event in api.events()}
    assert delivered == {"parent"}
    left = [int(n) for n in re.findall(r"segment: (\d+) event\(s\) could not be delivered", done.stderr)]
    assert sum(left) == 200, done.stderr
    assert WRITE_KEY not in done.stderr


UNHOOKED_FORK = textwrap.dedent(
    """
    import ctypes, os, sys, types

    sys.modules["uwsgi"] = types.ModuleType("uwsgi")  # what uWSGI's embedded interpreter has
    import segment.analytics as analytics

    analytics.write_key = {key!r}
    analytics.host = {host!r}
    analytics.upload_interval = 60

    analytics.track("parent", "before the fork", message_id="parent-1")
    assert analytics.flush(10) == 0
    # no thread of ours may be running when the C library forks: a thread parked inside the interpreter
    # (waiting for the GIL, say) would leave the child's interpreter locked up (Python's own at-fork code,
    # skipped here as under uWSGI, is what normally repairs that)
    analytics.default_client.join()
    analytics.track("parent", "queued at the fork", message_id="parent-2")  # the child must not send it too
    pid = ctypes.PyDLL(None).fork()  # a fork from C, as uWSGI makes its workers: no at-fork hook runs
    if pid == 0:
        for i in range(100):
            analytics.track("child", "after the fork", message_id="child-%d" % i)
        os._exit(analytics.flush(10))
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert analytics.flush(10) == 0
    print("parent done", flush=True)
    """
)


def test_a_worker_forked_without_python_s_at_fork_hooks_like_uwsgi_s_delivers_its_events() -> None:
    """uWSGI forks its workers from C (unless --py-call-uwsgi-fork-hooks): the pipeline notices the new pid.

    Unnoticed, the child would send the parent's queued event as well as its own (or, had the parent's
    consumer been running, take its stale thread for alive and send nothing); test_runtimes.py runs real
    uWSGI when it is installed.
    """
    with MockTrackingAPI() as api:
        script = UNHOOKED_FORK.format(key=WRITE_KEY, host=api.url)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
        ids = [event["messageId"] for event in api.events()]
    assert done.returncode == 0 and "parent done" in done.stdout, done.stderr
    assert sorted(ids) == sorted(["parent-1", "parent-2"] + [f"child-{i}" for i in range(100)]), done.stderr
