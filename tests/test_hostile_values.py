"""Data never raises (delivery.md §2): hostile values, huge numbers, deep stacks and racing threads.

Every value below goes through the public API (``Client.track`` against the
local mock Tracking API, or ``encoding.encode``) with the standard-library
encoder and with orjson. Each call must return ``(True, message)``, the API
must receive strict JSON (RFC 8259) with the value made safe as documented
(a string or null), and the ``segment`` logger must say so exactly once per
kind of problem.
"""

from __future__ import annotations

import collections.abc
import datetime as dt
import enum
import json
import logging
import numbers
import random
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest

from segment.analytics import ArgumentError, Client, encoding, json_scalars, json_text
from segment.analytics.json_safety import MAX_DEPTH
from segment.analytics.testing import MockTrackingAPI

from .conftest import WRITE_KEY, ErrorLog

# -- helpers ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["stdlib", "orjson"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with the standard library encoder and (when installed) with orjson."""
    was = encoding.orjson_in_use()
    if request.param == "orjson" and not encoding.use_orjson(True):
        pytest.skip("orjson is not installed")
    if request.param == "stdlib":
        encoding.use_orjson(False)
    yield request.param
    encoding.use_orjson(was)


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """Forget which warnings were given, then return the WARNING lines logged on ``segment`` since."""
    encoding._warned.clear()
    with caplog.at_level(logging.DEBUG, logger="segment"):
        yield lambda: [r.getMessage() for r in caplog.records if r.name == "segment" and r.levelno == logging.WARNING]


def strict_loads(data: Union[bytes, str]) -> Any:
    """Parse as RFC 8259 JSON: NaN/Infinity are refused."""

    def reject(token: str) -> Any:
        raise AssertionError(f"non-standard JSON token {token}")

    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text, parse_constant=reject)


def delivered(client: Client, api: MockTrackingAPI) -> dict[str, dict[str, Any]]:
    """Flush, check every request body is strict JSON, and return the events by messageId."""
    assert client.flush(timeout=10) == 0
    events: dict[str, dict[str, Any]] = {}
    for request in api.requests():
        for event in strict_loads(request.raw_body)["batch"]:
            events[event["messageId"]] = event
    return events


def at_depth(frames: int, call: Callable[[], Any]) -> Any:
    """``call()`` from ``frames`` Python frames deeper than here."""
    if frames <= 0:
        return call()
    return at_depth(frames - 1, call)


def nest(levels: int, leaf: Any = "leaf") -> Any:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def nesting(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value = value[0]
        depth += 1
    return depth


# -- hostile values --------------------------------------------------------------------------------------


class BadTZ(dt.tzinfo):
    def utcoffset(self, d: Any) -> Any:
        raise RuntimeError("utcoffset")

    def dst(self, d: Any) -> Any:
        raise RuntimeError("dst")

    def tzname(self, d: Any) -> Any:
        raise RuntimeError("tzname")


class WrongOffsetTZ(dt.tzinfo):
    def __init__(self, offset: Any) -> None:
        self.offset = offset

    def utcoffset(self, d: Any) -> Any:
        return self.offset

    def dst(self, d: Any) -> Any:
        return None


class DeepTZ(dt.tzinfo):
    """A time zone that needs some stack of its own (as real ones that load their rules lazily may)."""

    def utcoffset(self, d: Any) -> Any:
        return at_depth(25, lambda: dt.timedelta(hours=1))

    def dst(self, d: Any) -> Any:
        return None


class HostileDatetime(dt.datetime):
    """Every method a caller might use raises; the fields are overridden too."""

    def isoformat(self, *args: Any, **kwargs: Any) -> str:
        raise RuntimeError("isoformat")

    def replace(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("replace")

    def utcoffset(self) -> Any:
        raise RuntimeError("utcoffset")

    def __str__(self) -> str:
        raise RuntimeError("str")

    @property
    def year(self) -> int:  # type: ignore[override]
        raise RuntimeError("year")

    @property
    def tzinfo(self) -> Any:  # type: ignore[override]
        raise RuntimeError("tzinfo")


class HostileDate(dt.date):
    def isoformat(self) -> str:
        raise RuntimeError("isoformat")

    @property
    def day(self) -> int:  # type: ignore[override]
        raise RuntimeError("day")


class BadGetattr:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("getattr")


class BadGetattribute:
    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError("getattribute")


class BadClass:
    @property  # type: ignore[misc]
    def __class__(self) -> Any:
        raise RuntimeError("__class__")


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("str")

    def __repr__(self) -> str:
        raise RuntimeError("repr")


class ExitStr:
    def __str__(self) -> str:
        raise SystemExit(3)


class NotStr:
    def __str__(self) -> Any:
        return 42


class SurrogateStr:
    def __str__(self) -> str:
        return type("S", (str,), {})("a\ud800b")


class RecursiveStr:
    def __str__(self) -> str:
        return str(self)


class BrokenToList:
    def tolist(self) -> Any:
        raise RuntimeError("tolist")

    def __str__(self) -> str:
        raise RuntimeError("str")


class ToListSelf:
    def tolist(self) -> Any:
        return self


class ToListForever:
    def tolist(self) -> Any:
        return ToListForever()


class BadIntegral:
    def __index__(self) -> int:
        raise RuntimeError("index")

    def __int__(self) -> int:
        raise RuntimeError("int")

    def __float__(self) -> float:
        raise RuntimeError("float")

    def __str__(self) -> str:
        return "bad-integral"


numbers.Integral.register(BadIntegral)


class BadReal:
    def __float__(self) -> float:
        raise RuntimeError("float")

    def __str__(self) -> str:
        return "bad-real"


numbers.Real.register(BadReal)


class HostileDecimal(Decimal):
    def __str__(self) -> str:
        raise RuntimeError("str")

    def __int__(self) -> int:
        raise RuntimeError("int")

    def __float__(self) -> float:
        raise RuntimeError("float")

    def is_finite(self) -> bool:
        raise RuntimeError("is_finite")


class HostileUUID(uuid.UUID):
    def __str__(self) -> str:
        raise RuntimeError("str")


class HostileBytes(bytes):
    def decode(self, *args: Any, **kwargs: Any) -> str:
        raise RuntimeError("decode")


class HostileEnum(enum.Enum):
    BAD = BadStr()


class IntSub(int):
    def __repr__(self) -> str:
        raise RuntimeError("repr")


class FloatSub(float):
    def __repr__(self) -> str:
        raise RuntimeError("repr")


class BadDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("items")

    def keys(self) -> Any:
        raise RuntimeError("keys")

    def values(self) -> Any:
        raise RuntimeError("values")

    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("getitem")


class GarbageItemsDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return 5


class BadList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")


class BadTuple(tuple):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("iter")


class BadSet(set):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("iter")


class HostileMapping(collections.abc.Mapping):  # type: ignore[type-arg]
    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("getitem")

    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")


class ListProxy:
    """Pretends to be a list, as lazy-object proxies do, but its iteration raises."""

    __class__ = list  # type: ignore[assignment]

    def __iter__(self) -> Any:
        raise RuntimeError("iter")


class DictProxy:
    __class__ = dict  # type: ignore[assignment]

    def items(self) -> Any:
        raise RuntimeError("items")


class WorkingListProxy:
    __class__ = list  # type: ignore[assignment]

    def __iter__(self) -> Any:
        return iter([1, 2])


class NamelessMeta(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("__name__")


class Nameless(metaclass=NamelessMeta):
    pass


def _released() -> memoryview:
    view = memoryview(b"gone")
    view.release()
    return view


def _self_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    return value


def _self_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _self_bad_dict() -> BadDict:
    value = BadDict(a=1)
    dict.__setitem__(value, "self", value)
    return value


def _object_text(name: str) -> Callable[[Any], bool]:
    return lambda sent: isinstance(sent, str) and sent.startswith("<") and f"{name} object at 0x" in sent


def _cut_nesting(sent: Any) -> bool:
    return MAX_DEPTH - 5 <= nesting(sent) <= MAX_DEPTH and _innermost(sent) is None


def _innermost(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


BIG = 10**5000
Expected = Union[Any, Callable[[Any], bool]]

#: name -> (make the value, what is sent for it (or a check), WARNING lines expected)
CASES: dict[str, tuple[Callable[[], Any], Expected, int]] = {
    "int past the int-to-str limit": (lambda: BIG, None, 1),
    "negative int past the limit": (lambda: -BIG, None, 1),
    "int one digit past the limit": (lambda: 10**4300, None, 1),
    "int at the limit is a number": (lambda: 10**4299, 10**4299, 0),
    "int subclass past the limit, hostile repr": (lambda: IntSub(BIG), None, 1),
    "int subclass with hostile repr": (lambda: IntSub(7), 7, 0),
    "Decimal 1e5000": (lambda: Decimal("1e5000"), "1E+5000", 1),
    "Decimal 1e999999": (lambda: Decimal("1e999999"), "1E+999999", 1),
    "Decimal -1e999999": (lambda: Decimal("-1e999999"), "-1E+999999", 1),
    "Decimal 1e-999999 (underflows a float)": (lambda: Decimal("1e-999999"), "1E-999999", 1),
    "Decimal 1.5e-400": (lambda: Decimal("1.5e-400"), "1.5E-400", 1),
    "Decimal overflowing a float": (lambda: Decimal("9" * 400 + ".5"), "9" * 400 + ".5", 1),
    "Decimal zero with a huge exponent": (lambda: Decimal("0E+999999"), 0, 0),
    "Decimal subclass past the limit, hostile methods": (lambda: HostileDecimal("1e5000"), "1E+5000", 1),
    "Decimal subclass, hostile methods": (lambda: HostileDecimal("2.5"), 2.5, 0),
    "Fraction past a float": (lambda: Fraction(10**400, 3), f"{10**400}/3", 1),
    "Fraction past the digit limit": (lambda: Fraction(BIG, 3), None, 1),
    "Fraction underflowing a float": (lambda: Fraction(1, 10**400), f"1/{10**400}", 1),
    "Real whose __float__ raises": (lambda: BadReal(), "bad-real", 1),
    "Integral whose __index__/__int__ raise": (lambda: BadIntegral(), "bad-integral", 1),
    "datetime whose utcoffset() raises": (
        lambda: dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=BadTZ()),
        "2020-01-02T03:04:05",
        1,
    ),
    "datetime whose utcoffset() is 30 hours": (
        lambda: dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=WrongOffsetTZ(dt.timedelta(hours=30))),
        "2020-01-02T03:04:05",
        1,
    ),
    "datetime whose utcoffset() is a string": (
        lambda: dt.datetime(2020, 1, 2, tzinfo=WrongOffsetTZ("+01:00")),
        "2020-01-02T00:00:00",
        1,
    ),
    "datetime subclass whose methods and fields raise": (
        lambda: HostileDatetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "2020-01-02T03:04:05+00:00",
        1,
    ),
    "date subclass whose isoformat and fields raise": (lambda: HostileDate(2020, 1, 2), "2020-01-02", 1),
    "time whose tzinfo raises": (lambda: dt.time(1, 2, tzinfo=BadTZ()), "<unserialisable time>", 1),
    "__getattr__ raises": (lambda: BadGetattr(), _object_text("BadGetattr"), 1),
    "__getattribute__ raises": (lambda: BadGetattribute(), _object_text("BadGetattribute"), 1),
    "__class__ raises": (lambda: BadClass(), _object_text("BadClass"), 1),
    "__str__ and __repr__ raise": (lambda: BadStr(), "<unserialisable BadStr>", 1),
    "__str__ raises SystemExit": (lambda: ExitStr(), "<unserialisable ExitStr>", 1),
    "__str__ returns an int": (lambda: NotStr(), "<unserialisable NotStr>", 1),
    "__str__ returns a str subclass with a lone surrogate": (lambda: SurrogateStr(), "a\ufffdb", 1),
    "__str__ recurses forever": (lambda: RecursiveStr(), "<unserialisable RecursiveStr>", 1),
    "tolist() and __str__ raise": (lambda: BrokenToList(), "<unserialisable BrokenToList>", 1),
    "tolist() returns itself": (lambda: ToListSelf(), _object_text("ToListSelf"), 1),
    "tolist() returns a new one forever": (lambda: ToListForever(), None, 1),
    "metaclass whose __name__ raises": (lambda: Nameless(), _object_text("Nameless"), 1),
    "Enum whose value's __str__ raises": (lambda: HostileEnum.BAD, "<unserialisable BadStr>", 1),
    "UUID subclass whose __str__ raises": (lambda: HostileUUID(int=1), "<unserialisable HostileUUID>", 1),
    "bytes subclass whose decode() raises": (lambda: HostileBytes(b"abc"), "abc", 0),
    "released memoryview": (lambda: _released(), lambda sent: "released memory" in sent, 1),
    "float subclass NaN, hostile repr": (lambda: FloatSub("nan"), None, 1),
    "dict subclass whose items/keys/__iter__/__len__ raise": (lambda: BadDict(a=1, b=[2]), {"a": 1, "b": [2]}, 1),
    "dict subclass whose items() returns garbage": (lambda: GarbageItemsDict(a=1), {"a": 1}, 1),
    "list subclass whose __iter__/__len__ raise": (lambda: BadList([1, 2]), [1, 2], 1),
    "tuple subclass whose __iter__ raises": (lambda: BadTuple((1, 2)), [1, 2], 1),
    "set subclass whose __iter__ raises": (lambda: BadSet({1}), [1], 1),
    "list of hostile containers": (lambda: [BadList([1]), BadList([2])], [[1], [2]], 1),
    "proxy pretending to be a list, __iter__ raises": (lambda: ListProxy(), [], 1),
    "proxy pretending to be a dict, items() raises": (lambda: DictProxy(), {}, 1),
    "proxy pretending to be a list": (lambda: WorkingListProxy(), [1, 2], 0),
    "dict that contains itself": (_self_dict, {"name": "loop", "self": None}, 1),
    "list that contains itself": (_self_list, [1, None], 1),
    "hostile dict subclass that contains itself": (_self_bad_dict, {"a": 1, "self": None}, 2),
    "nested 400 levels (kept whole)": (lambda: nest(400), lambda sent: sent == nest(400), 0),
    "nested 100000 levels": (lambda: nest(100_000), _cut_nesting, 1),
    "nested 100000 levels, NaN at the bottom": (lambda: nest(100_000, float("nan")), _cut_nesting, 1),
    "key whose __str__ raises": (lambda: {BadStr(): 1}, {"<unserialisable BadStr>": 1}, 1),
    "key whose __class__ raises": (
        lambda: {BadClass(): 1},
        lambda sent: len(sent) == 1 and _object_text("BadClass")(next(iter(sent))),
        1,
    ),
    "int key past the limit": (lambda: {BIG: 1}, {"null": 1}, 1),
    "NaN key": (lambda: {float("nan"): 1, 2.5: 2}, {"null": 1, "2.5": 2}, 1),
    "tuple key holding a hostile value": (lambda: {(1, BadStr()): 1}, {'[1,"<unserialisable BadStr>"]': 1}, 1),
}


def _matches(sent: Any, expected: Expected) -> bool:
    return bool(expected(sent)) if callable(expected) else sent == expected and type(sent) is type(expected)


class _Warnings(logging.Handler):
    """Collects the WARNING lines of the ``segment`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


#: what one call of a table gave: (its return flag, the event the API received, WARNING lines during the call)
Outcome = tuple[bool, Optional[dict[str, Any]], list[str]]


def run_table(encoder: str, calls: dict[str, Callable[[Client, str], tuple[bool, Any]]]) -> dict[str, Outcome]:
    """Make each call on one client (``calls[name](client, message_id)``), then deliver them all to the mock API."""
    if encoder == "orjson":
        pytest.importorskip("orjson")
    was = encoding.use_orjson(encoder == "orjson")
    logger = logging.getLogger("segment")
    capture = _Warnings()
    logger.addHandler(capture)
    dropped = ErrorLog()
    try:
        with MockTrackingAPI() as api:
            client = Client(WRITE_KEY, host=api.url, on_error=dropped.on_error)
            said: dict[str, list[str]] = {}
            flags: dict[str, bool] = {}
            for index, (name, call) in enumerate(calls.items()):
                encoding._warned.clear()
                capture.lines.clear()
                flags[name] = call(client, f"case-{index}")[0]
                said[name] = list(capture.lines)
            events = delivered(client, api)
            client.shutdown(timeout=5)
    finally:
        logger.removeHandler(capture)
        encoding.use_orjson(was)
    assert dropped.errors == []
    return {name: (flags[name], events.get(f"case-{index}"), said[name]) for index, name in enumerate(calls)}


def _track_value(make: Callable[[], Any]) -> Callable[[Client, str], tuple[bool, Any]]:
    return lambda client, mid: client.track("user", "Hostile", {"v": make(), "after": "still here"}, message_id=mid)


@pytest.fixture(scope="module", params=["stdlib", "orjson"])
def value_table(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """Every hostile value of CASES sent with ``track`` on one client."""
    return run_table(request.param, {name: _track_value(make) for name, (make, _, _) in CASES.items()})


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_value_is_sent_safely_through_the_client(name: str, value_table: dict[str, Outcome]) -> None:
    _, expected, warning_count = CASES[name]
    ok, event, said = value_table[name]
    assert ok is True and event is not None
    sent = event["properties"]["v"]
    assert _matches(sent, expected), f"{name}: sent {str(sent)[:200]!r}"
    assert event["properties"]["after"] == "still here"
    assert len(said) == warning_count, said


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_value_gives_the_same_json_in_both_modes(name: str) -> None:
    pytest.importorskip("orjson")
    make, _, _ = CASES[name]
    value = {"v": make()}  # one instance, so that object addresses in str() are the same
    was = encoding.orjson_in_use()
    try:
        encoding.use_orjson(False)
        std = encoding.encode(value)
        encoding.use_orjson(True)
        fast = encoding.encode(value)
    finally:
        encoding.use_orjson(was)
    assert std == fast


def test_a_kind_of_problem_is_warned_once_not_per_value(mode: str, warnings: Callable[[], list[str]]) -> None:
    for _ in range(3):
        encoding.encode({"a": BIG, "b": [BadStr(), BadStr()], "c": BadDict(x=1), "d": Decimal("1e5000")})
    said = warnings()
    assert len(said) == 4, said
    assert sum("BadStr" in line for line in said) == 1


# -- the timestamp argument, ids and mappings ----------------------------------------------------------


class HostileId(str):
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    __hash__ = str.__hash__

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __str__(self) -> str:
        raise RuntimeError("str")


UTC_STAMP = "2020-01-02T03:04:05.000+00:00"

#: name -> (make the timestamp argument, the timestamp sent, WARNING lines expected)
TIMESTAMPS: dict[str, tuple[Callable[[], Any], str, int]] = {
    "utcoffset() raises": (lambda: dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=BadTZ()), UTC_STAMP, 1),
    "utcoffset() is 30 hours": (
        lambda: dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=WrongOffsetTZ(dt.timedelta(hours=30))),
        UTC_STAMP,
        1,
    ),
    "utcoffset() is an int": (lambda: dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=WrongOffsetTZ(42)), UTC_STAMP, 1),
    "utcoffset() is None (naive)": (lambda: dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=WrongOffsetTZ(None)), UTC_STAMP, 0),
    "custom tzinfo that works": (
        lambda: dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=WrongOffsetTZ(dt.timedelta(hours=2))),
        "2020-01-02T03:04:05.000+02:00",
        0,
    ),
    "datetime subclass whose methods and fields raise": (
        lambda: HostileDatetime(2020, 1, 2, 3, 4, 5, 6789, tzinfo=dt.timezone.utc),
        "2020-01-02T03:04:05.006+00:00",
        0,
    ),
    "hostile datetime subclass and tzinfo": (
        lambda: HostileDatetime(2020, 1, 2, 3, 4, 5, tzinfo=BadTZ()),
        UTC_STAMP,
        1,
    ),
    "date subclass whose methods and fields raise": (
        lambda: HostileDate(2020, 1, 2),
        "2020-01-02T00:00:00.000+00:00",
        0,
    ),
    "str subclass whose __eq__ and __len__ raise": (lambda: HostileId("2020-01-02T03:04:05Z"), UTC_STAMP, 0),
}


@pytest.fixture(scope="module", params=["stdlib", "orjson"])
def timestamp_table(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """Every hostile timestamp of TIMESTAMPS sent with ``track`` on one client."""

    def call(make: Callable[[], Any]) -> Callable[[Client, str], tuple[bool, Any]]:
        return lambda client, mid: client.track("user", "Stamped", timestamp=make(), message_id=mid)

    return run_table(request.param, {name: call(make) for name, (make, _, _) in TIMESTAMPS.items()})


@pytest.mark.parametrize("name", list(TIMESTAMPS))
def test_hostile_timestamp_argument_is_data_not_misuse(name: str, timestamp_table: dict[str, Outcome]) -> None:
    _, expected, warning_count = TIMESTAMPS[name]
    ok, event, said = timestamp_table[name]
    assert ok is True and event is not None
    assert event["timestamp"] == expected
    assert len(said) == warning_count, said


class HashlessMeta(type):
    """A metaclass that breaks the ABC checks (they hash the class)."""

    def __hash__(cls) -> int:
        raise RuntimeError("hash")

    def __eq__(cls, other: object) -> bool:
        raise RuntimeError("eq")


class Hashless(metaclass=HashlessMeta):
    pass


class UnprintableNumber:
    def __str__(self) -> str:
        raise RuntimeError("str")


numbers.Number.register(UnprintableNumber)


def test_hostile_ids_and_mappings(
    mode: str, make_client: Callable[..., Client], api: MockTrackingAPI, warnings: Callable[[], list[str]]
) -> None:
    client = make_client()
    assert client.track(HostileId("u-1"), HostileId("Ev"), message_id=HostileId("h1"))[0]
    assert client.group(HostileId("u-1"), HostileId("g-1"), message_id="h2")[0]
    assert client.track("u", "Props", BadDict(a=1), context=BadDict(ip="1.2.3.4"), message_id="h3")[0]
    assert client.track("u", "Props", HostileMapping(), message_id="h4")[0]
    assert client.page("u", HostileId("Docs"), HostileId("Intro"), message_id="h5")[0]
    assert client.identify(HostileUUID(int=1), message_id=HostileUUID(int=2))[0]
    events = delivered(client, api)
    assert (events["h1"]["userId"], events["h1"]["event"]) == ("u-1", "Ev")
    assert events["h2"]["groupId"] == "g-1"
    assert events["h3"]["properties"] == {"a": 1} and events["h3"]["context"]["ip"] == "1.2.3.4"
    assert events["h4"]["properties"] == {}
    assert (events["h5"]["category"], events["h5"]["name"]) == ("Docs", "Intro")
    assert events[str(uuid.UUID(int=2))]["userId"] == str(uuid.UUID(int=1))
    said = warnings()
    assert len(said) == 2 and any("BadDict" in line for line in said) and any("HostileMapping" in line for line in said)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.track(BIG, "e"), "user_id"),
        (lambda c: c.track(anonymous_id=-BIG, event="e"), "anonymous_id"),
        (lambda c: c.group("u", BIG), "group_id"),
        (lambda c: c.alias(BIG, "u"), "previous_id"),
        (lambda c: c.track("u", "e", message_id=UnprintableNumber()), "message_id"),
        (lambda c: c.track(BadClass(), "e"), "user_id"),
        (lambda c: c.track("u", "e", BadClass()), "properties"),
        (lambda c: c.track("u", "e", timestamp=BadClass()), "timestamp"),
        (lambda c: c.track("u", BadClass()), "event"),
        (lambda c: c.track(Hashless(), "e"), "user_id"),
        (lambda c: c.track("u", "e", Hashless()), "properties"),
        (lambda c: c.track("u", "e", context=Hashless()), "context"),
    ],
)
def test_ids_that_cannot_be_written_are_misuse(call: Callable[[Client], Any], field: str) -> None:
    client = Client("hostile-ids-key", send=False)
    with pytest.raises(ArgumentError) as raised:
        call(client)
    assert raised.value.field == field


# -- threads, stacks and cost ------------------------------------------------------------------------------


def test_dict_mutated_by_another_thread_during_the_call(
    mode: str, make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    shared: dict[Any, Any] = {"nested": {"x": 1}, "items": [1, 2], "tags": {1, 2}}
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            shared[i % 64] = i
            shared.pop((i + 32) % 64, None)
            shared["nested"][i % 16] = i
            shared["nested"].pop((i + 8) % 16, None)
            shared["tags"].add(i % 32)
            shared["tags"].discard((i + 16) % 32)
            shared["items"].append(i)
            if len(shared["items"]) > 40:
                del shared["items"][:20]

    client = make_client(max_queue_size=10_000)
    mutator = threading.Thread(target=mutate, daemon=True)
    mutator.start()
    calls = 3000
    try:
        for n in range(calls):
            # every other call also holds NaN: the fallback path reads the live containers itself
            properties = {"live": shared, "n": n, "nan": float("nan") if n % 2 else 0.0}
            ok, _ = client.track("user", "Racing", properties if n % 3 else shared)
            assert ok is True
    finally:
        stop.set()
        mutator.join()
    assert len(delivered(client, api)) == calls
    assert errors.errors == []


def test_containers_changed_while_being_written_never_crash() -> None:
    """A list shrunk under the encoder (by another thread, or by a value's own method) must not crash it.

    orjson caches a list's length: with Python code running in the middle of its walk (a ``default``
    hook), a shrinking list made it read freed memory and crash the process. Run in a child process
    (with a memory cap) so that a crash fails this test instead of the test run.
    """
    script = textwrap.dedent(
        """
        import json, resource, sys, threading, time
        from decimal import Decimal
        from segment.analytics import encoding
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

        class Shrinker:
            def __init__(self, target):
                self.target = target
            def __str__(self):
                del self.target[1:]
                return "shrunk"

        for orjson in (False, True):
            encoding.use_orjson(orjson)
            for _ in range(200):  # a value's own method shrinks the list being written
                target = [Decimal(1)] * 50
                target.insert(1, Shrinker(target))
                json.loads(encoding.encode({"v": target}))
            shared = [Decimal(i) for i in range(200)]
            stop = threading.Event()
            def mutate():
                while not stop.is_set():
                    del shared[100:]
                    shared.extend(Decimal(i) for i in range(100))
            thread = threading.Thread(target=mutate)
            thread.start()
            deadline = time.monotonic() + 0.6
            calls = 0
            while time.monotonic() < deadline:  # another thread shrinks and grows the list being written
                json.loads(encoding.encode({"v": shared, "when": calls}))
                calls += 1
            stop.set()
            thread.join()
            print("orjson" if orjson else "stdlib", calls > 0)
        """
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=20,  # a hang-guard, not a timing assertion
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.split() == ["stdlib", "True", "orjson", "True"]


def _deep_values() -> dict[str, Any]:
    return {
        "nested": nest(300),
        "cut": nest(5000),
        "cycle": _self_dict(),
        "nan": [float("nan")],
        "bad": BadStr(),
        "hostile dict": BadDict(a=1),
        "huge": BIG,
        "decimal": Decimal("1e999999"),
        "dates": [dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), dt.date(2020, 1, 2)] * 50,
        "python tzinfo": dt.datetime(2020, 1, 2, tzinfo=WrongOffsetTZ(dt.timedelta(hours=2))),
        "deep tzinfo": [dt.datetime(2020, 1, 2, tzinfo=DeepTZ())],
        "recursive": RecursiveStr(),
    }


def test_call_from_700_frames_deep(mode: str, make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    client = make_client()
    assert client.track("user", "Shallow", _deep_values(), message_id="s1")[0] is True
    ok, _ = at_depth(700, lambda: client.track("user", "Deep", _deep_values(), message_id="d1"))
    assert ok is True
    events = delivered(client, api)
    assert events["d1"]["properties"] == events["s1"]["properties"]


def deepest_call() -> int:
    """The most frames ``at_depth`` can add here before the interpreter's recursion limit stops it."""
    low, high = 0, sys.getrecursionlimit()
    while low < high:
        middle = (low + high + 1) // 2
        try:
            at_depth(middle, lambda: None)
            low = middle
        except RecursionError:
            high = middle - 1
    return low


def test_encode_near_the_recursion_limit(mode: str) -> None:
    """With only a few frames left, encode still answers, the same as from a shallow stack."""
    values = _deep_values()
    expected = encoding.encode(values)
    deepest = deepest_call()
    for headroom in [*range(3, 40), 60, 100, 200]:
        assert at_depth(deepest - headroom, lambda: encoding.encode(values)) == expected, headroom


def test_cost_is_bounded_by_the_size_of_the_value(tmp_path: Path) -> None:
    """Each of these took seconds to minutes (or raised) before; together they must finish promptly."""
    script = textwrap.dedent(
        """
        import json, sys
        from decimal import Decimal
        from fractions import Fraction
        from segment.analytics import encoding
        deep = "leaf"
        for _ in range(10**6):
            deep = [deep]
        values = {
            "decimal": Decimal("1e999999"), "negative": Decimal("-1e999999999"), "tiny": Decimal("1e-999999"),
            "long decimal": Decimal("9" * 200000), "ones": Decimal("1" + "0" * 1000000 + "E-1000000"),
            "huge int": 1 << (33 * 10**6), "fraction": Fraction(10**100000 + 1, 10**100000),
            "tiny fraction": Fraction(1, 10**100000), "deep": deep, "many": [Decimal("1e999999")] * 10000,
            "keys": {10**5000 + i: i for i in range(1000)},
        }
        for orjson in (False, True):
            encoding.use_orjson(orjson)
            sent = json.loads(encoding.encode(values))
            print(json.dumps({k: (v if k not in ("long decimal", "deep", "many", "keys") else len(str(v)))
                              for k, v in sent.items()}))
        """
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=10,  # a hang-guard, not a timing assertion
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    sent = json.loads(lines[0])
    assert sent["decimal"] == "1E+999999" and sent["negative"] == "-1E+999999999" and sent["tiny"] == "1E-999999"
    assert sent["long decimal"] == 200000 and sent["ones"] == 1 and sent["huge int"] is None
    assert sent["fraction"] == 1.0 and sent["tiny fraction"] is None


@pytest.mark.parametrize("interpreter", ["without a limit (3.9/3.10 before the fix)", "with the limit disabled"])
def test_digit_limit_applies_where_the_interpreter_has_none(
    interpreter: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our own conversions keep a 4300-digit limit where the interpreter has none, so they stay cheap."""
    previous = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else None
    if interpreter.startswith("without"):
        monkeypatch.setattr(json_scalars, "_get_int_max_str_digits", None)
    elif previous is None:
        pytest.skip("this interpreter has no int-to-str limit to disable")
    else:
        sys.set_int_max_str_digits(0)
    try:
        assert json_scalars.max_int_digits() == 4300
        values = {"d": Decimal("1e999999"), "e": Decimal("1e4300"), "f": Decimal("1e4299")}
        assert strict_loads(encoding.encode(values)) == {"d": "1E+999999", "e": "1E+4300", "f": 10**4299}
    finally:
        if previous is not None:
            sys.set_int_max_str_digits(previous)


# -- decoding for callbacks --------------------------------------------------------------------------------


def test_decode_safely_reads_what_encode_wrote_at_any_nesting() -> None:
    levels = 100_000  # deeper than json.loads can go on any interpreter
    data = b'{"type":"track","messageId":"m-deep","v":' + b"[" * levels + b"7" + b"]" * levels + b"}"
    decoded = encoding.decode_safely(data)
    assert (decoded["type"], decoded["messageId"]) == ("track", "m-deep")
    assert nesting(decoded["v"]) == levels and _innermost(decoded["v"]) == 7
    # a consumer thread's stack may be deeper than the caller's was when it encoded
    small = encoding.encode({"type": "track", "messageId": "m1", "v": nest(200)})
    decoded = at_depth(deepest_call() - 150, lambda: encoding.decode_safely(small))
    assert decoded == {"type": "track", "messageId": "m1", "v": nest(200)}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"integrations":{},"messageId":"m-\\"7","properties":{"v":', {"messageId": 'm-"7'}),
        (
            b'{"messageId":"m8","context":{"type":"x"},"type":"identify","userId":"u"',
            {"messageId": "m8", "type": "identify"},
        ),
        (b"\xff\xfe not json", {}),
        (b"[1, 2]", {}),
        (b"", {}),
        (b'{"messageId":"m9","v":NaN', {"messageId": "m9"}),
    ],
)
def test_decode_safely_identifies_what_it_cannot_decode(data: bytes, expected: dict[str, Any]) -> None:
    decoded = encoding.decode_safely(data)
    assert decoded.pop("_decode_error")
    assert decoded == expected


# -- the recursion-free writer and reader agree with the C versions ----------------------------------------


def _plain(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(10 if depth < 6 else 7)
    if kind == 0:
        return rnd.choice([0, -1, 2**63, -(2**70), 10**300, rnd.randint(-(10**9), 10**9)])
    if kind == 1:
        return rnd.choice([0.0, -0.0, 0.1, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, rnd.uniform(-1e6, 1e6)])
    if kind in (2, 3):
        return "".join(rnd.choice('aé☃𝄞"\\\n\t\x00\x1f/\u2028 0') for _ in range(rnd.randint(0, 8)))
    if kind in (4, 5, 6):
        return rnd.choice([True, False, None])
    if kind in (7, 8):
        return {str(_plain(rnd, 9)): _plain(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    return [_plain(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]


def test_recursion_free_writer_and_reader_match_the_c_versions() -> None:
    rnd = random.Random(8259)
    for _ in range(3000):
        value = _plain(rnd)
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        assert json_text.dumps(value) == expected
        assert json_text.loads(expected) == json.loads(expected)
        spaced = json.dumps(value, indent=rnd.choice([None, 2]), ensure_ascii=rnd.random() < 0.5)
        assert json_text.loads(spaced) == json.loads(spaced)
    assert json_text.dumps(nest(100_000)) == "[" * 100_000 + '"leaf"' + "]" * 100_000


@pytest.mark.parametrize("text", ["", "[1,]", '{"a" 1}', "[1 2]", "nul", "01", "[1]x", '{"a":1,}', "NaN", '"\x01"'])
def test_recursion_free_reader_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text, parse_constant=lambda token: (_ for _ in ()).throw(ValueError(token)))
    with pytest.raises(ValueError):
        json_text.loads(text)
