"""analytics-python's ``request.post`` and ``DatetimeSerializer``, as fronts over this library's own parts.

Code written for analytics-python 2.x imports these from ``segment.analytics.request``, which
re-exports them from here. :func:`post` sends one body once, synchronously, in the caller's thread:
the body is encoded by :func:`~segment.analytics.encoding.encode` (JSON-safe, so it never raises for
the data), the headers come from :func:`~segment.analytics.wire.headers`, the ``Authorization`` from
:class:`~segment.analytics.auth.BasicAuth` or the given OAuth token source, and the POST is made by a
:class:`~segment.analytics.transport.Transport`. It does not retry: to send events with the retry
policy, batching and back-pressure, use :class:`~segment.analytics.Client`.
"""

from __future__ import annotations

import http
import json
import logging
import math
import time
from typing import Any, Mapping, Optional, Protocol, Union

import requests
from requests.structures import CaseInsensitiveDict

from segment.analytics import encoding, wire
from segment.analytics.auth import BasicAuth
from segment.analytics.errors import APIError, ArgumentError
from segment.analytics.logs import redact, register_secret
from segment.analytics.transport import NetworkError, Response, Transport

__all__ = ["APIError", "DatetimeSerializer", "TokenSource", "post"]

log = logging.getLogger("segment")

#: After these statuses the OAuth token is forgotten, as the delivery pipeline does.
_TOKEN_REJECTED = (401, 403, 511)

Timeout = Union[float, tuple[float, float], None]


class TokenSource(Protocol):
    """What ``post(oauth_manager=...)`` needs: ``get_token()`` (``clear_token()`` is called if present)."""

    def get_token(self) -> Optional[str]:
        """A bearer token; empty or ``None`` falls back to Basic authentication."""
        ...


class DatetimeSerializer(json.JSONEncoder):
    """A ``json.JSONEncoder`` for analytics payloads: ``json.dumps(data, cls=DatetimeSerializer)``.

    ``date`` and ``datetime`` become ``isoformat()`` strings, as in analytics-python. Every other
    value JSON lacks is converted by this library's JSON-safety rules (``Decimal`` -> number, ``UUID``
    -> string, ``set`` -> list, ``Enum`` -> its value, anything else -> ``str(value)``), so encoding
    never fails with ``TypeError``.
    """

    def default(self, o: Any) -> Any:
        """The JSON form of a value the standard encoder does not know."""
        return encoding.make_json_safe(o)


def post(
    write_key: str,
    host: Optional[str] = None,
    gzip: bool = False,
    timeout: Timeout = 15,
    proxies: Optional[Mapping[str, str]] = None,
    oauth_manager: Optional[TokenSource] = None,
    retry_count: int = 0,
    **kwargs: Any,
) -> requests.Response:
    """POST one body to ``<host>/v1/batch`` now, once; analytics-python's ``request.post``.

    The keyword arguments are the body's fields, usually ``batch=[message, ...]``; ``sentAt`` (now,
    unless given) and ``writeKey`` are added. ``host`` defaults to ``https://api.segment.io``;
    ``timeout`` is seconds (or ``(connect, read)``, or ``None`` to wait as long as the server takes);
    ``retry_count`` > 0 sends ``X-Retry-Count``. With ``oauth_manager`` (anything with
    ``get_token()``), the request carries ``Authorization: Bearer <token>`` instead of Basic, and the
    token is cleared (``clear_token()``) after a 401, 403 or 511.

    Returns the ``requests.Response`` of a 2xx. Raises :class:`APIError` (``status``, ``code``,
    ``message``, ``response``) for any other status: ``code`` is ``"redirect"`` for a 3xx (redirects
    are not followed), else the body's ``code`` and ``message`` when it is a JSON object with both,
    else ``"unknown"`` and the start of the body. When no answer
    came, the ``requests`` exception is raised (``requests.ConnectionError``, ``requests.ReadTimeout``,
    ``requests.exceptions.MissingSchema`` for a host without a scheme ...). Misuse raises
    :class:`~segment.analytics.errors.ArgumentError` naming the argument.
    """
    if not isinstance(write_key, str) or not write_key:
        raise ArgumentError("write_key", f"write_key must be a non-empty string, got {type(write_key).__name__}")
    if host is not None and not isinstance(host, str):
        raise ArgumentError("host", f"host must be a URL string, got {type(host).__name__}")
    _check_timeout(timeout)
    if isinstance(retry_count, bool) or not isinstance(retry_count, int) or retry_count < 0:
        raise ArgumentError("retry_count", f"retry_count must be a whole number >= 0, got {retry_count!r}")
    basic = BasicAuth(write_key)  # also keeps the key and its Basic form out of every log line
    token = oauth_manager.get_token() if oauth_manager is not None else None
    authorization = f"Bearer {token}" if token else basic.header()
    if token:
        register_secret(str(token), slot=f"oauth-token-{id(oauth_manager)}")

    body = dict(kwargs)
    if "sentAt" not in body:
        body["sentAt"] = wire.iso_utc(time.time())
    body["writeKey"] = write_key
    data = encoding.encode(body)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("request body: %s", data.decode("utf-8", "replace"))
    payload = wire.gzip(data) if gzip else data

    transport = Transport(host, timeout, proxies)  # type: ignore[arg-type]  # requests takes the same forms
    failure: Optional[BaseException] = None
    try:
        answer = transport.post(payload, wire.headers(authorization, bool(gzip), retry_count))
    except NetworkError as exc:
        failure = exc.cause  # raised below, outside this handler, so its own chain stays as requests made it
    finally:
        transport.close()
    if failure is not None:
        raise failure
    response = _as_requests_response(answer, transport.url)
    status = answer.status
    log.debug("status %d from %s", status, transport.url)
    if 200 <= status <= 299:
        return response
    if oauth_manager is not None and status in _TOKEN_REJECTED:
        clear = getattr(oauth_manager, "clear_token", None)
        if callable(clear):
            clear()
    if 300 <= status <= 399:
        raise APIError(status, "redirect", f"{response.reason or 'redirect'}: redirects are not followed", response)
    code, message = _error_fields(answer)
    raise APIError(status, code, message, response)


def _check_timeout(timeout: Any) -> None:
    parts = timeout if isinstance(timeout, tuple) and len(timeout) == 2 else (timeout,)
    for part in parts:
        if part is None:
            continue
        if isinstance(part, bool) or not isinstance(part, (int, float)) or not 0 < part < math.inf:
            raise ArgumentError(
                "timeout", f"timeout must be seconds > 0, a (connect, read) pair or None, got {timeout!r}"
            )


def _as_requests_response(answer: Response, url: str) -> requests.Response:
    """The transport's answer as the ``requests.Response`` analytics-python's ``post`` returned."""
    response = requests.Response()
    response.status_code = answer.status
    response.headers = CaseInsensitiveDict(dict(answer.headers.items()))
    response._content = answer.body
    response.url = url
    try:
        response.reason = http.HTTPStatus(answer.status).phrase
    except ValueError:
        response.reason = ""
    response.encoding = requests.utils.get_encoding_from_headers(response.headers)
    return response


def _error_fields(answer: Response) -> tuple[str, str]:
    """``(code, message)`` from an error body ``{"code": ..., "message": ...}``, else ``("unknown", text)``."""
    text = redact(answer.body.decode("utf-8", "replace"))[:2000]
    try:
        payload = encoding.decode(answer.body)
    except (ValueError, RecursionError):
        return "unknown", text
    if isinstance(payload, dict) and "code" in payload and "message" in payload:
        return str(payload["code"]), str(payload["message"])
    return "unknown", text
