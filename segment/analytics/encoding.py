"""Turning a message into strict JSON bytes, once (delivery.md §2, JSON-safety table).

``encode(message)`` is the only entry point the client uses. The fast path is
one call to the C JSON encoder (or ``orjson`` when it is installed and
enabled) with a ``default`` hook for the types JSON lacks. If that fails (NaN,
a non-string key, a cycle, a lone surrogate), the message is copied into
plain JSON types by :func:`make_json_safe` and encoded again, which cannot
fail. Both paths give the same bytes for the same input.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import logging
import math
import numbers
import re
import threading
import uuid
from decimal import Decimal
from typing import Any, Callable, Optional

log = logging.getLogger("segment")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen, then at DEBUG."""
    if key in _warned:
        log.debug(message, *args)
        return
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    log.log(logging.WARNING if first else logging.DEBUG, message, *args)


def reset_after_fork() -> None:
    """Replace the module lock in a forked child (another thread may have held it at fork time)."""
    global _warned_lock
    _warned_lock = threading.Lock()


def _decimal_value(value: Decimal) -> Any:
    if not value.is_finite():
        _warn_once("nan", "NaN or Infinity is not valid JSON; sent as null")
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _float_value(value: float) -> Optional[float]:
    if math.isfinite(value):
        return value
    _warn_once("nan", "NaN or Infinity is not valid JSON; sent as null")
    return None


def _default(value: Any) -> Any:
    """JSON ``default`` hook: map one non-JSON value to something JSON can hold."""
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _decimal_value(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy-like arrays and scalars, duck-typed
        try:
            return tolist()
        except Exception:  # noqa: BLE001 - a broken tolist() falls through to str()
            pass
    type_name = type(value).__name__
    _warn_once("str:" + type_name, "value of type %s is not JSON-serialisable; sent as str(value)", type_name)
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - even str() may fail on hostile objects
        return f"<unserialisable {type_name}>"


_MAX_DEPTH = 200
_CYCLE = object()


def make_json_safe(value: Any, _depth: int = 0, _path: Optional[set[int]] = None) -> Any:
    """Return a copy of ``value`` made only of JSON types (str-keyed dict, list, str, int, finite float, bool, None).

    Applies the delivery.md §2 table; NaN/Infinity become ``None``; a container that
    contains itself is replaced by ``None`` where it recurs; non-string keys
    become strings the way the JSON module writes them.
    """
    if value is None or isinstance(value, (str, bool, int)):
        if isinstance(value, str) and not _is_encodable(value):
            return _SURROGATE.sub("\ufffd", value)
        if isinstance(value, int) and not isinstance(value, bool) and type(value) is not int:
            return int(value)
        return value
    if isinstance(value, float):
        return _float_value(float(value))
    if _depth >= _MAX_DEPTH:
        _warn_once("depth", "value nested deeper than %d levels; sent as null", _MAX_DEPTH)
        return None
    path = _path if _path is not None else set()
    if isinstance(value, (dict, list, tuple)):
        ident = id(value)
        if ident in path:
            _warn_once("cycle", "value contains itself; the repeated reference is sent as null")
            return None
        path.add(ident)
        try:
            if isinstance(value, dict):
                return {_key(k): make_json_safe(v, _depth + 1, path) for k, v in value.items()}
            return [make_json_safe(v, _depth + 1, path) for v in value]
        finally:
            path.discard(ident)
    return make_json_safe(_default(value), _depth + 1, path)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key(key: Any) -> str:
    """A dict key as the JSON module would write it (str, int, float, bool, None), else ``str(key)``."""
    if isinstance(key, str):
        return key if _is_encodable(key) else _SURROGATE.sub("\ufffd", key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float):
        return json.dumps(key) if math.isfinite(key) else "null"
    safe = make_json_safe(key)
    return safe if isinstance(safe, str) else json.dumps(safe, separators=(",", ":"), ensure_ascii=False)


def _make_stdlib_encoder() -> Callable[[Any], str]:
    """The standard library's C encoder, built once (``json.dumps`` builds one per call).

    No circular-reference bookkeeping: a value that contains itself ends in a
    ``RecursionError``, which :func:`encode` answers with :func:`make_json_safe`.
    """
    options = {"separators": (",", ":"), "ensure_ascii": False, "allow_nan": False, "default": _default}
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(**options).encode  # type: ignore[arg-type]
    chunks = c_make_encoder(None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    join = "".join

    def _encode(message: Any) -> str:
        return join(chunks(message, 0))

    return _encode


_stdlib_encode = _make_stdlib_encoder()

_FAST_ERRORS = (TypeError, ValueError, OverflowError, UnicodeEncodeError, RecursionError)


def _encode_stdlib(message: Any) -> bytes:
    return _stdlib_encode(message).encode("utf-8")


def _make_orjson_encoder() -> Optional[Callable[[Any], bytes]]:
    try:
        import orjson  # optional extra: pip install segment-analytics-python[fast]
    except ImportError:
        return None
    option = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
    dumps = orjson.dumps

    def _encode_orjson(message: Any) -> bytes:
        # orjson's result keeps its growth buffer (about 4 KB for a typical event); the queue keeps an
        # exact-size copy instead
        return memoryview(dumps(message, default=_default, option=option)).tobytes()

    return _encode_orjson


_orjson_encode = _make_orjson_encoder()
_fast_encode: Callable[[Any], bytes] = _orjson_encode or _encode_stdlib


def use_orjson(enabled: bool) -> bool:
    """Switch the optional ``orjson`` fast path on or off; returns whether it is now in use."""
    global _fast_encode
    _fast_encode = _orjson_encode if (enabled and _orjson_encode is not None) else _encode_stdlib
    return _fast_encode is not _encode_stdlib


def orjson_in_use() -> bool:
    """Whether messages are currently encoded with ``orjson``."""
    return _fast_encode is not _encode_stdlib


def encode(message: Any) -> bytes:
    """Encode ``message`` as compact, strict JSON (RFC 8259) in UTF-8."""
    try:
        return _fast_encode(message)
    except _FAST_ERRORS:
        pass
    if _fast_encode is not _encode_stdlib:
        # orjson refused (a non-string key, an int over 64 bits, nesting past 254 levels): the standard
        # library may still take it as it is, and then the bytes are the same as without orjson
        try:
            return _encode_stdlib(message)
        except _FAST_ERRORS:
            pass
    return _encode_stdlib(make_json_safe(message))


def decode(data: bytes) -> Any:
    """Decode bytes produced by :func:`encode` back into plain Python values."""
    return json.loads(data)


def decode_safely(data: bytes) -> Any:
    """Decode an encoded event for a callback; never raises (placeholder until the hardened decoder lands)."""
    try:
        return decode(data)
    except Exception:  # noqa: BLE001
        return {"undecodable": data[:200].decode("utf-8", "replace")}
