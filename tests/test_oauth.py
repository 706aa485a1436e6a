"""OAuth client credentials (delivery.md §3.1: 511; §3.2: Bearer): a local token endpoint and the mock Tracking API."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from segment.analytics import Client
from segment.analytics.testing import MockTrackingAPI, Reply

from ._http import LocalHTTPServer, Request
from ._net import Server, drip
from .conftest import WRITE_KEY, ErrorLog

jwt = pytest.importorskip("jwt")
rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")


class TokenServer(LocalHTTPServer):
    """A token endpoint that hands out ``token-1``, ``token-2``, ... and records each form it receives."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self.status = 200  # what the endpoint answers
        self.script: list[int] = []  # answered first, one per request
        super().__init__(self._answer)

    def _answer(self, request: Request) -> tuple[int, bytes]:
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        self.forms.append(form | {"_path": request.path})
        status = self.script.pop(0) if self.script else self.status
        if status != 200:
            return status, json.dumps({"error": "invalid_client", "echo": form.get("client_assertion")}).encode()
        return status, json.dumps({"access_token": f"token-{len(self.forms)}", "expires_in": 3600}).encode()


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, private.public_key()


def oauth_client(api: MockTrackingAPI, token_server: TokenServer, pem: str, errors: ErrorLog, **options: Any) -> Client:
    options.setdefault("upload_interval", 0.05)
    return Client(
        WRITE_KEY,
        host=api.url,
        on_error=errors.on_error,
        oauth_client_id="client-id-1",
        oauth_client_key=pem,
        oauth_key_id="key-id-1",
        oauth_auth_server=token_server.url,
        **options,
    )


def test_requests_carry_a_bearer_token_from_a_signed_client_assertion(
    api: MockTrackingAPI, token_server: TokenServer, key_pair: tuple[str, Any], errors: ErrorLog
) -> None:
    pem, public_key = key_pair
    client = oauth_client(api, token_server, pem, errors)
    try:
        client.track("u", "e")
        client.track("u", "e2")
        assert client.flush(timeout=10) == 0
    finally:
        client.shutdown(timeout=2)
    assert {r.header("Authorization") for r in api.requests()} == {"Bearer token-1"}
    [form] = token_server.forms  # cached: one token for every request
    assert form["_path"] == "/token"
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["scope"] == "tracking_api:write"
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion)["kid"] == "key-id-1"
    claims = jwt.decode(assertion, public_key, algorithms=["RS256"], audience=token_server.url)
    assert claims["iss"] == claims["sub"] == "client-id-1"
    assert errors.errors == []


def test_511_clears_the_token_and_retries_with_a_new_one(
    api: MockTrackingAPI,
    token_server: TokenServer,
    key_pair: tuple[str, Any],
    errors: ErrorLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.script(Reply(status=511))
    client = oauth_client(api, token_server, key_pair[0], errors)
    try:
        with caplog.at_level(logging.DEBUG, logger="segment"):
            client.track("u", "e")
            assert client.flush(timeout=10) == 0
    finally:
        client.shutdown(timeout=2)
    assert [r.header("Authorization") for r in api.requests()] == ["Bearer token-1", "Bearer token-2"]
    assert [r.retry_count for r in api.requests()] == [None, 1]
    assert len(token_server.forms) == 2 and errors.errors == []
    assert "token-1" not in caplog.text and "token-2" not in caplog.text


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_token_endpoint_4xx_is_final_one_request_and_reported_at_once(
    api: MockTrackingAPI, token_server: TokenServer, key_pair: tuple[str, Any], errors: ErrorLog, status: int
) -> None:
    """Issue 8, defect 13: bad client credentials are not transient; 2.4.0 gives up after one request."""
    token_server.status = status
    client = oauth_client(api, token_server, key_pair[0], errors)
    try:
        client.track("u", "e")
        assert client.flush(timeout=10) == 0
    finally:
        client.shutdown(timeout=2)
    assert len(token_server.forms) == 1  # one token request: no retry inside, no retry per attempt
    assert api.requests() == []  # nothing was sent without a token
    [(error, events)] = errors.errors
    assert (error.reason, error.status) == ("configuration_error", status)  # type: ignore[attr-defined]
    assert [event["event"] for event in events] == ["e"]
    assert client.stats()["dropped_by_reason"] == {"configuration_error": 1}


@pytest.mark.parametrize("status", [503, 429])
def test_a_transient_token_endpoint_failure_spends_the_batch_retry_budget(
    api: MockTrackingAPI, token_server: TokenServer, key_pair: tuple[str, Any], errors: ErrorLog, status: int
) -> None:
    token_server.status = status
    client = oauth_client(api, token_server, key_pair[0], errors, max_retries=1)
    try:
        client.track("u", "e")
        assert client.flush(timeout=10) == 0  # 0.5 s of backoff
    finally:
        client.shutdown(timeout=2)
    assert len(token_server.forms) == 2  # one token request per attempt: max_retries + 1
    [(error, _)] = errors.errors
    assert error.reason == "retries_exhausted"  # type: ignore[attr-defined]
    assert client.stats()["retries_by_status"] == {"auth": 1}


def test_the_token_endpoint_recovering_delivers(
    api: MockTrackingAPI, token_server: TokenServer, key_pair: tuple[str, Any], errors: ErrorLog
) -> None:
    token_server.script = [503]
    client = oauth_client(api, token_server, key_pair[0], errors)
    try:
        client.track("u", "e")
        assert client.flush(timeout=10) == 0
    finally:
        client.shutdown(timeout=2)
    assert [r.header("Authorization") for r in api.requests()] == ["Bearer token-2"]
    assert [r.retry_count for r in api.requests()] == [None]  # no request was made before: not a retry
    assert errors.errors == []


@pytest.mark.parametrize("bad_key", ["badkey", "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----"])
def test_a_key_that_cannot_sign_drops_the_batch_at_once(
    api: MockTrackingAPI, token_server: TokenServer, errors: ErrorLog, bad_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    # signing fails the same way every time: the batch is reported (configuration_error) instead of being
    # retried for minutes, the token endpoint and the API are never contacted, and the key is not logged
    client = oauth_client(api, token_server, bad_key, errors)
    try:
        with caplog.at_level(logging.DEBUG, logger="segment"):
            client.track("u", "e")
            assert client.flush(timeout=10) == 0
    finally:
        client.shutdown(timeout=2)
    assert errors.reasons() == ["configuration_error"]
    [(exc, events)] = errors.errors
    assert getattr(exc, "status", "?") is None and [e["event"] for e in events] == ["e"]
    assert "oauth_client_key" in str(exc.__cause__) and bad_key not in str(exc.__cause__)
    assert token_server.forms == [] and api.request_count() == 0
    assert bad_key not in caplog.text


def test_a_token_endpoint_that_drips_its_answer_is_bounded_by_timeout(
    api: MockTrackingAPI, key_pair: tuple[str, Any], errors: ErrorLog
) -> None:
    """The token request is bounded by ``timeout`` as a whole, like every request to the API."""
    body = b'{"access_token": "t", "expires_in": 60}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def handler(conn: socket.socket, server: Server) -> None:
        if server.read_request(conn) is not None:
            drip(conn, answer, 0.05, server.stop)  # about 6 s in all

    server = Server(handler)
    try:
        client = Client(
            WRITE_KEY,
            host=api.url,
            on_error=errors.on_error,
            oauth_client_id="client-id-1",
            oauth_client_key=key_pair[0],
            oauth_key_id="key-id-1",
            oauth_auth_server=server.url,
            timeout=0.5,
            max_retries=0,
            upload_interval=0.05,
        )
        client.track("u", "e")
        started = time.monotonic()
        assert client.flush(timeout=10) == 0
        assert time.monotonic() - started < 3  # a per-read timeout would let the drip hold it for ~6 s
        client.shutdown(timeout=2)
    finally:
        server.close()
    assert errors.reasons() == ["retries_exhausted"]
    assert api.requests() == []
