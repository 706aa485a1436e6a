"""The helpers analytics-python 2.x has in ``segment.analytics.utils``, for code that imports them.

``is_naive``, ``total_seconds``, ``guess_timezone``, ``remove_trailing_slash``, ``clean``, ``require``
and ``stringify_id`` behave as analytics-python's do, except that none of them raises for the data:
where analytics-python raised ``TypeError`` or ``UnicodeDecodeError`` from :func:`clean`, this one
drops the value (with one warning per type) or decodes leniently. The client itself does not use
them: it builds and encodes messages with :mod:`segment.analytics.message` and
:mod:`segment.analytics.encoding`.
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import numbers
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Optional, Union

from dateutil.tz import tzlocal, tzutc

from segment.analytics.errors import ArgumentError

__all__ = [
    "clean",
    "guess_timezone",
    "is_naive",
    "remove_trailing_slash",
    "require",
    "stringify_id",
    "total_seconds",
]

log = logging.getLogger("segment")

#: A naive datetime less than this many seconds old is taken to be local time (see :func:`guess_timezone`).
LOCAL_GUESS_SECONDS = 5
#: Containers nested deeper than this are dropped by :func:`clean`.
MAX_CLEAN_DEPTH = 200

_KEPT = (str, bool, numbers.Number, _dt.date, type(None))  # datetime is a date
_DROP = object()
_warned: set[tuple[str, str]] = set()


def is_naive(dt: _dt.datetime) -> bool:
    """Whether ``dt`` has no usable time zone (no ``tzinfo``, or one that gives no UTC offset)."""
    return dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None


def total_seconds(delta: _dt.timedelta) -> float:
    """``delta`` in seconds, as a float (``timedelta.total_seconds()``)."""
    return delta.total_seconds()


def guess_timezone(dt: _dt.datetime) -> _dt.datetime:
    """``dt`` with a time zone: aware datetimes are returned as they are.

    A naive ``dt`` less than five seconds before now (by the local clock; a naive time in the future
    counts too, as in analytics-python) is assumed to come from ``datetime.now()`` and gets the local
    zone; any other naive ``dt`` is taken as UTC. (The client itself takes every naive timestamp as UTC.)
    """
    if not is_naive(dt):
        return dt
    if total_seconds(_dt.datetime.now() - dt.replace(tzinfo=None)) < LOCAL_GUESS_SECONDS:
        return dt.replace(tzinfo=tzlocal())
    return dt.replace(tzinfo=tzutc())


def remove_trailing_slash(host: str) -> str:
    """``host`` without one trailing ``/``."""
    return host[:-1] if host.endswith("/") else host


def require(name: str, field: Any, data_type: Union[type, tuple[type, ...]]) -> None:
    """Raise :class:`~segment.analytics.errors.ArgumentError` (an ``AssertionError``) unless ``field``
    is an instance of ``data_type``; ``name`` names the field in the error.
    """
    if not isinstance(field, data_type):
        wanted = " or ".join(t.__name__ for t in (data_type if isinstance(data_type, tuple) else (data_type,)))
        raise ArgumentError(name, f"{name} must be {wanted}, got {type(field).__name__}")


def stringify_id(val: Any) -> Optional[str]:
    """An id as a string: ``None`` stays ``None``, strings stay as they are, anything else is ``str(val)``."""
    if val is None or isinstance(val, str):
        return val
    return str(val)


def clean(item: Any) -> Any:
    """A copy of ``item`` that JSON (with dates) can carry; analytics-python's ``clean``. Never raises.

    Kept as they are: strings, booleans, numbers, ``date``/``datetime`` objects and ``None``.
    Converted: ``Decimal`` -> ``float``, ``set``/``tuple``/``list`` -> list, mappings -> dict (keys
    kept), ``Enum`` -> its cleaned value, ``bytes`` -> UTF-8 text (invalid bytes replaced), ``UUID``
    -> string, numpy-like arrays (``tolist()``) -> lists. Anything else (functions, exceptions,
    arbitrary objects, a container that contains itself, nesting deeper than 200 levels) is dropped
    from a dict, becomes ``None`` in a list, and is ``None`` at the top; each such type is logged once
    at WARNING.
    """
    try:
        result = _clean(item, 0, set())
    except Exception:  # noqa: BLE001 - a hostile object (raising isinstance checks, __eq__ ...)
        result = _drop(item, "it could not be read")
    return None if result is _DROP else result


def _clean(item: Any, depth: int, path: set[int]) -> Any:
    if isinstance(item, Decimal):
        return float(item)
    if isinstance(item, _KEPT):
        return item
    if isinstance(item, enum.Enum):
        return _clean(item.value, depth + 1, path)
    if isinstance(item, (bytes, bytearray)):
        return bytes(item).decode("utf-8", "replace")
    if isinstance(item, uuid.UUID):
        return str(item)
    if isinstance(item, Mapping):
        return _container(item, depth, path, True)
    if isinstance(item, (list, tuple, set, frozenset)):
        return _container(item, depth, path, False)
    tolist = getattr(item, "tolist", None)
    if not callable(tolist):
        return _drop(item, "it is not JSON-serialisable")
    if depth >= MAX_CLEAN_DEPTH:
        return _drop(item, f"it is nested deeper than {MAX_CLEAN_DEPTH} levels")
    try:
        value = tolist()
    except Exception:  # noqa: BLE001 - a broken tolist() is a value we cannot read
        return _drop(item, "its tolist() failed")
    return _clean(value, depth + 1, path)


def _container(item: Any, depth: int, path: set[int], is_mapping: bool) -> Any:
    if depth >= MAX_CLEAN_DEPTH:
        return _drop(item, f"it is nested deeper than {MAX_CLEAN_DEPTH} levels")
    ident = id(item)
    if ident in path:
        return _drop(item, "it contains itself")
    try:
        entries = list(item.items()) if is_mapping else list(item)
    except Exception:  # noqa: BLE001 - e.g. a mapping whose items() raises, or one changed while read
        return _drop(item, "it could not be read")
    path.add(ident)
    try:
        if is_mapping:
            cleaned: dict[Any, Any] = {}
            for key, value in entries:
                result = _clean(value, depth + 1, path)
                if result is not _DROP:
                    cleaned[key] = result
            return cleaned
        return [None if result is _DROP else result for result in (_clean(v, depth + 1, path) for v in entries)]
    finally:
        path.discard(ident)


def _drop(item: Any, why: str) -> object:
    name = type(item).__name__
    if (name, why) not in _warned:
        _warned.add((name, why))
        log.warning("utils.clean dropped a value of type %s: %s", name, why)
    return _DROP
