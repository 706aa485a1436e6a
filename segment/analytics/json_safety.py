"""Turning any Python value into plain JSON types without raising (SPEC 1, JSON-safety table).

:func:`default` is the ``default`` hook of the fast encoders: it maps one
value JSON lacks to something closer to JSON. :func:`make_json_safe` copies a
whole value into plain JSON types (str-keyed dict, list, str, int, finite
float, bool, None) with an explicit stack, so it works at any stack depth.

Both never raise for the data: a value's own methods (``__str__``,
``items()``, ``tolist()``, ``utcoffset()`` ...) are called inside ``try``,
and when one raises the value is read another way or sent as a placeholder
string (``"<unserialisable TypeName>"``). Only ``KeyboardInterrupt`` passes
through, since it may be the user's Ctrl-C. Every conversion costs at most
time linear in the size of what it reads or writes: big numbers are never
converted to decimal digits past the interpreter's int-to-str limit.
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import math
import numbers
import re
import sys
import threading
import uuid
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Optional

from segment.analytics.json_text import dumps

log = logging.getLogger("segment")

#: Containers nested deeper than this are sent as ``null`` where they are cut (by the fallback path).
MAX_DEPTH = 500
#: Conversions of one value (an Enum's value, ``tolist()``, ...) before it is given up as ``null``.
_MAX_STEPS = 16
#: Digits an integer may have when the interpreter sets no int-to-str limit (3.9/3.10 before 3.9.14/3.10.7).
_DEFAULT_MAX_DIGITS = 4300
#: The lowest int-to-str limit an interpreter accepts (other than 0, no limit).
_MIN_LIMIT = 640
_LOG10_2 = math.log10(2)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen, then at DEBUG; never raises."""
    if key in _warned:
        try:
            log.debug(message, *args)
        except Exception:  # noqa: BLE001 - a broken logging setup (or a deep stack) must not make data raise
            pass
        return
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    try:
        log.log(logging.WARNING if first else logging.DEBUG, message, *args)
    except Exception:  # noqa: BLE001
        if first:  # not said (e.g. no stack left for logging): say it next time
            _warned.discard(key)


def reset_after_fork() -> None:
    """Replace the module lock in a forked child (another thread may have held it at fork time)."""
    global _warned_lock
    _warned_lock = threading.Lock()


def type_name(value: Any) -> str:
    """The name of ``value``'s type, even when its metaclass is hostile."""
    try:
        name = type(value).__name__
    except Exception:  # noqa: BLE001
        return "object"
    return name if type(name) is str else "object"


def placeholder(value: Any) -> str:
    """What is sent for a value that cannot be read at all."""
    name = type_name(value)
    warn_once("str:" + name, "value of type %s cannot be converted (its methods raise); sent as a placeholder", name)
    return f"<unserialisable {name}>"


def _as_str(value: Any) -> str:
    """``str(value)`` as a plain ``str`` (one warning per type), or the placeholder if it raises."""
    try:
        text = str(value)
        text = str.__str__(text)  # a str subclass returned by __str__ becomes a plain str
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - hostile __str__ / __repr__ (even SystemExit) is data
        return placeholder(value)
    name = type_name(value)
    warn_once("str:" + name, "value of type %s is not JSON-serialisable; sent as str(value)", name)
    return text


# -- numbers ---------------------------------------------------------------------------------------------


_get_int_max_str_digits: Optional[Callable[[], int]] = getattr(sys, "get_int_max_str_digits", None)


def max_int_digits() -> int:
    """Digits an integer may have to be sent as a number: the interpreter's int-to-str limit, else 4300."""
    limit = _get_int_max_str_digits() if _get_int_max_str_digits is not None else 0
    return limit if limit > 0 else _DEFAULT_MAX_DIGITS


def int_fits(value: int) -> bool:
    """Whether ``value``'s decimal digits fit :func:`max_int_digits` (cost bounded by the limit)."""
    limit = max_int_digits()
    bits = value.bit_length()
    if bits * _LOG10_2 < limit - 1:
        return True
    if bits * _LOG10_2 > limit + 1:
        return False
    try:  # near the limit: count the digits
        return len(int.__repr__(abs(value))) <= limit
    except ValueError:
        return False


def int_leaf(value: int) -> Optional[int]:
    """An exact ``int`` if its decimal digits fit :func:`max_int_digits`, else ``None`` (one warning)."""
    if int_fits(value):
        return value
    limit = max_int_digits()
    warn_once("bigint", "integer with more than %d digits cannot be written as JSON; sent as null", limit)
    return None


def float_leaf(value: float) -> Optional[float]:
    """A finite float, or ``None`` for NaN/Infinity (one warning)."""
    if math.isfinite(value):
        return value
    warn_once("nan", "NaN or Infinity is not valid JSON; sent as null")
    return None


def _decimal_value(value: Decimal) -> Any:
    """A Decimal as an int (integral, within the digit limit), a float, or its exact string past both."""
    if type(value) is not Decimal:
        value = Decimal(value)  # a plain copy: a subclass's overrides are not called
    if not value.is_finite():
        warn_once("nan", "NaN or Infinity is not valid JSON; sent as null")
        return None
    if value == value.to_integral_value():
        if not value:
            return 0
        digits = value.adjusted()  # one less than the number of digits
        if digits < _MIN_LIMIT or digits < max_int_digits():
            return int(value)
    else:
        number = float(value)
        if number != 0.0 and math.isfinite(number):
            return number
    warn_once("decimal", "Decimal beyond what a float or the int-to-str limit can carry; sent as a string")
    return str(value)


def _real_value(value: Any) -> Any:
    """Any other ``numbers.Real`` (Fraction, numpy floats ...): a float, else its string, else null."""
    try:
        number = float(value)
        if number != 0.0 or value == 0:
            return float_leaf(number)
    except OverflowError:
        pass
    name = type_name(value)
    try:
        text = str.__str__(str(value))
    except ValueError:  # e.g. a Fraction whose numerator is past the int-to-str limit
        warn_once("real:" + name, "%s beyond what a float can carry and too long to write; sent as null", name)
        return None
    warn_once("real:" + name, "%s beyond what a float can carry; sent as a string", name)
    return text


# -- dates -------------------------------------------------------------------------------------------------

_DATE_FIELDS = ("year", "month", "day")
_TIME_FIELDS = ("hour", "minute", "second", "microsecond")


def plain_datetime(value: _dt.date) -> _dt.datetime:
    """A plain ``datetime`` with ``value``'s fields and tzinfo, read with the base getters (no user code)."""
    year, month, day = (getattr(_dt.date, name).__get__(value) for name in _DATE_FIELDS)
    if not isinstance(value, _dt.datetime):
        return _dt.datetime(year, month, day)
    hour, minute, second, micro = (getattr(_dt.datetime, name).__get__(value) for name in _TIME_FIELDS)
    tzinfo = _dt.datetime.tzinfo.__get__(value)
    fold = _dt.datetime.fold.__get__(value)
    return _dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tzinfo, fold=fold)


def _date_fallback(value: _dt.date) -> str:
    """ISO-8601 of a date whose ``isoformat()`` raised; a time zone that raises is left out (one warning)."""
    plain = plain_datetime(value)
    if not isinstance(value, _dt.datetime):
        return plain.date().isoformat()
    try:
        return plain.isoformat()
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a hostile tzinfo
        pass
    warn_once("tz", "a datetime whose time zone raised is sent without its zone")
    return plain.replace(tzinfo=None).isoformat()


# -- containers ------------------------------------------------------------------------------------------


def _snapshot(read: Callable[[Any], Iterable[Any]], value: Any) -> list[Any]:
    """``list(read(value))`` for a built-in container another thread may be changing (retried)."""
    for _ in range(5):
        try:
            return list(read(value))
        except RuntimeError:  # "changed size during iteration": another thread is writing to it
            continue
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - e.g. a proxy object that only pretends to be a dict
            break
    name = type_name(value)
    warn_once("unreadable:" + name, "a %s could not be read (changing in another thread?); sent empty", name)
    return []


def _own_reader_failed(value: Any, method: str) -> None:
    name = type_name(value)
    warn_once("read:" + name, "%s.%s() raised; its stored items are sent", name, method)


def stored_items(value: dict[Any, Any]) -> list[Any]:
    """The (key, value) pairs a dict (or dict subclass) stores, read without calling its methods."""
    return _snapshot(dict.items, value)


def dict_items(value: dict[Any, Any]) -> list[Any]:
    """A dict's items as the C encoder reads them: ``items()`` for a subclass, the stored items if it raises."""
    if type(value) is not dict:
        try:
            return [(key, item) for key, item in value.items()]
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - hostile items(): read what the dict stores
            _own_reader_failed(value, "items")
    return stored_items(value)


def sequence_items(value: Any) -> list[Any]:
    """A list, tuple, set or frozenset's items: iterated as Python would, the stored items if that raises."""
    cls = type(value)
    if cls is list:
        return list.copy(value)
    if cls is tuple:
        return list(value)
    if cls is set or cls is frozenset:
        return _snapshot(iter, value)
    try:
        return [item for item in value]
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - hostile __iter__: read what the container stores
        _own_reader_failed(value, "__iter__")
    for base in (list, tuple, set, frozenset):
        if isinstance(value, base):
            return _snapshot(base.__iter__, value)
    return []


_SEQUENCES = (list, tuple, set, frozenset)


# -- one value -----------------------------------------------------------------------------------------


def default(value: Any) -> Any:
    """JSON ``default`` hook: map one non-JSON value to something JSON can hold; never raises.

    Also receives subclasses of str, int, float, dict and list (orjson's
    passthrough option), which it reads the way the C encoder does.
    """
    try:
        return _convert(value)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - e.g. a __class__ or __getattribute__ that raises
        return _as_str(value)


def _convert(value: Any) -> Any:
    if isinstance(value, _dt.date):
        try:
            return value.isoformat()
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - a hostile tzinfo or isoformat()
            return _date_fallback(value)
    if isinstance(value, Decimal):
        return _decimal_value(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float_leaf(float.__float__(value))
    if isinstance(value, dict):
        return dict(dict_items(value))
    if isinstance(value, _SEQUENCES):
        return sequence_items(value)
    if isinstance(value, bytes):
        return bytes.decode(value, "utf-8", "replace")
    if isinstance(value, bytearray):
        return bytearray.decode(value, "utf-8", "replace")
    if isinstance(value, memoryview):
        return value.tobytes().decode("utf-8", "replace")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _real_value(value)
    try:
        tolist = getattr(value, "tolist", None)
        if callable(tolist):  # numpy-like arrays and scalars, duck-typed
            result = tolist()
            if result is not value:
                return result
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a broken tolist() falls through to str()
        pass
    return _as_str(value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def str_leaf(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot carry) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _leaf(value: Any) -> tuple[bool, Any]:
    """(True, safe) when ``value`` is an exact JSON scalar type, else (False, None)."""
    cls = type(value)
    if cls is str:
        return True, str_leaf(value)
    if cls is int:
        return True, int_leaf(value)
    if cls is float:
        return True, float_leaf(value)
    if value is None or cls is bool:
        return True, value
    return False, None


# -- the whole value ---------------------------------------------------------------------------------------

_Frame = tuple[int, Iterator[Any], Any]


def make_json_safe(value: Any, _key_level: int = 0) -> Any:
    """Return a copy of ``value`` made only of JSON types (str-keyed dict, list, str, int, finite float, bool, None).

    Applies the SPEC 1 table through :func:`default`; NaN/Infinity become
    ``None``; a container that contains itself is replaced by ``None`` where
    it recurs; containers nested deeper than :data:`MAX_DEPTH` are replaced by
    ``None`` where they are cut; non-string keys become strings the way the
    JSON module writes them. Iterative: works at any stack depth. Never raises.
    """
    root: list[Any] = []
    stack: list[_Frame] = [(0, iter([value]), root)]
    path: set[int] = set()
    while stack:
        ident, items, out = stack[-1]
        item = next(items, _DONE)
        if item is _DONE:
            stack.pop()
            path.discard(ident)
            continue
        if type(out) is dict:
            key, child = item
            safe, frame = _step(child, len(stack) - 1, path)
            out[_key(key, _key_level)] = safe
        else:
            safe, frame = _step(item, len(stack) - 1, path)
            out.append(safe)
        if frame is not None:
            stack.append(frame)
            path.add(frame[0])
    return root[0]


_DONE: Any = object()


def _container(value: Any) -> Optional[type]:
    """``dict`` or ``list`` when ``value`` is read as a JSON object or array, else ``None``."""
    try:
        if isinstance(value, dict):
            return dict
        if isinstance(value, _SEQUENCES):
            return list
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a __class__ that raises: not a container
        pass
    return None


def _step(value: Any, depth: int, path: set[int]) -> tuple[Any, Optional[_Frame]]:
    """Convert ``value`` until it is a JSON scalar (returned) or a container (an empty copy and its frame)."""
    for _ in range(_MAX_STEPS):
        is_leaf, safe = _leaf(value)
        if is_leaf:
            return safe, None
        kind = _container(value)
        if kind is not None:
            if depth >= MAX_DEPTH:
                warn_once("depth", "value nested deeper than %d levels; sent as null where it is cut", MAX_DEPTH)
                return None, None
            ident = id(value)
            if ident in path:
                warn_once("cycle", "value contains itself; the repeated reference is sent as null")
                return None, None
            out: Any = {} if kind is dict else []
            items = dict_items(value) if kind is dict else sequence_items(value)
            return out, (ident, iter(items), out)
        value = default(value)
    warn_once("steps", "value still not JSON after %d conversions; sent as null", _MAX_STEPS)
    return None, None


def _key(key: Any, level: int) -> str:
    """A dict key as the JSON module writes it (str, int, float, bool, None); any other key as its JSON text."""
    cls = type(key)
    if cls is str:
        return str_leaf(key)
    if key is True or key is False or key is None:
        return "true" if key is True else "false" if key is False else "null"
    if cls is float:
        return float.__repr__(key) if math.isfinite(key) else "null"
    if cls is int and int_leaf(key) is not None:
        return int.__repr__(key)
    if level >= 2:  # a key whose keys have keys: stop here
        return placeholder(key)
    safe = make_json_safe(key, level + 1)
    if type(safe) is str:
        return safe
    return dumps(safe)
