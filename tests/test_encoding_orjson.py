"""Differential test: ``encoding.encode`` with orjson on and off must put the same bytes on the wire.

Where it cannot, the output must at least parse to equal JSON, and the bytes
may differ only in how a float is spelt. That happens only for floats that
Python writes in exponent notation (``abs(x) < 1e-4`` or ``abs(x) >= 1e16``),
and which of them differ depends on the orjson version:

* orjson 3.13: ``0 < abs(x) < 1e-4`` with a one-digit exponent — Python
  writes ``1e-05`` / ``1e-07``, orjson ``0.00001`` / ``1e-7``;
* older orjson (e.g. 3.8, which ``orjson>=3.6`` allows) also writes large
  ones differently: ``1e16`` / ``1.5e300`` for Python's ``1e+16`` / ``1.5e+300``.

Every other value tested here is byte-identical, including values orjson
refuses (nesting past 254 levels, ints over 64 bits, non-string keys): for
those ``encode`` falls back to the standard library first.

Skipped as a whole when orjson is not installed.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import json
import math
import random
import re
import struct
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("orjson")

from segment.analytics import Client, encoding


@pytest.fixture(autouse=True)
def _restore_encoder() -> Iterator[None]:
    was = encoding.orjson_in_use()
    yield
    encoding.use_orjson(was)


def encode_both(value: Any) -> tuple[bytes, bytes]:
    """``encode(value)`` with the standard library, then with orjson."""
    assert encoding.use_orjson(False) is False
    assert not encoding.orjson_in_use()
    std = encoding.encode(value)
    assert encoding.use_orjson(True) is True
    assert encoding.orjson_in_use()
    fast = encoding.encode(value)
    return std, fast


_BUILDER = Client("orjson-differential-key", send=False)


def track_message(properties: Any) -> dict[str, Any]:
    """A complete track message as the client builds it, around ``properties``."""
    _, msg = _BUILDER.track(
        "user-1",
        "Order Completed",
        properties,
        context={"ip": "203.0.113.9", "locale": "fr-FR"},
        integrations={"All": True},
    )
    return msg


def float_spelling_may_differ(x: float) -> bool:
    """Floats Python writes in exponent notation: the only ones whose spelling may differ (module docstring)."""
    return x != 0 and (abs(x) < 1e-4 or abs(x) >= 1e16)


_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def spelling_differences(std: bytes, fast: bytes) -> list[tuple[bytes, bytes]]:
    """The number tokens that differ, after checking that nothing else does and that the JSON is equal."""
    assert json.loads(std) == json.loads(fast), (std, fast)
    assert _NUMBER.sub(b"#", std) == _NUMBER.sub(b"#", fast), f"not only numbers differ: {std!r} vs {fast!r}"
    pairs = [(a, b) for a, b in zip(_NUMBER.findall(std), _NUMBER.findall(fast)) if a != b]
    for a, b in pairs:
        assert float(a) == float(b), (a, b)
        assert float_spelling_may_differ(float(a)), f"undocumented spelling difference: {a!r} vs {b!r}"
    return pairs


def assert_same_on_wire(value: Any) -> list[tuple[bytes, bytes]]:
    """Byte-identical, or equal JSON differing only in the documented float spellings; returns those."""
    std, fast = encode_both(value)
    return [] if std == fast else spelling_differences(std, fast)


class Color(enum.Enum):
    RED = "red"
    ONE = 1


class Level(enum.IntEnum):
    HIGH = 3


class Flavor(str, enum.Enum):
    SWEET = "sweet"


class FakeArray:
    """A numpy-like object: only ``tolist()``."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def tolist(self) -> Any:
        return self.value


class BrokenToList:
    """``tolist()`` raises: the encoder falls back to ``str()``."""

    def tolist(self) -> Any:
        raise RuntimeError("no")

    def __str__(self) -> str:
        return "broken-tolist"


class Opaque:
    """Not JSON-serialisable at all: sent as ``str(value)``."""

    def __str__(self) -> str:
        return "opaque!"


class RedactingDict(dict):  # type: ignore[type-arg]
    """A dict subclass whose ``items()`` differs from what it stores: both modes honour ``items()``."""

    def items(self) -> Any:
        return [(key, "***") for key in dict.keys(self)]


class OneItemList(list):  # type: ignore[type-arg]
    """A list subclass whose ``__iter__`` differs from what it stores: both modes honour ``__iter__``."""

    def __iter__(self) -> Any:
        return iter(["only"])


Point = collections.namedtuple("Point", "x y")

StrSub = type("StrSub", (str,), {})
IntSub = type("IntSub", (int,), {})
FloatSub = type("FloatSub", (float,), {})
DictSub = type("DictSub", (dict,), {})
ListSub = type("ListSub", (list,), {})

UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

#: Values that must give byte-identical output (as a property of a complete message).
IDENTICAL: dict[str, Any] = {
    "naive datetime": dt.datetime(2026, 11, 25, 10, 30, 15),
    "naive datetime with microseconds": dt.datetime(2026, 11, 25, 10, 30, 15, 123456),
    "aware datetime UTC": dt.datetime(2026, 11, 25, 10, 30, 15, tzinfo=UTC),
    "aware datetime +05:30 with microseconds": dt.datetime(2026, 11, 25, 10, 30, 15, 1, tzinfo=IST),
    "aware datetime -08:00": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
    "datetime.min / max": [dt.datetime.min, dt.datetime.max],
    "date": dt.date(2026, 11, 25),
    "time": dt.time(10, 30, 0, 5),
    "timedelta": dt.timedelta(days=1, seconds=5),
    "Decimal fraction": decimal.Decimal("12.50"),
    "Decimal integral": decimal.Decimal("12"),
    "Decimal huge integral": decimal.Decimal("1e30"),
    "Decimal NaN": decimal.Decimal("NaN"),
    "Decimal Infinity": decimal.Decimal("-Infinity"),
    "UUID": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "set": {1},
    "frozenset": frozenset(["a"]),
    "tuple": (1, "a", None, (2, 3)),
    "Enum str": Color.RED,
    "Enum int": Color.ONE,
    "IntEnum": Level.HIGH,
    "str Enum": Flavor.SWEET,
    "bytes (valid utf-8)": b"abc",
    "bytes (invalid utf-8)": b"abc\xff\xfe",
    "bytearray": bytearray(b"xy"),
    "memoryview": memoryview(b"mv"),
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
    "NaN nested in a list": [1.5, float("nan"), {"x": float("inf")}],
    "nested dicts and lists": {"a": {"b": [1, {"c": [None, True, False, {"d": {}}]}], "e": []}},
    "unicode": "héllo ☃ 𝄞 日本語 Ελληνικά",
    "line and paragraph separators": "a\u2028b\u2029c",
    "control characters": "\x00\x01\x1f\x7f\t\n\r\x08\x0c",
    "quotes, backslash, slash": "\"'\\/",
    "lone surrogate": "a\ud800b",
    "lone surrogate in a key": {"k\udfff": 1},
    "empty string": "",
    "long string": "x" * 5000,
    "int 0": 0,
    "int 2**53 + 1": 2**53 + 1,
    "int 2**63 - 1": 2**63 - 1,
    "int -2**63": -(2**63),
    "int 2**64 (past orjson's range)": 2**64,
    "int 10**30": 10**30,
    "int -2**63 - 1": -(2**63) - 1,
    "float 0.1": 0.1,
    "float 0.1 + 0.2": 0.1 + 0.2,
    "float -0.0": -0.0,
    "float 0.0": 0.0,
    "float 1.0": 1.0,
    "float 1e15": 1e15,
    "float 1e-4": 1e-4,
    "float 123456789.123": 123456789.123,
    "float -2.5": -2.5,
    "bool": [True, False],
    "None": None,
    "numpy-like (tolist)": FakeArray([1, 2.5, "x", [3]]),
    "numpy-like scalar (tolist)": FakeArray(7),
    "broken tolist": BrokenToList(),
    "opaque object": Opaque(),
    "str subclass": StrSub("sub"),
    "int subclass": IntSub(5),
    "float subclass": FloatSub(2.5),
    "dict subclass": DictSub(a=1),
    "list subclass": ListSub([1, 2]),
    "dict subclass overriding items()": RedactingDict(secret="x"),
    "list subclass overriding __iter__": OneItemList([1, 2]),
    "namedtuple": Point(1, 2),
    "OrderedDict and defaultdict": [collections.OrderedDict(a=1), collections.defaultdict(int, b=2)],
    "int keys": {1: "a", -2: "b"},
    "float key": {1.5: "a"},
    "bool and None keys": {True: 1, None: 2},
    "mixed keys": {"a": 1, 2: "b"},
    "empty containers": [{}, [], ()],
    "nested 100 levels": None,  # built below
    "nested 250 levels": None,  # built below
}


def _nest(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


IDENTICAL["nested 100 levels"] = _nest(100)
IDENTICAL["nested 250 levels"] = _nest(250)


#: Floats Python spells with an exponent: equal JSON, bytes identical or differing only in spelling.
EXPONENT_FLOATS = [1e16, 1e22, 1.5e300, sys.float_info.max, 1e-5, 2.5e-5, 1e-7, 1.5e-9, 1e-10, 1e-100, 5e-324]


@pytest.mark.parametrize("value", EXPONENT_FLOATS + [-x for x in EXPONENT_FLOATS])
def test_exponent_floats_are_equal_json(value: float) -> None:
    assert_same_on_wire(track_message({"v": value, "list": [value, 1.0]}))
    assert_same_on_wire(value)


@pytest.mark.parametrize("name", sorted(IDENTICAL))
def test_byte_identical_as_a_property(name: str) -> None:
    std, fast = encode_both(track_message({"value": IDENTICAL[name], "n": 1}))
    assert std == fast


@pytest.mark.parametrize("name", sorted(IDENTICAL))
def test_byte_identical_as_the_whole_message(name: str) -> None:
    std, fast = encode_both(IDENTICAL[name])
    assert std == fast


def test_realistic_messages_are_byte_identical() -> None:
    properties = {
        "order_id": "ord-00000042",
        "revenue": 42.99,
        "currency": "EUR",
        "quantity": 3,
        "coupon": None,
        "first_purchase": False,
        "ordered_at": dt.datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        "shipping": {"method": "ground", "city": "São Paulo", "express": True},
        "items": [{"sku": "SKU-1", "price": 19.99, "qty": 1}, {"sku": "SKU-2", "price": 5.25, "qty": 2}],
        "tags": ("sale", "newsletter"),
        "ids": {uuid.UUID(int=1)},
        "amount": decimal.Decimal("10.10"),
    }
    for timestamp in (None, dt.datetime(2026, 1, 2, 3, 4, 5, 678901), "2026-11-25T10:00:00Z", dt.date(2026, 1, 1)):
        _, msg = _BUILDER.identify(
            42,
            properties,
            context={"library": "overwritten", "page": {"url": "https://example.com/ü"}},
            timestamp=timestamp,
            message_id=uuid.UUID(int=7),
        )
        std, fast = encode_both(msg)
        assert std == fast


def _random_value(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(16 if depth < 4 else 11)
    if kind == 0:
        return rnd.randint(-(2**70), 2**70) if rnd.random() < 0.1 else rnd.randint(-1000, 10**9)
    if kind == 1:
        return round(rnd.uniform(-1e6, 1e6), rnd.randint(0, 8))
    if kind == 2:
        return "".join(rnd.choice('aé☃𝄞"\\\n/ 0') for _ in range(rnd.randint(0, 12)))
    if kind == 3:
        return rnd.choice([True, False, None])
    if kind == 4:
        return dt.datetime(2026, 1, 1, tzinfo=rnd.choice([None, UTC, IST])) + dt.timedelta(
            seconds=rnd.randint(0, 10**7), microseconds=rnd.choice([0, rnd.randint(0, 999_999)])
        )
    if kind == 5:
        return dt.date(2000, 1, 1) + dt.timedelta(days=rnd.randint(0, 20_000))
    if kind == 6:
        return decimal.Decimal(rnd.randint(-(10**6), 10**6)) / rnd.choice([1, 10, 100, 1000])
    if kind == 7:
        return uuid.UUID(int=rnd.getrandbits(128))
    if kind == 8:
        return rnd.choice([Color.RED, Color.ONE, Level.HIGH, Flavor.SWEET])
    if kind == 9:
        return rnd.choice([b"bytes", float("nan"), float("inf"), FakeArray([1, 2]), -0.0])
    if kind == 10:
        return rnd.choice([1e16, 1e22, 0.1, 1e-4, 2.5, 1e300])
    if kind in (11, 12):
        return {
            rnd.choice(["a", "b", "ключ", "k" + str(rnd.randint(0, 9)), 3]): _random_value(rnd, depth + 1)
            for _ in range(rnd.randint(0, 5))
        }
    if kind == 13:
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 5))]
    if kind == 14:
        return tuple(_random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3)))
    return {_random_value(rnd, 4) for _ in range(2)} if rnd.random() < 0.5 else frozenset([1, 2])


def test_random_messages_are_byte_identical() -> None:
    rnd = random.Random(20261125)
    for _ in range(1500):
        props = {f"p{i}": _random_value(rnd) for i in range(rnd.randint(1, 12))}
        assert_same_on_wire(track_message(props))


def _float_sweep() -> list[float]:
    rnd = random.Random(7)
    values = [10.0**e for e in range(-320, 309)] + [1.5 * 10.0**e for e in range(-300, 300)]
    values += [x * 10.0**e for e in range(-12, 24) for x in (1.0, 2.5, 9.999999999999998, 1.2345678901234567)]
    while len(values) < 30_000:
        x = struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0]
        if math.isfinite(x):
            values.append(x)
    values += [rnd.uniform(-1e4, 1e4) for _ in range(10_000)]
    values += [round(rnd.uniform(0, 1000), rnd.randint(0, 6)) for _ in range(10_000)]
    return values


def test_float_sweep_differs_only_in_the_documented_spelling() -> None:
    differing = []
    for x in _float_sweep():
        for value in (x, -x):
            differing += assert_same_on_wire(value)
    assert differing, "the documented spelling difference was not seen: update the docstring and this test"


@pytest.mark.parametrize(
    ("value", "std_text", "orjson_texts"),
    [
        (1e-5, "1e-05", ("0.00001",)),
        (2.5e-5, "2.5e-05", ("0.000025",)),
        (1e-7, "1e-07", ("1e-7",)),
        (-1.5e-9, "-1.5e-09", ("-1.5e-9",)),
    ],
)
def test_small_floats_differ_in_spelling_only(value: float, std_text: str, orjson_texts: tuple[str, ...]) -> None:
    std, fast = encode_both({"v": value})
    assert std == b'{"v":' + std_text.encode() + b"}"
    assert fast.decode()[5:-1] in orjson_texts
    assert spelling_differences(std, fast) == [(std_text.encode(), fast[5:-1])]


def test_numpy_values_are_byte_identical() -> None:
    np = pytest.importorskip("numpy")
    values = [
        np.int64(7),
        np.int32(-3),
        np.uint64(2**64 - 1),
        np.float64(0.1),
        np.float32(0.1),
        np.bool_(True),
        np.array([1, 2, 3]),
        np.array([[1.5, 2.5]]),
        np.array([], dtype=float),
        np.array(["a", "b"]),
    ]
    for value in values:
        std, fast = encode_both(track_message({"v": value}))
        assert std == fast, value


@pytest.mark.parametrize("depth", [300, 900])
def test_deep_nesting_is_byte_identical(depth: int) -> None:
    # orjson refuses more than 254 levels; encode() then tries the standard library as is
    std, fast = encode_both({"v": _nest(depth)})
    assert std == fast


def test_cycles_are_byte_identical() -> None:
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    looped: list[Any] = [1]
    looped.append(looped)
    for value in (cyclic, {"p": looped}, track_message({"c": cyclic})):
        std, fast = encode_both(value)
        assert std == fast
