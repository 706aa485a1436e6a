"""One JSON-unsafe scalar made safe: numbers, dates, strings; and the warnings (delivery.md §2).

Every function here is cheap in the size of what it reads or writes: big
numbers are never converted to decimal digits past the interpreter's
int-to-str limit (``Decimal('1e999999')`` is sent as the string
``"1E+999999"``, an int too long to write as ``null``). A value's own methods
are called inside ``try``; what they raise is data, except what
:func:`reraise_control` lets through.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import re
import sys
import threading
from decimal import Decimal
from typing import Any, Callable, Optional

log = logging.getLogger("segment")

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


class _StackState(threading.local):
    """Whether this thread is a fresh one started only to convert a value (see :func:`reraise_control`)."""

    fresh = False


stack_state = _StackState()


def reraise_control(exc: BaseException) -> None:
    """Re-raise what is not the value's doing, from inside ``except BaseException``.

    That is ``KeyboardInterrupt`` (possibly the user's Ctrl-C) and a
    ``RecursionError``, which usually means the caller's stack ran out: the
    encoder then starts again on a fresh, shallow stack, where a
    ``RecursionError`` can only come from the value itself (a ``__str__`` that
    recurses forever) and is data like any other exception.
    """
    if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, RecursionError) and not stack_state.fresh):
        raise exc


def reset_after_fork() -> None:
    """Replace the module lock in a forked child (another thread may have held it at fork time)."""
    global _warned_lock
    _warned_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset_after_fork)


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


def as_str(value: Any) -> str:
    """``str(value)`` as a plain ``str`` (one warning per type), or the placeholder if it raises."""
    try:
        text = str(value)
        text = str.__str__(text)  # a str subclass returned by __str__ becomes a plain str
    except BaseException as exc:  # noqa: BLE001 - hostile __str__ / __repr__ (even SystemExit) is data
        reraise_control(exc)
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


def decimal_value(value: Decimal) -> Any:
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


def real_value(value: Any) -> Any:
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
    if not issubclass(type(value), _dt.datetime):
        return _dt.datetime(year, month, day)
    hour, minute, second, micro = (getattr(_dt.datetime, name).__get__(value) for name in _TIME_FIELDS)
    tzinfo = _dt.datetime.tzinfo.__get__(value)
    fold = _dt.datetime.fold.__get__(value)
    return _dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tzinfo, fold=fold)


def date_fallback(value: _dt.date) -> str:
    """ISO-8601 of a date whose ``isoformat()`` raised, from its fields; a zone that raises is left out.

    One warning per (type, tzinfo type).
    """
    plain = plain_datetime(value)
    name = type_name(value)
    if not issubclass(type(value), _dt.datetime):
        warn_once("date:" + name, "%s.isoformat() raised; sent as ISO-8601 of its fields", name)
        return plain.date().isoformat()
    zone = type_name(plain.tzinfo)
    key = f"date:{name}/{zone}"
    try:
        text = plain.isoformat()
    except BaseException as exc:  # noqa: BLE001 - a hostile tzinfo
        reraise_control(exc)
        warn_once(key, "%s whose time zone (%s) raised; sent without its zone", name, zone)
        return plain.replace(tzinfo=None).isoformat()
    warn_once(key, "%s.isoformat() raised; sent as ISO-8601 of its fields", name)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


def str_leaf(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot carry) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text
