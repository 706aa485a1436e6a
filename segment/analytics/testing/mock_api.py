"""A scriptable local mock of Segment's Tracking API (standard library only).

The mock serves ``POST /v1/batch`` on ``127.0.0.1`` and answers each request
with a :class:`Reply` chosen, in this order, from:

1. the one-shot script (:meth:`MockTrackingAPI.script`), answered in order;
2. the rules (:meth:`MockTrackingAPI.add_rule`), first match in insertion
   order, skipping rules whose ``times`` is spent;
3. the profile (:meth:`MockTrackingAPI.set_profile`), a seeded random choice;
4. the default reply (:meth:`MockTrackingAPI.set_default`), ``200`` at first.

Every request is recorded (:meth:`MockTrackingAPI.requests`) unless the mock
was created with ``record=False``, in which case it only counts requests and
delivered events. A control interface under ``/_mock/`` makes the mock usable
from another process::

    GET  /_mock/requests   recorded requests as JSON
    GET  /_mock/events     delivered events as JSON
    GET  /_mock/stats      {"requests": n, "events": n, "connections": n}
    POST /_mock/script     {"replies": [...], "rules": [...], "default": {...},
                            "profile": "realistic" | [[weight, reply], ...], "seed": n}
    POST /_mock/reset      back to the initial state

Control requests are never recorded.
"""

from __future__ import annotations

import gzip
import http
import json
import random
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, final

__all__ = [
    "MockTrackingAPI",
    "RecordedRequest",
    "Reply",
    "Rule",
    "realistic_profile",
]

#: The actions a :class:`Reply` can take.
ACTIONS = frozenset({"respond", "reset", "hang", "cut"})

#: Name of the threads that serve connections (the server loop is ``mock-tracking-api:PORT``).
HANDLER_THREAD_NAME = "mock-tracking-api-handler"

_LOOPBACK = "127.0.0.1"
_ANY = "any"
_CONTROL_PREFIX = "/_mock"
_NO_BODY_STATUSES = frozenset({204, 304})


def _freeze(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"status {status}"


def _strip_query(path: str) -> str:
    return path.split("?", 1)[0]


def _check_keys(kind: str, d: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if not isinstance(d, Mapping):
        raise TypeError(f"{kind} must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"unknown {kind} field(s): {', '.join(unknown)}")


def _opt_int(kind: str, name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{kind}.{name} must be an integer or null, got {value!r}")
    return value


@dataclass(frozen=True)
class Reply:
    """How the mock answers one request.

    ``body`` ``None`` means ``{"success": true}`` for a 2xx status and
    ``{"code": "error", "message": ...}`` otherwise; a ``dict``/``list`` is sent
    as JSON; ``str``/``bytes`` are sent verbatim.

    ``action`` is one of:

    - ``"respond"``: answer normally (after ``delay`` seconds);
    - ``"reset"``: after ``delay``, close the socket with ``SO_LINGER 0`` so the
      client sees a connection reset and no response;
    - ``"hang"``: never answer; close without answering after ``delay`` seconds
      (when ``delay > 0``) or when the mock stops;
    - ``"cut"``: after ``delay``, send the status line and headers with a
      ``Content-Length`` larger than the part of the body actually sent, then
      close, so the client sees a response cut off mid-body.

    ``fail_message_ids`` maps ``messageId`` to a per-event status: when any of
    them is in the batch, the answer is ``207`` (unless ``status`` is something
    other than ``200``) with ``{"errorResponses": [{"index", "status",
    "message"}]}`` indexing the batch as sent.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    delay: float = 0.0
    action: str = "respond"
    fail_message_ids: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int) or not 1 <= self.status <= 999:
            raise ValueError(f"Reply.status must be an integer in 1..999, got {self.status!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"Reply.action must be one of {sorted(ACTIONS)}, got {self.action!r}")
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, float)) or self.delay < 0:
            raise ValueError(f"Reply.delay must be a number >= 0, got {self.delay!r}")
        if self.body is not None and not isinstance(self.body, (bytes, str, dict, list)):
            raise ValueError(f"Reply.body must be bytes, str, dict, list or None, got {type(self.body).__name__}")
        headers = dict(self.headers)
        for k, v in headers.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"Reply.headers must map str to str, got {k!r}: {v!r}")
            if any(c in k + v for c in "\r\n"):
                raise ValueError("Reply.headers must not contain line breaks")
        fails = dict(self.fail_message_ids)
        for mid, st in fails.items():
            if not isinstance(mid, str) or isinstance(st, bool) or not isinstance(st, int):
                raise TypeError(f"Reply.fail_message_ids must map str to int, got {mid!r}: {st!r}")
        object.__setattr__(self, "headers", _freeze(headers))
        object.__setattr__(self, "fail_message_ids", _freeze(fails))
        object.__setattr__(self, "delay", float(self.delay))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reply:
        """Build a reply from a JSON-style mapping with the same field names.

        Unknown fields raise ``ValueError``.
        """
        _check_keys("reply", d, _REPLY_FIELDS)
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """The reply as a JSON-friendly mapping (``bytes`` bodies are decoded as UTF-8)."""
        body = self.body.decode("utf-8", "replace") if isinstance(self.body, bytes) else self.body
        return {
            "status": self.status,
            "headers": dict(self.headers),
            "body": body,
            "delay": self.delay,
            "action": self.action,
            "fail_message_ids": dict(self.fail_message_ids),
        }


_REPLY_FIELDS = frozenset({"status", "headers", "body", "delay", "action", "fail_message_ids"})
_RULE_FIELDS = frozenset({"reply", "times", "retry_count", "min_events", "max_events", "contains_message_id", "path"})


@dataclass(frozen=True)
class Rule:
    """A reply given to requests that meet every (optional) condition.

    ``retry_count`` matches the ``X-Retry-Count`` header: an ``int`` matches
    that value, ``None`` matches requests without the header, ``"any"`` (the
    default) does not look at it. ``path`` ``None`` matches any path under
    ``/v1/``; otherwise the path (without query string) must be equal.
    ``times`` limits how many requests the rule answers (``None``: unlimited).
    """

    reply: Reply
    times: int | None = None
    retry_count: int | str | None = _ANY
    min_events: int | None = None
    max_events: int | None = None
    contains_message_id: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.reply, Reply):
            raise TypeError("Rule.reply must be a Reply")
        if isinstance(self.retry_count, str) and self.retry_count != _ANY:
            raise ValueError(f"Rule.retry_count must be an int, None or 'any', got {self.retry_count!r}")
        for name in ("times", "min_events", "max_events"):
            _opt_int("Rule", name, getattr(self, name))
        if not isinstance(self.retry_count, str):
            _opt_int("Rule", "retry_count", self.retry_count)
        if self.times is not None and self.times < 0:
            raise ValueError("Rule.times must be >= 0 or None")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
        """Build a rule from a JSON-style mapping.

        ``reply`` is a reply mapping (see :meth:`Reply.from_dict`); an absent
        ``retry_count`` means ``"any"`` and ``null`` means "header absent".
        """
        _check_keys("rule", d, _RULE_FIELDS)
        if "reply" not in d:
            raise ValueError("rule needs a 'reply'")
        kwargs = dict(d)
        reply = kwargs.pop("reply")
        return cls(reply=reply if isinstance(reply, Reply) else Reply.from_dict(reply), **kwargs)

    def matches(self, path: str, batch: Sequence[Any], retry_count: int | None) -> bool:
        """Whether a request with this path, batch and parsed ``X-Retry-Count`` meets the conditions."""
        path = _strip_query(path)
        if self.path is None:
            if not path.startswith("/v1/"):
                return False
        elif path != self.path:
            return False
        if self.retry_count != _ANY and self.retry_count != retry_count:
            return False
        if self.min_events is not None and len(batch) < self.min_events:
            return False
        if self.max_events is not None and len(batch) > self.max_events:
            return False
        if self.contains_message_id is not None:
            return any(isinstance(e, dict) and e.get("messageId") == self.contains_message_id for e in batch)
        return True


@dataclass(frozen=True)
class RecordedRequest:
    """One request the mock received (control requests excluded).

    Besides the documented fields, ``action`` is the reply action taken,
    ``client_port`` the client's TCP port, ``connection_id`` the 1-based number
    of the TCP connection it came on, and ``error_indexes`` the batch positions
    listed in the ``errorResponses`` of a 2xx answer.
    """

    index: int
    arrived: float
    wall_time: float
    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    reply_status: int | None
    action: str = "respond"
    client_port: int = 0
    connection_id: int = 0
    error_indexes: tuple[int, ...] = ()

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        lname = name.lower()
        for k, v in self.headers.items():
            if k.lower() == lname:
                return v
        return None

    @property
    def batch(self) -> list[dict[str, Any]]:
        """``body["batch"]`` when it is a list, else ``[]``."""
        return _batch_of(self.body)

    @property
    def retry_count(self) -> int | None:
        """``int(X-Retry-Count)``, or ``None`` when the header is absent (or not an integer)."""
        return _parse_retry_count(self.header("X-Retry-Count"))

    @property
    def delivered(self) -> bool:
        """Whether the mock answered this request with a 2xx status."""
        return self.reply_status is not None and 200 <= self.reply_status < 300

    def delivered_events(self) -> list[dict[str, Any]]:
        """Events of this request counted as delivered (2xx, not listed in ``errorResponses``)."""
        if not self.delivered:
            return []
        skip = set(self.error_indexes)
        return [e for i, e in enumerate(self.batch) if i not in skip and isinstance(e, dict)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (the raw body is given only by its size)."""
        return {
            "index": self.index,
            "arrived": self.arrived,
            "wall_time": self.wall_time,
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "body": self.body,
            "body_size": len(self.raw_body),
            "reply_status": self.reply_status,
            "retry_count": self.retry_count,
            "action": self.action,
            "client_port": self.client_port,
            "connection_id": self.connection_id,
            "error_indexes": list(self.error_indexes),
        }


def _batch_of(body: Any) -> list[Any]:
    if isinstance(body, dict):
        batch = body.get("batch")
        if isinstance(batch, list):
            return batch
    return []


def _parse_retry_count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _decode_body(raw: bytes, content_encoding: str | None) -> Any:
    data = raw
    if content_encoding and content_encoding.strip().lower() in ("gzip", "x-gzip"):
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError):
            return None
    if not data:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    except RecursionError:
        return _decode_on_a_fresh_stack(data)


def _decode_on_a_fresh_stack(data: bytes) -> Any:
    """Decode JSON nested nearly as deep as the interpreter allows, from a new thread's shallow stack."""
    box: list[Any] = [None]

    def decode() -> None:
        try:
            box[0] = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            pass

    thread = threading.Thread(target=decode, name="mock-tracking-api-decode", daemon=True)
    thread.start()
    thread.join()
    return box[0]


def realistic_profile(seed: int = 0) -> list[tuple[float, Reply]]:
    """A "day of real faults" mix for :meth:`MockTrackingAPI.set_profile`.

    About 88% ``200``, 4% ``429`` with ``Retry-After: 1``, 3% ``500``/``502``/
    ``503``/``504`` without ``Retry-After``, 2% connection reset, 1% ``503`` with
    ``Retry-After: 1``, 1% ``408`` and 1% slow ``200`` (0.2 s). No 4xx drops.
    ``seed`` is accepted for symmetry with ``set_profile``; the mix itself is fixed.
    """
    del seed
    retry_after = {"Retry-After": "1"}
    return [
        (88.0, Reply(200)),
        (4.0, Reply(429, headers=retry_after)),
        (0.75, Reply(500)),
        (0.75, Reply(502)),
        (0.75, Reply(503)),
        (0.75, Reply(504)),
        (2.0, Reply(action="reset")),
        (1.0, Reply(503, headers=retry_after)),
        (1.0, Reply(408)),
        (1.0, Reply(200, delay=0.2)),
    ]


@dataclass
class _Plan:
    """What a handler must do for one request (computed under the lock)."""

    reply: Reply
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class _RuleState:
    rule: Rule
    remaining: int | None


class _BadRequest(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, port: int, mock: MockTrackingAPI) -> None:
        self.mock = mock
        self.handler_threads: set[threading.Thread] = set()
        self.threads_lock = threading.Lock()
        super().__init__((_LOOPBACK, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Like ThreadingMixIn.process_request, with named threads that stop() can join.
        thread = threading.Thread(
            target=self._run_handler,
            args=(request, client_address),
            name=HANDLER_THREAD_NAME,
            daemon=True,
        )
        with self.threads_lock:
            self.handler_threads.add(thread)
        thread.start()

    def _run_handler(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.threads_lock:
                self.handler_threads.discard(threading.current_thread())

    def join_handlers(self, deadline: float) -> None:
        with self.threads_lock:
            threads = list(self.handler_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's reverse DNS lookup (socket.getfqdn).
        socketserver.TCPServer.server_bind(self)
        self.server_name = _LOOPBACK
        self.server_port = self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        closed_file = isinstance(exc, ValueError) and "closed file" in str(exc)
        if isinstance(exc, OSError) or closed_file or self.mock._stopping.is_set():
            return  # client went away, or we closed the socket on purpose
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "segment-mock-tracking-api"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection_id = self.server.mock._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass
        finally:
            self.server.mock._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the mock never logs per request."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_GET
    do_PUT = do_GET
    do_PATCH = do_GET
    do_DELETE = do_GET

    # -- request handling ---------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise _BadRequest(f"bad Content-Length {length!r}") from None
        if n < 0:
            raise _BadRequest(f"bad Content-Length {length!r}")
        data = self.rfile.read(n)
        if len(data) != n:
            raise _BadRequest("body shorter than Content-Length")
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size == 0:
                while self.rfile.readline(65537).strip():
                    pass  # trailers
                return b"".join(parts)
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _BadRequest("truncated chunk")
            parts.append(chunk)
            self.rfile.readline(65537)

    def _dispatch(self) -> None:
        try:
            raw = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True
            self._send(
                400, [("Content-Type", "application/json")], _json_bytes({"code": "bad_request", "message": str(exc)})
            )
            return
        path = _strip_query(self.path)
        if path == _CONTROL_PREFIX or path.startswith(_CONTROL_PREFIX + "/"):
            self._control(path, raw)
            return
        mock = self.server.mock
        plan = mock._process(
            method=self.command,
            path=self.path,
            headers=dict(self.headers.items()),
            raw_body=raw,
            client_port=int(self.client_address[1]),
            connection_id=self.connection_id,
        )
        self._execute(plan)

    def _execute(self, plan: _Plan) -> None:
        stop = self.server.mock._stopping
        reply = plan.reply
        if reply.action == "hang":
            stop.wait(reply.delay if reply.delay > 0 else None)
            self._close()
            return
        if reply.delay > 0 and stop.wait(reply.delay):
            self._close()
            return
        if reply.action == "reset":
            self._reset()
        elif reply.action == "cut":
            self._cut(plan)
        else:
            self._send(plan.status, plan.headers, plan.body)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        no_body = status in _NO_BODY_STATUSES or 100 <= status < 200
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if no_body:
            body = b""
            if status < 200:
                self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _cut(self, plan: _Plan) -> None:
        body = plan.body or b'{"success":true}'
        self.close_connection = True
        self.send_response(plan.status)
        for k, v in plan.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) + 64))
        self.end_headers()
        self.wfile.write(body[: max(1, len(body) // 2)])
        self.wfile.flush()
        self._close()

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self._close()

    def _close(self) -> None:
        self.close_connection = True
        try:
            self.rfile.close()  # drop the makefile() reference so close() really closes the fd
            self.connection.close()
        except OSError:
            pass

    # -- control interface --------------------------------------------------

    def _control(self, path: str, raw: bytes) -> None:
        mock = self.server.mock
        status = 200
        result: Any
        try:
            if path == "/_mock/requests" and self.command == "GET":
                result = [r.to_dict() for r in mock.requests()]
            elif path == "/_mock/events" and self.command == "GET":
                result = mock.events()
            elif path == "/_mock/stats" and self.command == "GET":
                result = mock.stats()
            elif path == "/_mock/reset" and self.command == "POST":
                mock.reset()
                result = {"success": True}
            elif path == "/_mock/script" and self.command == "POST":
                config = json.loads(raw.decode("utf-8")) if raw.strip() else {}
                mock.configure(config)
                result = {"success": True}
            elif path in ("/_mock/requests", "/_mock/events", "/_mock/stats", "/_mock/reset", "/_mock/script"):
                status, result = 405, {"code": "method_not_allowed", "message": f"{self.command} {path}"}
            else:
                status, result = 404, {"code": "not_found", "message": path}
        except (ValueError, TypeError) as exc:
            status, result = 400, {"code": "bad_request", "message": str(exc)}
        self._send(status, [("Content-Type", "application/json")], _json_bytes(result))


@final
class MockTrackingAPI:
    """A local, scriptable Segment Tracking API on ``127.0.0.1``.

    Use as a context manager (``with MockTrackingAPI() as api: ...``) or call
    :meth:`start` and :meth:`stop`. ``port=0`` picks a free port. With
    ``record=False`` requests are only counted (see :meth:`request_count` and
    :meth:`event_count`), for benchmarks.
    """

    #: The "day of real faults" mix; see :func:`realistic_profile`.
    realistic_profile = staticmethod(realistic_profile)

    def __init__(self, host: str = _LOOPBACK, port: int = 0, *, record: bool = True) -> None:
        if host not in (_LOOPBACK, "localhost"):
            raise ValueError(f"the mock binds to {_LOOPBACK} only, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"bad port {port!r}")
        self._requested_port = port
        self._record = record
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._open_sockets: set[socket.socket] = set()
        self._connection_count = 0
        self._init_state()

    def _init_state(self) -> None:
        self._script: deque[Reply] = deque()
        self._rules: list[_RuleState] = []
        self._default = Reply()
        self._profile: list[tuple[float, Reply]] | None = None
        self._rng = random.Random(0)
        self._records: list[RecordedRequest] = []
        self._request_count = 0
        self._event_count = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> MockTrackingAPI:
        """Bind and serve in a daemon thread; returns ``self``."""
        with self._lock:
            if self._server is not None or self._stopping.is_set():
                raise RuntimeError("MockTrackingAPI can be started only once")
            self._server = _Server(self._requested_port, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mock-tracking-api:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving promptly: wakes hanging/delayed handlers and closes open connections.

        Waits at most about half a second for the connection threads to end.
        """
        self._stopping.set()
        server = self._server
        if server is None:
            return
        if self._thread is not None and self._thread.is_alive():
            server.shutdown()
        server.server_close()
        with self._lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 0.5
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        server.join_handlers(deadline)
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> MockTrackingAPI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port (the one picked by the system once started with ``port=0``)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (available once started)."""
        if self._server is None:
            raise RuntimeError("MockTrackingAPI is not started")
        return f"http://{_LOOPBACK}:{self.port}"

    # -- configuration ----------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Append one-shot replies, answered in order before rules and the default."""
        for r in replies:
            if not isinstance(r, Reply):
                raise TypeError(f"script() takes Reply objects, got {type(r).__name__}")
        with self._lock:
            self._script.extend(replies)

    def add_rule(self, rule: Rule) -> None:
        """Add a rule, checked after the earlier ones once the one-shot script is exhausted."""
        if not isinstance(rule, Rule):
            raise TypeError(f"add_rule() takes a Rule, got {type(rule).__name__}")
        with self._lock:
            self._rules.append(_RuleState(rule, rule.times))

    def set_default(self, reply: Reply) -> None:
        """Set the reply used when nothing else applies (clears any profile)."""
        if not isinstance(reply, Reply):
            raise TypeError(f"set_default() takes a Reply, got {type(reply).__name__}")
        with self._lock:
            self._default = reply
            self._profile = None

    def set_profile(self, weights: Sequence[tuple[float, Reply]], seed: int = 0) -> None:
        """Make the default a seeded random choice among ``(weight, reply)`` pairs.

        The sequence of choices is deterministic for a given seed and request order.
        """
        profile = [(float(w), r) for w, r in weights]
        if not profile or any(w < 0 for w, _ in profile) or sum(w for w, _ in profile) <= 0:
            raise ValueError("set_profile() needs non-negative weights with a positive sum")
        for _, r in profile:
            if not isinstance(r, Reply):
                raise TypeError(f"set_profile() takes Reply objects, got {type(r).__name__}")
        with self._lock:
            self._profile = profile
            self._rng = random.Random(seed)

    def configure(self, config: Mapping[str, Any]) -> None:
        """Apply a JSON-style configuration (the ``POST /_mock/script`` body).

        Keys, all optional: ``replies`` (list of reply dicts, appended to the
        script), ``rules`` (list of rule dicts), ``default`` (reply dict),
        ``profile`` (``"realistic"`` or a list of ``[weight, reply dict]``) with
        ``seed`` (int). Everything is validated before anything is applied.
        """
        _check_keys("script", config, frozenset({"replies", "rules", "default", "profile", "seed"}))
        replies = [Reply.from_dict(d) for d in _as_list("replies", config.get("replies", []))]
        rules = [Rule.from_dict(d) for d in _as_list("rules", config.get("rules", []))]
        default = Reply.from_dict(config["default"]) if config.get("default") is not None else None
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        profile: list[tuple[float, Reply]] | None = None
        spec = config.get("profile")
        if spec == "realistic":
            profile = realistic_profile(seed)
        elif isinstance(spec, list):
            profile = []
            for item in spec:
                if not isinstance(item, list) or len(item) != 2:
                    raise ValueError("profile entries must be [weight, reply]")
                profile.append((float(item[0]), Reply.from_dict(item[1])))
        elif spec is not None:
            raise ValueError(f"profile must be 'realistic' or a list of [weight, reply], got {spec!r}")
        if default is not None:
            self.set_default(default)
        if profile is not None:
            self.set_profile(profile, seed)
        self.script(*replies)
        for rule in rules:
            self.add_rule(rule)

    def reset(self) -> None:
        """Clear script, rules, profile and recordings; the default goes back to ``200``."""
        with self._lock:
            self._init_state()

    # -- inspection -------------------------------------------------------------

    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests in arrival order (``[]`` with ``record=False``)."""
        with self._lock:
            return list(self._records)

    def events(self) -> list[dict[str, Any]]:
        """Every delivered event: from requests answered 2xx, minus those listed in ``errorResponses``."""
        return [e for r in self.requests() for e in r.delivered_events()]

    def message_ids(self) -> list[str]:
        """The ``messageId`` of every delivered event (duplicates kept)."""
        return [str(e.get("messageId")) for e in self.events()]

    def received_message_ids(self) -> list[str]:
        """The ``messageId`` of every event of every recorded request, whatever the answer."""
        return [str(e.get("messageId")) for r in self.requests() for e in r.batch if isinstance(e, dict)]

    def request_count(self) -> int:
        """How many (non-control) requests arrived, in both recording modes."""
        with self._lock:
            return self._request_count

    def event_count(self) -> int:
        """How many events were delivered (see :meth:`events`), in both recording modes."""
        with self._lock:
            return self._event_count

    def connection_count(self) -> int:
        """How many TCP connections the server accepted (control connections included)."""
        with self._lock:
            return self._connection_count

    def stats(self) -> dict[str, int]:
        """``{"requests": n, "events": n, "connections": n}``."""
        with self._lock:
            return {
                "requests": self._request_count,
                "events": self._event_count,
                "connections": self._connection_count,
            }

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` requests arrived; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._request_count >= n, timeout)

    def wait_for_events(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` events were delivered; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._event_count >= n, timeout)

    # -- called by the handler ----------------------------------------------------

    def _connection_opened(self, sock: socket.socket) -> int:
        with self._lock:
            self._connection_count += 1
            self._open_sockets.add(sock)
            if self._stopping.is_set():  # accepted just before stop(): do not keep it open
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return self._connection_count

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open_sockets.discard(sock)

    def _select(self, path: str, batch: list[Any], retry_count: int | None) -> Reply:
        if self._script:
            return self._script.popleft()
        for state in self._rules:
            if state.remaining is not None and state.remaining <= 0:
                continue
            if state.rule.matches(path, batch, retry_count):
                if state.remaining is not None:
                    state.remaining -= 1
                return state.rule.reply
        if self._profile is not None:
            replies = [r for _, r in self._profile]
            weights = [w for w, _ in self._profile]
            return self._rng.choices(replies, weights)[0]
        return self._default

    def _process(
        self,
        *,
        method: str,
        path: str,
        headers: dict[str, str],
        raw_body: bytes,
        client_port: int,
        connection_id: int,
    ) -> _Plan:
        lower = {k.lower(): v for k, v in headers.items()}
        body = _decode_body(raw_body, lower.get("content-encoding"))
        batch = _batch_of(body)
        retry_count = _parse_retry_count(lower.get("x-retry-count"))
        arrived, wall = time.monotonic(), time.time()
        with self._cond:
            reply = self._select(path, batch, retry_count)
            plan, error_indexes = _render(reply, batch)
            status = plan.status if reply.action == "respond" else None
            index = self._request_count
            self._request_count += 1
            if status is not None and 200 <= status < 300:
                skip = set(error_indexes)
                self._event_count += sum(1 for i, e in enumerate(batch) if i not in skip and isinstance(e, dict))
            if self._record:
                self._records.append(
                    RecordedRequest(
                        index=index,
                        arrived=arrived,
                        wall_time=wall,
                        method=method,
                        path=path,
                        headers=headers,
                        raw_body=raw_body,
                        body=body,
                        reply_status=status,
                        action=reply.action,
                        client_port=client_port,
                        connection_id=connection_id,
                        error_indexes=error_indexes,
                    )
                )
            self._cond.notify_all()
        return plan


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{name} must be a list")
    return value


def _render(reply: Reply, batch: list[Any]) -> tuple[_Plan, tuple[int, ...]]:
    """Compute status, headers and body bytes of a reply to this batch, and the failed indexes."""
    status = reply.status
    body: Any = reply.body
    if reply.fail_message_ids:
        errors = []
        for i, event in enumerate(batch):
            mid = event.get("messageId") if isinstance(event, dict) else None
            if isinstance(mid, str) and mid in reply.fail_message_ids:
                s = reply.fail_message_ids[mid]
                errors.append({"index": i, "status": s, "message": f"simulated failure: {s} {_phrase(s)}"})
        if errors:
            if status == 200:
                status = 207
            if isinstance(body, dict):
                body = {**body, "errorResponses": errors}
            elif body is None:
                body = {"errorResponses": errors}
    parsed: Any
    content_type = "application/json"
    if body is None:
        parsed = {"success": True} if 200 <= status < 300 else {"code": "error", "message": _phrase(status)}
        data = _json_bytes(parsed)
    elif isinstance(body, (dict, list)):
        parsed = body
        data = _json_bytes(body)
    else:
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # not JSON, or nested too deeply to parse
            parsed = None
            content_type = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = []
    if not any(k.lower() == "content-type" for k in reply.headers):
        headers.append(("Content-Type", content_type))
    headers.extend((k, v) for k, v in reply.headers.items() if k.lower() not in ("content-length", "connection"))
    error_indexes: tuple[int, ...] = ()
    if 200 <= status < 300 and isinstance(parsed, dict) and isinstance(parsed.get("errorResponses"), list):
        found = set()
        for entry in parsed["errorResponses"]:
            if isinstance(entry, dict):
                idx, st = entry.get("index"), entry.get("status")
                if isinstance(idx, int) and _is_int(idx) and _is_int(st) and 0 <= idx < len(batch):
                    found.add(idx)
        error_indexes = tuple(sorted(found))
    return _Plan(reply=reply, status=status, headers=headers, body=data), error_indexes
