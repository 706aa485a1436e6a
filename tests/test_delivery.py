"""The delivery contract end to end (delivery.md §3, 4): real HTTP to the local mock Tracking API, small budgets."""

from __future__ import annotations

import base64
import gzip
import json
import time
from email.utils import formatdate
from typing import Callable

import pytest

from segment.analytics import Client
from segment.analytics.testing import MockTrackingAPI, Reply, Rule
from segment.analytics.version import VERSION

from .conftest import WRITE_KEY, ErrorLog


def statuses(api: MockTrackingAPI) -> list[int | None]:
    return [r.reply_status for r in api.requests()]


def retry_counts(api: MockTrackingAPI) -> list[int | None]:
    return [r.retry_count for r in api.requests()]


def test_headers_on_every_attempt(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    api.script(Reply(status=500), Reply(status=503))
    client = make_client(gzip=True)
    client.track("u", "e")
    assert client.flush(timeout=10) == 0
    requests = api.requests()
    assert retry_counts(api) == [None, 1, 2]
    expected_auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    for request in requests:
        assert request.header("Authorization") == expected_auth
        assert request.header("Content-Type") == "application/json"
        assert request.header("User-Agent") == f"analytics-python/{VERSION}"
        assert request.header("Content-Encoding") == "gzip"
        body = json.loads(gzip.decompress(request.raw_body))
        assert body["writeKey"] == WRITE_KEY and body["sentAt"].endswith("+00:00")
        assert [e["event"] for e in body["batch"]] == ["e"]
    assert requests[0].path == "/v1/batch"


def test_500_then_200_is_delivered_after_a_retry(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.script(Reply(status=500))
    client = make_client()
    client.track("u", "e")
    assert client.flush(timeout=10) == 0
    assert statuses(api) == [500, 200]
    stats = client.stats()
    assert stats["delivered_after_retry"] == 1 and stats["delivered_first_attempt"] == 0
    assert stats["retries_by_status"] == {"500": 1} and errors.errors == []
    gap = api.requests()[1].arrived - api.requests()[0].arrived
    assert 0.5 <= gap < 1.0  # first counted backoff: 0.5 s plus up to 10% jitter


def test_429_with_retry_after_waits_that_long_and_spends_no_retry(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    api.script(Reply(status=429, headers={"Retry-After": "1"}))
    client = make_client(max_retries=0)
    client.track("u", "e")
    assert client.flush(timeout=10) == 0
    first, second = api.requests()
    assert 1.0 <= second.arrived - first.arrived < 1.5
    assert second.retry_count == 1
    stats = client.stats()
    assert stats["rate_limited_waits"] == 1 and stats["delivered_after_retry"] == 1


def test_503_with_an_http_date_retry_after(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    api.script(Reply(status=503, headers={"Retry-After": formatdate(time.time() + 2, usegmt=True)}))
    client = make_client()
    client.track("u", "e")
    assert client.flush(timeout=10) == 0
    first, second = api.requests()
    assert 0.9 <= second.arrived - first.arrived < 2.6  # the date has one-second resolution
    assert client.stats()["rate_limited_waits"] == 1


def test_400_is_dropped_after_one_request(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(Reply(status=400))
    client = make_client()
    _, msg = client.track("u", "e")
    assert client.flush(timeout=10) == 0
    assert len(api.requests()) == 1
    [(exc, events)] = errors.errors
    assert (exc.reason, exc.status) == ("non_retryable_status", 400)  # type: ignore[attr-defined]
    assert events[0]["messageId"] == msg["messageId"] and events[0]["event"] == "e"
    assert client.stats()["dropped_by_reason"] == {"non_retryable_status": 1}


def test_413_on_a_batch_of_ten_with_one_oversized_event_delivers_the_other_nine(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.add_rule(Rule(reply=Reply(status=413), contains_message_id="too-big"))
    client = make_client(max_retries=0, upload_interval=5)
    for i in range(10):
        client.track("u", "e", message_id="too-big" if i == 6 else f"ok-{i}")
    assert client.flush(timeout=10) == 0
    assert sorted(api.message_ids()) == sorted(f"ok-{i}" for i in range(10) if i != 6)
    assert errors.dropped_ids() == ["too-big"]
    assert [(e.reason, e.status) for e, _ in errors.errors] == [("non_retryable_status", 413)]  # type: ignore[attr-defined]
    stats = client.stats()
    assert stats["delivered"] == 9 and stats["dropped"] == 1 and stats["pending"] == 0


def test_a_connection_reset_then_200(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    api.script(Reply(action="reset"))
    client = make_client()
    client.track("u", "e")
    assert client.flush(timeout=10) == 0
    assert statuses(api) == [None, 200] and retry_counts(api) == [None, 1]
    stats = client.stats()
    assert stats["network_errors"]["reset"] == 1 and stats["retries_by_status"] == {"reset": 1}
    assert stats["delivered_after_retry"] == 1


def test_a_hang_past_the_timeout_is_retried(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    api.script(Reply(action="hang", delay=3))
    client = make_client(timeout=0.3)
    client.track("u", "e")
    assert client.flush(timeout=10) == 0
    assert statuses(api) == [None, 200]
    assert client.stats()["network_errors"]["timeout"] == 1


def test_persistent_500_with_max_retries_3_makes_exactly_4_requests(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(Reply(status=500))
    client = make_client(max_retries=3)
    client.track("u", "e")
    assert client.flush(timeout=15) == 0
    assert statuses(api) == [500, 500, 500, 500]
    assert retry_counts(api) == [None, 1, 2, 3]
    [(exc, _)] = errors.errors
    assert (exc.reason, exc.status) == ("retries_exhausted", 500)  # type: ignore[attr-defined]
    assert client.stats()["retries_by_status"] == {"500": 3}


def test_total_backoff_budget_drops_instead_of_waiting(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(Reply(status=502))
    client = make_client(max_total_backoff_duration=1.0)
    client.track("u", "e")
    started = time.monotonic()
    assert client.flush(timeout=10) == 0
    assert time.monotonic() - started < 2.0
    assert len(api.requests()) == 2  # 0.5 s fits in 1 s, the next 1 s wait would end past it
    assert errors.reasons() == ["backoff_duration_exceeded"]


def test_rate_limit_budget_drops_now_rather_than_sending_early(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(Reply(status=429, headers={"Retry-After": "5"}))
    client = make_client(max_rate_limit_duration=2)
    client.track("u", "e")
    started = time.monotonic()
    assert client.flush(timeout=10) == 0
    assert time.monotonic() - started < 1.0
    assert len(api.requests()) == 1
    assert [(e.reason, e.status) for e, _ in errors.errors] == [("rate_limit_duration_exceeded", 429)]  # type: ignore[attr-defined]


def test_rate_limit_is_shared_by_all_consumers(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    api.script(Reply(status=429, headers={"Retry-After": "1"}, delay=0.1))
    client = make_client(thread=3, upload_size=1, upload_interval=0.01)
    for i in range(6):
        client.track("u", "e", message_id=f"m{i}")
    assert client.flush(timeout=10) == 0
    requests = api.requests()
    limited = requests[0]
    answered_at = limited.arrived + 0.1
    # requests already in flight may land before the answer; nothing is sent after it until the wait is over
    later = [r for r in requests[1:] if r.arrived > answered_at + 0.05]
    assert later and all(r.arrived >= answered_at + 0.95 for r in later)
    assert sorted(api.message_ids()) == [f"m{i}" for i in range(6)]


@pytest.mark.parametrize("status", [408, 410, 460, 502, 504, 599])
def test_retryable_statuses_are_retried(make_client: Callable[..., Client], api: MockTrackingAPI, status: int) -> None:
    api.script(Reply(status=status))
    client = make_client()
    client.track("u", "e")
    assert client.flush(timeout=10) == 0
    assert statuses(api) == [status, 200]


@pytest.mark.parametrize("status", [401, 403, 404, 418, 422, 501, 505, 511, 302, 600])
def test_non_retryable_statuses_are_dropped_after_one_request(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog, status: int
) -> None:
    api.set_default(Reply(status=status))
    client = make_client()
    client.track("u", "e")
    assert client.flush(timeout=10) == 0
    assert len(api.requests()) == 1
    assert [(e.reason, e.status) for e, _ in errors.errors] == [("non_retryable_status", status)]  # type: ignore[attr-defined]


def test_207_retries_only_the_failed_events(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.script(Reply(fail_message_ids={"m1": 500, "m3": 400}))
    client = make_client(upload_interval=5)
    for i in range(5):
        client.track("u", "e", message_id=f"m{i}")
    assert client.flush(timeout=10) == 0
    _, second = api.requests()
    assert [e["messageId"] for e in second.batch] == ["m1"] and second.retry_count == 1
    assert sorted(api.message_ids()) == ["m0", "m1", "m2", "m4"]
    assert errors.dropped_ids() == ["m3"]
    assert [(e.reason, e.status) for e, _ in errors.errors] == [("non_retryable_status", 400)]  # type: ignore[attr-defined]
    stats = client.stats()
    assert (stats["delivered"], stats["dropped"], stats["pending"]) == (4, 1, 0)


def test_malformed_host_is_a_configuration_error(errors: ErrorLog) -> None:
    client = Client(WRITE_KEY, host="ftp://nowhere", on_error=errors.on_error)
    try:
        client.track("u", "e")
        assert client.flush(timeout=5) == 0
        assert [(e.reason, e.status) for e, _ in errors.errors] == [("configuration_error", None)]  # type: ignore[attr-defined]
        assert client.stats()["requests"] == 1
    finally:
        client.shutdown(timeout=1)


def test_shutdown_interrupts_a_long_backoff_and_counts_the_batch_pending(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    api.set_default(Reply(status=429, headers={"Retry-After": "300"}))
    client = make_client()
    client.track("u", "e")
    assert api.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    assert client.shutdown(timeout=1) == 1
    assert time.monotonic() - started < 1.5
    assert errors.errors == []  # interrupted, not failed
    assert client.stats()["pending"] == 1
