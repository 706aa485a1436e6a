"""The retry policy as pure data (delivery.md §3.1, 3.3, 3.4): no server, no clock, no sleeping.

Expectations are written from the contract (docs/delivery.md), never computed by the code under test.
"""

from __future__ import annotations

import email.utils
import math
import time

import pytest

from segment.analytics import Client
from segment.analytics.retry import (
    Drop,
    NoAuth,
    RetryPolicy,
    RetryState,
    Wait,
    backoff_delay,
    classify_network_error,
    classify_status,
    parse_retry_after,
)

NOW = 1_700_000_000.0  # fixed wall clock for HTTP-date tests (an integer, so formatdate is exact)

# -- delivery.md §3.1 table, transcribed ---------------------------------------------

SPEC_RETRYABLE_4XX = {408, 410, 429, 460}
SPEC_NON_RETRYABLE_5XX = {501, 505}


def spec_outcome(status: int, oauth: bool) -> str:
    """The delivery.md §3.1 table, written out independently of the library."""
    if 200 <= status <= 299:
        return "delivered"
    if status in SPEC_RETRYABLE_4XX:
        return "retry"
    if status == 511:
        return "retry" if oauth else "drop"
    if 500 <= status <= 599 and status not in SPEC_NON_RETRYABLE_5XX:
        return "retry"
    return "drop"  # every other 4xx, 501, 505, 1xx, 3xx, and anything outside 100-599


@pytest.mark.parametrize("oauth", [False, True])
def test_every_status_100_to_599_is_classified_per_spec(oauth: bool) -> None:
    wrong = {}
    for status in range(100, 600):
        verdict = classify_status(status, oauth=oauth)
        expected = spec_outcome(status, oauth)
        if verdict.action != expected:
            wrong[status] = (verdict.action, expected)
        if expected == "drop" and verdict.reason != "non_retryable_status":
            wrong[status] = (verdict.reason, "non_retryable_status")
    assert wrong == {}


def test_the_table_itself_has_the_expected_shape() -> None:
    # Guards the transcription above: 100 delivered, 4 + 98 retried (no OAuth), the rest dropped.
    outcomes = [spec_outcome(s, oauth=False) for s in range(100, 600)]
    assert outcomes.count("delivered") == 100
    assert outcomes.count("retry") == 4 + (100 - 3)  # 5xx minus 501, 505, 511
    assert outcomes.count("drop") == 500 - 100 - 101
    assert [spec_outcome(s, oauth=True) for s in range(100, 600)].count("retry") == 4 + 98


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (204, "delivered"),
        (207, "delivered"),
        (299, "delivered"),
        (408, "retry"),
        (410, "retry"),
        (429, "retry"),
        (460, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
        (599, "retry"),
        (400, "drop"),
        (401, "drop"),
        (403, "drop"),
        (404, "drop"),
        (413, "drop"),
        (422, "drop"),
        (418, "drop"),
        (409, "drop"),
        (499, "drop"),
        (461, "drop"),
        (407, "drop"),
        (501, "drop"),
        (505, "drop"),
        (511, "drop"),
        (100, "drop"),
        (101, "drop"),
        (199, "drop"),
        (300, "drop"),
        (302, "drop"),
        (304, "drop"),
        (399, "drop"),
    ],
)
def test_named_statuses(status: int, action: str) -> None:
    assert classify_status(status).action == action
    assert RetryPolicy().classify(status).action == action


@pytest.mark.parametrize("status", [0, 1, 99, 600, 999, -1, 1000, 2000])
@pytest.mark.parametrize("oauth", [False, True])
def test_codes_outside_100_599_are_dropped(status: int, oauth: bool) -> None:
    verdict = classify_status(status, oauth=oauth)
    assert verdict.action == "drop"
    assert verdict.reason == "non_retryable_status"


def test_410_and_460_are_retried_seed_review_item_7() -> None:
    """The seed review questioned 410; delivery.md §3.1 keeps 410 and 460 retryable."""
    assert classify_status(410).action == "retry"
    assert classify_status(460).action == "retry"


def test_501_and_505_are_dropped() -> None:
    for status in (501, 505):
        for oauth in (False, True):
            assert classify_status(status, oauth=oauth).action == "drop"


def test_511_is_retried_only_with_oauth() -> None:
    assert classify_status(511, oauth=False).action == "drop"
    assert classify_status(511, oauth=True).action == "retry"
    assert RetryPolicy(oauth=True).classify(511).action == "retry"
    assert RetryPolicy(oauth=False).classify(511).action == "drop"


def test_oauth_changes_nothing_but_511() -> None:
    changed = [s for s in range(-1, 1001) if classify_status(s, False) != classify_status(s, True)]
    assert changed == [511]


@pytest.mark.parametrize(
    ("outcome", "step"),
    [
        (NoAuth(None, 0.0), "wait"),  # no answer from the token endpoint: it may come back
        (NoAuth(429, 0.0), "wait"),
        (NoAuth(408, 0.0), "wait"),
        (NoAuth(500, 0.0), "wait"),
        (NoAuth(400, 0.0), "configuration_error"),
        (NoAuth(401, 0.0), "configuration_error"),
        (NoAuth(None, 0.0, unusable=True), "configuration_error"),  # e.g. a key that cannot sign
        (NoAuth(500, 0.0, unusable=True), "configuration_error"),
    ],
)
def test_no_authorization_is_retried_unless_the_credentials_cannot_work(outcome: NoAuth, step: str) -> None:
    result = RetryPolicy(oauth=True).next_step(RetryState(requests=1), outcome, 0.0)
    assert (result.reason if isinstance(result, Drop) else "wait" if isinstance(result, Wait) else result) == step


@pytest.mark.parametrize("kind", ["refused", "reset", "timeout", "dns", "tls", "other"])
def test_network_errors_are_retried(kind: str) -> None:
    assert classify_network_error(kind).action == "retry"


def test_configuration_error_is_dropped_at_once() -> None:
    verdict = classify_network_error("configuration")
    assert verdict.action == "drop"
    assert verdict.reason == "configuration_error"


# -- delivery.md §3.3 backoff -----------------------------------------------------------


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
@pytest.mark.parametrize("k", range(1, 21))
def test_backoff_delay_bounds(k: int, rand: float) -> None:
    base = min(60.0, 0.5 * 2 ** (k - 1))
    delay = backoff_delay(k, rand)
    assert base <= delay <= min(60.0, 1.1 * base) + 1e-9
    assert 0 < delay <= 60.0
    if rand == 0.0:
        assert delay == base
    elif base < 60.0:
        assert delay > base  # jitter is really added below the cap


def test_backoff_schedule_without_jitter() -> None:
    assert [backoff_delay(k, 0.0) for k in range(1, 12)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60]


def test_backoff_jitter_is_at_most_ten_percent_and_grows_with_rand() -> None:
    for k in range(1, 8):
        low, mid, high = (backoff_delay(k, r) for r in (0.0, 0.5, 0.999))
        assert low < mid < high <= 1.1 * low


def test_backoff_delay_is_monotonic_and_capped_for_huge_k() -> None:
    delays = [backoff_delay(k, 0.999) for k in range(1, 200)]
    assert delays == sorted(delays)
    assert backoff_delay(10_000, 0.999) == 60.0
    assert backoff_delay(10_000, 0.0) == 60.0


def test_backoff_delay_rejects_retry_zero() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, 0.0)


# -- delivery.md §3.4 Retry-After parsing -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "delay"),
    [
        ("1", 1.0),
        ("120", 120.0),
        ("300", 300.0),
        ("301", 300.0),
        ("100000", 300.0),
        (" 7 ", 7.0),
        ("9" * 18, 300.0),
        ("0" * 30 + "5", 5.0),
    ],
)
def test_retry_after_seconds(value: str, delay: float) -> None:
    parsed = parse_retry_after(value, NOW)
    assert parsed.delay == delay
    assert parsed.malformed is False


@pytest.mark.parametrize("value", ["0", "-5", "-0", "", "   ", None])
def test_retry_after_absent_zero_or_negative_is_absent_not_malformed(value: str | None) -> None:
    parsed = parse_retry_after(value, NOW)
    assert parsed.delay is None
    assert parsed.malformed is False


@pytest.mark.parametrize(
    "value", ["abc", "1.5", "soon", "1e3", "5 s", "0x10", "30 seconds", "Tomorrow, 25:00", "9" * 19, "7" * 5000]
)
def test_retry_after_garbage_is_absent_and_malformed(value: str) -> None:
    parsed = parse_retry_after(value, NOW)
    assert parsed.delay is None
    assert parsed.malformed is True


def test_retry_after_http_date_in_the_future() -> None:
    value = email.utils.formatdate(NOW + 30, usegmt=True)
    assert value.endswith(" GMT")
    parsed = parse_retry_after(value, NOW)
    assert parsed.delay == pytest.approx(30.0)
    assert parsed.malformed is False


def test_retry_after_http_date_depends_on_now() -> None:
    value = email.utils.formatdate(NOW + 100, usegmt=True)
    assert parse_retry_after(value, NOW + 40).delay == pytest.approx(60.0)


@pytest.mark.parametrize("offset", [-30, -1, 0, -86400 * 365 * 30])
def test_retry_after_http_date_now_or_past_is_absent(offset: float) -> None:
    parsed = parse_retry_after(email.utils.formatdate(NOW + offset, usegmt=True), NOW)
    assert parsed.delay is None
    assert parsed.malformed is False


@pytest.mark.parametrize("value", [email.utils.formatdate(NOW + 86400, usegmt=True), "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_retry_after_http_date_far_future_is_capped(value: str) -> None:
    assert parse_retry_after(value, NOW).delay == 300.0


@pytest.fixture
def far_local_zone(monkeypatch: pytest.MonkeyPatch):
    """Run with a local time zone far from UTC, so a date read as local time would be hours off."""
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_local_zone")
def test_retry_after_http_date_with_minus_0000_zone() -> None:
    value = time.strftime("%a, %d %b %Y %H:%M:%S -0000", time.gmtime(NOW + 45))
    parsed = parse_retry_after(value, NOW)
    assert parsed.delay == pytest.approx(45.0)
    assert parsed.malformed is False


def test_retry_after_http_date_with_numeric_zone() -> None:
    # 45 s from now, written in UTC+01:00.
    value = time.strftime("%a, %d %b %Y %H:%M:%S +0100", time.gmtime(NOW + 45 + 3600))
    assert parse_retry_after(value, NOW).delay == pytest.approx(45.0)


@pytest.mark.parametrize(
    "fmt",
    [
        "%A, %d-%b-%y %H:%M:%S GMT",  # obsolete RFC 850 form, which RFC 9110 says recipients must accept
        "%a %b %d %H:%M:%S %Y",  # obsolete asctime() form
    ],
)
@pytest.mark.usefixtures("far_local_zone")
def test_retry_after_obsolete_http_date_forms(fmt: str) -> None:
    value = time.strftime(fmt, time.gmtime(NOW + 20))
    assert parse_retry_after(value, NOW).delay == pytest.approx(20.0)


# -- budgets (delivery.md §3.3, 3.4) ----------------------------------------------------------

BUDGETS = ["max_retries", "max_total_backoff_duration", "max_rate_limit_duration"]


def test_budget_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_retries == 10
    assert policy.max_total_backoff_duration == 43200
    assert policy.max_rate_limit_duration == 1800
    assert policy.oauth is False


@pytest.mark.parametrize("name", BUDGETS)
@pytest.mark.parametrize("bad", [None, -1, -0.001, -1e9, math.nan, "5", True])
def test_bad_budget_raises_value_error_not_type_error(name: str, bad: object) -> None:
    """Seed review: ``None`` budgets reached arithmetic and raised TypeError mid-retry."""
    with pytest.raises(ValueError):
        RetryPolicy(**{name: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BUDGETS)
def test_zero_budget_is_allowed(name: str) -> None:
    assert getattr(RetryPolicy(**{name: 0}), name) == 0


def test_max_retries_must_be_whole() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BUDGETS)
@pytest.mark.parametrize("bad", [None, -1])
def test_client_rejects_bad_budgets(name: str, bad: object) -> None:
    """delivery.md §3.3: ``Client(...)`` itself rejects None/negative budgets with ValueError."""
    with pytest.raises(ValueError):
        Client("wk", send=False, **{name: bad})  # type: ignore[arg-type]


def test_may_retry_counts_up_to_max_retries() -> None:
    policy = RetryPolicy(max_retries=3)
    assert [policy.may_retry(k) for k in range(1, 6)] == [True, True, True, False, False]
    assert RetryPolicy(max_retries=0).may_retry(1) is False


def test_backoff_fits_is_inclusive_and_zero_means_never() -> None:
    policy = RetryPolicy(max_total_backoff_duration=10)
    assert policy.backoff_fits(first_failure=100.0, now=109.5, delay=0.5) is True  # ends exactly at the budget
    assert policy.backoff_fits(first_failure=100.0, now=109.5, delay=0.6) is False
    assert policy.backoff_fits(first_failure=100.0, now=100.0, delay=0.5) is True
    assert RetryPolicy(max_total_backoff_duration=0).backoff_fits(100.0, 100.0, 0.5) is False


def test_rate_limit_fits_is_inclusive_and_zero_means_never() -> None:
    policy = RetryPolicy(max_rate_limit_duration=60)
    assert policy.rate_limit_fits(episode_start=0.0, now=30.0, delay=30.0) is True
    assert policy.rate_limit_fits(episode_start=0.0, now=30.0, delay=31.0) is False
    assert policy.rate_limit_fits(episode_start=0.0, now=0.0, delay=300.0) is False
    assert RetryPolicy(max_rate_limit_duration=0).rate_limit_fits(0.0, 0.0, 1.0) is False
