"""analytics-python's names kept for code written against 2.4.0: ``request.post``, ``DatetimeSerializer``,
``utils``, the default client's and the consumers' attributes. ``post`` is tested over real HTTP to the
mock Tracking API (and a tiny HTTP proxy); the ``utils`` tables follow what analytics-python 2.4.0's
``segment/analytics/utils.py`` does (see bench/reference_suite for its own tests, run unmodified).
"""

from __future__ import annotations

import datetime as _dt
import enum
import gzip as _gzip
import json
import logging
import re
import socket
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Callable, Optional

import pytest
import requests
from dateutil.tz import tzlocal, tzutc

import segment.analytics as analytics
from segment.analytics import Client, compat, errors, request, utils, wire
from segment.analytics.encoding import encode
from segment.analytics.errors import APIError, ArgumentError
from segment.analytics.testing import MockTrackingAPI, Reply

from ._http import LocalHTTPServer
from .conftest import WRITE_KEY, ErrorLog

MSG = {"type": "track", "event": "python event", "userId": "userId", "messageId": "m-1"}


pytestmark = pytest.mark.usefixtures("no_env_proxy")  # requests to 127.0.0.1 never go through a proxy


class TokenSource:
    """A stand-in for an OAuth manager: hands out ``token`` and counts ``clear_token()`` calls."""

    def __init__(self, token: Optional[str] = "tok-3f9a1c") -> None:
        self.token = token
        self.cleared = 0

    def get_token(self) -> Optional[str]:
        return self.token

    def clear_token(self) -> None:
        self.cleared += 1


# -- the names are where analytics-python users import them from ---------------------------------------


def test_request_module_re_exports_the_compat_names() -> None:
    assert request.post is compat.post
    assert request.DatetimeSerializer is compat.DatetimeSerializer
    assert request.APIError is errors.APIError is analytics.APIError
    from segment.analytics.request import APIError as imported
    from segment.analytics.request import DatetimeSerializer as serializer
    from segment.analytics.request import post as posting

    assert (imported, serializer, posting) == (APIError, compat.DatetimeSerializer, compat.post)


# -- request.post over real HTTP ---------------------------------------------------------------------


def test_post_sends_one_batch_with_the_pipelines_wire_format(api: MockTrackingAPI) -> None:
    response = request.post(WRITE_KEY, host=api.url, batch=[MSG, {**MSG, "messageId": "m-2"}])
    assert isinstance(response, requests.Response)
    assert (response.status_code, response.ok, response.json()) == (200, True, {"success": True})
    [sent] = api.requests()
    assert sent.path == "/v1/batch" and sent.retry_count is None
    assert sent.header("Authorization") == wire.headers(f"Basic {_b64(WRITE_KEY + ':')}", False, 0)["Authorization"]
    assert sent.header("Content-Type") == "application/json"
    assert sent.header("User-Agent") == wire.USER_AGENT
    assert sent.header("Content-Encoding") is None
    assert [e["messageId"] for e in sent.batch] == ["m-1", "m-2"]
    assert sent.body["writeKey"] == WRITE_KEY
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", sent.body["sentAt"])
    # byte for byte what the delivery pipeline's envelope builds for the same events (sentAt aside)
    expected = wire.Envelope(WRITE_KEY).body([encode(MSG), encode({**MSG, "messageId": "m-2"})], 0.0)
    assert _without_sent_at(sent.raw_body) == _without_sent_at(expected)


def test_post_keeps_other_fields_and_a_given_sent_at(api: MockTrackingAPI) -> None:
    request.post(WRITE_KEY, api.url, batch=[MSG], sentAt="2020-01-02T03:04:05.000+00:00", context={"ip": "1.2.3.4"})
    body = api.requests()[0].body
    assert (body["sentAt"], body["context"], body["writeKey"]) == (
        "2020-01-02T03:04:05.000+00:00",
        {"ip": "1.2.3.4"},
        WRITE_KEY,
    )


def test_post_makes_values_json_safe_instead_of_raising(api: MockTrackingAPI) -> None:
    when = _dt.datetime(2012, 3, 4, 5, 6, 7, tzinfo=_dt.timezone.utc)
    odd = {"when": when, "price": Decimal("1.5"), "tags": {"a"}, "fn": len, "nan": float("nan"), "id": uuid.UUID(int=1)}
    request.post(WRITE_KEY, api.url, batch=[{**MSG, "properties": odd}])
    raw = api.requests()[0].raw_body
    props = json.loads(raw, parse_constant=_no_constants)["batch"][0]["properties"]
    assert props["when"] == when.isoformat() and props["price"] == 1.5 and props["tags"] == ["a"]
    assert props["nan"] is None and props["id"] == str(uuid.UUID(int=1)) and isinstance(props["fn"], str)


def test_post_gzip(api: MockTrackingAPI) -> None:
    request.post(WRITE_KEY, api.url, True, batch=[MSG])
    [sent] = api.requests()
    assert sent.header("Content-Encoding") == "gzip"
    assert json.loads(_gzip.decompress(sent.raw_body))["batch"] == [MSG]


@pytest.mark.parametrize(("retry_count", "header"), [(0, None), (1, "1"), (5, "5")])
def test_post_x_retry_count(api: MockTrackingAPI, retry_count: int, header: Optional[str]) -> None:
    request.post(WRITE_KEY, api.url, retry_count=retry_count, batch=[MSG])
    assert api.requests()[0].header("X-Retry-Count") == header


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_post_any_2xx_is_success(api: MockTrackingAPI, status: int) -> None:
    api.script(Reply(status=status, body=b""))
    assert request.post(WRITE_KEY, api.url, batch=[MSG]).status_code == status


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (400, {"code": "invalid_request", "message": "Bad batch"}, "invalid_request", "Bad batch"),
        (429, {"code": "rate_limit", "message": "Too Many Requests"}, "rate_limit", "Too Many Requests"),
        (500, b"upstream exploded", "unknown", "upstream exploded"),
        (400, [], "unknown", "[]"),
        (400, '"oops"', "unknown", '"oops"'),
        (400, "5", "unknown", "5"),
        (400, "null", "unknown", "null"),
        (400, {"code": "only-code"}, "unknown", '{"code":"only-code"}'),
        (413, "[" * 100_000, "unknown", "[" * 2000),  # nested too deeply to parse: still an APIError
    ],
)
def test_post_raises_api_error_on_an_error_status(
    api: MockTrackingAPI, status: int, body: Any, code: str, message: str
) -> None:
    api.script(Reply(status=status, body=body))
    with pytest.raises(APIError) as info:
        request.post(WRITE_KEY, api.url, batch=[MSG])
    exc = info.value
    assert (exc.status, exc.code, exc.message) == (status, code, message)
    assert isinstance(exc.response, requests.Response) and exc.response.status_code == status
    assert str(exc) == f"[Segment] {code}: {message} ({status})"
    assert api.request_count() == 1  # post never retries


@pytest.mark.parametrize("status", [301, 302, 307, 308, 300, 304])
def test_post_does_not_follow_redirects(api: MockTrackingAPI, status: int) -> None:
    api.script(Reply(status=status, headers={"Location": api.url + "/elsewhere"}, body=b""))
    with pytest.raises(APIError) as info:
        request.post(WRITE_KEY, api.url, batch=[MSG])
    assert (info.value.status, info.value.code) == (status, "redirect")
    assert [r.path for r in api.requests()] == ["/v1/batch"]


def test_post_error_texts_never_carry_the_write_key(api: MockTrackingAPI) -> None:
    api.script(Reply(status=401, body={"code": "auth", "message": f"bad key {WRITE_KEY} ({_b64(WRITE_KEY + ':')})"}))
    with pytest.raises(APIError) as info:
        request.post(WRITE_KEY, api.url, batch=[MSG])
    assert WRITE_KEY not in str(info.value) and _b64(WRITE_KEY + ":") not in str(info.value)


def test_post_logs_the_body_without_the_write_key(api: MockTrackingAPI, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="segment"):
        request.post("compat-secret-key-71", api.url, batch=[MSG])
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "request body" in text and "python event" in text and "compat-secret-key-71" not in text


def test_post_with_a_token_source_sends_bearer(api: MockTrackingAPI) -> None:
    tokens = TokenSource()
    request.post(WRITE_KEY, api.url, oauth_manager=tokens, batch=[MSG])
    assert api.requests()[0].header("Authorization") == "Bearer tok-3f9a1c"
    assert api.requests()[0].body["writeKey"] == WRITE_KEY
    assert tokens.cleared == 0


@pytest.mark.parametrize("token", [None, ""])
def test_post_falls_back_to_basic_without_a_token(api: MockTrackingAPI, token: Optional[str]) -> None:
    request.post(WRITE_KEY, api.url, oauth_manager=TokenSource(token), batch=[MSG])
    assert api.requests()[0].header("Authorization") == f"Basic {_b64(WRITE_KEY + ':')}"


@pytest.mark.parametrize(("status", "cleared"), [(401, 1), (403, 1), (511, 1), (400, 0), (500, 0), (429, 0)])
def test_post_clears_a_rejected_token(api: MockTrackingAPI, status: int, cleared: int) -> None:
    tokens = TokenSource()
    api.script(Reply(status=status))
    with pytest.raises(APIError):
        request.post(WRITE_KEY, api.url, oauth_manager=tokens, batch=[MSG])
    assert tokens.cleared == cleared


def test_post_with_a_token_source_without_clear_token(api: MockTrackingAPI) -> None:
    class Minimal:
        def get_token(self) -> str:
            return "tok-minimal"

    api.script(Reply(status=511))
    with pytest.raises(APIError):
        request.post(WRITE_KEY, api.url, oauth_manager=Minimal(), batch=[MSG])


def test_post_lets_a_token_failure_through_and_sends_nothing(api: MockTrackingAPI) -> None:
    class Broken:
        def get_token(self) -> str:
            raise RuntimeError("token endpoint down")

    with pytest.raises(RuntimeError, match="token endpoint down"):
        request.post(WRITE_KEY, api.url, oauth_manager=Broken(), batch=[MSG])
    assert api.request_count() == 0


def test_post_raises_the_requests_exception_when_nothing_answers() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(requests.ConnectionError):
        request.post(WRITE_KEY, f"http://127.0.0.1:{port}", batch=[MSG])


@pytest.mark.parametrize("timeout", [0.1, 0.0001])
def test_post_times_out_with_requests_read_timeout(api: MockTrackingAPI, timeout: float) -> None:
    # 0.0001 s is spent before the connection is made: still a ReadTimeout, as with analytics-python
    api.script(Reply(delay=2.0))
    with pytest.raises(requests.ReadTimeout):
        request.post(WRITE_KEY, api.url, timeout=timeout, batch=[MSG])


@pytest.mark.parametrize("host", ["api.segment.io/", "127.0.0.1:9/"])
def test_post_to_a_host_without_scheme_raises(host: str) -> None:
    with pytest.raises(requests.RequestException):
        request.post(WRITE_KEY, host, batch=[])


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((None,), {}, "write_key"),
        (("",), {}, "write_key"),
        ((b"key",), {}, "write_key"),
        ((WRITE_KEY, 8080), {}, "host"),
        ((WRITE_KEY, "http://127.0.0.1:9", False, "[{]"), {}, "timeout"),
        ((WRITE_KEY,), {"timeout": 0}, "timeout"),
        ((WRITE_KEY,), {"timeout": -1}, "timeout"),
        ((WRITE_KEY,), {"timeout": float("nan")}, "timeout"),
        ((WRITE_KEY,), {"timeout": float("inf")}, "timeout"),
        ((WRITE_KEY,), {"timeout": True}, "timeout"),
        ((WRITE_KEY,), {"timeout": (1, "2")}, "timeout"),
        ((WRITE_KEY,), {"retry_count": -1}, "retry_count"),
        ((WRITE_KEY,), {"retry_count": "1"}, "retry_count"),
        ((WRITE_KEY,), {"retry_count": True}, "retry_count"),
    ],
)
def test_post_misuse_raises_argument_error(args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ArgumentError) as info:
        request.post(*args, **kwargs, batch=[MSG])
    assert info.value.field == field
    assert isinstance(info.value, (AssertionError, ValueError))


@pytest.mark.parametrize("timeout", [None, 5, 2.5, (1, 5)])
def test_post_accepts_the_timeouts_requests_accepts(api: MockTrackingAPI, timeout: Any) -> None:
    assert request.post(WRITE_KEY, api.url, timeout=timeout, batch=[MSG]).status_code == 200


class Proxy(LocalHTTPServer):
    """A forward HTTP proxy that answers every request itself (200 ``{}``) and records its request line."""

    def __init__(self) -> None:
        super().__init__(lambda request: (200, b"{}"))

    @property
    def lines(self) -> list[str]:
        return [request.line for request in self.requests]


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = Proxy()
    yield server
    server.close()


def test_post_goes_through_the_given_proxy(proxy: Proxy) -> None:
    # the host is never resolved: the request line goes to the proxy, which answers for it
    request.post(WRITE_KEY, "http://segment.invalid", proxies={"http": proxy.url}, batch=[MSG])
    assert proxy.lines == ["POST http://segment.invalid/v1/batch HTTP/1.1"]


def test_client_goes_through_the_given_proxy(proxy: Proxy, errors: ErrorLog) -> None:
    client = Client(WRITE_KEY, host="http://segment.invalid", proxies={"http": proxy.url}, on_error=errors.on_error)
    try:
        assert client.identify("userId", {"trait": "value"})[0]
        assert client.flush(timeout=5) == 0
    finally:
        client.shutdown(timeout=2)
    assert proxy.lines == ["POST http://segment.invalid/v1/batch HTTP/1.1"] and not errors.errors


# -- DatetimeSerializer ------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_dt.datetime(2012, 3, 4, 5, 6, 7, 891011), '"2012-03-04T05:06:07.891011"'),
        (_dt.date(2020, 2, 29), '"2020-02-29"'),
        (_dt.datetime(2012, 3, 4, 5, 6, 7, tzinfo=tzutc()), '"2012-03-04T05:06:07+00:00"'),
        (Decimal("2.5"), "2.5"),
        (uuid.UUID(int=255), f'"{uuid.UUID(int=255)}"'),
        ({"b"}, '["b"]'),
        (Colour.RED, '"red"'),
        (b"bytes", '"bytes"'),
        ([_dt.date(2000, 1, 1)], '["2000-01-01"]'),
        ("plain", '"plain"'),
    ],
)
def test_datetime_serializer(value: Any, expected: str) -> None:
    assert json.dumps({"v": value}, cls=request.DatetimeSerializer) == '{"v": ' + expected + "}"


def test_datetime_serializer_is_a_json_encoder_that_never_raises_type_error() -> None:
    assert issubclass(request.DatetimeSerializer, json.JSONEncoder)
    out = json.loads(json.dumps({"fn": len, "obj": object()}, cls=request.DatetimeSerializer))
    assert isinstance(out["fn"], str) and isinstance(out["obj"], str)


# -- utils, table-driven against analytics-python 2.4.0's behaviour -----------------------------------


class NoOffset(_dt.tzinfo):
    def utcoffset(self, dt: Optional[_dt.datetime]) -> None:
        return None


def test_is_naive() -> None:
    assert utils.is_naive(_dt.datetime.now())
    assert utils.is_naive(_dt.datetime(2001, 1, 1, tzinfo=NoOffset()))
    assert not utils.is_naive(_dt.datetime.now(tz=tzutc()))
    assert not utils.is_naive(_dt.datetime.now(tz=_dt.timezone(_dt.timedelta(hours=-5))))


@pytest.mark.parametrize(
    ("delta", "seconds"),
    [
        (_dt.timedelta(days=1, seconds=2, microseconds=3), 86402.000003),
        (_dt.timedelta(seconds=-1.5), -1.5),
        (_dt.timedelta(), 0.0),
        (_dt.timedelta(microseconds=20), 0.00002),
    ],
)
def test_total_seconds(delta: _dt.timedelta, seconds: float) -> None:
    assert utils.total_seconds(delta) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize(
    ("age", "zone"),
    [
        (_dt.timedelta(0), "local"),
        (_dt.timedelta(seconds=3), "local"),
        (_dt.timedelta(seconds=-3600), "local"),  # a naive time in the future counts as "just made", as in 2.4.0
        (_dt.timedelta(seconds=30), "utc"),
        (_dt.timedelta(days=400), "utc"),
    ],
)
def test_guess_timezone_of_naive_datetimes(age: _dt.timedelta, zone: str) -> None:
    naive = _dt.datetime.now() - age
    guessed = utils.guess_timezone(naive)
    assert not utils.is_naive(guessed)
    assert guessed.replace(tzinfo=None) == naive
    assert guessed.tzinfo == (tzlocal() if zone == "local" else tzutc())


def test_guess_timezone_leaves_aware_datetimes_alone() -> None:
    aware = _dt.datetime.now(tz=_dt.timezone(_dt.timedelta(hours=9)))
    assert utils.guess_timezone(aware) is aware
    no_offset = _dt.datetime(2001, 1, 1, tzinfo=NoOffset())  # has a tzinfo, but no offset: naive
    assert utils.guess_timezone(no_offset).tzinfo == tzutc()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("http://segment.io/", "http://segment.io"),
        ("http://segment.io", "http://segment.io"),
        ("http://segment.io//", "http://segment.io/"),  # one slash, as in 2.4.0
        ("", ""),
        ("/", ""),
    ],
)
def test_remove_trailing_slash(host: str, expected: str) -> None:
    assert utils.remove_trailing_slash(host) == expected


@pytest.mark.parametrize(
    ("value", "types", "ok"),
    [
        ("a", str, True),
        (1, (int, str), True),
        (1.5, (int, str), False),
        (None, str, False),
        ({}, dict, True),
        ([], dict, False),
    ],
)
def test_require(value: Any, types: Any, ok: bool) -> None:
    if ok:
        utils.require("field", value, types)
        return
    with pytest.raises(AssertionError) as info:
        utils.require("field", value, types)
    assert isinstance(info.value, ArgumentError) and info.value.field == "field"
    assert "field must be" in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("abc", "abc"),
        ("", ""),
        (157963456373623802, "157963456373623802"),
        (1.5, "1.5"),
        (uuid.UUID(int=7), str(uuid.UUID(int=7))),
    ],
)
def test_stringify_id(value: Any, expected: Optional[str]) -> None:
    assert utils.stringify_id(value) == expected


class Level(enum.IntEnum):
    HIGH = 3


_NOW = _dt.datetime(2024, 5, 6, 7, 8, 9)
_TODAY = _dt.date(1980, 1, 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.142857"), 0.142857),
        ("woo", "woo"),
        (200000000, 200000000),
        (2.0, 2.0),
        (True, True),
        (None, None),
        (_NOW, _NOW),
        (_TODAY, _TODAY),
        ([1, 2, 3], [1, 2, 3]),
        ((1, "a"), [1, "a"]),
        ({"x"}, ["x"]),
        (frozenset({2}), [2]),
        ({"k": {"n": Decimal("1")}}, {"k": {"n": 1.0}}),
        ({1: "int key"}, {1: "int key"}),  # keys are kept as they are
        (Colour.RED, "red"),
        (b"caf\xc3\xa9", "café"),
        (b"\xff", "\ufffd"),  # 2.4.0 raised UnicodeDecodeError here
        (bytearray(b"ab"), "ab"),
        (bytes(10), "\x00" * 10),
        (uuid.UUID(int=9), str(uuid.UUID(int=9))),
        ({"fn": len, "number": 4}, {"number": 4}),
        ({"exception": Exception("x"), "timedelta": _dt.timedelta(1), "ok": 1}, {"ok": 1}),
        ([1, len, 2], [1, None, 2]),  # 2.4.0 dropped the whole list
        (len, None),  # 2.4.0 raised TypeError
        (object(), None),
    ],
)
def test_clean(value: Any, expected: Any) -> None:
    result = utils.clean(value)
    assert result == expected and type(result) is type(expected)


def test_clean_keeps_numbers_dates_and_int_enums_as_they_are() -> None:
    assert utils.clean(Level.HIGH) is Level.HIGH  # a number, as in 2.4.0
    assert utils.clean({"d": _NOW})["d"] is _NOW


def test_clean_does_not_change_its_input() -> None:
    data: dict[str, Any] = {"decimal": Decimal("1.5"), "list": [1, (2, 3)], "fn": len, "nested": {"s": {"a"}}}
    before = repr(data)
    cleaned = utils.clean(data)
    assert repr(data) == before and cleaned is not data and cleaned["nested"] is not data["nested"]


def test_clean_survives_cycles_depth_and_hostile_values(caplog: pytest.LogCaptureFixture) -> None:
    looped: dict[str, Any] = {"a": 1}
    looped["self"] = looped
    ring: list[Any] = [1]
    ring.append(ring)
    deep: Any = "bottom"
    for _ in range(utils.MAX_CLEAN_DEPTH + 100):
        deep = [deep]

    class BadMapping(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RuntimeError("no items for you")

    class BadTolist:
        def tolist(self) -> Any:
            raise RuntimeError("nope")

    class Evil:
        @property  # type: ignore[misc]
        def __class__(self) -> Any:
            raise RuntimeError("who am I")

    with caplog.at_level(logging.WARNING, logger="segment"):
        assert utils.clean(looped) == {"a": 1}
        assert utils.clean(ring) == [1, None]
        assert utils.clean({"bad": BadMapping(x=1), "ok": 2}) == {"ok": 2}
        assert utils.clean([BadTolist()]) == [None]
        assert utils.clean(Evil()) is None
        cleaned = utils.clean(deep)
    depth = 0
    while isinstance(cleaned, list):
        cleaned = cleaned[0] if cleaned else None
        depth += 1
    assert depth <= utils.MAX_CLEAN_DEPTH + 1
    assert any("utils.clean dropped" in r.getMessage() for r in caplog.records)


def test_clean_converts_numpy_arrays() -> None:
    numpy = pytest.importorskip("numpy")
    assert utils.clean({"a": numpy.array([[1, 2], [3, 4]])}) == {"a": [[1, 2], [3, 4]]}
    assert utils.clean(numpy.int64(5)) == 5


def test_clean_warns_once_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    class OnlyOnce:
        pass

    with caplog.at_level(logging.WARNING, logger="segment"):
        for _ in range(5):
            utils.clean({"x": OnlyOnce()})
    assert sum("OnlyOnce" in r.getMessage() for r in caplog.records) == 1


# -- the default client and the consumers keep analytics-python's attributes ---------------------------


def test_default_client_is_made_by_any_module_call_and_mirrors_the_settings(api: MockTrackingAPI) -> None:
    names = ("write_key", "host", "gzip", "sync_mode", "timeout", "debug", "max_queue_size")
    saved = {name: getattr(analytics, name) for name in names}
    analytics.shutdown(timeout=1)
    try:
        analytics.write_key, analytics.host, analytics.gzip = WRITE_KEY, api.url, True
        analytics.timeout, analytics.max_queue_size = 1.234, 1337
        for make in (analytics.flush, analytics.join, lambda: analytics.track("u", "e")):
            analytics.default_client = None
            assert analytics.default_client is None
            make()
            client = analytics.default_client
            assert isinstance(client, Client)
            assert (client.write_key, client.host, client.gzip, client.sync_mode, client.debug, client.timeout) == (
                WRITE_KEY,
                api.url,
                True,
                False,
                False,
                1.234,
            )
            assert client.queue.maxsize == 1337
            client.shutdown(timeout=2)
    finally:
        analytics.default_client = None
        for name, value in saved.items():
            setattr(analytics, name, value)


def test_module_calls_without_a_write_key_make_no_client() -> None:
    saved = analytics.write_key
    analytics.shutdown(timeout=1)
    try:
        analytics.write_key = None
        assert analytics.flush() == 0 and analytics.shutdown() == 0
        analytics.join()
        assert analytics.default_client is None
        with pytest.raises(ArgumentError):
            analytics.track("u", "e")  # a call that sends needs the key, as in analytics-python
    finally:
        analytics.write_key = saved


def test_consumers_expose_their_options_read_only(make_client: Callable[..., Client]) -> None:
    client = make_client(thread=2, upload_size=7, upload_interval=0.25, timeout=3, max_retries=4)
    assert client.consumers is not None and len(client.consumers) == 2
    for consumer in client.consumers:
        assert (consumer.upload_size, consumer.upload_interval, consumer.timeout, consumer.retries) == (7, 0.25, 3, 4)
        for name in ("upload_size", "upload_interval", "timeout", "retries"):
            with pytest.raises(AttributeError):
                setattr(consumer, name, 1)


def test_sync_mode_client_has_no_consumers(make_client: Callable[..., Client]) -> None:
    client = make_client(sync_mode=True)
    assert client.consumers is None
    assert client.identify("userId")[0] and client.queue.empty()


# -- helpers -------------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _without_sent_at(body: bytes) -> bytes:
    return re.sub(rb'"sentAt":"[^"]*"', b'"sentAt":""', body)


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")
