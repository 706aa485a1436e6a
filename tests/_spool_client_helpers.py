"""Driving tests/spool_client_worker.py processes and reading what they printed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

from segment.analytics.testing import MockTrackingAPI

WORKER = str(Path(__file__).with_name("spool_client_worker.py"))
SYNC = 0.05  # storage_sync_interval of the workers: the window a kill may lose
# How late the writer thread may commit on a loaded 2-core machine (the suite runs several pytest workers):
# the promise is about the sync interval, but no thread runs on time when every core is busy.
SCHEDULING = 0.5


class Worker:
    """A worker process whose stdout lines are collected in a thread as they arrive."""

    def __init__(self, mode: str, cfg: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, mode, json.dumps(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self.stderr = ""
        self.cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a line cut by a kill is not a fact
                with self.cond:
                    self.lines.append(line.rstrip("\n"))
                    self.cond.notify_all()

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 20.0) -> None:
        """Wait until ``predicate(lines)`` holds (a hang guard, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._threads[0].is_alive()):
                    raise AssertionError(
                        f"worker: timed out; last lines {self.lines[-5:]}; stderr {self.stderr[-2000:]}"
                    )
                self.cond.wait(min(left, 0.1))

    def wait_line(self, prefix: str, count: int = 1, timeout: float = 20.0) -> str:
        """The ``count``-th line starting with ``prefix``, once it is there."""
        self.wait_for(lambda ls: sum(line.startswith(prefix) for line in ls) >= count, timeout)
        return [line for line in self.lines if line.startswith(prefix)][count - 1]

    def kill9(self) -> float:
        """SIGKILL now; returns the moment (``time.monotonic()``, the clock the worker prints) it was sent."""
        killed_at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.finish(expect=None)
        return killed_at

    def finish(self, timeout: float = 30.0, expect: Optional[int] = 0) -> Worker:
        """Wait for the process to end and for its output; check its exit status unless ``expect`` is None."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"worker did not end; last lines {self.lines[-5:]}") from None
        for thread in self._threads:
            thread.join(10)
        if expect is not None:
            assert self.proc.returncode == expect, f"exit status {self.proc.returncode}: {self.stderr[-3000:]}"
        return self

    # -- what it printed ------------------------------------------------------------------------------

    def accepted(self) -> list[tuple[str, float]]:
        """``(messageId, monotonic time after the call returned)`` of every accepted event, in order."""
        return [(parts[1], float(parts[2])) for parts in self._split("A")]

    def ids(self) -> list[str]:
        """messageIds of every accepted event, in order."""
        return [mid for mid, _ in self.accepted()]

    def accepted_before(self, moment: float, window: float = SYNC + SCHEDULING) -> list[str]:
        """Events accepted more than ``window`` seconds before ``moment``: the ones a kill may not lose."""
        return [mid for mid, t in self.accepted() if t < moment - window]

    def encoded(self) -> dict[str, bytes]:
        """messageId -> the JSON bytes the library encoded for it (``"bytes": true`` runs)."""
        return {parts[1]: bytes.fromhex(parts[2]) for parts in self._split("B")}

    def errors(self) -> list[tuple[str, list[str]]]:
        """``(reason, messageIds)`` of every ``on_error`` call."""
        return [(parts[1], parts[3:]) for parts in self._split("E")]

    def succeeded(self) -> list[str]:
        """messageIds ``on_success`` reported, in order (``"report_success": true`` runs)."""
        return [mid for parts in self._split("S") for mid in parts[1:]]

    def warnings(self) -> list[str]:
        return [line[2:] for line in self.lines if line.startswith("W ")]

    def stats(self, index: int = -1) -> dict[str, Any]:
        """The ``index``-th ``STATS`` the worker printed."""
        found = [json.loads(line.split(" ", 1)[1]) for line in self.lines if line.startswith("STATS ")]
        assert found, f"no STATS line; last lines {self.lines[-5:]}; stderr {self.stderr[-2000:]}"
        return found[index]  # type: ignore[no-any-return]

    def value(self, prefix: str) -> str:
        found = [line.split(" ", 1)[1] for line in self.lines if line.startswith(prefix + " ")]
        assert found, f"no {prefix} line; last lines {self.lines[-5:]}; stderr {self.stderr[-2000:]}"
        return found[-1]

    def _split(self, kind: str) -> list[list[str]]:
        with self.cond:
            return [line.split() for line in self.lines if line.startswith(kind + " ")]


def run(mode: str, cfg: dict[str, Any], timeout: float = 30.0, expect: Optional[int] = 0) -> Worker:
    """Start a worker and wait for it to end."""
    return Worker(mode, cfg).finish(timeout, expect)


def closed_port() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused): an API that is down."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def law(stats: dict[str, Any]) -> bool:
    """``accepted + recovered == delivered + dropped + pending``."""
    return bool(stats["accepted"] + stats["recovered"] == stats["delivered"] + stats["dropped"] + stats["pending"])


def delivered(api: MockTrackingAPI) -> Counter[str]:
    """How many times the API acknowledged each messageId."""
    return Counter(api.message_ids())


def raw_bodies(api: MockTrackingAPI) -> bytes:
    """Every request body the API received, concatenated (uncompressed runs)."""
    return b"\n".join(request.raw_body for request in api.requests())


def is_subsequence(seq: list[str], of: list[str]) -> bool:
    """Whether ``seq`` appears in ``of`` in the same order (gaps allowed)."""
    it = iter(of)
    return all(item in it for item in seq)
