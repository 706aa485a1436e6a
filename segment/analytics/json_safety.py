"""Turning any Python value into plain JSON types without raising (delivery.md §2).

:func:`default` is the ``default`` hook of the fast encoders: it maps one
value JSON lacks to something closer to JSON. :func:`make_json_safe` copies a
whole value into plain JSON types (str-keyed dict, list, str, int, finite
float, bool, None) with an explicit stack, so it works at any stack depth.

Both never raise for the data: a value's own methods (``__str__``,
``items()``, ``tolist()``, ``utcoffset()`` ...) are called inside ``try``,
and when one raises the value is read another way (a dict subclass's stored
items, a datetime without its zone) or sent as a placeholder string
(``"<unserialisable TypeName>"``). Only ``KeyboardInterrupt`` and, off a
fresh stack, ``RecursionError`` pass through (see
:func:`~segment.analytics.json_scalars.reraise_control`). Scalars are
converted by :mod:`segment.analytics.json_scalars`.
"""

from __future__ import annotations

import datetime as _dt
import enum
import numbers
import uuid
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Optional

from segment.analytics.json_scalars import (
    as_str,
    date_fallback,
    decimal_value,
    float_leaf,
    int_leaf,
    placeholder,
    real_value,
    reraise_control,
    str_leaf,
    type_name,
    warn_once,
)
from segment.analytics.json_text import dumps

#: Containers nested deeper than this are sent as ``null`` where they are cut (by the fallback path).
MAX_DEPTH = 500
#: Conversions of one value (an Enum's value, ``tolist()``, ...) before it is given up as ``null``.
_MAX_STEPS = 16


# -- containers ------------------------------------------------------------------------------------------


def _snapshot(read: Callable[[Any], Iterable[Any]], value: Any) -> list[Any]:
    """``list(read(value))`` for a built-in container another thread may be changing (retried)."""
    for _ in range(5):
        try:
            return list(read(value))
        except RuntimeError as exc:  # "changed size during iteration": another thread is writing to it
            if isinstance(exc, RecursionError):
                raise
        except BaseException as exc:  # noqa: BLE001 - not a built-in container after all
            reraise_control(exc)
            break
    name = type_name(value)
    warn_once("unreadable:" + name, "a %s could not be read (changing in another thread?); sent empty", name)
    return []


def _own_reader_failed(value: Any, method: str, base: Optional[type]) -> list[Any]:
    """What is sent for a container whose own ``items()``/``__iter__`` raised: what it stores (one warning)."""
    name = type_name(value)
    if base is None:  # a proxy that only pretends to be a container: nothing stored to read
        warn_once("read:" + name, "%s.%s() raised; sent empty", name, method)
        return []
    warn_once("read:" + name, "%s.%s() raised; its stored items are sent", name, method)
    return _snapshot(_STORED[base], value)


def stored_items(value: dict[Any, Any]) -> list[Any]:
    """The (key, value) pairs a dict (or dict subclass) stores, read without calling its methods."""
    return _snapshot(dict.items, value)


def dict_items(value: dict[Any, Any]) -> list[Any]:
    """A dict's items as the C encoder reads them: ``items()`` for a subclass, the stored items if it raises."""
    cls = type(value)
    if cls is dict:
        return stored_items(value)
    try:
        return [(key, item) for key, item in value.items()]
    except BaseException as exc:  # noqa: BLE001 - hostile items(): read what the dict stores
        reraise_control(exc)
    return _own_reader_failed(value, "items", dict if issubclass(cls, dict) else None)


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
    except BaseException as exc:  # noqa: BLE001 - hostile __iter__: read what the container stores
        reraise_control(exc)
    base = next((kind for kind in _SEQUENCES if issubclass(cls, kind)), None)
    return _own_reader_failed(value, "__iter__", base)


_SEQUENCES = (list, tuple, set, frozenset)
#: How to read what a container of each built-in type stores, without its subclass's methods.
_STORED: dict[type, Callable[[Any], Iterable[Any]]] = {
    dict: dict.items,
    list: list.__iter__,
    tuple: tuple.__iter__,
    set: set.__iter__,
    frozenset: frozenset.__iter__,
}


# -- one value -----------------------------------------------------------------------------------------


def default(value: Any) -> Any:
    """JSON ``default`` hook: map one non-JSON value to something JSON can hold; never raises.

    :func:`make_json_safe` also hands it subclasses of str, int, float, dict,
    list, tuple and set, which it reads the way the C encoder does.
    """
    try:
        return _convert(value)
    except BaseException as exc:  # noqa: BLE001 - e.g. a __class__ or __getattribute__ that raises
        reraise_control(exc)
        return as_str(value)


def _convert(value: Any) -> Any:
    if isinstance(value, _dt.date):
        try:
            return value.isoformat()
        except BaseException as exc:  # noqa: BLE001 - a hostile tzinfo or isoformat()
            reraise_control(exc)
            return date_fallback(value)
    if isinstance(value, Decimal):
        return decimal_value(value)
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
        return real_value(value)
    try:
        tolist = getattr(value, "tolist", None)
        if callable(tolist):  # numpy-like arrays and scalars, duck-typed
            result = tolist()
            if result is not value:
                return result
    except BaseException as exc:  # noqa: BLE001 - a broken tolist() falls through to str()
        reraise_control(exc)
        pass
    return as_str(value)


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

    Applies the JSON-safety table (README) through :func:`default`; NaN/Infinity become
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
    except BaseException as exc:  # noqa: BLE001 - a __class__ that raises: not a container
        reraise_control(exc)
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
        finite = float_leaf(key)
        return "null" if finite is None else float.__repr__(finite)
    if cls is int and int_leaf(key) is not None:
        return int.__repr__(key)
    if level >= 2:  # a key whose keys have keys: stop here
        return placeholder(key)
    safe = make_json_safe(key, level + 1)
    if type(safe) is str:
        return safe
    return dumps(safe)
