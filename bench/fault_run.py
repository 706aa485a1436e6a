"""The hostile fault run: many events from many threads against 24 kinds of random faults.

Checks, while it runs, that ``client.stats()`` adds up at every sample
(``accepted == delivered + dropped + pending``), and at the end that every event was delivered
exactly as the server stored it or reported once through ``on_error``, with nothing lost silently.

    .venv/bin/python bench/fault_run.py                 # 12,000 events from 8 threads
    .venv/bin/python bench/fault_run.py --events 2000   # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segment.analytics import Client
from segment.analytics.testing import MockTrackingAPI, Reply

RA = {"Retry-After": "1"}
FAULTS: list[tuple[float, Reply]] = [
    (40.0, Reply(200)),
    (3.0, Reply(200, delay=0.3)),  # slow
    (3.0, Reply(201)),
    (3.0, Reply(fail_message_ids={})),  # a 207 listing nothing
    (3.0, Reply(202, body=b"not json")),
    (3.0, Reply(200, body=b'{"errorResponses": [{"index": 999999, "status": 500}, {"x": 1}]}')),
    (3.0, Reply(500)),
    (3.0, Reply(502)),
    (3.0, Reply(503)),
    (3.0, Reply(504)),
    (3.0, Reply(503, headers=RA)),
    (3.0, Reply(429, headers=RA)),
    (2.0, Reply(429, headers={"Retry-After": "9" * 5000})),  # unparsable: counted backoff
    (3.0, Reply(408)),
    (2.0, Reply(410)),
    (2.0, Reply(460)),
    (2.0, Reply(400)),
    (1.0, Reply(401, body=b"bad key")),
    (1.0, Reply(403)),
    (2.0, Reply(413)),
    (1.0, Reply(501)),
    (3.0, Reply(action="reset")),
    (3.0, Reply(action="cut")),
    (2.0, Reply(action="hang", delay=1.5)),  # past the 1 s timeout
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=12_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    assert len(FAULTS) == 24
    per_thread = args.events // args.threads
    lock = threading.Lock()
    reported: list[str] = []
    reasons: Counter[str] = Counter()
    accepted: list[str] = []
    refused: list[str] = []
    samples = 0
    broken: list[dict[str, Any]] = []

    def on_error(exc: BaseException, events: list[dict[str, Any]]) -> None:
        with lock:
            reported.extend(event["messageId"] for event in events)
            reasons[str(getattr(exc, "reason", "?"))] += len(events)

    with MockTrackingAPI() as api:
        api.set_profile(FAULTS, seed=args.seed)
        client = Client(
            "fault-run-key",
            host=api.url,
            on_error=on_error,
            thread=4,
            upload_size=25,
            upload_interval=0.05,
            timeout=1,
            max_retries=3,
            max_queue_size=4000,
            max_rate_limit_duration=20,
        )
        done = threading.Event()

        def sample() -> None:
            nonlocal samples
            while not done.is_set():
                stats = client.stats()
                samples += 1
                if stats["accepted"] != stats["delivered"] + stats["dropped"] + stats["pending"]:
                    broken.append(stats)
                time.sleep(0.005)

        def produce(worker: int) -> None:
            for i in range(per_thread):
                ok, msg = client.track(f"user-{worker}", "Order", {"i": i, "worker": worker})
                with lock:
                    (accepted if ok else refused).append(msg["messageId"])

        started = time.monotonic()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        producers = [threading.Thread(target=produce, args=(w,)) for w in range(args.threads)]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        left = client.flush(timeout=300)
        done.set()
        sampler.join()
        elapsed = time.monotonic() - started
        stats = client.stats()
        stored = api.message_ids()
        client.shutdown(timeout=5)

    total = len(accepted) + len(refused)
    stored_set = set(stored)
    silently_lost = (set(accepted) | set(refused)) - stored_set - set(reported)
    print(f"events tracked            {total:,} from {args.threads} threads in {elapsed:.1f} s")
    print(f"stats samples             {samples:,}, {len(broken)} where the law did not hold")
    print(f"left after flush          {left}")
    print(f"delivered                 {stats['delivered']:,} (server stored {len(stored_set):,} unique ids)")
    print(f"dropped and reported      {stats['dropped']:,} {dict(sorted(stats['dropped_by_reason'].items()))}")
    print(f"reported through on_error {len(reported):,} ({len(set(reported)):,} unique)")
    print(f"retries                   {stats['retries']:,}, requests {stats['requests']:,}")
    print(f"lost silently             {len(silently_lost)}")
    ok = (
        not broken
        and left == 0
        and not silently_lost
        and len(reported) == len(set(reported)) == stats["dropped"]
        and dict(reasons) == stats["dropped_by_reason"]
        and stored_set.isdisjoint(reported)
        and len(stored_set) == stats["delivered"]
    )
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
