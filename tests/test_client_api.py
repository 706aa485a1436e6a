"""The public API (delivery.md §2): every call and keyword, message fields, argument errors, snapshotting."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any, Callable

import pytest

from segment.analytics import ArgumentError, Client
from segment.analytics.testing import MockTrackingAPI, Reply
from segment.analytics.version import VERSION

from .conftest import WRITE_KEY, ErrorLog

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(\+00:00|Z|[+-]\d\d:\d\d)$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def deliver(client: Client, api: MockTrackingAPI) -> list[dict[str, Any]]:
    assert client.flush(timeout=5) == 0
    return api.events()


def test_every_call_with_every_keyword_reaches_the_api(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    client = make_client()
    ts = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
    common: dict[str, Any] = {
        "context": {"ip": "1.2.3.4"},
        "timestamp": ts,
        "integrations": {"Amplitude": False},
    }
    results = [
        client.track(
            user_id="u1", event="Played", properties={"a": 1}, anonymous_id="anon", message_id="m-track", **common
        ),
        client.identify(
            user_id="u1", traits={"email": "a@b.c"}, anonymous_id="anon", message_id="m-identify", **common
        ),
        client.group(
            user_id="u1", group_id="g1", traits={"plan": "pro"}, anonymous_id="anon", message_id="m-group", **common
        ),
        client.alias(previous_id="old", user_id="u1", message_id="m-alias", **common),
        client.page(
            user_id="u1",
            category="Docs",
            name="Intro",
            properties={"path": "/"},
            anonymous_id="anon",
            message_id="m-page",
            **common,
        ),
        client.screen(
            user_id="u1",
            category="Home",
            name="Main",
            properties={"x": 1},
            anonymous_id="anon",
            message_id="m-screen",
            **common,
        ),
    ]
    assert all(ok for ok, _ in results)
    events = {e["messageId"]: e for e in deliver(client, api)}
    assert set(events) == {"m-track", "m-identify", "m-group", "m-alias", "m-page", "m-screen"}
    track = events["m-track"]
    assert track["type"] == "track" and track["event"] == "Played" and track["properties"] == {"a": 1}
    assert track["userId"] == "u1" and track["anonymousId"] == "anon"
    assert track["integrations"] == {"Amplitude": False}
    assert track["context"]["ip"] == "1.2.3.4"
    assert track["context"]["library"] == {"name": "analytics-python", "version": VERSION}
    assert track["timestamp"] == "2024-05-06T07:08:09.123+00:00"
    assert events["m-identify"]["traits"] == {"email": "a@b.c"}
    assert events["m-group"]["groupId"] == "g1" and events["m-group"]["traits"] == {"plan": "pro"}
    assert events["m-alias"]["previousId"] == "old" and events["m-alias"]["userId"] == "u1"
    page = events["m-page"]
    assert (page["type"], page["name"], page["category"], page["properties"]) == (
        "page",
        "Intro",
        "Docs",
        {"path": "/"},
    )
    screen = events["m-screen"]
    assert (screen["type"], screen["name"], screen["category"]) == ("screen", "Main", "Home")


def test_positional_arguments_follow_analytics_python(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    client = make_client()
    _, track = client.track("u1", "Event", {"p": 1}, {"c": 1}, None, "anon", {"All": True}, "mid-1")
    _, identify = client.identify("u1", {"t": 1}, {"c": 1}, None, "anon", {}, "mid-2")
    _, group = client.group("u1", "g1", {"t": 1}, {}, None, "anon", {}, "mid-3")
    _, alias = client.alias("prev", "u1", {}, None, {}, "mid-4")
    _, page = client.page("u1", "cat", "name", {"p": 1}, {}, None, "anon", {}, "mid-5")
    _, screen = client.screen("u1", "cat", "name", {"p": 1}, {}, None, "anon", {}, "mid-6")
    assert (track["event"], track["properties"], track["anonymousId"], track["messageId"]) == (
        "Event",
        {"p": 1},
        "anon",
        "mid-1",
    )
    assert track["integrations"] == {"All": True}
    assert identify["traits"] == {"t": 1} and identify["messageId"] == "mid-2"
    assert group["groupId"] == "g1" and group["messageId"] == "mid-3"
    assert alias["previousId"] == "prev" and alias["userId"] == "u1"
    assert (page["category"], page["name"]) == ("cat", "name")
    assert (screen["category"], screen["name"], screen["messageId"]) == ("cat", "name", "mid-6")
    assert len(deliver(client, api)) == 6


def test_returned_message_has_the_analytics_python_shape(make_client: Callable[..., Client]) -> None:
    ok, msg = make_client().track("userId", "python test event")
    assert ok is True
    assert msg["event"] == "python test event"
    assert isinstance(msg["timestamp"], str) and ISO_MS.match(msg["timestamp"])
    assert isinstance(msg["messageId"], str) and UUID4.match(msg["messageId"])
    assert msg["userId"] == "userId"
    assert msg["properties"] == {}
    assert msg["type"] == "track"
    assert msg["context"]["library"]["name"] == "analytics-python"


def test_ids_are_stringified_and_unique(make_client: Callable[..., Client]) -> None:
    client = make_client(send=False)
    _, msg = client.track(1234, "event", anonymous_id=99)
    assert msg["userId"] == "1234" and msg["anonymousId"] == "99"
    _, msg = client.identify(anonymous_id=uuid.UUID(int=5))
    assert msg["anonymousId"] == str(uuid.UUID(int=5)) and msg["userId"] is None
    ids = {client.track("u", "e")[1]["messageId"] for _ in range(2000)}
    assert len(ids) == 2000 and all(UUID4.match(i) for i in ids)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2020, 1, 2, 3, 4, 5, 678901), "2020-01-02T03:04:05.678+00:00"),  # naive -> UTC
        (dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2020-01-02T03:04:05.000+02:00"),
        ("2020-01-02T03:04:05Z", "2020-01-02T03:04:05.000+00:00"),
        ("2020-01-02T03:04:05.5+01:00", "2020-01-02T03:04:05.500+01:00"),
        ("2020-01-02", "2020-01-02T00:00:00.000+00:00"),
        (dt.date(2020, 1, 2), "2020-01-02T00:00:00.000+00:00"),
    ],
)
def test_timestamps_are_iso8601_with_zone_and_ms(make_client: Callable[..., Client], value: Any, expected: str) -> None:
    _, msg = make_client(send=False).track("u", "e", timestamp=value)
    assert msg["timestamp"] == expected


def test_default_timestamp_is_now_in_utc(make_client: Callable[..., Client]) -> None:
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    _, msg = make_client(send=False).track("u", "e")
    stamp = dt.datetime.fromisoformat(msg["timestamp"])
    assert ISO_MS.match(msg["timestamp"]) and before <= stamp <= dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.track(event="e"), "user_id"),
        (lambda c: c.track("u"), "event"),
        (lambda c: c.track("u", ""), "event"),
        (lambda c: c.track("u", 5), "event"),
        (lambda c: c.track("u", "e", properties=[1]), "properties"),
        (lambda c: c.track("u", "e", context="x"), "context"),
        (lambda c: c.track("u", "e", integrations=3), "integrations"),
        (lambda c: c.track("u", "e", timestamp=12345), "timestamp"),
        (lambda c: c.track("u", "e", timestamp="yesterday"), "timestamp"),
        (lambda c: c.track(["u"], "e"), "user_id"),
        (lambda c: c.track(anonymous_id={"a": 1}, event="e"), "anonymous_id"),
        (lambda c: c.track("u", "e", message_id=[1]), "message_id"),
        (lambda c: c.identify(), "user_id"),
        (lambda c: c.identify("u", traits="x"), "traits"),
        (lambda c: c.group("u"), "group_id"),
        (lambda c: c.group("u", group_id={"x": 1}), "group_id"),
        (lambda c: c.group(group_id="g"), "user_id"),
        (lambda c: c.alias(user_id="u"), "previous_id"),
        (lambda c: c.alias("p"), "user_id"),
        (lambda c: c.page("u", name=5), "name"),
        (lambda c: c.screen("u", category=5), "category"),
        (lambda c: c.page(), "user_id"),
    ],
)
def test_misuse_raises_naming_the_field(
    make_client: Callable[..., Client], call: Callable[[Client], Any], field: str, api: MockTrackingAPI
) -> None:
    client = make_client()
    with pytest.raises(ArgumentError) as info:
        call(client)
    assert info.value.field == field
    assert field.split("_")[0] in str(info.value)
    # the same exception is an AssertionError (what analytics-python raised), a TypeError and a ValueError
    assert isinstance(info.value, AssertionError) and isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)
    assert client.stats()["accepted"] == 0
    assert client.flush(timeout=2) == 0 and api.request_count() == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"write_key": None}, "write_key"),
        ({"write_key": ""}, "write_key"),
        ({"write_key": 5}, "write_key"),
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"thread": 0}, "thread"),
        ({"upload_size": 0}, "upload_size"),
        ({"upload_interval": -1}, "upload_interval"),
        ({"timeout": 0}, "timeout"),
        ({"on_error": "not callable"}, "on_error"),
    ],
)
def test_bad_options_raise_naming_the_option(options: dict[str, Any], field: str) -> None:
    write_key = options.pop("write_key", WRITE_KEY)
    with pytest.raises(ArgumentError) as info:
        Client(write_key, send=False, **options)
    assert info.value.field == field


@pytest.mark.parametrize("budget", ["max_total_backoff_duration", "max_rate_limit_duration", "max_retries"])
@pytest.mark.parametrize("value", [None, -1])
def test_none_or_negative_budgets_raise_value_error(budget: str, value: Any) -> None:
    with pytest.raises(ValueError, match=budget):
        Client(WRITE_KEY, send=False, **{budget: value})


def test_defaults_match_the_contract() -> None:
    client = Client(WRITE_KEY, send=False)
    assert (client.max_retries, client.max_total_backoff_duration, client.max_rate_limit_duration) == (10, 43200, 1800)
    assert (client.timeout, client.upload_size, client.upload_interval, client.thread) == (15, 100, 0.5, 1)
    assert client.queue.maxsize == 10000 and client.gzip is False and client.sync_mode is False


def test_properties_are_snapshotted_when_the_call_returns(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    client = make_client(upload_interval=0.3)
    props: dict[str, Any] = {"count": 1, "items": ["a"], "nested": {"k": "v"}}
    context: dict[str, Any] = {"ip": "1.1.1.1"}
    client.track("u", "e", props, context=context, message_id="snap")
    props["count"] = 2
    props["items"].append("b")
    props["nested"]["k"] = "changed"
    context["ip"] = "9.9.9.9"
    [event] = deliver(client, api)
    assert event["properties"] == {"count": 1, "items": ["a"], "nested": {"k": "v"}}
    assert event["context"]["ip"] == "1.1.1.1"
    assert "library" not in context  # the caller's context dict is not modified


def test_send_false_validates_but_sends_nothing(api: MockTrackingAPI) -> None:
    client = Client(WRITE_KEY, host=api.url, send=False)
    ok, msg = client.track("u", "e")
    assert ok and msg["event"] == "e"
    with pytest.raises(ArgumentError):
        client.track("u")
    assert client.flush(timeout=1) == 0
    assert api.request_count() == 0 and not client.consumers


def test_sync_mode_sends_in_the_callers_thread(api: MockTrackingAPI, errors: ErrorLog) -> None:
    client = Client(WRITE_KEY, host=api.url, sync_mode=True, on_error=errors.on_error)
    ok, msg = client.identify("u", {"a": 1})
    assert ok and not client.consumers and client.queue.empty()
    assert api.message_ids() == [msg["messageId"]]  # already there: no flush needed
    api.script(Reply(status=400))
    ok, msg = client.track("u", "rejected")
    assert ok is False
    assert errors.reasons() == ["non_retryable_status"]
    assert client.stats()["delivered"] == 1 and client.stats()["dropped"] == 1


def test_module_level_api(api: MockTrackingAPI, errors: ErrorLog) -> None:
    import segment.analytics as analytics

    saved = {name: getattr(analytics, name) for name in ("write_key", "host", "on_error", "upload_interval")}
    try:
        analytics.write_key = WRITE_KEY
        analytics.host = api.url
        analytics.on_error = errors.on_error
        analytics.upload_interval = 0.1
        assert analytics.track("u", "module event")[0]
        assert analytics.identify("u", {"a": 1})[0]
        assert analytics.group("u", "g")[0]
        assert analytics.alias("p", "u")[0]
        assert analytics.page("u")[0]
        assert analytics.screen("u")[0]
        assert analytics.flush(timeout=5) == 0
        assert analytics.stats()["delivered"] == 6
        assert analytics.shutdown(timeout=5) == 0
        assert analytics.default_client is None
        assert sorted(e["type"] for e in api.events()) == ["alias", "group", "identify", "page", "screen", "track"]
        with pytest.raises(ArgumentError):
            analytics.track()
    finally:
        analytics.shutdown(timeout=1)
        for name, value in saved.items():
            setattr(analytics, name, value)
