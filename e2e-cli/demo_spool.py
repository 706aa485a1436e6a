"""The demo's second part: the durable spool through an outage with a restart in the middle.

The local Tracking API is down (it answers 503). Process 1, a child started by the
demo, tracks events through a client with ``storage=<a temporary directory>`` and a
memory queue far smaller than the outage; once it has tracked them all and they are
on disk (which takes at most ``storage_sync_interval``, 0.2 s, on a machine that is not
busy) it is killed with SIGKILL, as an OOM kill or a crashed host would end it. ``python -m
segment.analytics spool status`` shows what it left. Then the API comes back and
the demo itself, process 2, opens a client on the same directory, tracks a few
more events, and delivers everything. The checks: every event process 1 accepted
is delivered, with its messageId, exactly once; ``accepted + recovered ==
delivered + dropped + pending``; the server stored what the client counted.

``python e2e-cli/demo.py --spool-events N`` (0 skips this part).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any, TextIO

WRITE_KEY = "demo-write-key-0f3a"
QUEUE = 500  # process 1's max_queue_size: a fraction of the events it holds through the outage


def producer_main(path: str, host: str, count: int) -> int:
    """Process 1: track ``count`` events with the API down, print each accepted messageId, then wait to be killed."""
    from segment.analytics import Client

    client = Client(WRITE_KEY, host=host, storage=path, max_queue_size=QUEUE, exit_timeout=0.5)
    out = sys.stdout
    refused = 0
    for i in range(count):
        ok, message = client.track(f"user-{i % 300:04d}", "Order Completed", {"i": i, "revenue": 10 + i % 90})
        if ok:
            out.write(f"accepted {message['messageId']}\n")
        else:
            refused += 1
        if i % 100 == 99:
            out.flush()
            time.sleep(0.02)  # a steady stream rather than one burst
    out.write(f"done {count - refused} {refused}\n")
    out.flush()
    time.sleep(3600)  # killed by the demo long before
    return 0


def _wait_on_disk(path: str, count: int, timeout: float = 10.0) -> None:
    """Wait until the spool holds ``count`` events (read-only look, as ``spool status`` takes)."""
    from segment.analytics.spool_view import read_status

    deadline = time.monotonic() + timeout
    while read_status(path).events < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _spool_status(path: str) -> list[str]:
    import segment.analytics

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(segment.analytics.__file__))))
    done = subprocess.run(  # the library this demo imported, also from a checkout that is not installed
        [sys.executable, "-m", "segment.analytics", "spool", "status", path],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    return (done.stdout + done.stderr).strip().splitlines()


def run(out: TextIO, count: int, demo_path: str) -> int:
    """Run the spool part; returns 0 when its checks hold."""
    from segment.analytics import Client
    from segment.analytics.testing import MockTrackingAPI, Reply

    directory = tempfile.mkdtemp(prefix="segment-demo-spool-")
    path = os.path.join(directory, "spool")
    api = MockTrackingAPI().start()
    api.set_default(Reply(503))
    try:
        print(f"\nDurable spool: an outage with a restart in the middle (storage={path})", file=out)
        print(f"  The local API answers 503. Process 1 tracks {count} events (max_queue_size={QUEUE}) ...", file=out)
        started = time.monotonic()
        producer = subprocess.Popen(
            [sys.executable, demo_path, "--spool-producer", path, api.url, str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert producer.stdout is not None
        accepted: list[str] = []
        summary = ""
        for line in producer.stdout:
            if line.startswith("accepted "):
                accepted.append(line.split()[1])
            elif line.startswith("done "):
                summary = line
                break
        if not summary:
            producer.wait(10)
            print(f"  process 1 failed (exit status {producer.returncode})", file=out)
            return 1
        refused = int(summary.split()[2])
        _wait_on_disk(path, len(accepted))  # within storage_sync_interval (0.2 s) on a machine that is not busy
        producer.send_signal(signal.SIGKILL)
        producer.wait(10)
        print(
            f"  process 1 (pid {producer.pid}) accepted {len(accepted)}, refused {refused} "
            f"(in memory only, a queue of {QUEUE} would have refused most of them); "
            "killed with SIGKILL: no exit handler ran.",
            file=out,
        )
        print("  $ python -m segment.analytics spool status " + path, file=out)
        for line in _spool_status(path):
            print("    " + line, file=out)

        api.reset()  # the API is back: 200 for everything
        print("  The API is back. Process 2 (this one) opens the same spool and tracks 200 new events.", file=out)
        client = Client(WRITE_KEY, host=api.url, storage=path, upload_interval=0.1)
        fresh = [client.track(f"user-{i:04d}", "Signed In", {"i": i})[1]["messageId"] for i in range(200)]
        left = client.flush(timeout=30)
        left = client.shutdown(timeout=5)
        stats = client.stats()
        wall = time.monotonic() - started
        server = Counter(api.message_ids())
    finally:
        api.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return _report(out, stats, accepted, fresh, server, wall, left)


def _report(
    out: TextIO,
    s: dict[str, Any],
    accepted: list[str],
    fresh: list[str],
    server: Counter[str],
    wall: float,
    left: int,
) -> int:
    def row(label: str, value: Any) -> None:
        print(f"  {label:<42}{value:>10}", file=out)

    print("\nSpool report (process 2's client.stats())", file=out)
    row("recovered (left by process 1)", s["recovered"])
    row("accepted (process 2's own)", s["accepted"])
    row("delivered", s["delivered"])
    row("dropped", s["dropped"])
    row("pending", s["pending"])
    row("still in the spool", s["stored"])
    row("wall time, both processes", f"{wall:.1f} s")

    missing = [mid for mid in accepted + fresh if mid not in server]
    twice = sum(n - 1 for n in server.values() if n > 1)
    ok_spool = not missing and s["recovered"] == len(accepted)
    ok_law = s["accepted"] + s["recovered"] == s["delivered"] + s["dropped"] + s["pending"]
    ok_server = set(server) == set(accepted) | set(fresh) and len(server) == s["delivered"] and not twice
    print("\nChecks", file=out)
    print(
        f"  spool: all {len(accepted)} events process 1 accepted were delivered after its kill -9, "
        f"recovered {s['recovered']}  {'OK' if ok_spool else 'MISMATCH'}"
        + (f" ({len(missing)} missing)" if missing else ""),
        file=out,
    )
    print(
        f"  conservation: accepted {s['accepted']} + recovered {s['recovered']} = delivered {s['delivered']} "
        f"+ dropped {s['dropped']} + pending {s['pending']}  {'OK' if ok_law else 'MISMATCH'}",
        file=out,
    )
    print(
        f"  server: stored {len(server)} unique messageIds == delivered {s['delivered']}, "
        f"{twice} delivered twice  {'OK' if ok_server else 'MISMATCH'}",
        file=out,
    )
    if left:
        print(f"  {left} event(s) were still undelivered when the demo stopped waiting", file=out)
    return 0 if ok_spool and ok_law and ok_server and not left else 1
