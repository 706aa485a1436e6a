"""The real HTTP POST (delivery.md §3.1 network errors, delivery.md §6): ``Transport`` against servers on 127.0.0.1.

``network_error_kind`` is checked on the exceptions ``requests`` really
raises, produced by small raw-socket servers started in each test (threads
bound to 127.0.0.1, closed in teardown) and by the project's mock API.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
import requests

from segment.analytics.request import BatchSender
from segment.analytics.retry import RetryPolicy, classify_network_error
from segment.analytics.transport import NetworkError, Response, Transport, network_error_kind

from ._loop_helpers import FakeClock, Sleeper, assert_conserved, ev, evs
from ._net import Server, Servers

Handler = Callable[[socket.socket], None]
Serve = Callable[[Handler], Server]
Make = Callable[..., Transport]


pytestmark = pytest.mark.usefixtures("no_env_proxy")  # requests to 127.0.0.1 never go through a proxy


@pytest.fixture
def serve(serve: Servers) -> Serve:
    """Raw servers whose handlers take just the connection (the shared ones also get the server)."""
    return lambda handler: serve(lambda conn, server: handler(conn))


@pytest.fixture
def transports() -> Iterator[Make]:
    made: list[Transport] = []

    def make(host: str, timeout: float = 2.0) -> Transport:
        transport = Transport(host, timeout)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


BODY = b'{"batch":[{"messageId":"m1","type":"track"}],"sentAt":"2024-01-01T00:00:00.000+00:00","writeKey":"k"}'
HEADERS = {"Content-Type": "application/json", "User-Agent": "test"}


def post_error(transport: Transport) -> NetworkError:
    with pytest.raises(NetworkError) as info:
        transport.post(BODY, HEADERS)
    return info.value


def check_kind(error: NetworkError, kind: str) -> None:
    assert error.kind == kind, f"{error.kind} for {error.cause!r}"
    assert isinstance(error.cause, requests.exceptions.RequestException), repr(error.cause)
    assert network_error_kind(error.cause) == kind  # the real exception, classified directly


# -- network errors from real exceptions --------------------------------------------------------------


def test_closed_port_is_refused(transports: Make) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    error = post_error(transports(f"http://127.0.0.1:{port}"))
    check_kind(error, "refused")
    assert classify_network_error(error.kind).action == "retry"


def test_reset_after_accept_is_reset(serve: Serve, transports: Make) -> None:
    def reset(conn: socket.socket) -> None:
        server.read_request(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    server = serve(reset)
    error = post_error(transports(server.url))
    check_kind(error, "reset")
    assert len(server.requests) == 1 and server.requests[0].endswith(BODY)


def test_closed_without_an_answer_is_reset(serve: Serve, transports: Make) -> None:
    def close(conn: socket.socket) -> None:
        server.read_request(conn)
        conn.close()

    server = serve(close)
    check_kind(post_error(transports(server.url)), "reset")


def test_response_cut_off_mid_body_is_a_retryable_network_error(serve: Serve, transports: Make) -> None:
    def cut(conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"succ')
        conn.close()

    server = serve(cut)
    error = post_error(transports(server.url))
    check_kind(error, "reset")
    assert classify_network_error(error.kind).action == "retry"


def test_server_that_never_answers_is_timeout(serve: Serve, transports: Make) -> None:
    def silent(conn: socket.socket) -> None:  # reads, then says nothing until the test ends
        server.read_request(conn)
        server.stop.wait()

    server = serve(silent)
    started = time.monotonic()
    error = post_error(transports(server.url, timeout=0.2))
    elapsed = time.monotonic() - started
    check_kind(error, "timeout")
    assert 0.15 <= elapsed < 2.0


def test_https_to_a_plain_http_server_is_tls(serve: Serve, transports: Make) -> None:
    def plain(conn: socket.socket) -> None:
        conn.settimeout(2)
        conn.recv(65536)  # the ClientHello
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        time.sleep(0.05)
        conn.close()

    server = serve(plain)
    check_kind(post_error(transports(f"https://127.0.0.1:{server.port}")), "tls")


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("openssl is not available to make a self-signed certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


def test_tls_verification_stays_on(serve: Serve, transports: Make, self_signed: ssl.SSLContext) -> None:
    """delivery.md §6: a self-signed certificate is refused (the TLS handshake fails), never silently trusted."""

    def tls(conn: socket.socket) -> None:
        conn.settimeout(2)
        try:
            wrapped = self_signed.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client aborted the handshake: what we expect
        wrapped.recv(65536)
        wrapped.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        wrapped.close()

    server = serve(tls)
    check_kind(post_error(transports(f"https://127.0.0.1:{server.port}")), "tls")


def _resolves_fast(name: str, limit: float = 2.0) -> bool:
    """Whether looking ``name`` up finishes (fails) within ``limit`` seconds."""
    done = threading.Event()

    def lookup() -> None:
        try:
            socket.getaddrinfo(name, 80)
        except OSError:
            pass
        done.set()

    threading.Thread(target=lookup, daemon=True).start()
    return done.wait(limit)


def test_unresolvable_host_is_dns(transports: Make) -> None:
    # ".invalid" never resolves (RFC 6761); skip where the resolver is slow to say so.
    if not _resolves_fast("nonexistent.invalid"):
        pytest.skip("name resolution does not fail fast here")
    started = time.monotonic()
    error = post_error(transports("http://nonexistent.invalid"))
    if time.monotonic() - started > 2.0:
        pytest.skip("name resolution took more than 2 s")
    check_kind(error, "dns")
    assert classify_network_error(error.kind).action == "retry"


@pytest.mark.parametrize("host", ["ftp://x", "not a url", "http://"])
def test_malformed_host_or_unsupported_scheme_is_configuration(host: str, transports: Make) -> None:
    error = post_error(transports(host))
    check_kind(error, "configuration")
    verdict = classify_network_error(error.kind)
    assert (verdict.action, verdict.reason) == ("drop", "configuration_error")


# -- real answers ----------------------------------------------------------------------------------------


def test_transport_returns_the_final_answer_with_case_insensitive_headers(serve: Serve, transports: Make) -> None:
    def answer(conn: socket.socket) -> None:
        server.read_request(conn)
        body = b'{"code":"rate_limited"}'
        conn.sendall(
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body)
        )
        conn.close()

    server = serve(answer)
    response = transports(server.url).post(BODY, {**HEADERS, "X-Retry-Count": "2"})
    assert isinstance(response, Response)
    assert response.status == 429
    assert response.headers.get("Retry-After") == "3"
    assert response.body == b'{"code":"rate_limited"}'
    request = server.requests[0]
    assert request.startswith(b"POST /v1/batch HTTP/1.1\r\n")
    assert b"\r\nX-Retry-Count: 2\r\n" in request
    assert request.endswith(BODY)


def test_transport_does_not_follow_redirects(serve: Serve, transports: Make) -> None:
    def redirect(conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        conn.close()

    server = serve(redirect)
    assert transports(server.url).post(BODY, HEADERS).status == 302
    assert len(server.requests) == 1


def test_sender_over_a_real_transport_honours_a_lowercase_retry_after(serve: Serve, transports: Make) -> None:
    replies = [
        b"HTTP/1.1 429 X\r\nretry-after: 3\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{"success":true}',
    ]

    def answer(conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(replies.pop(0))
        conn.close()

    server = serve(answer)
    clock = FakeClock()
    sleeper = Sleeper(clock)
    sender = BatchSender(
        "wk",
        transports(server.url),
        RetryPolicy(max_retries=0),
        clock=clock.now,
        wall_clock=clock.wall,
        sleep=sleeper,
        rand=lambda: 0.0,
    )
    result = sender.send(evs(2))
    assert_conserved(result, evs(2))
    assert result.delivered == [(evs(2), True)]
    assert sleeper.calls == [3.0]
    assert b"\r\nX-Retry-Count: 1\r\n" in server.requests[1]
    assert b"x-retry-count" not in server.requests[0].lower()


def test_plain_http_is_warned_about_unless_loopback(caplog: pytest.LogCaptureFixture) -> None:
    """delivery.md §6: plain http:// is allowed; logged once at WARNING unless the host is loopback."""
    with caplog.at_level(logging.WARNING, logger="segment"):
        for host in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9", "https://api.example.invalid"):
            Transport(host, 1).close()
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        Transport("http://collector.example.invalid", 1).close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "collector.example.invalid" in warnings[0].getMessage()


# -- the project's mock Tracking API ---------------------------------------------------------------------

mock_api = pytest.importorskip("segment.analytics.testing")


@pytest.mark.parametrize(
    ("action", "kind", "timeout"), [("reset", "reset", 2.0), ("cut", "reset", 2.0), ("hang", "timeout", 0.1)]
)
def test_mock_api_failure_actions_classify(action: str, kind: str, timeout: float, transports: Make) -> None:
    with mock_api.MockTrackingAPI() as api:
        api.script(mock_api.Reply(action=action))
        check_kind(post_error(transports(api.url, timeout=timeout)), kind)


def test_sender_over_the_mock_api_end_to_end(transports: Make) -> None:
    with mock_api.MockTrackingAPI() as api:
        api.script(mock_api.Reply(500), mock_api.Reply(200, fail_message_ids={"m1": 400}))
        clock = FakeClock()
        sender = BatchSender(
            "wk_e2e",
            transports(api.url),
            RetryPolicy(max_retries=3),
            gzip=True,
            clock=clock.now,
            wall_clock=clock.wall,
            sleep=Sleeper(clock),
            rand=lambda: 0.0,
        )
        items = evs(3)
        result = sender.send(items)
        assert_conserved(result, items)
        recorded = api.requests()
        assert [r.retry_count for r in recorded] == [None, 1]
        assert all(r.header("Content-Encoding") == "gzip" for r in recorded)
        assert [[e["messageId"] for e in r.batch] for r in recorded] == [["m0", "m1", "m2"]] * 2
        assert recorded[0].body["writeKey"] == "wk_e2e"
        assert [json.dumps(e, separators=(",", ":")).encode() for e in recorded[0].batch] == items
        assert result.delivered == [([ev(0), ev(2)], True)]
        assert [(group, err.status) for group, err in result.dropped] == [([ev(1)], 400)]
