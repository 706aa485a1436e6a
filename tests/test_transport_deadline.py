"""One HTTP request is bounded by ``timeout`` as a whole (README, "Network: proxies, CA bundle, timeouts").

Real servers on 127.0.0.1, plain and TLS, that drip their answer one byte at a time (in the status
line, the headers, the body), never answer, never finish the TLS handshake, never read, or send an
endless body; through an HTTP proxy and a ``CONNECT`` tunnel too. Each drip below would take 10 s or
more; the time assertions are hang-guards (the request must end near its 0.4 s timeout, well before).
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import requests

from segment.analytics import Client
from segment.analytics.transport import MAX_BODY, NetworkError, Transport

from ._net import Server, Servers, TLSFiles, certificate, drip, server_context

TIMEOUT = 0.25
GUARD = 3.0  # generous: every slow server below would hold a request for 10 s or more
PAD = b"X-Pad: " + b"p" * 200 + b"\r\n"
BODY = b'{"batch":[{"messageId":"m1","type":"track"}],"sentAt":"2024-01-01T00:00:00.000+00:00","writeKey":"k"}'
HEADERS = {"Content-Type": "application/json", "User-Agent": "test"}
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"success":true}'


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(params=["http", "https"])
def tls(request: pytest.FixtureRequest, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``None`` for plain http; for https a server context, with the certificate as the CA bundle."""
    if request.param == "http":
        return None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.bundle))
    return server_context(tls_files)


@pytest.fixture
def transports() -> Iterator[Callable[..., Transport]]:
    made: list[Transport] = []

    def make(host: str, timeout: float = TIMEOUT, **options: Any) -> Transport:
        transport = Transport(host, timeout, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


def timed_out(transport: Transport, body: bytes = BODY) -> float:
    """Post, expect a network error of kind ``timeout``; return how long it took."""
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        transport.post(body, HEADERS)
    elapsed = time.monotonic() - started
    assert info.value.kind == "timeout", repr(info.value.cause)
    assert isinstance(info.value.cause, requests.exceptions.RequestException)
    assert elapsed < GUARD, f"the request took {elapsed:.1f}s with timeout={TIMEOUT}"
    return elapsed


def dripping(head: bytes, rest: bytes, interval: float = 0.05) -> Callable[[socket.socket, Server], None]:
    """A handler that reads the request, sends ``head`` at once, then ``rest`` one byte at a time."""

    def handler(conn: socket.socket, server: Server) -> None:
        if server.read_request(conn) is None:
            return
        conn.sendall(head)
        drip(conn, rest, interval, server.stop)

    return handler


STATUS = b"HTTP/1.1 200 OK\r\n"
HEAD = STATUS + b"Content-Type: application/json\r\n" + PAD


@pytest.mark.parametrize(
    ("head", "rest"),
    [
        pytest.param(b"", HEAD + b"Content-Length: 2\r\n\r\n{}", id="status-line"),
        pytest.param(STATUS, HEAD[len(STATUS) :] + b"Content-Length: 2\r\n\r\n{}", id="headers"),
        pytest.param(HEAD + b"Content-Length: 300\r\n\r\n", b"{" * 300, id="body"),
        pytest.param(HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\n{\r\n" * 60 + b"0\r\n\r\n", id="chunked"),
    ],
)
def test_a_dripping_answer_is_cut_at_the_timeout(
    serve: Servers, transports: Any, tls: Any, head: bytes, rest: bytes
) -> None:
    server = serve(dripping(head, rest), tls)
    timed_out(transports(server.url))


def test_a_server_that_never_answers_times_out(serve: Servers, transports: Any, tls: Any) -> None:
    def silent(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        server.stop.wait(30)

    timed_out(transports(serve(silent, tls).url))


def test_a_tls_handshake_that_never_happens_times_out(serve: Servers, transports: Any) -> None:
    server = serve(lambda conn, srv: srv.stop.wait(30))  # accepts TCP, never speaks TLS
    timed_out(transports(f"https://127.0.0.1:{server.port}"))


def test_a_dripping_tls_handshake_times_out(
    serve: Servers, transports: Any, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay in front of a real TLS server passes the server's bytes on one at a time."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.bundle))
    origin = serve(lambda conn, srv: srv.read_request(conn) and conn.sendall(OK), server_context(tls_files))

    def relay(conn: socket.socket, server: Server) -> None:
        upstream = socket.create_connection(("127.0.0.1", origin.port), timeout=5)
        conn.settimeout(0.05)
        upstream.settimeout(0.05)
        while not server.stop.is_set():
            try:
                upstream.sendall(conn.recv(65536))
            except socket.timeout:
                pass
            except OSError:
                break
            try:
                drip(conn, upstream.recv(64), 0.02, server.stop)
            except socket.timeout:
                pass
            except OSError:
                break
        upstream.close()

    timed_out(transports(f"https://127.0.0.1:{serve(relay).port}"))


def test_a_server_that_never_reads_bounds_the_send(serve: Servers, transports: Any) -> None:
    server = serve(lambda conn, srv: srv.stop.wait(30))
    timed_out(transports(server.url), body=b"x" * (48 << 20))  # more than any socket buffer holds


def test_a_connect_that_is_never_accepted_times_out(transports: Any) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue: further SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        time.sleep(0.05)
        timed_out(transports(f"http://127.0.0.1:{listener.getsockname()[1]}"))
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- keep-alive, and what a deadline leaves behind ---------------------------------------------------


def keep_alive(conn: socket.socket, server: Server) -> None:
    while server.read_request(conn) is not None:
        conn.sendall(OK)


def test_keep_alive_connections_are_reused(serve: Servers, transports: Any, tls: Any) -> None:
    server = serve(keep_alive, tls)
    transport = transports(server.url)
    for _ in range(5):
        assert transport.post(BODY, HEADERS).body == b'{"success":true}'
    assert (server.connections, len(server.requests)) == (1, 5)


def test_after_a_timeout_the_next_request_gets_a_fresh_connection(serve: Servers, transports: Any, tls: Any) -> None:
    answers = iter([dripping(b"", OK * 20), keep_alive])
    server = serve(lambda conn, srv: next(answers)(conn, srv), tls)
    transport = transports(server.url)
    timed_out(transport)
    assert transport.post(BODY, HEADERS).status == 200
    assert server.connections == 2


# -- how much of an answer is read ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [b"Content-Length: 10000000000\r\n", b"Connection: close\r\n"])
def test_an_endless_body_is_read_up_to_the_cap(serve: Servers, transports: Any, length: bytes) -> None:
    def endless(conn: socket.socket, server: Server) -> None:
        if server.read_request(conn) is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + length + b"\r\n")
        chunk = b"z" * 65536
        for _ in range(512):  # 32 MiB, then silence: "endless" for the client, bounded for a regression
            conn.sendall(chunk)
        server.stop.wait(30)

    answers = iter([endless, keep_alive])
    server = serve(lambda conn, srv: next(answers)(conn, srv))
    transport = transports(server.url, timeout=5.0)
    started = time.monotonic()
    response = transport.post(BODY, HEADERS)
    assert time.monotonic() - started < GUARD
    assert response.status == 200
    assert response.body == b"z" * MAX_BODY
    assert transport.post(BODY, HEADERS).status == 200  # the endless connection was not put back


def test_a_compressed_body_is_inflated_up_to_the_cap(serve: Servers, transports: Any) -> None:
    bomb = gzip.compress(b"\0" * (16 << 20))

    def answer(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb)

    response = transports(serve(answer).url).post(BODY, HEADERS)
    assert (response.status, len(response.body)) == (200, MAX_BODY)


def test_a_body_that_is_not_what_its_encoding_says_is_kept_as_sent(serve: Servers, transports: Any) -> None:
    def answer(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!")

    assert transports(serve(answer).url).post(BODY, HEADERS).body == b"not gzip!"


# -- proxies: read once, from the environment, for the real URL --------------------------------------


def test_http_proxy_from_the_environment_is_used_and_bounded(
    serve: Servers, transports: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = serve(keep_alive)
    proxy = serve.proxy(lambda conn, srv: drip(conn, OK * 20, 0.05, srv.stop))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    timed_out(transports(origin.url))
    assert proxy.seen == [f"POST {origin.url}/v1/batch HTTP/1.1".encode()]
    assert origin.requests == []


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*", "localhost,127.0.0.1:1,127.0.0.1"])
def test_no_proxy_covering_the_host_sends_directly(
    serve: Servers, transports: Any, monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    origin = serve(keep_alive)
    proxy = serve.proxy(lambda conn, srv: conn.sendall(OK))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert transports(origin.url).post(BODY, HEADERS).status == 200
    assert (proxy.seen, len(origin.requests)) == ([], 1)


def test_the_environment_is_read_when_the_transport_is_built(
    serve: Servers, transports: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = serve(keep_alive)
    proxy = serve.proxy(lambda conn, srv: conn.sendall(OK))
    transport = transports(origin.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert transport.post(BODY, HEADERS).status == 200
    assert proxy.seen == []
    assert transports(origin.url).post(BODY, HEADERS).status == 200  # a new transport reads it
    assert len(proxy.seen) == 1


def test_explicit_proxies_are_merged_with_the_environment_like_requests_does(
    serve: Servers, transports: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """analytics-python 2.4.0 posted with ``Session.post(proxies=...)``: the environment fills the gaps."""
    origin = serve(keep_alive)
    proxy = serve.proxy(lambda conn, srv: conn.sendall(OK))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert transports(origin.url, proxies={"https": "http://127.0.0.1:9"}).post(BODY, HEADERS).status == 200
    assert len(proxy.seen) == 1


def test_https_through_a_connect_tunnel_is_reused_and_bounded(
    serve: Servers, transports: Any, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.bundle))
    context = server_context(tls_files)
    origin = serve(keep_alive, context)
    proxy = serve.proxy()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    transport = transports(origin.url)
    for _ in range(3):
        assert transport.post(BODY, HEADERS).status == 200
    assert [line.rpartition(b" ")[0] for line in proxy.seen] == [f"CONNECT 127.0.0.1:{origin.port}".encode()]
    assert (origin.connections, len(origin.requests)) == (1, 3)

    slow = serve(dripping(HEAD + b"Content-Length: 300\r\n\r\n", b"{" * 300), context)
    timed_out(transports(slow.url))  # the body drips through the tunnel


def test_a_dripping_connect_answer_times_out(serve: Servers, transports: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = serve.proxy(
        connect_reply=lambda conn, srv: drip(conn, b"HTTP/1.1 200 Connection established\r\n" + PAD, 0.05, srv.stop)
    )
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    timed_out(transports("https://127.0.0.1:9"))


# -- end to end: shutdown() is bounded by the timeout ------------------------------------------------


def test_shutdown_returns_about_timeout_after_a_dripping_server(serve: Servers, tls: Any) -> None:
    server = serve(dripping(b"", HEAD + b"Content-Length: 2\r\n\r\n{}", interval=0.1), tls)
    errors: list[tuple[Any, list[dict[str, Any]]]] = []
    done = threading.Event()

    def on_error(exc: Any, events: list[dict[str, Any]]) -> None:
        errors.append((exc, events))
        done.set()

    client = Client("wk_deadline_e2e", host=server.url, timeout=1, max_retries=0, on_error=on_error)
    client.track("u1", "Dripped")
    started = time.monotonic()
    left = client.shutdown()
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"shutdown() took {elapsed:.1f}s with timeout=1"
    assert left == 0
    assert done.is_set()
    [(exc, events)] = errors
    assert (exc.reason, exc.kind, exc.status) == ("retries_exhausted", "timeout", None)
    assert [event["event"] for event in events] == ["Dripped"]
    stats = client.stats()
    assert stats["network_errors"]["timeout"] == 1
    assert stats["dropped_by_reason"] == {"retries_exhausted": 1}


def test_tls_verification_uses_the_bundle_read_at_build_time(
    serve: Servers, transports: Any, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(keep_alive, server_context(tls_files))
    untrusting = transports(server.url)  # built before the bundle is named
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.bundle))
    with pytest.raises(NetworkError) as info:
        untrusting.post(BODY, HEADERS)
    assert info.value.kind == "tls"
    assert transports(server.url).post(BODY, HEADERS).status == 200


def test_an_ssl_context_error_is_not_a_timeout(serve: Servers, transports: Any, tls_files: TLSFiles) -> None:
    """Without the bundle the self-signed certificate is refused: ``tls``, and quickly."""
    server = serve(keep_alive, server_context(tls_files))
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        transports(server.url, timeout=10.0).post(BODY, HEADERS)
    assert info.value.kind == "tls"
    assert time.monotonic() - started < GUARD
    assert isinstance(info.value.cause, (requests.exceptions.SSLError, ssl.SSLError))


def test_a_requests_style_timeout_pair_bounds_the_request_by_its_sum(serve: Servers, transports: Any) -> None:
    """``request.post`` (analytics-python's) hands ``requests``-style timeouts to the transport."""
    server = serve(dripping(b"", HEAD + b"Content-Length: 2\r\n\r\n{}"))
    assert timed_out(transports(server.url, timeout=(0.1, 0.15))) < GUARD
    assert transports(serve(keep_alive).url, timeout=None).post(BODY, HEADERS).status == 200
