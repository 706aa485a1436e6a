"""The JSON-safety table of delivery.md §2, and message size limits. Pure: no server."""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import math
import uuid
from decimal import Decimal
from typing import Any, Callable

import pytest

from segment.analytics import Client, encoding
from segment.analytics.client import MAX_MSG_SIZE
from segment.analytics.testing import MockTrackingAPI

from .conftest import ErrorLog


@pytest.fixture(params=["stdlib", "orjson"])
def encoder(request: pytest.FixtureRequest) -> Any:
    """Run each test with the standard library encoder and (when installed) with orjson."""
    if request.param == "orjson":
        if not encoding.use_orjson(True):
            pytest.skip("orjson is not installed")
    else:
        encoding.use_orjson(False)
    yield encoding
    encoding.use_orjson(True)


def strict_loads(data: bytes) -> Any:
    """Parse as RFC 8259 JSON: NaN/Infinity are not accepted."""

    def reject(token: str) -> Any:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(data.decode("utf-8"), parse_constant=reject)


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


class Nested(enum.Enum):
    POINT = (1, 2)


class Size(enum.IntEnum):
    LARGE = 3


class FakeScalar:
    """Duck-typed like a numpy scalar: registered with no ABC, has tolist()."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def tolist(self) -> Any:
        return self.value


class Opaque:
    def __str__(self) -> str:
        return "<opaque thing>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "2020-01-02T03:04:05+00:00"),
        (dt.datetime(2020, 1, 2, 3, 4, 5, 120000), "2020-01-02T03:04:05.120000"),
        (dt.date(2020, 1, 2), "2020-01-02"),
        (Decimal("1.25"), 1.25),
        (Decimal("10"), 10),
        (Decimal("123456789012345678901234567890"), 123456789012345678901234567890),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ({3}, [3]),
        (frozenset({"a"}), ["a"]),
        ((1, "two", 3.0), [1, "two", 3.0]),
        (Color.RED, "red"),
        (Color.BLUE, 2),
        (Nested.POINT, [1, 2]),
        (Size.LARGE, 3),
        (b"caf\xc3\xa9", "café"),
        (bytearray(b"xyz"), "xyz"),
        (b"\xff\xfe", "\ufffd\ufffd"),
        (float("nan"), None),
        (float("inf"), None),
        (float("-inf"), None),
        (Decimal("NaN"), None),
        (FakeScalar(7), 7),
        (FakeScalar([1.5, 2.5]), [1.5, 2.5]),
        (Opaque(), "<opaque thing>"),
        ({"deep": [{"when": dt.date(2021, 3, 4), "tags": {"x"}}]}, {"deep": [{"when": "2021-03-04", "tags": ["x"]}]}),
        ({1: "int key", None: "none key", 2.5: "float key"}, {"1": "int key", "null": "none key", "2.5": "float key"}),
        ({(1, 2): "tuple key"}, {"[1,2]": "tuple key"}),
        ("emoji \U0001f600 and \u00e9", "emoji \U0001f600 and \u00e9"),
        (2**80, 2**80),
    ],
)
def test_json_safety_table(encoder: Any, value: Any, expected: Any) -> None:
    data = encoder.encode({"v": value})
    assert strict_loads(data) == {"v": expected}


def test_numpy_values_if_available(encoder: Any) -> None:
    np = pytest.importorskip("numpy")
    data = encoder.encode(
        {
            "i": np.int64(5),
            "f": np.float32(1.5),
            "b": np.bool_(True),
            "a": np.arange(3),
            "nan": np.float64("nan"),
            "m": np.array([[1.0, 2.0]]),
        }
    )
    assert strict_loads(data) == {"i": 5, "f": 1.5, "b": True, "a": [0, 1, 2], "nan": None, "m": [[1.0, 2.0]]}


def test_cycles_and_deep_nesting_never_raise(encoder: Any) -> None:
    looped: dict[str, Any] = {"name": "loop"}
    looped["self"] = looped
    assert strict_loads(encoder.encode({"v": looped})) == {"v": {"name": "loop", "self": None}}
    deep: Any = "leaf"
    for _ in range(5000):
        deep = [deep]
    parsed = strict_loads(encoder.encode({"v": deep}))
    assert isinstance(parsed["v"], list)


def test_lone_surrogates_become_replacement_characters(encoder: Any) -> None:
    data = encoder.encode({"bad": "a\ud800b", "\udfffkey": 1})
    assert strict_loads(data) == {"bad": "a\ufffdb", "\ufffdkey": 1}


def test_output_is_compact(encoder: Any) -> None:
    assert encoder.encode({"a": [1, 2], "b": {"c": None}}) == b'{"a":[1,2],"b":{"c":null}}'


def test_nan_warns_once_and_unknown_types_warn(caplog: pytest.LogCaptureFixture) -> None:
    encoding.use_orjson(False)
    encoding._warned.clear()
    try:
        with caplog.at_level(logging.DEBUG, logger="segment"):
            for _ in range(3):
                encoding.encode({"x": math.nan})
            encoding.encode({"y": Opaque()})
    finally:
        encoding.use_orjson(True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len([r for r in warnings if "NaN" in r.getMessage()]) == 1
    assert any("Opaque" in r.getMessage() for r in warnings)


def test_bad_values_are_made_safe_at_the_call_and_the_batch_survives(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    client = make_client()
    client.track("u", "good-1", message_id="g1")
    client.track(
        "u", "weird", {"nan": float("nan"), "obj": Opaque(), "set": {1}, "when": dt.date(2020, 1, 1)}, message_id="w"
    )
    client.track("u", "good-2", message_id="g2")
    assert client.flush(timeout=5) == 0
    events = {e["messageId"]: e for e in api.events()}
    assert set(events) == {"g1", "w", "g2"}
    assert events["w"]["properties"] == {"nan": None, "obj": "<opaque thing>", "set": [1], "when": "2020-01-01"}
    assert api.requests()[0].raw_body.count(b"NaN") == 0
    assert errors.errors == []


def test_message_over_32kb_is_refused_and_reported_not_raised(
    make_client: Callable[..., Client], api: MockTrackingAPI, errors: ErrorLog
) -> None:
    client = make_client()
    ok, msg = client.track("u", "huge", {"blob": "x" * MAX_MSG_SIZE})
    assert ok is False and msg["event"] == "huge"
    ok_small, _ = client.track("u", "fits", {"blob": "x" * (MAX_MSG_SIZE - 1000)})
    assert ok_small is True
    assert client.flush(timeout=5) == 0
    assert errors.reasons() == ["message_too_large"]
    assert errors.errors[0][1][0]["event"] == "huge"
    assert getattr(errors.errors[0][0], "status", "x") is None
    stats = client.stats()
    assert stats["accepted"] == 2 and stats["delivered"] == 1
    assert stats["dropped_by_reason"] == {"message_too_large": 1} and stats["pending"] == 0
    assert [e["event"] for e in api.events()] == ["fits"]
