"""The retry loop of one batch (delivery.md §3, 4): ``BatchSender`` on a fake poster, a fake clock, no sleeping.

Every ``send`` goes through ``Harness.send``, which asserts that each event
comes back exactly once as delivered, dropped or pending, and that
``attempts`` equals the number of requests made. Defects listed in the seed
pull request's review (seeds/003) are named in the docstrings of the tests
that pin them down in our design.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import gzip
import logging

import pytest

from segment.analytics.errors import APIError
from segment.analytics.request import RateLimitGate
from segment.analytics.transport import NetworkError
from segment.analytics.version import VERSION

from ._loop_helpers import (
    WALL0,
    WRITE_KEY,
    FakeAuth,
    FakeClock,
    Harness,
    Post,
    delivered_events,
    dropped_events,
    error_responses,
    ev,
    evs,
    only_drop,
    resp,
)

OK = resp(200, body={"success": True})


def r429(after: str) -> object:
    return resp(429, {"Retry-After": after})


def has_header(post: Post, name: str) -> bool:
    return any(k.lower() == name.lower() for k in post.headers)


def bad_if_present(message_ids: set[str], status: int = 413):
    """A poster step: ``status`` whenever one of ``message_ids`` is in the batch, else 200."""

    def step(post: Post):
        return resp(status) if message_ids & set(post.ids) else OK

    return step


# -- delivery.md §3.2: headers and body on every attempt -----------------------------------------


def test_x_retry_count_absent_on_first_attempt_then_1_2_3() -> None:
    h = Harness([resp(500), NetworkError("reset", ConnectionResetError()), resp(503), OK])
    result = h.send(evs(3))
    assert not has_header(h.posts[0], "X-Retry-Count")
    assert h.poster.retry_counts == [None, "1", "2", "3"]
    assert result.delivered == [(evs(3), True)]


def test_x_retry_count_continues_through_rate_limited_attempts() -> None:
    h = Harness([r429("1"), resp(500), resp(503, {"Retry-After": "2"}), OK], max_retries=1)
    result = h.send(evs(2))
    assert h.poster.retry_counts == [None, "1", "2", "3"]
    assert h.sleeps == [1.0, 0.5, 2.0]
    assert result.delivered == [(evs(2), True)]


def test_x_retry_count_continues_through_413_halves() -> None:
    h = Harness(default=lambda p: resp(413) if len(p.ids) > 1 else OK, max_retries=0)
    result = h.send(evs(4))
    assert [len(p.ids) for p in h.posts] == [4, 2, 1, 1, 2, 1, 1]
    assert h.poster.retry_counts == [None, "1", "2", "3", "4", "5", "6"]
    assert delivered_events(result) == evs(4)


def test_x_retry_count_continues_into_a_partial_retry() -> None:
    h = Harness([resp(500), error_responses({"index": 2, "status": 503}), OK])
    result = h.send(evs(4))
    assert h.poster.retry_counts == [None, "1", "2"]
    assert h.sleeps == [0.5, 1.0]  # the partial retry is counted retry k=2: budgets continue
    assert h.posts[2].batch_bytes == ev(2)
    assert sorted(delivered_events(result)) == evs(4)


def test_authorization_is_basic_write_key_colon_on_every_attempt() -> None:
    h = Harness([resp(500), OK])
    h.send(evs(1))
    expected = "Basic " + base64.b64encode(b"wk_test_123:").decode("ascii")
    assert [p.headers["Authorization"] for p in h.posts] == [expected, expected]


def test_content_type_and_user_agent_without_gzip() -> None:
    h = Harness([resp(502), OK])
    h.send(evs(2))
    for post in h.posts:
        assert post.headers["Content-Type"] == "application/json"
        assert post.headers["User-Agent"] == f"analytics-python/{VERSION}"
        assert not has_header(post, "Content-Encoding")
        assert post.wire == post.raw  # plain JSON on the wire


def test_gzip_sends_a_gzip_body_with_content_encoding() -> None:
    h = Harness([resp(500), OK], gzip=True)
    items = evs(20)
    h.send(items)
    for post in h.posts:
        assert post.headers["Content-Encoding"] == "gzip"
        assert post.wire[:2] == b"\x1f\x8b"
        assert gzip.decompress(post.wire) == post.raw
        assert post.batch_bytes == b",".join(items)
    assert h.stats.bytes_sent == sum(len(p.wire) for p in h.posts)
    assert h.stats.requests == 2


def test_body_is_batch_sentat_writekey_with_events_byte_for_byte() -> None:
    odd = b'{"messageId":"m9","type":"track","properties":{"n":1.50,"e":"\\u00e9","u":"caf\xc3\xa9","z":[ ]}}'
    items = [ev(0), odd, ev(1)]
    h = Harness([resp(500), OK])
    h.send(items)
    for post in h.posts:
        assert post.raw.startswith(b'{"batch":[' + b",".join(items) + b"],")
        body = post.body
        assert set(body) == {"batch", "sentAt", "writeKey"}
        assert body["writeKey"] == WRITE_KEY
        sent_at = dt.datetime.fromisoformat(body["sentAt"].replace("Z", "+00:00"))
        assert sent_at.utcoffset() is not None
        # sentAt is the wall-clock time of this attempt (ms precision)
        assert abs(sent_at.timestamp() - (WALL0 + post.at)) < 0.002
    assert h.posts[1].body["sentAt"] != h.posts[0].body["sentAt"]


def test_write_key_is_json_escaped_in_the_body() -> None:
    key = 'we"ird\\key/é'
    h = Harness([OK], write_key=key)
    h.send(evs(1))
    assert h.posts[0].body["writeKey"] == key
    assert h.posts[0].headers["Authorization"] == "Basic " + base64.b64encode((key + ":").encode()).decode()


# -- delivery.md §3.1: classification inside the loop -------------------------------------------------

DROPPED_AT_ONCE = [400, 401, 403, 404, 409, 413, 418, 422, 451, 501, 505, 511, 302, 304, 101, 600, 0]


@pytest.mark.parametrize("status", DROPPED_AT_ONCE)
def test_non_retryable_status_dropped_after_one_request(status: int) -> None:
    h = Harness([resp(status, body={"code": "x", "message": "no"})], max_retries=10)
    result = h.send([ev(1)])
    assert len(h.posts) == 1
    assert h.sleeps == []
    error = only_drop(result)
    assert error.reason == "non_retryable_status"
    assert error.status == status
    assert error.attempts == 1
    assert h.retries_by_status() == {}


RETRIED = [408, 410, 429, 460, 500, 502, 503, 504, 599]


@pytest.mark.parametrize("status", RETRIED)
def test_retryable_status_then_200_is_delivered_after_retry(status: int) -> None:
    h = Harness([resp(status), OK])
    result = h.send(evs(3))
    assert len(h.posts) == 2
    assert h.sleeps == [0.5]  # counted retry k=1, rand 0
    assert result.delivered == [(evs(3), True)]
    assert result.dropped == []
    assert h.retries_by_status() == {str(status): 1}


@pytest.mark.parametrize("status", [200, 201, 202, 204, 207, 299])
def test_any_2xx_is_delivered_first_time(status: int) -> None:
    h = Harness([resp(status)])
    result = h.send(evs(2))
    assert result.delivered == [(evs(2), False)]
    assert len(h.posts) == 1
    assert h.sleeps == []


def test_persistent_500_with_max_retries_3_makes_exactly_4_requests() -> None:
    h = Harness(default=resp(500), max_retries=3)
    result = h.send(evs(2))
    assert len(h.posts) == 4
    assert h.sleeps == [0.5, 1.0, 2.0]
    error = only_drop(result)
    assert error.reason == "retries_exhausted"
    assert error.status == 500
    assert error.attempts == 4
    assert isinstance(error.cause, APIError) and error.cause.status == 500
    assert h.retries_by_status() == {"500": 3}


def test_max_retries_0_makes_one_request() -> None:
    h = Harness(default=resp(500), max_retries=0)
    result = h.send(evs(1))
    assert len(h.posts) == 1
    assert h.sleeps == []
    error = only_drop(result)
    assert (error.reason, error.status) == ("retries_exhausted", 500)


def test_default_schedule_is_capped_at_60s_and_bounded() -> None:
    """Seed review (flush blocking for hours): with default budgets a failing batch waits ~4 minutes, not hours."""
    h = Harness(default=resp(503))
    result = h.send(evs(1))
    assert len(h.posts) == 11  # max_retries=10 by default
    assert h.sleeps == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert only_drop(result).reason == "retries_exhausted"


def test_jitter_with_rand_0999_stays_within_ten_percent_and_the_cap() -> None:
    h = Harness(default=resp(500), rand=0.999)
    h.send(evs(1))
    bases = [min(60.0, 0.5 * 2**k) for k in range(10)]
    assert len(h.sleeps) == 10
    for slept, base in zip(h.sleeps, bases):
        assert base <= slept <= min(60.0, base * 1.1)
    assert h.sleeps[0] == pytest.approx(0.5 * 1.0999)
    assert h.sleeps[-1] == 60.0


def test_511_with_oauth_invalidates_the_token_before_retrying() -> None:
    log: list[str] = []
    auth = FakeAuth(oauth=True, log=log)

    def answer(status: int):
        def step(post: Post):
            log.append("post")
            return resp(status)

        return step

    h = Harness([answer(511), answer(200)], oauth=True, auth=auth)
    result = h.send(evs(2))
    assert log == ["header:t1", "post", "invalidate:t1", "header:t2", "post"]
    assert [p.headers["Authorization"] for p in h.posts] == ["Bearer t1", "Bearer t2"]
    assert result.delivered == [(evs(2), True)]


def test_511_without_oauth_is_dropped() -> None:
    h = Harness([resp(511)])
    result = h.send(evs(2))
    assert len(h.posts) == 1
    error = only_drop(result)
    assert (error.reason, error.status) == ("non_retryable_status", 511)


def test_511_retried_when_the_auth_object_is_oauth_even_if_the_policy_flag_is_unset() -> None:
    auth = FakeAuth(oauth=True)
    h = Harness([resp(511), OK], auth=auth)  # policy built with oauth=False
    result = h.send(evs(1))
    assert auth.invalidations == 1
    assert result.delivered == [(evs(1), True)]


def test_511_dropped_with_basic_auth_even_if_the_policy_flag_is_set() -> None:
    h = Harness([resp(511), OK], oauth=True)  # no auth object: Basic auth, no token to clear
    result = h.send(evs(1))
    assert len(h.posts) == 1
    assert only_drop(result).status == 511


# -- delivery.md §3.4: Retry-After ---------------------------------------------------------------------


def test_429_retry_after_1_waits_1s_via_the_gate() -> None:
    h = Harness([r429("1"), OK], max_retries=0)
    result = h.send(evs(2))
    assert h.sleeps == [1.0]
    assert [p.at for p in h.posts] == [0.0, 1.0]
    assert result.delivered == [(evs(2), True)]
    assert h.stats.rate_limited_waits == 1
    assert h.retries_by_status() == {"429": 1}


def test_retry_after_waits_do_not_spend_max_retries() -> None:
    h = Harness([r429("1"), r429("1"), r429("1"), OK], max_retries=0)
    result = h.send(evs(2))
    assert len(h.posts) == 4
    assert h.sleeps == [1.0, 1.0, 1.0]
    assert h.poster.retry_counts == [None, "1", "2", "3"]
    assert result.delivered == [(evs(2), True)]


def test_counted_backoff_after_retry_after_starts_at_k1() -> None:
    h = Harness([r429("2"), r429("2"), resp(500), OK], max_retries=1)
    result = h.send(evs(1))
    assert h.sleeps == [2.0, 2.0, 0.5]
    assert result.delivered == [(evs(1), True)]


@pytest.mark.parametrize("status", [408, 410, 429, 460, 500, 502, 503, 504])
def test_retry_after_honoured_on_any_retryable_status(status: int) -> None:
    h = Harness([resp(status, {"Retry-After": "7"}), OK], max_retries=0)
    result = h.send(evs(1))
    assert h.sleeps == [7.0]
    assert result.delivered == [(evs(1), True)]


def test_retry_after_on_503_is_honoured() -> None:
    h = Harness([resp(503, {"Retry-After": "12"}), resp(503, {"Retry-After": "3"}), OK], max_retries=0)
    result = h.send(evs(1))
    assert h.sleeps == [12.0, 3.0]
    assert result.delivered == [(evs(1), True)]


@pytest.mark.parametrize("status", [400, 404, 413, 422, 501, 505, 511])
def test_retry_after_on_a_non_retryable_status_is_ignored(status: int) -> None:
    h = Harness([resp(status, {"Retry-After": "1"}), OK])
    result = h.send([ev(1)])
    assert len(h.posts) == 1
    assert h.sleeps == []
    assert only_drop(result).reason == "non_retryable_status"
    assert h.gate.wait_time(h.clock.now()) == 0  # nobody else is held back either


def test_rate_limit_budget_drops_when_the_requested_wait_does_not_fit() -> None:
    h = Harness(default=r429("5"), max_rate_limit_duration=10)
    result = h.send(evs(3))
    assert [p.at for p in h.posts] == [0.0, 5.0, 10.0]
    assert h.sleeps == [5.0, 5.0]  # the third wait (to t=15) does not fit: dropped at t=10, not sent early
    assert h.clock.now() == 10.0
    error = only_drop(result)
    assert (error.reason, error.status) == ("rate_limit_duration_exceeded", 429)
    assert dropped_events(result) == evs(3)


def test_rate_limit_budget_is_inclusive() -> None:
    h = Harness([r429("10"), OK], max_rate_limit_duration=10)
    result = h.send(evs(1))
    assert h.sleeps == [10.0]
    assert result.delivered == [(evs(1), True)]


def test_a_single_retry_after_longer_than_the_budget_is_dropped_now() -> None:
    h = Harness([r429("120"), OK], max_rate_limit_duration=100)
    result = h.send(evs(2))
    assert len(h.posts) == 1
    assert h.sleeps == []
    assert only_drop(result).reason == "rate_limit_duration_exceeded"


def test_max_rate_limit_duration_0_drops_at_the_first_retry_after() -> None:
    h = Harness([r429("1"), OK], max_rate_limit_duration=0, max_retries=10)
    result = h.send(evs(2))
    assert len(h.posts) == 1
    assert h.sleeps == []
    error = only_drop(result)
    assert (error.reason, error.status) == ("rate_limit_duration_exceeded", 429)


def test_persistent_retry_after_300_is_bounded_by_default_budget() -> None:
    """Seed review (flush() blocking for hours): Retry-After waits stop at max_rate_limit_duration (1800 s)."""
    h = Harness(default=r429("300"))
    result = h.send(evs(1))
    assert h.sleeps == [300.0] * 6
    assert len(h.posts) == 7
    assert sum(h.sleeps) <= 1800
    assert only_drop(result).reason == "rate_limit_duration_exceeded"


@pytest.mark.parametrize("value", ["0", "-5", "+0"])
def test_retry_after_zero_or_negative_uses_counted_backoff_no_tight_loop(value: str) -> None:
    """Seed review: ``Retry-After: 0`` re-queued and re-sent in a tight loop. Here: counted backoff, bounded."""
    h = Harness(default=r429(value), max_retries=3)
    result = h.send(evs(2))
    assert len(h.posts) == 4
    assert h.sleeps == [0.5, 1.0, 2.0]
    assert all(s > 0 for s in h.sleeps)
    error = only_drop(result)
    assert (error.reason, error.status) == ("retries_exhausted", 429)
    assert h.stats.rate_limited_waits == 0


@pytest.mark.parametrize("value", ["soon", "abc", "1.5", "", "Wed, 99 Foo 2024"])
def test_unparsable_retry_after_uses_counted_backoff(value: str) -> None:
    h = Harness(default=r429(value), max_retries=2)
    result = h.send(evs(1))
    assert len(h.posts) == 3
    assert h.sleeps == [0.5, 1.0]
    assert only_drop(result).reason == "retries_exhausted"


def test_unparsable_retry_after_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness([r429("soon"), r429("later"), OK])
    with caplog.at_level(logging.WARNING, logger="segment"):
        h.send(evs(1))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "retry-after" in r.getMessage().lower()]
    assert len(warnings) == 1


def test_http_date_retry_after_is_honoured_with_the_injected_wall_clock() -> None:
    """Seed review: an HTTP-date Retry-After fell back to counted backoff and spent max_retries."""
    clock = FakeClock(start=500.0)  # monotonic and wall clocks differ on purpose
    date = email.utils.formatdate(clock.wall() + 20, usegmt=True)
    h = Harness([r429(date), OK], clock=clock, max_retries=0)
    result = h.send(evs(1))
    assert h.sleeps == [pytest.approx(20.0)]
    assert result.delivered == [(evs(1), True)]
    assert h.stats.rate_limited_waits == 1


def test_http_date_in_the_past_uses_counted_backoff() -> None:
    date = email.utils.formatdate(WALL0 - 60, usegmt=True)
    h = Harness([r429(date), OK])
    h.send(evs(1))
    assert h.sleeps == [0.5]


def test_far_future_http_date_is_capped_at_300() -> None:
    h = Harness([resp(503, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}), OK])
    h.send(evs(1))
    assert h.sleeps == [300.0]


def test_rate_limited_batch_is_held_by_the_sender_not_requeued() -> None:
    """Seed review: 429 re-queued the batch and lost items to a full queue (and double task_done).

    Our design holds the batch in ``send``: the same bytes, in the same order,
    go out again until delivered; nothing is dropped, nothing is pending.
    """
    items = evs(100)
    h = Harness([r429("1"), r429("2"), resp(503, {"Retry-After": "1"}), OK], max_retries=0)
    result = h.send(items)
    assert len(h.posts) == 4
    assert all(p.batch_bytes == b",".join(items) for p in h.posts)
    assert result.delivered == [(items, True)]
    assert result.dropped == [] and result.pending == []


# -- delivery.md §3.4: the shared rate-limit gate ---------------------------------------------------------


def _limit_gate(clock: FakeClock, gate: RateLimitGate, after: str, *, max_rate_limit_duration: float = 1800) -> None:
    """Another consumer gets ``429 Retry-After: after``.

    It is then shut down while waiting (its batch stays pending), or, when the
    wait does not fit its budget, drops its batch at once.
    """
    other = Harness(
        [r429(after)],
        clock=clock,
        gate=gate,
        interrupt=lambda i, s: True,
        max_rate_limit_duration=max_rate_limit_duration,
    )
    result = other.send([ev(900)])
    if float(after) <= max_rate_limit_duration:
        assert result.pending == [ev(900)]
    else:
        assert only_drop(result).reason == "rate_limit_duration_exceeded"
    assert len(other.posts) == 1


def test_rate_limit_is_shared_by_senders_of_one_client() -> None:
    clock, gate = FakeClock(), RateLimitGate()
    _limit_gate(clock, gate, "5")
    b = Harness([OK], clock=clock, gate=gate)
    result = b.send(evs(2))
    assert b.sleeps == [5.0]
    assert [p.at for p in b.posts] == [5.0]
    assert b.poster.retry_counts == [None]  # waiting for the gate is not an attempt of B's batch
    assert result.delivered == [(evs(2), False)]
    assert b.stats.rate_limited_waits == 0  # counted once, by the sender that got the Retry-After


def test_gate_wait_interrupted_by_shutdown_sends_nothing() -> None:
    clock, gate = FakeClock(), RateLimitGate()
    _limit_gate(clock, gate, "300")
    b = Harness([OK], clock=clock, gate=gate, interrupt=lambda i, s: True)
    result = b.send(evs(3))
    assert b.posts == []
    assert result.pending == evs(3)
    assert result.attempts == 0


def test_episode_not_ended_by_an_answer_to_a_request_sent_before_the_limit() -> None:
    clock, gate = FakeClock(), RateLimitGate()

    def in_flight(post: Post):
        clock.advance(1)  # while A's request is in flight, another consumer is rate-limited at t=1
        _limit_gate(clock, gate, "2", max_rate_limit_duration=10)
        return OK

    a = Harness([in_flight], clock=clock, gate=gate, max_rate_limit_duration=10)
    assert a.send(evs(1)).delivered == [(evs(1), False)]
    # A's 200 answered a request sent at t=0, before the 429 arrived: the episode (from t=1) goes on.
    c = Harness([r429("9"), OK], clock=clock, gate=gate, max_rate_limit_duration=10)
    result = c.send([ev(2)])
    assert c.sleeps == [2.0]  # held until t=3 by the gate
    assert len(c.posts) == 1  # at t=3, Retry-After 9 would end at t=12, 11 s into the episode
    assert only_drop(result).reason == "rate_limit_duration_exceeded"


def test_episode_ended_by_an_answer_to_a_request_sent_after_the_limit() -> None:
    clock, gate = FakeClock(), RateLimitGate()
    clock.advance(1)
    _limit_gate(clock, gate, "2", max_rate_limit_duration=10)
    d = Harness([OK], clock=clock, gate=gate, max_rate_limit_duration=10)
    assert d.send(evs(1)).delivered == [(evs(1), False)]  # sent at t=3, after the 429: ends the episode
    c = Harness([r429("9"), OK], clock=clock, gate=gate, max_rate_limit_duration=10)
    result = c.send([ev(2)])
    assert c.sleeps == [9.0]  # a new episode starts at t=3: 9 s fits
    assert result.delivered == [([ev(2)], True)]


def test_a_batch_dropped_for_its_rate_limit_budget_holds_nobody_back() -> None:
    clock, gate = FakeClock(), RateLimitGate()

    def in_flight(post: Post):
        # Another consumer is told Retry-After: 300 and drops its batch (300 > 100): it closes no gate ...
        _limit_gate(clock, gate, "300", max_rate_limit_duration=100)
        # ... while B's request is in flight; B is told to wait 1 s.
        return r429("1")

    b = Harness([in_flight, OK], clock=clock, gate=gate, max_rate_limit_duration=100)
    result = b.send(evs(1))
    assert b.sleeps == [1.0]
    assert result.delivered == [(evs(1), True)]


def test_rate_limit_wait_imposed_by_the_shared_gate_is_bounded_by_the_budget() -> None:
    clock, gate = FakeClock(), RateLimitGate()

    def in_flight(post: Post):
        # Another consumer is told Retry-After: 90, which fits its budget of 100: the gate closes for 90 s ...
        _limit_gate(clock, gate, "90", max_rate_limit_duration=100)
        # ... while B's request is in flight; B, with a budget of 30, is told to wait 1 s.
        return r429("1")

    b = Harness([in_flight, OK], clock=clock, gate=gate, max_rate_limit_duration=30)
    result = b.send(evs(1))
    assert sum(b.sleeps) <= 30, f"waited {sum(b.sleeps)}s with max_rate_limit_duration=30"
    assert len(b.posts) == 1
    assert only_drop(result).reason == "rate_limit_duration_exceeded"


@pytest.mark.parametrize("budget", [0, 5])
def test_max_rate_limit_duration_too_small_drops_without_closing_the_gate(budget: float) -> None:
    clock, gate = FakeClock(), RateLimitGate()
    a = Harness([r429("60")], clock=clock, gate=gate, max_rate_limit_duration=budget)
    assert only_drop(a.send(evs(1))).reason == "rate_limit_duration_exceeded"
    assert gate.wait_time(clock.now()) == 0
    b = Harness([OK], clock=clock, gate=gate, max_rate_limit_duration=budget)
    assert b.send(evs(1)).delivered == [(evs(1), False)]
    assert b.sleeps == []


# -- delivery.md §3.3: max_total_backoff_duration -------------------------------------------------------------


def test_total_backoff_budget_drops_when_the_next_wait_would_end_past_it() -> None:
    h = Harness(default=resp(500), max_total_backoff_duration=3.0)
    result = h.send(evs(2))
    assert [p.at for p in h.posts] == [0.0, 0.5, 1.5]
    assert h.sleeps == [0.5, 1.0]  # the next wait (2 s, to t=3.5) would end past 3 s
    error = only_drop(result)
    assert (error.reason, error.status) == ("backoff_duration_exceeded", 500)


def test_total_backoff_budget_is_inclusive() -> None:
    h = Harness(default=resp(500), max_total_backoff_duration=3.5)
    h.send(evs(1))
    assert h.sleeps == [0.5, 1.0, 2.0]
    assert len(h.posts) == 4


def test_total_backoff_budget_includes_jitter() -> None:
    h = Harness(default=resp(500), max_total_backoff_duration=1.5, rand=0.999)
    result = h.send(evs(1))
    assert h.sleeps == [pytest.approx(0.54995)]  # then 1.0999 s would end at 1.65 > 1.5
    assert only_drop(result).reason == "backoff_duration_exceeded"


def test_total_backoff_0_means_no_retry() -> None:
    """Seed review: ``max_total_backoff_duration=0`` still allowed one extra attempt."""
    h = Harness(default=resp(500), max_total_backoff_duration=0)
    result = h.send(evs(1))
    assert len(h.posts) == 1
    assert h.sleeps == []
    assert only_drop(result).reason == "backoff_duration_exceeded"


def test_total_backoff_is_measured_on_the_monotonic_clock_from_the_first_failure() -> None:
    # Each request takes 1 s; the wall clock jumps around and must not matter.
    jumps = iter(range(10**6))
    h = Harness(
        default=resp(500),
        max_total_backoff_duration=3.0,
        latency=1.0,
        wall_clock=lambda: WALL0 + (-1) ** next(jumps) * 86400.0,
    )
    result = h.send(evs(1))
    # first failure at t=1; retries at 1.5 (fails at 2.5) and 3.5 (fails at 4.5); next would end at 6.5 - 1 > 3
    assert [p.at for p in h.posts] == [0.0, 1.5, 3.5]
    assert h.sleeps == [0.5, 1.0]
    assert only_drop(result).reason == "backoff_duration_exceeded"


# -- delivery.md §3.1 / 4: network errors ------------------------------------------------------------------------

NETWORK_KINDS = ["refused", "reset", "timeout", "dns", "tls", "other"]


@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_network_error_is_retried_and_counted_by_kind(kind: str) -> None:
    h = Harness([NetworkError(kind, OSError(kind)), OK])
    result = h.send(evs(2))
    assert len(h.posts) == 2
    assert h.sleeps == [0.5]
    assert h.poster.retry_counts == [None, "1"]
    assert result.delivered == [(evs(2), True)]
    assert h.network_errors() == {kind: 1}
    assert h.retries_by_status() == {kind: 1}


def test_persistent_network_error_exhausts_retries_with_status_none() -> None:
    cause = TimeoutError("read timed out")
    h = Harness(default=NetworkError("timeout", cause), max_retries=2)
    result = h.send(evs(1))
    assert len(h.posts) == 3
    assert h.sleeps == [0.5, 1.0]
    error = only_drop(result)
    assert (error.reason, error.status) == ("retries_exhausted", None)
    assert error.cause is cause
    assert h.network_errors() == {"timeout": 3}
    assert h.retries_by_status() == {"timeout": 2}


def test_configuration_error_is_dropped_at_once() -> None:
    cause = ValueError("unsupported scheme")
    h = Harness([NetworkError("configuration", cause), OK], max_retries=10)
    result = h.send(evs(3))
    assert len(h.posts) == 1
    assert h.sleeps == []
    error = only_drop(result)
    assert (error.reason, error.status) == ("configuration_error", None)
    assert error.cause is cause
    assert h.retries_by_status() == {}
    assert h.network_errors() == {}


# -- delivery.md §5: shutdown -----------------------------------------------------------------------------------


def test_shutdown_during_backoff_leaves_the_batch_pending() -> None:
    h = Harness([resp(500), OK], interrupt=lambda i, s: True)
    result = h.send(evs(4))
    assert len(h.posts) == 1  # no further request after the interrupted wait
    assert h.sleeps == [0.5]
    assert result.pending == evs(4)
    assert result.dropped == [] and result.delivered == []


def test_shutdown_during_a_retry_after_wait_leaves_the_batch_pending() -> None:
    h = Harness([r429("300"), OK], interrupt=lambda i, s: True)
    result = h.send(evs(2))
    assert len(h.posts) == 1
    assert result.pending == evs(2)
    assert result.dropped == []


def test_stopped_before_the_first_attempt_sends_nothing() -> None:
    h = Harness([OK], stopped=lambda: True)
    result = h.send(evs(5))
    assert h.posts == []
    assert result.pending == evs(5)
    assert result.attempts == 0


def test_no_request_after_shutdown_begins_between_attempts() -> None:
    stop = [False]

    def fail_and_stop(post: Post):
        stop[0] = True
        return resp(500)

    h = Harness([fail_and_stop, OK], stopped=lambda: stop[0])
    result = h.send(evs(2))
    assert len(h.posts) == 1
    assert result.pending == evs(2)


def test_shutdown_after_a_partial_result_keeps_only_the_retry_part_pending() -> None:
    h = Harness(
        [error_responses({"index": 1, "status": 500}, {"index": 2, "status": 400}), OK], interrupt=lambda i, s: True
    )
    result = h.send(evs(4))
    assert result.pending == [ev(1)]
    assert delivered_events(result) == [ev(0), ev(3)]
    assert dropped_events(result) == [ev(2)]


def test_shutdown_between_413_halves_keeps_the_rest_pending() -> None:
    stop = [False]

    def step(post: Post):
        if len(post.ids) > 2:
            return resp(413)
        stop[0] = True
        return OK

    h = Harness(default=step, stopped=lambda: stop[0])
    result = h.send(evs(4))
    assert delivered_events(result) == evs(2)
    assert result.pending == [ev(2), ev(3)]


# -- delivery.md §3.5: 413 splitting --------------------------------------------------------------------------------


def test_413_isolates_one_oversized_event_among_ten() -> None:
    items = evs(10)
    h = Harness(default=bad_if_present({"m3"}), max_retries=0)
    result = h.send(items)
    assert delivered_events(result) == [e for e in items if e != ev(3)]  # order kept
    error = only_drop(result)
    assert result.dropped[0][0] == [ev(3)]
    assert (error.reason, error.status) == ("non_retryable_status", 413)
    assert len(h.posts) == 9
    assert h.poster.retry_counts == [None] + [str(n) for n in range(1, 9)]
    assert h.sleeps == []


def test_413_split_until_the_halves_are_accepted() -> None:
    h = Harness(default=lambda p: resp(413) if len(p.ids) > 4 else OK, max_retries=0)
    result = h.send(evs(10))
    assert [len(p.ids) for p in h.posts] == [10, 5, 2, 3, 5, 2, 3]
    assert [len(group) for group, _ in result.delivered] == [2, 3, 2, 3]
    assert delivered_events(result) == evs(10)
    assert result.dropped == []


def test_413_with_two_oversized_events_drops_each_alone() -> None:
    h = Harness(default=bad_if_present({"m2", "m7"}), max_retries=0)
    result = h.send(evs(10))
    assert [group for group, _ in result.dropped] == [[ev(2)], [ev(7)]]
    assert all(err.status == 413 for _, err in result.dropped)
    assert len(delivered_events(result)) == 8


def test_413_halves_sent_with_the_same_bytes() -> None:
    items = [ev(i, ',"p":"%s"' % ("x" * i)) for i in range(6)]
    h = Harness(default=lambda p: resp(413) if len(p.ids) > 3 else OK)
    h.send(items)
    assert [p.batch_bytes for p in h.posts[1:]] == [b",".join(items[:3]), b",".join(items[3:])]


# -- delivery.md §3.5: per-event results ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [207, 200])
def test_partial_result_retries_listed_retryable_drops_listed_non_retryable(status: int) -> None:
    items = evs(5)
    h = Harness([error_responses({"index": 1, "status": 500}, {"index": 3, "status": 400}, status=status), OK])
    result = h.send(items)
    assert len(h.posts) == 2
    assert h.posts[1].batch_bytes == ev(1)  # same bytes, same messageId
    assert h.poster.retry_counts == [None, "1"]
    assert h.sleeps == [0.5]
    assert result.delivered == [([ev(0), ev(2), ev(4)], False), ([ev(1)], True)]
    error = only_drop(result)
    assert result.dropped[0][0] == [ev(3)]
    assert (error.reason, error.status) == ("non_retryable_status", 400)


def test_partial_result_listed_429_is_retried_as_a_smaller_batch() -> None:
    h = Harness([error_responses({"index": 0, "status": 429}, {"index": 2, "status": 503}), OK])
    result = h.send(evs(4))
    assert h.posts[1].batch_bytes == ev(0) + b"," + ev(2)
    assert sorted(delivered_events(result)) == evs(4)


def test_partial_result_retry_indexes_the_smaller_batch_and_spends_max_retries() -> None:
    def m1_fails(post: Post):
        return error_responses({"index": post.ids.index("m1"), "status": 500})

    h = Harness(default=m1_fails, max_retries=1)
    result = h.send(evs(5))
    assert [p.ids for p in h.posts] == [["m0", "m1", "m2", "m3", "m4"], ["m1"]]
    assert h.poster.retry_counts == [None, "1"]
    error = only_drop(result)
    assert result.dropped[0][0] == [ev(1)]
    assert (error.reason, error.status) == ("retries_exhausted", 500)
    assert len(delivered_events(result)) == 4


def test_partial_result_with_several_drop_statuses() -> None:
    h = Harness([error_responses({"index": 0, "status": 400}, {"index": 2, "status": 422})])
    result = h.send(evs(3))
    assert sorted((err.status, group) for group, err in result.dropped) == [(400, [ev(0)]), (422, [ev(2)])]
    assert delivered_events(result) == [ev(1)]


def test_partial_result_ignores_out_of_range_index_and_missing_status() -> None:
    h = Harness(
        [
            error_responses(
                {"index": 5, "status": 500},
                {"index": 99, "status": 400},
                {"index": -1, "status": 500},
                {"index": 1},
                {"status": 400},
                {"index": 2, "status": 400},
            )
        ]
    )
    result = h.send(evs(5))
    assert len(h.posts) == 1
    assert dropped_events(result) == [ev(2)]
    assert delivered_events(result) == [ev(0), ev(1), ev(3), ev(4)]


def test_partial_result_with_only_ignored_entries_delivers_all() -> None:
    h = Harness([error_responses({"index": 7, "status": 500}, {"index": 0})])
    result = h.send(evs(3))
    assert result.delivered == [(evs(3), False)]


@pytest.mark.parametrize(
    "body", [b"", b'{"success":true}', b'{"errorResponses":[]}', b'{"errorResponses":null}', b"not json", b"[1,2]"]
)
def test_2xx_without_error_responses_delivers_the_whole_batch(body: bytes) -> None:
    h = Harness([resp(200, body=body)])
    result = h.send(evs(3))
    assert result.delivered == [(evs(3), False)]
    assert len(h.posts) == 1


def test_every_event_reported_exactly_once_across_split_partial_and_rate_limit() -> None:
    """Seed review (double task_done / items lost): every path settles each event exactly once."""

    def step(post: Post):
        if len(post.ids) == 6:
            return resp(413)
        if post.ids == ["m0", "m1", "m2"]:
            return error_responses({"index": 0, "status": 400}, {"index": 1, "status": 500})
        if post.ids == ["m1"]:
            return r429("50")
        return OK

    h = Harness(default=step, max_rate_limit_duration=10)
    result = h.send(evs(6))
    reasons = {err.reason: group for group, err in result.dropped}
    assert reasons == {"non_retryable_status": [ev(0)], "rate_limit_duration_exceeded": [ev(1)]}
    assert delivered_events(result) == [ev(2), ev(3), ev(4), ev(5)]
    assert result.pending == []
