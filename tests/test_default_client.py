"""The module-level default client is created once, whoever races to make it (issue 8, defect 12).

Threads call ``analytics.track()`` at once; one client must take every event. The same race under
gevent greenlets and eventlet green threads (monkey-patched before import, in real subprocesses) is in
``test_runtimes.py``, with Retry-After and the hub's lag.
"""

from __future__ import annotations

import threading

import pytest

import segment.analytics as analytics
from segment.analytics.testing import MockTrackingAPI

from .conftest import WRITE_KEY


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
