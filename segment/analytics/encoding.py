"""Turning a message into strict JSON bytes, once, and reading it back (delivery.md §2).

``encode(message)`` is the only entry point the client uses. The fast path is
one call to ``orjson`` (when it is installed and enabled) for messages made of
the types it knows, else to the C JSON encoder with a ``default`` hook for the
types JSON lacks. If that fails (NaN, a non-string key, a cycle, a lone
surrogate, nesting deeper than the stack allows, a value whose own methods
raise), the message is copied into plain JSON types by :func:`make_json_safe`
and encoded again. ``encode`` never
raises for the data, at any stack depth, in either mode, and both modes give
the same JSON for the same input. The value conversions live in
:mod:`segment.analytics.json_safety`; the recursion-free writer and reader in
:mod:`segment.analytics.json_text`.
"""

from __future__ import annotations

import _thread
import json
import re
from typing import Any, Callable, Optional, TypeVar

from segment.analytics import json_text
from segment.analytics.json_safety import default as _default
from segment.analytics.json_safety import make_json_safe
from segment.analytics.json_scalars import _warned, reset_after_fork, stack_state

_T = TypeVar("_T")

__all__ = [
    "_warned",
    "decode",
    "decode_safely",
    "encode",
    "make_json_safe",
    "orjson_in_use",
    "reset_after_fork",
    "use_orjson",
]


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


def _encode_stdlib(message: Any) -> bytes:
    return _stdlib_encode(message).encode("utf-8")


def _make_orjson_encoder() -> Optional[Callable[[Any], bytes]]:
    try:
        import orjson  # optional extra: pip install segment-analytics-python[fast]
    except ImportError:
        return None
    # No ``default`` hook, and datetimes, dataclasses and subclasses of built-in types passed through to it:
    # orjson refuses them, so it never runs Python code in the middle of its walk. It caches a list's
    # length, and Python code there (a hook, a value's own methods, another thread taking the GIL) may
    # shrink the list it is walking: that crashes the process. Whatever orjson refuses goes to the standard
    # library's encoder, which re-reads sizes and snapshots dict items, and writes the same bytes.
    option = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
    dumps = orjson.dumps

    def _encode_orjson(message: Any) -> bytes:
        # orjson's result keeps its growth buffer (about 4 KB for a typical event); the queue keeps an
        # exact-size copy instead
        return memoryview(dumps(message, option=option)).tobytes()

    return _encode_orjson


_orjson_encode = _make_orjson_encoder()
_fast_encode: Callable[[Any], bytes] = _orjson_encode or _encode_stdlib


def use_orjson(enabled: bool) -> bool:
    """Switch the optional ``orjson`` fast path on or off; returns whether it is now in use."""
    global _fast_encode, _orjson_skip
    _orjson_skip = 0
    _fast_encode = _orjson_encode if (enabled and _orjson_encode is not None) else _encode_stdlib
    return _fast_encode is not _encode_stdlib


def orjson_in_use() -> bool:
    """Whether messages are currently encoded with ``orjson``."""
    return _fast_encode is not _encode_stdlib


#: After orjson refuses a message, this many more go straight to the standard library's encoder: an
#: application whose events hold datetimes or Decimals (which orjson is not allowed to handle, see
#: above) does not pay for a refused orjson attempt on every call.
ORJSON_BACKOFF = 32
_orjson_skip = 0


def encode(message: Any) -> bytes:
    """Encode ``message`` as compact, strict JSON (RFC 8259) in UTF-8; never raises for the data.

    Only ``KeyboardInterrupt`` (possibly the user's Ctrl-C) and ``MemoryError``
    pass through.
    """
    global _orjson_skip
    fast = _fast_encode
    if _orjson_skip and fast is not _encode_stdlib:
        _orjson_skip -= 1
        fast = _encode_stdlib
    try:
        return fast(message)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - anything a value's own methods raise is data
        pass
    if fast is not _encode_stdlib:
        _orjson_skip = ORJSON_BACKOFF
        # orjson refused (a type it does not know, a non-string key, an int over 64 bits, nesting past 254
        # levels): the standard library takes it as it is, and the bytes are the same as without orjson
        try:
            return _encode_stdlib(message)
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001
            pass
    try:
        return _encode_safe(message)
    except RecursionError:  # the caller's stack ran out (or a value recursed forever): start on a fresh one
        return _on_fresh_stack(_encode_safe, message)


def _encode_safe(message: Any) -> bytes:
    """The fallback: a plain JSON copy, written by the C encoder, or without recursion if the stack is too deep."""
    safe = make_json_safe(message)
    try:
        text = _stdlib_encode(safe)
    except RecursionError:
        text = json_text.dumps(safe)
    return text.encode("utf-8")


def _on_fresh_stack(function: Callable[[Any], _T], argument: Any) -> _T:
    """``function(argument)`` in a short-lived thread, whose stack is shallow; re-raises what it raised.

    Started with the low-level ``_thread`` module, which needs no Python frames
    of the caller's: this runs when the caller's stack has (almost) run out.
    """
    results: list[_T] = []
    errors: list[BaseException] = []
    done = _thread.allocate_lock()
    done.acquire()

    def run() -> None:
        try:
            stack_state.fresh = True  # a RecursionError here can only come from the value itself
            results.append(function(argument))
        except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
            errors.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(run, ())
    done.acquire()
    if errors:
        raise errors[0]
    return results[0]


def decode(data: bytes) -> Any:
    """Decode bytes produced by :func:`encode` back into plain Python values."""
    return json.loads(data)


_MESSAGE_ID = re.compile(rb'"messageId":"((?:[^"\\]|\\.){1,200})"')
_TYPE = re.compile(rb'"type":"([a-z]{1,20})"')


def decode_safely(data: bytes) -> dict[str, Any]:
    """Decode one event produced by :func:`encode` for a callback; never raises.

    Uses ``json.loads``; an event nested deeper than the stack allows (the
    consumer thread's stack may be deeper than the caller's was) is parsed
    again without recursion. If the bytes still cannot be decoded as a JSON
    object, returns a small dict that identifies the event as far as it can
    be recovered from the raw bytes: ``messageId`` and ``type`` (when found,
    best effort) and ``_decode_error`` (why decoding failed).
    """
    try:
        try:
            value = json.loads(data)
        except RecursionError:
            value = json_text.loads(bytes(data).decode("utf-8"))
        if type(value) is dict:
            return value
        problem = "not a JSON object"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever the bytes are, the callback gets a dict
        problem = type(exc).__name__
    return _identify(data, problem)


def _identify(data: Any, problem: str) -> dict[str, Any]:
    """What can be recovered from bytes that do not decode: ``messageId``, ``type``, and why."""
    found: dict[str, Any] = {"_decode_error": problem}
    try:
        raw = bytes(data)
        message_id = _MESSAGE_ID.search(raw)
        if message_id is not None:
            found["messageId"] = json.loads(b'"' + message_id.group(1) + b'"')
        kinds = _TYPE.findall(raw)
        if kinds:
            found["type"] = kinds[-1].decode("ascii")
    except Exception:  # noqa: BLE001 - best effort: not even bytes
        pass
    return found
