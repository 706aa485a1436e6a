"""Fork-pool workers end in ``os._exit``: their tail is drained or logged, never lost silently (issue 8, defect 11).

Each test runs a real script in a subprocess: the parent uses the client, then a fork-started pool's
workers track events while the local Tracking API answers slowly, so events are still queued when the
workers exit. The server counts unique messageIds.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

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
        analytics.track("parent", "before-fork", message_id="parent")
        assert analytics.flush(10) == 0
        context = multiprocessing.get_context("fork")
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


def run(api: MockTrackingAPI, kind: str, count: int, exit_timeout: float) -> subprocess.CompletedProcess[str]:
    script = SCRIPT.format(key=WRITE_KEY, host=api.url, kind=kind, count=count, exit_timeout=exit_timeout)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "parent done" in done.stdout
    return done


@pytest.mark.parametrize("kind", ["pool", "executor"])
def test_fork_pool_workers_deliver_their_tail(kind: str) -> None:
    with MockTrackingAPI() as api:
        api.set_default(Reply(status=200, delay=0.05))
        done = run(api, kind, count=400, exit_timeout=10)
        ids = {event["messageId"] for event in api.events()}
    assert ids == {"parent"} | {f"w{i}" for i in range(400)}, done.stderr
    assert "could not be delivered" not in done.stderr


def test_fork_pool_workers_that_cannot_deliver_say_how_many_they_left() -> None:
    with MockTrackingAPI() as api:
        api.script(Reply(status=200))  # the parent's event
        api.set_default(Reply(status=503))  # then down: nothing a worker tracks gets through
        done = run(api, "pool", count=200, exit_timeout=0.2)
        delivered = {event["messageId"] for event in api.events()}
    assert delivered == {"parent"}
    left = [int(n) for n in re.findall(r"segment: (\d+) event\(s\) could not be delivered", done.stderr)]
    assert sum(left) == 200, done.stderr
    assert WRITE_KEY not in done.stderr
