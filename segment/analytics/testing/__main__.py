"""Run the mock Tracking API in the foreground.

``python -m segment.analytics.testing --port 8080 [--host 127.0.0.1]
[--script FILE.json] [--profile realistic --seed 1]``

Prints one line, ``Mock Tracking API listening on http://127.0.0.1:PORT``, then
serves until interrupted (Ctrl-C or SIGTERM). ``--script`` takes a JSON file in
the ``POST /_mock/script`` format.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .mock_api import MockTrackingAPI, realistic_profile


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m segment.analytics.testing",
        description="Run a scriptable local mock of Segment's Tracking API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = pick a free one; default 0)")
    parser.add_argument("--host", default="127.0.0.1", help="only 127.0.0.1 (or localhost) is allowed")
    parser.add_argument("--script", metavar="FILE.json", help="configuration in the POST /_mock/script format")
    parser.add_argument("--profile", choices=["realistic"], help="answer with a seeded random mix of faults")
    parser.add_argument("--seed", type=int, default=0, help="seed of the profile (default 0)")
    parser.add_argument("--no-record", action="store_true", help="only count requests and events (benchmarks)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parse_args(argv)
    try:
        api = MockTrackingAPI(args.host, args.port, record=not args.no_record)
        if args.profile == "realistic":
            api.set_profile(realistic_profile(args.seed), seed=args.seed)
        if args.script:
            with open(args.script, encoding="utf-8") as f:
                api.configure(json.load(f))
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        api.start()
    except OSError as exc:
        print(f"error: cannot listen on port {args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"Mock Tracking API listening on {api.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
