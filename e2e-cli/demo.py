"""Demo: a few thousand events through the library against a local Tracking API having a bad day.

``make demo`` (or ``python3 e2e-cli/demo.py`` from a checkout with requests and
python-dateutil installed) starts the bundled mock Tracking API on 127.0.0.1
with a seeded "realistic day" of faults (mostly 2xx; some 429 with
Retry-After, 5xx, connection resets, timeouts-ish slow answers, and one bad
request), sends the events through a :class:`~segment.analytics.Client` with
two consumer threads while printing a progress line, then prints a delivery
report built from ``client.stats()`` and cross-checks it against what the
server stored. Then the durable spool's part (``demo_spool.py``): an outage
with a kill -9 and a restart in the middle, every event delivered at the end.
Exit code 0 when every check holds.

Options: ``--events N`` (default 3000), ``--seed N``, ``--threads N``,
``--batch-size N``, ``--rate EVENTS_PER_SECOND``, ``--spool-events N`` (default
1500, 0 skips the spool part), ``--verbose``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Optional, Sequence, TextIO

try:  # installed: the package is importable; from a checkout: this folder is sys.path[0]
    from segment_e2e_cli import demo_spool
    from segment_e2e_cli.checkout import use_checkout
except ImportError:
    import demo_spool  # type: ignore[no-redef]
    from checkout import use_checkout  # type: ignore[no-redef]

use_checkout()

from segment.analytics import Client  # noqa: E402
from segment.analytics.testing import MockTrackingAPI, Reply, Rule, realistic_profile  # noqa: E402

__all__ = ["main"]

WRITE_KEY = "demo-write-key-0f3a"
_EVENT_NAMES = (
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Coupon Applied",
    "Search Performed",
    "Video Played",
    "Signed In",
)
_PAGES = ("Home", "Pricing", "Docs", "Blog", "Careers", "Checkout")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class Progress:
    """A progress line: rewritten in place on a terminal, a plain line every second otherwise."""

    def __init__(self, out: TextIO, render: Callable[[], str], tty: Optional[bool] = None) -> None:
        self.out = out
        self.render = render
        self.tty = out.isatty() if tty is None else tty
        self.notices: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-progress", daemon=True)
        self._width = 0

    def notice(self, text: str) -> None:
        """Queue a line to print above the progress line."""
        with self._lock:
            self.notices.append(text)

    def start(self) -> None:
        """Start refreshing."""
        self._thread.start()

    def stop(self) -> None:
        """Print the final state and stop."""
        self._stop.set()
        self._thread.join()
        self._draw(final=True)

    def _run(self) -> None:
        interval = 0.1 if self.tty else 1.0
        while not self._stop.wait(interval):
            self._draw()

    def _draw(self, final: bool = False) -> None:
        with self._lock:
            notices, self.notices = self.notices, []
        line = self.render()
        if self.tty:
            clear = "\r" + " " * self._width + "\r"
            for text in notices:
                self.out.write(f"{clear}  {text}\n")
                clear = ""
            self._width = len(line)
            self.out.write(f"\r{line}" + ("\n" if final else ""))
        else:
            for text in notices:
                self.out.write(f"  {text}\n")
            self.out.write(line + "\n")
        self.out.flush()


def _make_event(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    """A plausible event (mostly track) with a deterministic messageId."""
    user = f"user-{rng.randrange(400):04d}"
    mid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    roll = rng.random()
    if roll < 0.70:
        return "track", {
            "user_id": user,
            "event": rng.choice(_EVENT_NAMES),
            "message_id": mid,
            "properties": {
                "i": i,
                "price": round(rng.uniform(1, 500), 2),
                "currency": "EUR",
                "sku": f"SKU-{rng.randrange(10_000):05d}",
            },
        }
    if roll < 0.82:
        return "page", {
            "user_id": user,
            "name": rng.choice(_PAGES),
            "category": "web",
            "message_id": mid,
            "properties": {"i": i, "path": f"/{rng.choice(_PAGES).lower()}"},
        }
    if roll < 0.90:
        return "identify", {
            "user_id": user,
            "message_id": mid,
            "traits": {"plan": rng.choice(("free", "pro", "team")), "logins": rng.randrange(90)},
        }
    if roll < 0.95:
        return "screen", {
            "anonymous_id": f"anon-{rng.randrange(10**6)}",
            "name": "Cart",
            "message_id": mid,
            "properties": {"i": i},
        }
    if roll < 0.98:
        return "group", {
            "user_id": user,
            "group_id": f"org-{rng.randrange(50)}",
            "message_id": mid,
            "traits": {"seats": rng.randrange(1, 200)},
        }
    return "alias", {"previous_id": f"anon-{rng.randrange(10**6)}", "user_id": user, "message_id": mid}


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=3000, help="events to send (default 3000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the faults and the events (default 7)")
    parser.add_argument("--threads", type=int, default=2, help="consumer threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=20, help="upload_size (default 20)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second produced (default 1000)")
    parser.add_argument(
        "--spool-events", type=int, default=1500, help="events tracked through the spool part's outage (0: skip)"
    )
    parser.add_argument("--verbose", action="store_true", help="show the library's warnings as they happen")
    parser.add_argument("--spool-producer", nargs=3, metavar=("PATH", "HOST", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.threads < 1 or args.batch_size < 1 or args.rate <= 0 or args.spool_events < 0:
        parser.error("--events, --threads, --batch-size and --rate must be positive, --spool-events not negative")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns 0 when the report's cross-checks hold."""
    args = _parse_args(argv)
    if args.spool_producer:  # process 1 of the spool part
        path, host, count = args.spool_producer
        return demo_spool.producer_main(path, host, int(count))
    out = sys.stdout
    if not args.verbose:
        logging.getLogger("segment").setLevel(logging.ERROR)  # drops are shown by the demo itself
    rng = random.Random(args.seed)
    calls = [_make_event(rng, i) for i in range(args.events)]
    bad_id = calls[(2 * args.events) // 3][1]["message_id"]

    api = MockTrackingAPI()
    api.start()
    api.set_profile(realistic_profile(args.seed), seed=args.seed)
    api.add_rule(
        Rule(
            Reply(400, body={"code": "invalid_request", "message": "simulated bad request"}),
            times=1,
            contains_message_id=bad_id,
        )
    )

    print(
        f"Local Tracking API at {api.url}: a realistic day of faults (seed {args.seed}): ~88% 200, "
        "4% 429 with Retry-After 1 s, 3% 5xx, 2% connection resets, 1% 503 + Retry-After, "
        "1% 408, 1% slow 200, and one bad request.",
        file=out,
    )
    print(
        f"Sending {args.events} events with {args.threads} consumer threads, batches of up to "
        f"{args.batch_size}, at about {args.rate:g} events/s.\n",
        file=out,
    )

    lock = threading.Lock()
    dropped: Counter[tuple[str, Optional[int]]] = Counter()
    delivered_ids: set[str] = set()
    dropped_ids: set[str] = set()
    produced = [0]
    started = time.monotonic()

    def on_success(events: list[dict[str, Any]]) -> None:
        with lock:
            delivered_ids.update(e["messageId"] for e in events)

    def on_error(exc: BaseException, events: list[dict[str, Any]]) -> None:
        reason, status = getattr(exc, "reason", type(exc).__name__), getattr(exc, "status", None)
        with lock:
            dropped[(reason, status)] += len(events)
            dropped_ids.update(e["messageId"] for e in events)
        progress.notice(f"dropped {len(events)} event(s): {reason}" + (f" (status {status})" if status else ""))

    client = Client(
        WRITE_KEY,
        host=api.url,
        thread=args.threads,
        upload_size=args.batch_size,
        upload_interval=0.2,
        max_retries=6,
        timeout=5,
        on_success=on_success,
        on_error=on_error,
    )

    def render() -> str:
        s = client.stats()
        return (
            f"[{time.monotonic() - started:5.1f}s] sent {produced[0]}/{args.events} | "
            f"delivered {s['delivered']} ({s['delivered_after_retry']} after retry) | dropped {s['dropped']} | "
            f"pending {s['pending']} | requests {s['requests']} | retries {s['retries']} | "
            f"rate-limited {s['rate_limited_waits']}"
        )

    progress = Progress(out, render)
    progress.start()
    try:
        for i, (kind, kwargs) in enumerate(calls):
            getattr(client, kind)(**kwargs)
            produced[0] = i + 1
            ahead = (i + 1) / args.rate - (time.monotonic() - started)
            if ahead > 0.005:
                time.sleep(ahead)
        left = client.flush(timeout=25)
        left = client.shutdown(timeout=5) if left == 0 else client.shutdown(timeout=1)
    finally:
        progress.stop()
        wall = time.monotonic() - started
        server_ids = api.message_ids()
        server_requests = api.request_count()
        api.stop()
    code = _report(out, client.stats(), dropped, delivered_ids, dropped_ids, server_ids, server_requests, wall, left)
    if args.spool_events:
        code |= demo_spool.run(out, args.spool_events, os.path.abspath(__file__))
    return code


def _report(
    out: TextIO,
    s: dict[str, Any],
    dropped: Counter[tuple[str, Optional[int]]],
    delivered_ids: set[str],
    dropped_ids: set[str],
    server_ids: list[str],
    server_requests: int,
    wall: float,
    left: int,
) -> int:
    """Print the delivery report and the cross-checks; 0 when they hold."""

    def row(label: str, value: Any, indent: int = 2) -> None:
        print(f"{' ' * indent}{label:<{44 - indent}}{value:>10}", file=out)

    print("\nDelivery report (from client.stats())", file=out)
    row("accepted", s["accepted"])
    row("delivered on the first attempt", s["delivered_first_attempt"])
    row("delivered after retries", s["delivered_after_retry"])
    row("dropped", s["dropped"])
    for reason, count in sorted(s["dropped_by_reason"].items()):
        row(f"reason: {reason}", count, 6)
    for (reason, status), count in sorted(dropped.items(), key=lambda kv: (str(kv[0][1]), kv[0][0])):
        row(f"status: {status if status is not None else 'none'} ({reason})", count, 6)
    row("pending (undelivered at exit)", s["pending"])
    row("retries", s["retries"])
    for cause, count in sorted(s["retries_by_status"].items(), key=lambda kv: (-kv[1], kv[0])):
        label = f"after HTTP {cause}" if cause.isdigit() else f"after network error: {cause}"
        row(label, count, 6)
    row("rate-limited waits (Retry-After)", s["rate_limited_waits"])
    errors = {k: v for k, v in s["network_errors"].items() if v}
    row("network errors", sum(errors.values()))
    for kind, count in sorted(errors.items()):
        row(kind, count, 6)
    row("requests", s["requests"])
    row("bytes sent", _human_bytes(s["bytes_sent"]))
    row("wall time", f"{wall:.1f} s")

    unique = set(server_ids)
    duplicates = len(server_ids) - len(unique)
    ok_conservation = s["accepted"] == s["delivered"] + s["dropped"] + s["pending"]
    ok_server = len(unique) == s["delivered"] and unique == delivered_ids and not (unique & dropped_ids)
    ok_requests = server_requests == s["requests"]
    print("\nChecks", file=out)
    print(
        f"  conservation: accepted {s['accepted']} = delivered {s['delivered']} + dropped {s['dropped']} "
        f"+ pending {s['pending']}  {'OK' if ok_conservation else 'MISMATCH'}",
        file=out,
    )
    print(
        f"  server: stored {len(unique)} unique messageIds == delivered {s['delivered']}, same ids as on_success, "
        f"none of the {len(dropped_ids)} dropped  {'OK' if ok_server else 'MISMATCH'}"
        + (f" ({duplicates} duplicate deliveries de-duplicated by messageId)" if duplicates else ""),
        file=out,
    )
    print(
        f"  requests: server saw {server_requests}, client sent {s['requests']}  {'OK' if ok_requests else 'MISMATCH'}",
        file=out,
    )
    if left:
        print(f"  {left} event(s) were still undelivered when the demo stopped waiting", file=out)
    return 0 if ok_conservation and ok_server and ok_requests else 1


if __name__ == "__main__":
    sys.exit(main())
