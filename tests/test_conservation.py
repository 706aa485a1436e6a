"""Nothing lost silently (delivery.md §4): every accepted event is delivered, dropped once, or pending."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Callable

from segment.analytics import Client
from segment.analytics.testing import MockTrackingAPI, Reply

from .conftest import ErrorLog

FAULTS = [
    (0.62, Reply(status=200)),
    (0.08, Reply(status=500)),
    (0.05, Reply(status=503)),
    (0.05, Reply(status=429, headers={"Retry-After": "1"})),
    (0.04, Reply(status=400)),
    (0.04, Reply(status=413)),
    (0.04, Reply(action="reset")),
    (0.03, Reply(status=408)),
    (0.05, Reply(fail_message_ids={})),  # a 207 with nothing listed: delivered
]


def test_2000_events_from_4_threads_against_random_faults_all_add_up(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_profile(FAULTS, seed=7)
    client = make_client(
        thread=4, upload_size=20, upload_interval=0.05, max_retries=2, max_queue_size=1500, max_rate_limit_duration=30
    )
    accepted_ids: list[str] = []
    refused_ids: list[str] = []
    lock = threading.Lock()

    def produce(worker: int) -> None:
        for i in range(500):
            ok, msg = client.track(f"user-{worker}", "Order", {"i": i, "worker": worker})
            with lock:
                (accepted_ids if ok else refused_ids).append(msg["messageId"])

    producers = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    assert client.flush(timeout=60) == 0

    stats = client.stats()
    assert stats["accepted"] == 2000
    assert stats["accepted"] == stats["delivered"] + stats["dropped"] + stats["pending"]
    assert stats["pending"] == 0 and stats["queue_depth"] == 0 and stats["in_flight"] == 0
    assert stats["delivered"] == stats["delivered_first_attempt"] + stats["delivered_after_retry"]
    assert stats["dropped"] == sum(stats["dropped_by_reason"].values())

    # every dropped event reported exactly once, with the reason it is counted under
    dropped = errors.dropped_ids()
    assert len(dropped) == len(set(dropped)) == stats["dropped"]
    reasons: Counter[str] = Counter()
    for exc, events in errors.errors:
        reasons[exc.reason] += len(events)  # type: ignore[attr-defined]
    assert dict(reasons) == stats["dropped_by_reason"]
    assert set(refused_ids) <= set(dropped)

    # what the server stored is exactly what the client counts as delivered, and nothing both
    delivered = set(api.message_ids())
    assert len(delivered) == stats["delivered"]
    assert delivered.isdisjoint(dropped)
    assert delivered | set(dropped) == set(accepted_ids) | set(refused_ids)

    # the faults really happened, and no consumer died
    resets = sum(1 for r in api.requests() if r.action == "reset")
    assert stats["retries"] > 0 and stats["dropped"] > 0 and resets > 0
    assert stats["network_errors"]["reset"] == resets
    assert stats["requests"] == len(api.requests())
    assert client.consumers and all(consumer.is_alive() for consumer in client.consumers)
    assert client.shutdown(timeout=5) == 0
