"""A whole-request deadline for HTTP requests made through ``requests`` and ``urllib3``.

``requests`` hands its ``timeout`` to every socket operation separately (the connect, each send,
each read), so a server that answers one byte a second never trips it. :class:`DeadlineAdapter` is an
``HTTPAdapter`` whose connections know when the request in progress on their thread must be over
(:func:`start`, :func:`clear`) and never wait on the socket past that:

* connecting: the TCP connect timeout is capped at the time left, and the TLS handshake (which
  CPython bounds as a whole by the socket timeout) gets the time left after the TCP connect;
* sending (request line, headers, body, a proxy's ``CONNECT``): the socket timeout is set to the time
  left before each ``send`` (``sendall`` is bounded as a whole);
* the response (status line, headers, body, chunked or not, and a proxy's answer to ``CONNECT``) is
  read through a reader that sets the socket timeout to the time left before every ``recv`` and
  raises ``socket.timeout`` once the deadline has passed.

No thread per request and no watchdog: one ``time.monotonic()`` and one ``settimeout()`` per system
call. Proxy managers get the same connections (SOCKS proxies keep urllib3's own, without the
deadline). Name resolution (``getaddrinfo``) cannot be interrupted without a thread and is not bounded
by the deadline. Works with urllib3 1.26 and 2.x.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

import requests
from urllib3 import poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["DeadlineAdapter", "clear", "start"]

_local = threading.local()


def start(seconds: float) -> None:
    """The request about to be made on this thread must be over within ``seconds``."""
    _local.at = time.monotonic() + seconds


def clear() -> None:
    """No deadline on this thread any more."""
    _local.at = None


def _deadline() -> Optional[float]:
    return getattr(_local, "at", None)


def _expired() -> socket.timeout:
    return socket.timeout("timed out: the request took longer than its timeout")


class _DeadlineReader(io.RawIOBase):
    """The socket's raw reader, with the socket timeout set to the time left before every read."""

    def __init__(self, sock: Any, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> Optional[int]:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _expired()
        self._sock.settimeout(left)
        return self._raw.readinto(buffer)  # type: ignore[no-any-return]

    def fileno(self) -> int:
        return self._raw.fileno()  # type: ignore[no-any-return]

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What ``http.client.HTTPResponse`` needs of a socket (``makefile``), reading under a deadline."""

    def __init__(self, sock: Any, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    """``http.client``'s response, reading its socket under the thread's deadline (when there is one)."""

    def __init__(self, sock: Any, debuglevel: int = 0, method: Optional[str] = None, url: Optional[str] = None) -> None:
        deadline = _deadline()
        reader: Any = sock if deadline is None else _DeadlineSocket(sock, deadline)
        super().__init__(reader, debuglevel, method, url)


def _connect(conn: Any, new_conn: Callable[[], Any]) -> Any:
    """``conn._new_conn()`` with its connect timeout capped, then the socket timeout set for the handshake."""
    deadline = _deadline()
    if deadline is None:
        return new_conn()
    # a millisecond at least: a deadline spent before the connect is then a read timeout, as when the
    # connect succeeds and the answer is late (what requests users of a tiny timeout expect)
    left = max(deadline - time.monotonic(), 1e-3)
    timeout = conn.timeout
    if not isinstance(timeout, (int, float)) or timeout > left:
        conn.timeout = left
    sock = new_conn()
    sock.settimeout(max(deadline - time.monotonic(), 1e-3))
    return sock


def _before_send(sock: Any) -> None:
    deadline = _deadline()
    if deadline is not None and sock is not None:
        sock.settimeout(max(deadline - time.monotonic(), 1e-3))  # a spent deadline ends at the read (see _connect)


class _Deadline(HTTPConnection):
    """What both connection classes add: connect, send and read bounded by the request's deadline."""

    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        return _connect(self, super()._new_conn)  # type: ignore[no-any-return]

    def send(self, data: Any) -> None:
        _before_send(self.sock)
        super().send(data)


class _HTTPConnection(_Deadline):
    pass


class _HTTPSConnection(_Deadline, HTTPSConnection):
    pass


class DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": DeadlineHTTPConnectionPool, "https": DeadlineHTTPSConnectionPool}
_STOCK_POOL_CLASSES = poolmanager.pool_classes_by_scheme


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose connections (direct or through an HTTP(S) proxy) honour :func:`start`."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        """The stock pool manager, with connection pools that make deadline-aware connections."""
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """The stock proxy manager, with the same pools (a SOCKS manager keeps its own)."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if getattr(manager, "pool_classes_by_scheme", None) is _STOCK_POOL_CLASSES:
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager
