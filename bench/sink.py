"""A fast local sink for the benchmark: a raw asyncio HTTP/1.1 keep-alive server on 127.0.0.1.

``POST /v1/batch`` (any path not under ``/_sink/``) is answered ``200
{"success":true}``. The body is gunzipped when ``Content-Encoding: gzip`` says
so, and events are counted cheaply by counting ``"messageId"`` keys (or, with
``validate``, by parsing the JSON and checking every message id is new).
Events are counted when the answer is written, so a request the client gave
up on is never counted.

Control endpoints (never counted)::

    GET  /_sink/stats          counters as JSON
    POST /_sink/reset          zero the counters
    POST /_sink/withhold?on=1  hold every answer until ?on=0, which answers them all

Run as a program it prints ``{"port": N, "pid": P}`` on its first line and
serves until SIGTERM/SIGINT (or, with ``--watch-stdin``, until stdin closes)::

    python bench/sink.py [--port 0] [--validate] [--watch-stdin]
    python bench/sink.py --ceiling --port N [--seconds 2] [--gzip]   # load generator

The ceiling mode posts one pre-built 100-event batch over one keep-alive
connection as fast as it can (as a single SDK consumer would) and reports the
events per second the sink absorbed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import sys
import threading
import time
import zlib
from typing import Any, Optional

_OK_BODY = b'{"success":true}'
_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_OK_BODY)).encode()
    + b"\r\n\r\n"
    + _OK_BODY
)
_MESSAGE_ID = b'"messageId"'
_MAX_HEADER = 64 * 1024


def _json_answer(payload: Any, status: str = "200 OK") -> bytes:
    body = json.dumps(payload).encode()
    return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


class SinkState:
    """Counters and the withhold switch, shared by every connection of one sink."""

    def __init__(self, validate: bool = False) -> None:
        self.validate = validate
        self.withhold = False
        self.held: list[tuple[SinkProtocol, int, int, int, int, int]] = []
        self.reset()

    def reset(self) -> None:
        """Zero every counter (held answers stay held)."""
        self.events = 0
        self.requests = 0
        self.body_bytes = 0  # request bodies as received (compressed when gzip)
        self.raw_bytes = 0  # request bodies once gunzipped
        self.header_bytes = 0  # request line + headers
        self.gzip_requests = 0
        self.bad_requests = 0
        self.duplicates = 0
        self.dropped_answers = 0  # held answers whose client had gone away
        self.connections_total = 0
        self.ids: set[str] = set()

    def snapshot(self) -> dict[str, Any]:
        """The counters as a JSON-able dict."""
        return {
            "events": self.events,
            "requests": self.requests,
            "body_bytes": self.body_bytes,
            "raw_bytes": self.raw_bytes,
            "header_bytes": self.header_bytes,
            "gzip_requests": self.gzip_requests,
            "bad_requests": self.bad_requests,
            "duplicates": self.duplicates,
            "dropped_answers": self.dropped_answers,
            "held": len(self.held),
            "withhold": self.withhold,
            "connections_total": self.connections_total,
            "validate": self.validate,
        }

    def count(self, events: int, body: int, raw: int, header: int, gzipped: int) -> None:
        """Count one delivered batch."""
        self.events += events
        self.requests += 1
        self.body_bytes += body
        self.raw_bytes += raw
        self.header_bytes += header
        self.gzip_requests += gzipped

    def release(self) -> None:
        """Answer every held request (counting those whose client is still there)."""
        held, self.held = self.held, []
        for proto, events, body, raw, header, gzipped in held:
            if proto.transport is None or proto.transport.is_closing():
                self.dropped_answers += 1
                continue
            self.count(events, body, raw, header, gzipped)
            proto.transport.write(_OK)


class SinkProtocol(asyncio.Protocol):
    """One client connection: parse pipelined HTTP/1.1 requests with Content-Length bodies."""

    def __init__(self, state: SinkState) -> None:
        self.state = state
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.head: Optional[tuple[str, str, dict[str, str], int, int]] = None
        self.need = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections_total += 1

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEADER:
                        self._fail()
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                try:
                    self.head = self._parse_head(head)
                except ValueError:
                    self._fail()
                    return
                self.need = self.head[4]
            if len(buf) < self.need:
                return
            method, path, headers, header_len, _length = self.head
            body = bytes(buf[: self.need])
            del buf[: self.need]
            self.head = None
            self._handle(method, path, headers, header_len, body)
            if self.transport is None:
                return

    @staticmethod
    def _parse_head(head: bytes) -> tuple[str, str, dict[str, str], int, int]:
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length < 0:
            raise ValueError("negative Content-Length")
        return method, path, headers, len(head) + 4, length

    def _fail(self) -> None:
        self.state.bad_requests += 1
        if self.transport is not None:
            self.transport.write(_json_answer({"error": "bad request"}, "400 Bad Request"))
            self.transport.close()

    def _handle(self, method: str, path: str, headers: dict[str, str], header_len: int, body: bytes) -> None:
        state = self.state
        transport = self.transport
        assert transport is not None
        if path.startswith("/_sink/"):
            transport.write(self._control(method, path))
            return
        raw = body
        gzipped = headers.get("content-encoding", "").lower() == "gzip"
        if gzipped:
            try:
                raw = zlib.decompress(body, 47)
            except zlib.error:
                state.bad_requests += 1
                transport.write(_json_answer({"error": "bad gzip"}, "400 Bad Request"))
                return
        if state.validate:
            events = self._validated_count(raw)
            if events < 0:
                transport.write(_json_answer({"error": "bad json"}, "400 Bad Request"))
                return
        else:
            events = raw.count(_MESSAGE_ID)
        if state.withhold:
            state.held.append((self, events, len(body), len(raw), header_len, 1 if gzipped else 0))
            return
        state.count(events, len(body), len(raw), header_len, 1 if gzipped else 0)
        transport.write(_OK)
        if headers.get("connection", "").lower() == "close":
            transport.close()

    def _validated_count(self, raw: bytes) -> int:
        state = self.state
        try:
            payload = json.loads(raw)
            batch = payload["batch"]
            ids = [item["messageId"] for item in batch]
            if not isinstance(payload.get("writeKey"), str) or not isinstance(payload.get("sentAt"), str):
                raise ValueError("writeKey and sentAt are required")
        except (ValueError, KeyError, TypeError):
            state.bad_requests += 1
            return -1
        for message_id in ids:
            if message_id in state.ids:
                state.duplicates += 1
            state.ids.add(message_id)
        return len(ids)

    def _control(self, method: str, path: str) -> bytes:
        state = self.state
        route, _, query = path.partition("?")
        if route == "/_sink/stats":
            return _json_answer(state.snapshot())
        if route == "/_sink/reset" and method == "POST":
            state.reset()
            return _json_answer(state.snapshot())
        if route == "/_sink/withhold" and method == "POST":
            on = query in ("on=1", "on=true")
            state.withhold = on
            if not on:
                state.release()
            return _json_answer(state.snapshot())
        return _json_answer({"error": "not found"}, "404 Not Found")


async def _serve(host: str, port: int, state: SinkState, ready: Any, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(state), host, port, backlog=128)
    ready(server.sockets[0].getsockname()[1])
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


class SinkThread:
    """A sink served by an asyncio loop in a daemon thread (used by the tests)."""

    def __init__(self, validate: bool = False, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = SinkState(validate)
        self.host = host
        self.port = 0
        self._requested_port = port
        self._ready = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=self._run, name="bench-sink", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()

        def ready(port: int) -> None:
            self.port = port
            self._ready.set()

        try:
            loop.run_until_complete(_serve(self.host, self._requested_port, self.state, ready, self._stop))
        finally:
            loop.close()

    def start(self) -> SinkThread:
        """Start serving; returns once the port is bound."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("sink did not start")
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> SinkThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(port: int, validate: bool, watch_stdin: bool = False) -> None:
    """Serve in this process, print ``{"port": N}``; stop on SIGTERM/SIGINT (or when stdin closes, if watched)."""
    state = SinkState(validate)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready(bound: int) -> None:
            print(json.dumps({"port": bound, "pid": os.getpid()}), flush=True)

        def wait_stdin() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            finally:
                loop.call_soon_threadsafe(stop.set)

        if watch_stdin:
            threading.Thread(target=wait_stdin, daemon=True).start()
        await _serve("127.0.0.1", port, state, ready, stop)

    asyncio.run(main())


# -- ceiling ---------------------------------------------------------------------------------------


def sample_batch_body(events: int = 100) -> bytes:
    """A realistic compact batch body of ``events`` track events (the shape the SDKs send)."""
    items = []
    for i in range(events):
        items.append(
            {
                "type": "track",
                "event": "Order Completed",
                "userId": f"user-{i}",
                "anonymousId": None,
                "properties": {
                    "order_id": f"ord-{i:08d}",
                    "revenue": 42.5,
                    "currency": "USD",
                    "quantity": 3,
                    "coupon": "WINTER25",
                    "first_purchase": False,
                    "ordered_at": "2026-11-25T10:00:00+00:00",
                    "shipping": {"method": "ground", "city": "Lyon", "zip": "69001", "express": False},
                    "items": [{"sku": "SKU-1", "price": 19.99, "qty": 1}, {"sku": "SKU-2", "price": 22.51, "qty": 2}],
                    "tags": ["sale", "newsletter"],
                    "page": "/checkout/confirm",
                },
                "context": {"library": {"name": "analytics-python", "version": "x"}},
                "integrations": {},
                "timestamp": "2026-11-25T10:00:00.000+00:00",
                "messageId": f"00000000-0000-4000-8000-{i:012d}",
            }
        )
    payload = {"batch": items, "sentAt": "2026-11-25T10:00:00.000+00:00", "writeKey": "bench"}
    return json.dumps(payload, separators=(",", ":")).encode()


def measure_ceiling(port: int, seconds: float = 2.0, gzip: bool = False, events: int = 100) -> dict[str, Any]:
    """POST one pre-built batch over one keep-alive connection for ``seconds``; events/s the sink absorbed.

    The load generator's own work (http.client) is part of each round trip, so
    this is a lower bound of the sink's ceiling.
    """
    body = sample_batch_body(events)
    headers = {"Content-Type": "application/json", "Authorization": "Basic YmVuY2g6"}
    if gzip:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = compressor.compress(body) + compressor.flush()
        headers["Content-Encoding"] = "gzip"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    requests = 0
    try:
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            conn.request("POST", "/v1/batch", body=body, headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"sink answered {answer.status}")
            requests += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        elapsed = now - start
    finally:
        conn.close()
    return {
        "gzip": gzip,
        "requests": requests,
        "seconds": elapsed,
        "requests_per_s": requests / elapsed,
        "events_per_s": requests * events / elapsed,
        "body_bytes": len(body),
    }


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: serve (default) or measure the ceiling of a running sink."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--validate", action="store_true", help="parse every body and check message ids")
    parser.add_argument("--ceiling", action="store_true", help="load-generate against a running sink on --port")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--watch-stdin", action="store_true", help="stop when stdin closes (for a parent process)")
    args = parser.parse_args(argv)
    if args.ceiling:
        print(json.dumps(measure_ceiling(args.port, args.seconds, args.gzip)), flush=True)
        return 0
    serve_forever(args.port, args.validate, args.watch_stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
