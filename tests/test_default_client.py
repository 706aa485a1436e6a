"""The module-level default client is created once, whoever races to make it (issue 8, defect 12).

Threads, gevent greenlets and eventlet green threads (each monkey-patched before import, in a real
subprocess) all call ``analytics.track()`` at once; one client must take every event.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import threading

import pytest

import segment.analytics as analytics
from segment.analytics.testing import MockTrackingAPI

from .conftest import WRITE_KEY

PATCHES = {
    "gevent": "from gevent import monkey; monkey.patch_all()",
    "eventlet": "import eventlet; eventlet.monkey_patch()",
}

SCRIPT = textwrap.dedent(
    """
    {patch}
    import json, threading
    import segment.analytics as analytics
    from segment.analytics import Client

    made = []
    original = Client.__init__

    def counting_init(self, *args, **kwargs):
        made.append(1)
        original(self, *args, **kwargs)

    Client.__init__ = counting_init
    analytics.write_key = {key!r}
    analytics.host = {host!r}

    def worker(n):
        for i in range(100):
            analytics.track("u%d" % n, "e", {{"i": i}})

    {spawn}
    left = analytics.flush(30)
    stats = analytics.stats()
    print(json.dumps({{"clients": len(made), "left": left, "accepted": stats["accepted"],
                      "delivered": stats["delivered"]}}))
    """
)

SPAWN = {
    "gevent": "import gevent; gevent.joinall([gevent.spawn(worker, n) for n in range(50)])",
    "eventlet": "pool = eventlet.GreenPool(50); [pool.spawn(worker, n) for n in range(50)]; pool.waitall()",
}


@pytest.mark.parametrize("runtime", ["gevent", "eventlet"])
def test_one_default_client_under_green_threads(runtime: str) -> None:
    if importlib.util.find_spec(runtime) is None:  # not imported here: eventlet warns about fork() once loaded
        pytest.skip(f"{runtime} is not installed")
    with MockTrackingAPI(record=False) as api:
        script = SCRIPT.format(patch=PATCHES[runtime], spawn=SPAWN[runtime], key=WRITE_KEY, host=api.url)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report == {"clients": 1, "left": 0, "accepted": 5000, "delivered": 5000}, done.stderr
        assert api.event_count() == 5000


def test_one_default_client_under_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    with MockTrackingAPI(record=False) as api:
        monkeypatch.setattr(analytics, "write_key", WRITE_KEY)
        monkeypatch.setattr(analytics, "host", api.url)
        monkeypatch.setattr(analytics, "default_client", None)
        made: list[object] = []
        original = analytics.Client.__init__

        def slow_init(self: analytics.Client, *args: object, **kwargs: object) -> None:
            made.append(self)
            barrier_passed.wait(0.05)  # widen the race window
            original(self, *args, **kwargs)  # type: ignore[arg-type]

        barrier_passed = threading.Event()
        monkeypatch.setattr(analytics.Client, "__init__", slow_init)
        start = threading.Barrier(20)

        def worker() -> None:
            start.wait()
            for i in range(50):
                analytics.track("u", "e", {"i": i})

        threads = [threading.Thread(target=worker) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert len(made) == 1
            assert analytics.flush(30) == 0
            assert analytics.stats()["delivered"] == 1000
            assert api.event_count() == 1000
        finally:
            analytics.shutdown(5)
