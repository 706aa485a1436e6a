"""Building the six message types: argument checks, ids, timestamps (delivery.md §2).

Pure functions, no I/O. Argument checks raise :class:`ArgumentError` naming
the field, in the caller's thread.
"""

from __future__ import annotations

import datetime as _dt
import numbers
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any, Optional, cast

from dateutil.parser import isoparse

from segment.analytics.errors import ArgumentError
from segment.analytics.json_safety import stored_items
from segment.analytics.json_scalars import int_fits, plain_datetime, type_name, warn_once
from segment.analytics.version import VERSION

LIBRARY_NAME = "analytics-python"

_getrandbits = random.getrandbits
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)


def new_message_id() -> str:
    """A random (version 4) UUID string.

    Uses the module-level Mersenne Twister, which Python reseeds in a forked
    child, rather than ``uuid.uuid4()``'s system call per id: message ids must
    be unique, not secret.
    """
    h = "%032x" % ((_getrandbits(128) & _UUID_CLEAR) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_second_cache: tuple[int, str] = (-1, "")


def now_timestamp() -> str:
    """The current UTC time as ISO-8601 with millisecond precision and a zone."""
    global _second_cache
    now = time.time()
    second = int(now)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    millis = int((now - second) * 1000)
    return f"{prefix}.{millis:03d}+00:00"


def format_timestamp(value: Any) -> str:
    """Validate and format a caller-supplied ``timestamp`` (datetime, date or ISO-8601 string).

    Naive datetimes are taken as UTC. The result has millisecond precision and a zone.
    A datetime whose ``tzinfo`` cannot give its offset (``utcoffset()`` raises or
    returns something invalid) is data, not misuse: it is taken as UTC with one warning.
    Subclasses are read with the base class's getters, so their overrides cannot raise here.
    """
    cls = type(value)
    if issubclass(cls, str):
        text = str.__str__(value)
        try:
            value = isoparse(text)
        except (ValueError, OverflowError) as exc:
            raise ArgumentError("timestamp", f"timestamp must be an ISO-8601 string, got {text[:100]!r}") from exc
    elif not issubclass(cls, _dt.date):
        raise ArgumentError("timestamp", f"timestamp must be a datetime or an ISO-8601 string, got {type_name(value)}")
    elif cls is not _dt.datetime:
        value = plain_datetime(value)
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return str(value.isoformat(timespec="milliseconds"))
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a hostile tzinfo is data
        name = type_name(value.tzinfo)
        warn_once("timestamp-tz:" + name, "timestamp's time zone (%s) raised; the timestamp is taken as UTC", name)
        return str(value.replace(tzinfo=_dt.timezone.utc).isoformat(timespec="milliseconds"))


def _is_a(cls: type[Any], kinds: Any) -> bool:
    """``issubclass(cls, kinds)``, False when an ABC check meets a type whose metaclass raises."""
    try:
        return issubclass(cls, kinds)
    except Exception:  # noqa: BLE001
        return False


def _is_id(value: Any) -> bool:
    cls: type[Any] = type(value)
    return cls is not bool and _is_a(cls, (str, numbers.Number, uuid.UUID))


def _empty(value: Any) -> bool:
    return value is None or (issubclass(type(value), str) and str.__len__(value) == 0)


def _id_text(field: str, value: Any) -> str:
    """An id as a plain string; one that cannot be written (e.g. an int past the digit limit) is misuse."""
    cls = type(value)
    if issubclass(cls, str):
        return str.__str__(value)
    try:
        return str.__str__(uuid.UUID.__str__(value) if issubclass(cls, uuid.UUID) else str(value))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001
        raise ArgumentError(field, f"{field} cannot be written as a string ({type(exc).__name__})") from None


def id_string(field: str, value: Any, required: bool = False) -> Optional[str]:
    """Check an id argument (str, number or UUID) and return it as a string (``None`` if absent)."""
    if type(value) is str and value:
        return value
    if _empty(value):
        if required:
            raise ArgumentError(field, f"{field} is required")
        return None
    if not _is_id(value):
        raise ArgumentError(field, f"{field} must be a string or a number, got {type_name(value)}")
    return _id_text(field, value)


def require_id(field: str, value: Any) -> Any:
    """Check a required id that analytics-python sends as given (``group_id``, ``previous_id``).

    Strings and numbers are sent as given (the encoder makes numbers JSON-safe),
    a UUID as its string; an int too long to write as digits is misuse.
    """
    if _empty(value):
        raise ArgumentError(field, f"{field} is required")
    if not _is_id(value):
        raise ArgumentError(field, f"{field} must be a string or a number, got {type_name(value)}")
    cls = type(value)
    if issubclass(cls, (str, uuid.UUID)):
        return _id_text(field, value)
    if issubclass(cls, int) and not int_fits(int.__int__(value)):
        raise ArgumentError(field, f"{field} has more digits than an integer can be written with")
    return value


def require_user(user_id: Any, anonymous_id: Any) -> tuple[Optional[str], Optional[str]]:
    """At least one of ``user_id`` / ``anonymous_id``; each a string or a number."""
    uid = id_string("user_id", user_id)
    aid = id_string("anonymous_id", anonymous_id)
    if uid is None and aid is None:
        raise ArgumentError("user_id", "user_id or anonymous_id is required")
    return uid, aid


def mapping(field: str, value: Any) -> dict[str, Any]:
    """An optional dict argument (``properties``, ``traits``, ``context``, ``integrations``).

    Any ``Mapping`` is copied into a plain dict. One whose methods raise is
    data: a dict subclass gives its stored items, any other mapping an empty
    dict (one warning per type).
    """
    if value is None:
        return {}
    cls = type(value)
    if cls is dict:
        return cast(dict[str, Any], value)
    if not _is_a(cls, Mapping):
        raise ArgumentError(field, f"{field} must be a dict, got {type_name(value)}")
    try:
        copied: dict[str, Any] = dict(value)
        return copied
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a hostile mapping is data
        pass
    name = type_name(value)
    if issubclass(cls, dict):
        warn_once("read:" + name, "%s could not be copied; its stored items are sent", name)
        return dict(stored_items(value))
    warn_once("read:" + name, "%s could not be read; %s sent as {}", name, field)
    return {}


def optional_str(field: str, value: Any) -> Optional[str]:
    """An optional string argument (``name``, ``category``)."""
    if value is None or type(value) is str:
        return value
    if issubclass(type(value), str):
        return str.__str__(value)
    raise ArgumentError(field, f"{field} must be a string, got {type_name(value)}")


def require_event(value: Any) -> str:
    """The ``event`` name of a track call: a non-empty string."""
    if type(value) is str and value:
        return value
    if _empty(value):
        raise ArgumentError("event", "event is required")
    if not issubclass(type(value), str):
        raise ArgumentError("event", f"event must be a string, got {type_name(value)}")
    return str.__str__(value)


def common(
    context: Any, timestamp: Any, message_id: Any, integrations: Any
) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """The fields every message carries: (context with ``library``, integrations, timestamp, messageId).

    The caller's ``context`` is copied, never modified.
    """
    ctx = mapping("context", context)
    ctx = dict(ctx) if ctx else {}
    ctx["library"] = {"name": LIBRARY_NAME, "version": VERSION}
    stamp = now_timestamp() if timestamp is None else format_timestamp(timestamp)
    mid = new_message_id() if message_id is None else cast(str, id_string("message_id", message_id, required=True))
    return ctx, mapping("integrations", integrations), stamp, mid
