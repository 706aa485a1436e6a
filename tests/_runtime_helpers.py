"""Helpers for the runtime tests: the mock Tracking API in its own process, percentiles, scenarios in parallel.

The mock runs as ``python -m segment.analytics.testing --port 0`` so that neither its CPU nor its GIL is
shared with the process under test (loop-lag figures are the library's own), and so that several
scenarios can each have one while they run at the same time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Callable, Optional

PYTHON = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this checkout first on ``sys.path``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class ApiProcess:
    """The project's mock Tracking API in a subprocess on 127.0.0.1, driven through ``/_mock/``."""

    def __init__(self, record: bool = True) -> None:
        args = [PYTHON, "-m", "segment.analytics.testing", "--port", "0"]
        if not record:
            args.append("--no-record")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"the mock API did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def __enter__(self) -> ApiProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def _call(self, path: str, body: Optional[dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        method = "GET" if data is None else "POST"
        request = urllib.request.Request(self.url + "/_mock/" + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def configure(self, **config: Any) -> None:
        """``POST /_mock/script``: ``replies``, ``rules``, ``default``, ``profile``, ``seed``."""
        self._call("script", config)

    def reset(self) -> None:
        """``POST /_mock/reset``: 200s again, nothing recorded."""
        self._call("reset", {})

    def events(self) -> list[dict[str, Any]]:
        """Every delivered event, in order of arrival (duplicates included)."""
        return list(self._call("events"))

    def message_ids(self) -> list[str]:
        """The messageIds of the delivered events (duplicates included)."""
        return [str(event.get("messageId")) for event in self.events()]

    def stats(self) -> dict[str, int]:
        """``{"requests": n, "events": n, "connections": n}``."""
        return dict(self._call("stats"))


def percentiles(values: Sequence[float], *points: float) -> list[float]:
    """Nearest-rank percentiles of ``values`` (0.0 for an empty sequence)."""
    ordered = sorted(values)
    if not ordered:
        return [0.0 for _ in points]
    return [ordered[min(len(ordered) - 1, int(p / 100.0 * len(ordered)))] for p in points]


def in_background(jobs: dict[str, Callable[[], Any]]) -> dict[str, Future[Any]]:
    """Run every job at once, each in its own thread; a :class:`Future` per job."""
    futures: dict[str, Future[Any]] = {}
    for name, job in jobs.items():
        future: Future[Any] = Future()

        def run(job: Callable[[], Any] = job, future: Future[Any] = future) -> None:
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

        futures[name] = future
        threading.Thread(target=run, name=f"scenario-{name}", daemon=True).start()
    return futures
