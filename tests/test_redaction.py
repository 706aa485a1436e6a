"""Credentials echoed by a server never reach a log line or an exception text (README, "Logging and security").

Black box: a real server on 127.0.0.1 echoes the write key (raw, in its Basic form, base64 with and
without the colon, URL-encoded, JSON-escaped, HTML-escaped), OAuth bearer tokens and proxy
passwords back in bodies, headers and Retry-After values; the client's log output (a real handler
at DEBUG, tracebacks included) and every text of what ``on_error`` receives must be free of them.
The encoded forms are computed here, independently of the library's own list.
"""

from __future__ import annotations

import base64
import gzip
import html
import io
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest

from segment.analytics import Client
from segment.analytics.logs import redact, register_secret, trim_partial_secret
from segment.analytics.transport import MAX_BODY

from ._http import LocalHTTPServer, Request
from ._net import Server, Servers

KEYS = [
    "wk_live_5f4dcc3b5aa765d61d8327deb882cf99",
    'wk/+=odd"chars\\&<>%2F?#',
    "clé-ünïcode-€-写-key-42",
    "wk with spaces+plus_77",
]


def forms(secret: str) -> dict[str, str]:
    """Every way a server might echo ``secret`` (computed with the standard library, not the SDK)."""
    raw = secret.encode()
    found = {
        "raw": secret,
        "basic": "Basic " + base64.b64encode(raw + b":").decode(),
        "b64-no-colon": base64.b64encode(raw).decode(),
        "b64-no-colon-unpadded": base64.b64encode(raw).decode().rstrip("="),
        "b64url": base64.urlsafe_b64encode(raw + b":").decode(),
        "url": urllib.parse.quote(secret, safe=""),
        "url-lower": re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), urllib.parse.quote(secret, safe="")),
        "url-plus": urllib.parse.quote_plus(secret),
        "url-b64": urllib.parse.quote(base64.b64encode(raw + b":").decode(), safe=""),
        "json": json.dumps(secret)[1:-1],
        "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
        "json-slash": json.dumps(secret)[1:-1].replace("/", "\\/"),
        "html": html.escape(secret),
        "repr": repr(secret)[1:-1],
    }
    return {name: form for name, form in found.items() if form}


def must_not_contain(texts: list[str], secret: str, *, partial: Optional[str] = None) -> None:
    """No text holds any form of ``secret`` (nor ``partial``, a piece of it that a cut could leave)."""
    for text in texts:
        for name, form in forms(secret).items():
            assert form not in text, f"{name} form of the secret in {text[:300]!r}"
        if partial:
            assert partial not in text, f"piece {partial!r} of the secret in {text[:300]!r}"


class LogCapture:
    """A real handler on the ``segment`` logger at DEBUG, formatting like an application would."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.handler.setLevel(logging.DEBUG)

    @property
    def text(self) -> str:
        self.handler.flush()
        return self.stream.getvalue()


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    logger = logging.getLogger("segment")
    capture = LogCapture()
    level = logger.level
    logger.addHandler(capture.handler)
    logger.setLevel(logging.DEBUG)
    yield capture
    logger.removeHandler(capture.handler)
    logger.setLevel(level)


pytestmark = pytest.mark.usefixtures("no_env_proxy")  # requests to 127.0.0.1 never go through a proxy


class Errors:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: list[tuple[Any, list[dict[str, Any]]]] = []

    def __call__(self, exc: Any, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.got.append((exc, events))

    def texts(self) -> list[str]:
        """Every text a user could get out of what on_error received."""
        out: list[str] = []
        for exc, _ in self.got:
            out += [str(exc), repr(exc), str(exc.args), exc.message]
            cause = exc.cause
            out += [str(cause), repr(cause), str(getattr(cause, "args", ""))]
            response = getattr(cause, "response", None)
            if response is not None:
                out += [str(response), repr(response), response.body.decode("utf-8", "replace")]
                out += [f"{name}: {value}" for name, value in response.headers.items()]
        return out


Answer = Callable[[dict[str, str], bytes], bytes]


def answering(answer: Answer) -> Callable[[Any, Server], None]:
    """A keep-alive handler: ``answer(headers, body)`` builds each whole HTTP response."""

    def handler(conn: Any, server: Server) -> None:
        while True:
            request = server.read_request(conn)
            if request is None:
                return
            head, _, body = request.partition(b"\r\n\r\n")
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            conn.sendall(answer(headers, body))

    return handler


def http(status: str, body: bytes, headers: Optional[dict[str, str]] = None) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    return head.encode("utf-8") + b"\r\n" + body


def run_client(host: str, errors: Errors, key: str, events: int = 1, **options: Any) -> Client:
    options.setdefault("max_retries", 0)
    client = Client(key, host=host, on_error=errors, upload_interval=0.01, **options)
    for i in range(events):
        client.track("user-1", f"Event {i}", {"i": i})
        client.flush(timeout=10)
    client.shutdown(timeout=10)
    return client


# -- the write key, echoed in every form ---------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_every_echoed_form_of_the_key_is_redacted(key: str, serve: Servers, logs: LogCapture) -> None:
    echoes = list(forms(key).values())
    pending = iter(echoes)

    def answer(headers: dict[str, str], body: bytes) -> bytes:
        form = next(pending)
        text = f'{{"code":"unauthorized","message":"invalid key {form}"}}'.encode()
        echoed = {"X-Echo-Authorization": headers.get("authorization", ""), "X-Echo": form.encode().decode("latin-1")}
        return http("401 Unauthorized", text, echoed)

    errors = Errors()
    run_client(serve(answering(answer)).url, errors, key, events=len(echoes))
    assert [exc.reason for exc, _ in errors.got] == ["non_retryable_status"] * len(echoes)
    assert all("[REDACTED]" in exc.message for exc, _ in errors.got)
    must_not_contain([*errors.texts(), logs.text], key)
    assert "invalid key [REDACTED]" in logs.text


@pytest.mark.parametrize("key", KEYS[:2])
def test_the_request_body_echoed_back_is_redacted(key: str, serve: Servers, logs: LogCapture) -> None:
    errors = Errors()
    server = serve(answering(lambda headers, body: http("400 Bad Request", b'{"echo":' + body + b"}")))
    run_client(server.url, errors, key, events=1, gzip=False)
    must_not_contain([*errors.texts(), logs.text], key)
    assert "request body" in logs.text and '"writeKey":"[REDACTED]"' in logs.text  # DEBUG body, redacted


def test_a_key_in_the_events_is_redacted_from_debug_bodies(serve: Servers, logs: LogCapture) -> None:
    key = KEYS[0]
    server = serve(answering(lambda headers, body: http("200 OK", b'{"success":true}')))
    client = Client(key, host=server.url, upload_interval=0.01)
    client.track("user-1", "Configured", {"copied_key": key, "encoded": urllib.parse.quote(KEYS[1], safe="")})
    client.shutdown(timeout=10)
    assert client.stats()["delivered"] == 1
    must_not_contain([logs.text], key)
    assert '"copied_key":"[REDACTED]"' in logs.text


def test_a_key_in_an_unparsable_retry_after_is_redacted(serve: Servers, logs: LogCapture) -> None:
    key = KEYS[1]
    server = serve(answering(lambda headers, body: http("429 Too Many", b"", {"Retry-After": f"soon {key}"})))
    errors = Errors()
    run_client(server.url, errors, key)
    assert [exc.reason for exc, _ in errors.got] == ["retries_exhausted"]
    assert "ignoring unparsable Retry-After header" in logs.text
    must_not_contain([*errors.texts(), logs.text], key)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("the 200-character cut", lambda key: ("x" * 195 + key + " tail").encode()),
        ("a cut after leading blanks", lambda key: (" " * 4090 + key + " tail").encode()),
        ("a cut after many keys", lambda key: (key * 200 + "!" + key).encode()),
        ("the 1 MiB cap", lambda key: b" " * (MAX_BODY - 5) + key.encode()),
        ("the 1 MiB cap in JSON", lambda key: b" " * (MAX_BODY - 9) + json.dumps(key).encode()),
        ("the 1 MiB cap once inflated", lambda key: b" " * (MAX_BODY - 5) + key.encode() + b" " * 5000),
    ],
)
def test_a_key_straddling_a_truncation_point_is_not_half_shown(
    name: str, body: Callable[[str], bytes], serve: Servers, logs: LogCapture
) -> None:
    key = KEYS[0]
    gzipped = "inflated" in name
    encoding = {"Content-Encoding": "gzip"} if gzipped else {}

    def answer(headers: dict[str, str], _: bytes) -> bytes:
        data = body(key)
        return http("401 Unauthorized", gzip.compress(data) if gzipped else data, encoding)

    server = serve(answering(answer))
    errors = Errors()
    run_client(server.url, errors, key)
    assert len(errors.got) == 1
    must_not_contain([*errors.texts(), logs.text], key, partial=key[:5])


def test_a_traceback_logged_with_log_exception_is_redacted(serve: Servers, logs: LogCapture) -> None:
    key = KEYS[2]
    server = serve(answering(lambda headers, body: http("401 Unauthorized", b"no")))

    def on_error(exc: Any, events: Any) -> None:
        raise RuntimeError(f"callback saw {key} and {json.dumps(key)}")

    client = Client(key, host=server.url, on_error=on_error, upload_interval=0.01, max_retries=0)
    client.track("user-1", "Boom")
    client.shutdown(timeout=10)
    assert "Traceback" in logs.text and "RuntimeError: callback saw [REDACTED] and" in logs.text
    must_not_contain([logs.text], key)


def test_a_password_in_the_host_url_is_redacted_from_network_errors(logs: LogCapture) -> None:
    errors = Errors()
    run_client("http://collector:pr0xy-pa55word@127.0.0.1:99999", errors, KEYS[0])
    assert [exc.reason for exc, _ in errors.got] == ["configuration_error"]
    must_not_contain([*errors.texts(), logs.text], "pr0xy-pa55word")
    assert "[REDACTED]" in str(errors.got[0][0].cause)


def test_a_proxy_password_is_redacted_from_network_errors(serve: Servers, logs: LogCapture) -> None:
    password = "s3cret/Pr0xy+pass"
    proxy = f"http://user:{urllib.parse.quote(password, safe='')}@127.0.0.1:1"
    errors = Errors()
    run_client("http://127.0.0.1:9", errors, KEYS[0], proxies={"http": proxy})
    assert [(exc.reason, exc.kind) for exc, _ in errors.got] == [("retries_exhausted", "refused")]
    must_not_contain([*errors.texts(), logs.text], password)


# -- OAuth bearer tokens ---------------------------------------------------------------------------


class TokenServer(LocalHTTPServer):
    """A token endpoint handing out long random-looking tokens."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        super().__init__(self._answer)

    def _answer(self, request: Request) -> tuple[int, bytes]:
        token = f"tok_{len(self.tokens)}_9b74c9897bac770ffc029102a200c5de/+="
        self.tokens.append(token)
        return 200, json.dumps({"access_token": token, "expires_in": 3600}).encode()


def test_bearer_tokens_echoed_back_are_redacted(serve: Servers, logs: LogCapture) -> None:
    pytest.importorskip("jwt")
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    tokens = TokenServer()

    def answer(headers: dict[str, str], body: bytes) -> bytes:
        bearer = headers.get("authorization", "")
        token = bearer.partition(" ")[2]
        text = f"forbidden: {bearer} / {urllib.parse.quote(token, safe='')} / {json.dumps(token)}"
        return http("403 Forbidden", text.encode(), {"WWW-Authenticate": f'Bearer error="{token}"'})

    server = serve(answering(answer))
    errors = Errors()
    try:
        run_client(
            server.url,
            errors,
            KEYS[0],
            events=2,
            oauth_client_id="client-1",
            oauth_client_key=pem,
            oauth_key_id="kid-1",
            oauth_auth_server=tokens.url,
        )
    finally:
        tokens.close()
    assert len(tokens.tokens) == 2  # a 403 clears the token: each request had its own
    assert [exc.status for exc, _ in errors.got] == [403, 403]
    for token in tokens.tokens:
        must_not_contain([*errors.texts(), logs.text], token)


# -- the filter and the helpers, directly -------------------------------------------------------------


def test_short_secrets_are_ignored_but_a_short_keys_basic_form_is_not(serve: Servers, logs: LogCapture) -> None:
    """Secrets under 4 characters would mangle every line: they are not redacted (documented)."""
    register_secret("k9Z")
    assert redact("k9Z and k9Zk9Z") == "k9Z and k9Zk9Z"
    basic = base64.b64encode(b"k9Z:").decode()
    server = serve(answering(lambda headers, body: http("401 Unauthorized", headers["authorization"].encode())))
    errors = Errors()
    run_client(server.url, errors, "k9Z")
    assert basic not in logs.text and basic not in str(errors.got[0][0])


def test_trimming_a_cut_body_removes_any_start_of_a_secret() -> None:
    register_secret("trim-secret-value-1234")
    assert trim_partial_secret(b"payload trim-sec") == b"payload "
    assert trim_partial_secret(b"payload t") == b"payload "
    assert trim_partial_secret(b"payload x") == b"payload x"
    assert trim_partial_secret(b'{"k":"trim-secret-value-12') == b'{"k":"'


def test_a_record_with_nothing_to_redact_is_left_alone() -> None:
    register_secret("some-registered-secret-0001")
    logger = logging.getLogger("segment")
    record = logger.makeRecord("segment", logging.WARNING, __file__, 1, "plain %s %d", ("text", 3), None)
    for filt in logger.filters:
        assert filt.filter(record)
    assert (record.msg, record.args) == ("plain %s %d", ("text", 3))
