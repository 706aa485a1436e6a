"""Loaded by pytest before the reference test modules, identically for both libraries.

Two things, neither of which touches a test file or either library's code:

* **Redirect.** analytics-python 2.4.0 writes its default host as a literal inside
  ``request.post`` (``host or "https://api.segment.io"``), so no constant, module setting or
  environment variable can move it. Both libraries send through ``requests``'
  ``HTTPAdapter.send``; this wraps it so a request for ``https://api.segment.io/...`` goes to
  the same path on the local sink named by ``REFERENCE_SUITE_SINK`` instead. Tests that patch
  a library's own session never get this far, exactly as with the real host.
* **Guard.** Only loopback may be reached from this machine. Resolving any other name fails
  with ``gaierror`` and connecting to any other address fails with ``ConnectionRefusedError``
  before a packet leaves (some reference tests configure a proxy on a public address).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests.adapters

SINK = urlsplit(os.environ["REFERENCE_SUITE_SINK"])
REDIRECTED_HOSTS = frozenset({"api.segment.io"})

_original_send = requests.adapters.HTTPAdapter.send


def _send_to_sink(self: requests.adapters.HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
    parts = urlsplit(request.url)
    if parts.hostname in REDIRECTED_HOSTS:
        request.url = urlunsplit((SINK.scheme, SINK.netloc, parts.path, parts.query, parts.fragment))
    return _original_send(self, request, *args, **kwargs)


requests.adapters.HTTPAdapter.send = _send_to_sink  # type: ignore[method-assign]


def _is_loopback(host: Any) -> bool:
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


_original_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and not _is_loopback(name):
        raise socket.gaierror(
            socket.EAI_NONAME, f"reference-suite harness: only loopback may be resolved, not {name!r}"
        )
    return _original_getaddrinfo(host, *args, **kwargs)


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"reference-suite harness: only loopback may be reached, not {address[0]!r}"
        )


_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _original_connect_ex(self, address)


socket.getaddrinfo = _guarded_getaddrinfo
socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
