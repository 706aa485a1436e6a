"""A tiny HTTP(S) server on 127.0.0.1 for tests that need a peer other than the mock Tracking API.

``LocalHTTPServer(answer)`` calls ``answer(request)`` for every request and sends what it returns:
``(status, body)`` or ``(status, body, headers)``. Every request is recorded.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    line: str  # the request line, e.g. "POST /token HTTP/1.1"
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Union[tuple[int, bytes], tuple[int, bytes, dict[str, str]]]


class LocalHTTPServer:
    """A threaded HTTP/1.1 server answering with ``answer(request)`` (TLS when ``tls`` is a server context)."""

    def __init__(self, answer: Callable[[Request], Answer], tls: Optional[ssl.SSLContext] = None) -> None:
        self.requests: list[Request] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Request(self.requestline, self.path, dict(self.headers.items()), body)
                owner.requests.append(request)
                reply = answer(request)
                status, content = reply[0], reply[1]
                headers = reply[2] if len(reply) > 2 else {}  # type: ignore[misc]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(2)

    def __enter__(self) -> LocalHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
