"""Writing and reading JSON text without recursion, for values nested deeper than the stack allows.

:func:`dumps` writes a tree of plain JSON types (what
:func:`~segment.analytics.json_safety.make_json_safe` returns) exactly as the
standard library's C encoder does with ``separators=(",", ":")`` and
``ensure_ascii=False``. :func:`loads` parses RFC 8259 JSON text like
``json.loads`` (NaN and Infinity are refused). Both keep their own stack, so
they work at any nesting and from any stack depth; they are slower than the C
versions and only used when those fail.
"""

from __future__ import annotations

import json.decoder
import json.encoder
import json.scanner
import math
import re
from typing import Any, Callable

_encode_str: Callable[[str], str] = json.encoder.encode_basestring  # the C version when available
_scanstring: Callable[[str, int, bool], tuple[str, int]] = getattr(json.decoder, "scanstring")  # noqa: B009


class _Text:
    """Literal output text on the writer's stack (as opposed to a value still to write)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(value: Any) -> str:
    """Compact JSON text of a plain JSON tree, byte-identical to the C encoder's; never recurses.

    Anything that is not a plain JSON type (which ``make_json_safe`` never
    returns) is written as ``null``, as is an int past the int-to-str limit.
    """
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        cls = type(item)
        if cls is _Text:
            out.append(item.text)
        elif cls is str:
            out.append(_encode_str(item))
        elif item is None or item is True or item is False:
            out.append("null" if item is None else "true" if item else "false")
        elif cls is int:
            try:
                out.append(int.__repr__(item))
            except ValueError:
                out.append("null")
        elif cls is float:
            out.append(float.__repr__(item) if math.isfinite(item) else "null")
        elif cls is dict:
            if not item:
                out.append("{}")
                continue
            out.append("{")
            stack.append(_Text("}"))
            pairs = list(item.items())
            for index in range(len(pairs) - 1, -1, -1):
                key, child = pairs[index]
                stack.append(child)
                stack.append(_Text(("," if index else "") + _encode_str(key) + ":"))
        elif cls is list:
            if not item:
                out.append("[]")
                continue
            out.append("[")
            stack.append(_Text("]"))
            for index in range(len(item) - 1, 0, -1):
                stack.append(item[index])
                stack.append(_Text(","))
            stack.append(item[0])
        else:
            out.append("null")
    return "".join(out)


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = json.scanner.NUMBER_RE
_LITERALS = {"true": True, "false": False, "null": None}


def loads(text: str) -> Any:
    """Parse JSON text with an explicit stack (any nesting); raises ``ValueError`` if it is not JSON."""
    stack: list[Any] = []
    keys: list[str] = []
    pos = _skip(text, 0)
    while True:
        char = text[pos : pos + 1]
        if char in ("{", "["):
            pos = _skip(text, pos + 1)
            if text[pos : pos + 1] == ("}" if char == "{" else "]"):
                value: Any = {} if char == "{" else []
                pos += 1
            else:
                stack.append({} if char == "{" else [])
                if char == "{":
                    key, pos = _read_key(text, pos)
                    keys.append(key)
                continue
        elif char == '"':
            value, pos = _scanstring(text, pos + 1, True)
        else:
            number = _NUMBER.match(text, pos)
            if number is not None and number.end() > pos:
                integer, fraction, exponent = number.groups()
                value = float(integer + (fraction or "") + (exponent or "")) if fraction or exponent else int(integer)
                pos = number.end()
            else:
                word = text[pos : pos + 5 if text.startswith("false", pos) else pos + 4]
                if word not in _LITERALS:
                    raise ValueError(f"not JSON at offset {pos}")
                value, pos = _LITERALS[word], pos + len(word)
        # a complete value: attach it to its container, closing every container it completes
        while True:
            pos = _skip(text, pos)
            if not stack:
                if pos != len(text):
                    raise ValueError(f"extra data at offset {pos}")
                return value
            top = stack[-1]
            if type(top) is dict:
                top[keys[-1]] = value
            else:
                top.append(value)
            char = text[pos : pos + 1]
            if char == ",":
                pos = _skip(text, pos + 1)
                if type(top) is dict:
                    keys[-1], pos = _read_key(text, pos)
                break
            if char != ("}" if type(top) is dict else "]"):
                raise ValueError(f"expected ',' or a closing bracket at offset {pos}")
            pos += 1
            value = stack.pop()
            if type(value) is dict:
                keys.pop()


def _read_key(text: str, pos: int) -> tuple[str, int]:
    """A string key and the colon after it; returns the key and the position of its value."""
    if text[pos : pos + 1] != '"':
        raise ValueError(f"expected a string key at offset {pos}")
    key, pos = _scanstring(text, pos + 1, True)
    pos = _skip(text, pos)
    if text[pos : pos + 1] != ":":
        raise ValueError(f"expected ':' at offset {pos}")
    return key, _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    """The position of the first character at or after ``pos`` that is not JSON whitespace."""
    match = _WHITESPACE.match(text, pos)
    return pos if match is None else match.end()
