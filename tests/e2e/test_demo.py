"""The demo (``make demo``) runs end to end with fewer events and its checks hold."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from tests.e2e.harness import DEMO_PATH


def test_demo_report_conserves_every_event() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, DEMO_PATH, "--events", "600", "--seed", "3", "--spool-events", "400"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    elapsed = time.monotonic() - started
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "sent 600/600" in out  # the progress line
    conservation = re.search(
        r"conservation: accepted (\d+) = delivered (\d+) \+ dropped (\d+) \+ pending (\d+)  OK", out
    )
    assert conservation, out
    accepted, delivered, dropped, pending = map(int, conservation.groups())
    assert accepted == 600 == delivered + dropped + pending
    assert pending == 0
    assert 1 <= dropped <= 20  # the one bad request: its whole batch (up to 20 events), status 400
    assert re.search(rf"status: 400 \(non_retryable_status\)\s+{dropped}\n", out), out
    server = re.search(r"server: stored (\d+) unique messageIds == delivered (\d+).*OK", out)
    assert server and server.group(1) == server.group(2) == str(delivered), out
    for label in (
        "delivered on the first attempt",
        "delivered after retries",
        "retries",
        "rate-limited waits",
        "requests",
        "bytes sent",
        "wall time",
    ):
        assert label in out
    # the durable spool's part: process 1 killed -9 during an outage, process 2 delivers everything
    assert "process 1 (pid" in out and "accepted 400, refused 0" in out, out
    assert "events:  400" in out  # `spool status` between the two processes
    assert "spool: all 400 events process 1 accepted were delivered after its kill -9, recovered 400  OK" in out
    assert "conservation: accepted 200 + recovered 400 = delivered 600 + dropped 0 + pending 0  OK" in out, out
    assert "server: stored 600 unique messageIds == delivered 600, 0 delivered twice  OK" in out, out
    assert elapsed < 30
