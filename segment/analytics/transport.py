"""One HTTP POST: the keep-alive session, the whole-request deadline, and naming network failures.

:class:`Transport` sends one body and returns a :class:`Response` or raises :class:`NetworkError`
with a ``kind`` (``refused``, ``reset``, ``timeout``, ``dns``, ``tls``, ``other`` or
``configuration``). One request is bounded by ``timeout`` as a whole (``deadline.py``), at most
:data:`MAX_BODY` bytes of an answer are read, and proxy and CA-bundle environment variables are read
once, when the transport is built (README, "Network: proxies, CA bundle, timeouts").
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import socket
import ssl
import zlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Protocol, Union
from urllib.parse import unquote, urlsplit

import requests
import urllib3

from segment.analytics import deadline
from segment.analytics.deadline import DeadlineAdapter
from segment.analytics.logs import redact, register_secret, trim_partial_secret
from segment.analytics.wire import batch_url

__all__ = ["MAX_BODY", "NetworkError", "Poster", "Response", "Transport", "network_error_kind"]

log = logging.getLogger("segment")


#: The most of a response body that is read; the rest is left unread (and the connection closed).
MAX_BODY = 1 << 20
_CHUNK = 64 << 10


@dataclass(frozen=True, repr=False)
class Response:
    """A final HTTP answer: status, headers (case-insensitive mapping) and raw body (at most ``MAX_BODY`` bytes)."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    def redacted(self) -> Response:
        """A copy with every registered secret replaced in the header values and the body."""
        headers = requests.structures.CaseInsensitiveDict(
            {name: redact(str(value)) for name, value in self.headers.items()}
        )
        return Response(self.status, headers, redact(self.body.decode("utf-8", "replace")).encode("utf-8"))

    def __repr__(self) -> str:
        text = self.body.decode("utf-8", "replace")
        return redact(f"Response(status={self.status!r}, headers={dict(self.headers)!r}, body={text!r})")


class NetworkError(Exception):
    """No HTTP answer: ``kind`` is refused, reset, timeout, dns, tls, other, or configuration."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(redact(f"{kind}: {cause}"))
        self.kind = kind
        self.cause = cause


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(nested, BaseException):
                stack.append(nested)
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))


_CONFIG_ERRORS = (
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidProxyURL,
)


def network_error_kind(exc: BaseException) -> str:
    """Name the kind of a network-level failure (delivery.md §4 ``network_errors`` keys, or ``configuration``)."""
    if isinstance(exc, _CONFIG_ERRORS):
        return "configuration"
    chain = list(_exception_chain(exc))
    if any(isinstance(e, (requests.exceptions.SSLError, ssl.SSLError)) for e in chain):
        return "tls"
    if any(isinstance(e, (requests.exceptions.Timeout, socket.timeout, TimeoutError)) for e in chain):
        return "timeout"
    if any(isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" for e in chain):
        return "dns"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused"
    if any(
        isinstance(
            e,
            (
                ConnectionResetError,
                ConnectionAbortedError,
                BrokenPipeError,
                http.client.RemoteDisconnected,
                http.client.IncompleteRead,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ),
        )
        or type(e).__name__ in ("ProtocolError", "IncompleteRead")
        for e in chain
    ):
        return "reset"
    text = str(exc).lower()
    if "refused" in text:
        return "refused"
    if "name or service not known" in text or "nodename nor servname" in text or "failed to resolve" in text:
        return "dns"
    return "other"


def _is_loopback(hostname: Optional[str]) -> bool:
    if not hostname:
        return False
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class Transport:
    """One HTTP POST per call over a keep-alive ``requests`` session, bounded by ``timeout`` as a whole.

    The environment (``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``) is read here, once, the way ``requests`` reads it for each request: explicit
    ``proxies`` first, then the environment's proxy for the scheme unless ``NO_PROXY`` (or a
    ``"no_proxy"`` key of ``proxies``) covers the host. Later changes to the environment are not seen.
    ``timeout`` may also be what ``requests`` takes (``analytics-python``'s ``request.post`` passes it
    on): a ``(connect, read)`` pair bounds the whole request by their sum, ``None`` leaves it unbounded.
    """

    def __init__(
        self, host: Optional[str], timeout: float, proxies: Optional[Mapping[str, str]] = None, pool_size: int = 1
    ) -> None:
        self.url = batch_url(host)
        self.timeout = timeout
        self._whole = _whole_request_timeout(timeout)
        self._session = requests.Session()
        settings = _environment_settings(self._session, self.url, proxies)
        # never read the environment (or ~/.netrc, which would replace the Authorization header) again
        self._session.trust_env = False
        self.proxies: Optional[dict[str, str]] = settings.get("proxies") or None
        # TLS verification stays on: certifi's bundle, or the one the environment names
        self._verify: Union[bool, str] = settings.get("verify", True)
        self._cert: Any = settings.get("cert")
        for url in [self.url, *(self.proxies or {}).values()]:
            _register_credentials(url)
        self._adapter: Optional[requests.adapters.BaseAdapter] = None
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=max(pool_size, 2), max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            log.warning("host %s uses plain http: events are sent unencrypted", parts.netloc.rpartition("@")[2])

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body``; return the final answer or raise :class:`NetworkError`.

        The whole request (connect, TLS, send, the complete response) is bounded by ``timeout``; a
        deadline that passes is a network error of kind ``timeout``. At most :data:`MAX_BODY` bytes of
        the answer are read. Goes straight to the session's adapter with a prepared request:
        ``Session.request`` would merge settings, look up proxies and cookies on every call. Redirects
        are not followed (a 3xx is a final answer).
        """
        if self._whole is not None:
            deadline.start(self._whole)
        try:
            request = requests.PreparedRequest()
            request.prepare(method="POST", url=self.url, headers=headers, data=body)
            adapter = self._adapter or self._session.get_adapter(self.url)
            self._adapter = adapter
            answer = adapter.send(
                request, timeout=self.timeout, proxies=self.proxies, verify=self._verify, cert=self._cert, stream=True
            )
            content = _read_body(answer)
        except Exception as exc:
            raise NetworkError(network_error_kind(exc), _redact_exception(exc)) from exc
        finally:
            deadline.clear()
        return Response(answer.status_code, answer.headers, content)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()


def _whole_request_timeout(timeout: Any) -> Optional[float]:
    """Seconds for a whole request: ``timeout``, or connect + read for a ``requests``-style pair; ``None``: no bound."""
    parts = timeout if isinstance(timeout, tuple) else (timeout,)
    if any(part is None for part in parts):
        return None
    try:
        return float(sum(parts))
    except TypeError:
        return None


def _environment_settings(session: requests.Session, url: str, proxies: Optional[Mapping[str, str]]) -> dict[str, Any]:
    """Proxies, CA bundle and client certificate for ``url``, as ``requests`` would merge them per request."""
    explicit = dict(proxies or {})
    try:
        return dict(session.merge_environment_settings(url, dict(explicit), None, None, None))
    except Exception:  # noqa: BLE001 - a host that cannot be parsed is reported when it is first used
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        return {"proxies": explicit, "verify": bundle or True, "cert": None}


def _register_credentials(url: str) -> None:
    """Keep the password of a URL's ``user:password@`` part out of logs and exception texts."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except (ValueError, TypeError):
        return
    if password:
        register_secret(password)
        register_secret(unquote(password))
        register_secret(f"{parts.username}:{password}")


def _read_body(answer: requests.Response) -> bytes:
    """At most :data:`MAX_BODY` bytes of the body; the connection is reused only if the body was read whole."""
    raw = answer.raw
    chunks: list[bytes] = []
    size = 0
    complete = False
    try:
        while size <= MAX_BODY:
            chunk = raw.read(_CHUNK, decode_content=False)
            if not chunk:
                short = getattr(raw, "length_remaining", None)
                if short:  # urllib3 1.26 does not hold a body to its Content-Length
                    raise urllib3.exceptions.ProtocolError(f"response ended {short} bytes before its Content-Length")
                complete = True
                break
            chunks.append(chunk)
            size += len(chunk)
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    finally:
        if complete:
            answer.raw.release_conn()
        else:
            answer.close()  # more to come (or an error): the connection cannot be reused
    content = b"".join(chunks)
    if not complete:
        log.debug("response body longer than %d bytes: the rest was not read", MAX_BODY)
        content = trim_partial_secret(content[:MAX_BODY])
    encoding = str(answer.headers.get("Content-Encoding", "")).strip().lower()
    return _inflate(content, encoding) if encoding else content


def _inflate(data: bytes, encoding: str) -> bytes:
    """A gzip or deflate body decompressed to at most :data:`MAX_BODY` bytes (as it came if it cannot be)."""
    attempts: tuple[int, ...]
    if encoding in ("gzip", "x-gzip"):
        attempts = (47,)  # gzip or zlib header, detected
    elif encoding == "deflate":
        attempts = (15, -15)  # zlib stream, or raw deflate as some servers send it
    else:
        return data
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            inflated = inflater.decompress(data, MAX_BODY)
        except zlib.error:
            continue
        # cut short (by the cap, or a stream that stops early): no half secret at the end
        return inflated if inflater.eof else trim_partial_secret(inflated)
    return data


def _redact_exception(exc: BaseException) -> BaseException:
    """``exc``, with registered secrets replaced in the text arguments of every exception in its chain."""
    for current in _exception_chain(exc):
        try:
            args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in current.args)
            if args != current.args:
                current.args = args
        except Exception:  # noqa: BLE001 - an exception class with odd args keeps them
            continue
    return exc


class Poster(Protocol):
    """Anything that can POST a body: :class:`Transport`, or a fake in tests."""

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` with ``headers``."""
        ...
