"""One HTTP POST: the keep-alive session, the whole-request deadline, and naming network failures.

:class:`Transport` sends one body and returns a :class:`Response` or raises :class:`NetworkError`
with a ``kind`` (``refused``, ``reset``, ``timeout``, ``dns``, ``tls``, ``other`` or
``configuration``). Proxy and CA-bundle environment variables are read once, when the transport is
built. See ``docs/delivery.md``.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Protocol, Union
from urllib.parse import urlsplit

import requests

from segment.analytics.wire import batch_url

__all__ = ["NetworkError", "Poster", "Response", "Transport", "network_error_kind"]

log = logging.getLogger("segment")


@dataclass(frozen=True)
class Response:
    """A final HTTP answer: status, headers (case-insensitive mapping) and raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


class NetworkError(Exception):
    """No HTTP answer: ``kind`` is refused, reset, timeout, dns, tls, other, or configuration."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(f"{kind}: {cause}")
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
    """One HTTP POST per call over a keep-alive ``requests`` session."""

    def __init__(
        self, host: Optional[str], timeout: float, proxies: Optional[Mapping[str, str]] = None, pool_size: int = 1
    ) -> None:
        self.url = batch_url(host)
        self.timeout = timeout
        self._session = requests.Session()
        # Read the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) once instead of on every request,
        # and keep ~/.netrc from replacing the Authorization header.
        self._session.trust_env = False
        env_proxies = requests.utils.get_environ_proxies(self.url)
        self.proxies = dict(proxies) if proxies else (dict(env_proxies) or None)
        # TLS verification stays on: certifi's bundle, or the one the environment names
        self._verify: Union[bool, str] = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._adapter: Optional[requests.adapters.BaseAdapter] = None
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 2), max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            log.warning("host %s uses plain http: events are sent unencrypted", parts.netloc)

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body``; return the final answer or raise :class:`NetworkError`.

        Goes straight to the session's adapter with a prepared request: ``Session.request`` would merge
        settings, look up proxies and cookies on every call, about a third of the cost of a request.
        Redirects are not followed (a 3xx is a final answer).
        """
        try:
            request = requests.PreparedRequest()
            request.prepare(method="POST", url=self.url, headers=headers, data=body)
            adapter = self._adapter or self._session.get_adapter(self.url)
            self._adapter = adapter
            answer = adapter.send(
                request, timeout=self.timeout, proxies=self.proxies, verify=self._verify, stream=False
            )
            content = answer.content
        except Exception as exc:
            raise NetworkError(network_error_kind(exc), exc) from exc
        return Response(answer.status_code, answer.headers, content)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()


class Poster(Protocol):
    """Anything that can POST a body: :class:`Transport`, or a fake in tests."""

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` with ``headers``."""
        ...
