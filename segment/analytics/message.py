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
    """
    if isinstance(value, str):
        try:
            value = isoparse(value)
        except (ValueError, OverflowError) as exc:
            raise ArgumentError("timestamp", f"timestamp must be an ISO-8601 string, got {value!r}") from exc
    elif isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        value = _dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, _dt.datetime):
        raise ArgumentError(
            "timestamp", f"timestamp must be a datetime or an ISO-8601 string, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return str(value.isoformat(timespec="milliseconds"))


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, numbers.Number, uuid.UUID)) and not isinstance(value, bool)


def id_string(field: str, value: Any, required: bool = False) -> Optional[str]:
    """Check an id argument (str, number or UUID) and return it as a string (``None`` if absent)."""
    if value is None or value == "":
        if required:
            raise ArgumentError(field, f"{field} is required")
        return None
    if not _is_id(value):
        raise ArgumentError(field, f"{field} must be a string or a number, got {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def require_id(field: str, value: Any) -> Any:
    """Check a required id that analytics-python sends as given (``group_id``, ``previous_id``)."""
    if value is None or value == "":
        raise ArgumentError(field, f"{field} is required")
    if not _is_id(value):
        raise ArgumentError(field, f"{field} must be a string or a number, got {type(value).__name__}")
    return value if not isinstance(value, uuid.UUID) else str(value)


def require_user(user_id: Any, anonymous_id: Any) -> tuple[Optional[str], Optional[str]]:
    """At least one of ``user_id`` / ``anonymous_id``; each a string or a number."""
    uid = id_string("user_id", user_id)
    aid = id_string("anonymous_id", anonymous_id)
    if uid is None and aid is None:
        raise ArgumentError("user_id", "user_id or anonymous_id is required")
    return uid, aid


def mapping(field: str, value: Any) -> dict[str, Any]:
    """An optional dict argument (``properties``, ``traits``, ``context``, ``integrations``)."""
    if value is None:
        return {}
    if type(value) is dict:
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise ArgumentError(field, f"{field} must be a dict, got {type(value).__name__}")


def optional_str(field: str, value: Any) -> Optional[str]:
    """An optional string argument (``name``, ``category``)."""
    if value is None or isinstance(value, str):
        return value
    raise ArgumentError(field, f"{field} must be a string, got {type(value).__name__}")


def require_event(value: Any) -> str:
    """The ``event`` name of a track call: a non-empty string."""
    if not isinstance(value, str) or not value:
        if value is None or value == "":
            raise ArgumentError("event", "event is required")
        raise ArgumentError("event", f"event must be a string, got {type(value).__name__}")
    return value


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
