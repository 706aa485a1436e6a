"""The doctor's test event and its verdict, in words, from the status table (README "Delivery").

The test event is a real batch of one ``track`` call, encoded, wrapped, authorised and posted by the
library's own :mod:`~segment.analytics.encoding`, :mod:`~segment.analytics.wire`,
:mod:`~segment.analytics.auth` and :class:`~segment.analytics.transport.Transport` (proxy and CA
bundle read from the environment as the client does), once, without retries, so its outcome is the
outcome of the client's first attempt.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from segment.analytics import encoding, message, wire
from segment.analytics.auth import BasicAuth
from segment.analytics.logs import redact
from segment.analytics.retry import RETRY, classify_status, parse_retry_after
from segment.analytics.transport import NetworkError, Transport, _exception_chain

__all__ = ["TEST_EVENT_NAME", "TestEvent", "Verdict", "send_test_event", "verdict_for"]

TEST_EVENT_NAME = "Segment Doctor Test"
STATUS_PAGE = "https://status.segment.com"


@dataclass
class TestEvent:
    """What became of the test event: an HTTP answer (``status``) or a network error (``kind``)."""

    message_id: str
    event: str
    size: int
    status: Optional[int] = None
    kind: Optional[str] = None
    error: Optional[str] = None
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    ms: float = 0.0
    event_status: Optional[int] = None  # the test event's own status from a 2xx ``errorResponses``
    event_message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return asdict(self)


@dataclass
class Verdict:
    """The answer in plain words: was the test event accepted, whose side a failure is on, what to do."""

    accepted: bool
    side: str  # none, key, payload, api, rate_limit, network, configuration, not_sent
    title: str
    advice: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return asdict(self)


def build_test_message() -> dict[str, Any]:
    """The test ``track`` call, built as ``Client.track`` builds one."""
    context, integrations, timestamp, message_id = message.common(
        None, None, "doctor-" + message.new_message_id(), None
    )
    return {
        "integrations": integrations,
        "messageId": message_id,
        "properties": {"sent_by": "python -m segment.analytics doctor"},
        "timestamp": timestamp,
        "anonymousId": "segment-doctor",
        "context": context,
        "type": "track",
        "event": TEST_EVENT_NAME,
    }


def send_test_event(write_key: str, host: Optional[str], timeout: float) -> TestEvent:
    """POST one test batch through the library's transport; never raises."""
    msg = build_test_message()
    data = encoding.encode(msg)
    body = wire.Envelope(write_key).body([data], time.time())
    result = TestEvent(msg["messageId"], TEST_EVENT_NAME, len(body))
    headers = wire.headers(BasicAuth(write_key).header(), False, 0)
    started = time.monotonic()
    transport: Optional[Transport] = None
    try:
        transport = Transport(host, timeout)
        response = transport.post(body, headers)
    except NetworkError as exc:
        result.kind = exc.kind
        result.error = redact(_root_cause(exc.cause))[:300]
        return result
    except Exception as exc:  # noqa: BLE001 - e.g. a malformed URL the transport refused up front
        result.kind = "configuration"
        result.error = redact(f"{type(exc).__name__}: {exc}")[:500]
        return result
    finally:
        result.ms = round((time.monotonic() - started) * 1000, 1)
        if transport is not None:
            transport.close()
    result.status = response.status
    result.headers = {k: redact(v) for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
    result.body = redact(response.body[:2048].decode("utf-8", "replace")).strip()[:300]
    if 200 <= response.status <= 299:
        _read_error_responses(result, response.body)
    return result


def _root_cause(exc: BaseException) -> str:
    """The most telling part of a network failure: the OS error or TLS reason under ``requests``' wrapping."""
    for error in _exception_chain(exc):
        if isinstance(error, ssl.SSLError) and error.reason:
            return f"{type(error).__name__}: {getattr(error, 'verify_message', None) or error.reason}"
        if isinstance(error, OSError) and error.strerror:
            return f"{type(error).__name__}: {error.strerror}"
        if isinstance(error, TimeoutError) or "timed out" in str(error).lower():
            return f"{type(error).__name__}: {error}"
    return f"{type(exc).__name__}: {exc}"


_KEPT_HEADERS = frozenset({"retry-after", "location", "content-type", "server", "via"})


def _read_error_responses(result: TestEvent, body: bytes) -> None:
    """The test event's own status in a 2xx ``errorResponses``, read as the client reads it."""
    verdicts, _ = wire.error_responses(body, 1)
    if not verdicts or 0 not in verdicts:
        return
    result.event_status = verdicts[0]
    try:
        entries = encoding.decode(body)["errorResponses"]
        said = next(e.get("message", "") for e in entries if isinstance(e, dict) and e.get("index") == 0)
    except Exception:  # noqa: BLE001 - the message is a nicety; the status was read above
        said = ""
    result.event_message = redact(str(said))[:200]


_NETWORK_ADVICE = {
    "refused": "nothing accepts connections at that address and port: check the host URL's port, the proxy "
    "settings (HTTPS_PROXY) and local firewalls",
    "reset": "the connection was cut before an answer came: a firewall, proxy or load balancer between this "
    "machine and the API is closing it; check egress rules and the proxy",
    "timeout": "no answer in time: an egress firewall may silently drop the traffic, or a proxy is needed "
    "(HTTPS_PROXY); the client's `timeout` option bounds each request",
    "dns": "the host name does not resolve from here: check its spelling, this machine's DNS settings and, in a "
    "container, its network",
    "tls": "the TLS handshake failed: check the system clock and the CA bundle (REQUESTS_CA_BUNDLE); behind a "
    "TLS-inspecting proxy, point REQUESTS_CA_BUNDLE at a bundle holding its CA",
    "other": "the request failed without an HTTP answer: see the error above; check the proxy and network",
    "configuration": "the host URL cannot be used: pass a URL such as https://api.segment.io",
}


def verdict_for(test: Optional[TestEvent], *, key_missing: bool = False) -> Verdict:
    """The verdict, in words, for the test event's outcome (``None``: it was not sent)."""
    if test is None:
        if key_missing:
            return Verdict(False, "not_sent", "No test event sent: there is no write key.", _KEY_SOURCE)
        return Verdict(False, "not_sent", "No test event sent (--no-send).", "run again without --no-send")
    where = f'messageId {test.message_id}, event "{test.event}"'
    if test.kind is not None:
        title = f"The test event did not reach the API: network error ({test.kind}) on your side."
        side = "configuration" if test.kind == "configuration" else "network"
        return Verdict(False, side, title, _NETWORK_ADVICE.get(test.kind, _NETWORK_ADVICE["other"]))
    status = test.status or 0
    if 200 <= status <= 299 and test.event_status is not None:
        return _status_verdict(test.event_status, test, per_event=True)
    if 200 <= status <= 299:
        return Verdict(
            True,
            "none",
            f"The Tracking API accepted the test batch (HTTP {status}).",
            "That proves this machine reaches the API and the API took the batch, not that the key is the one "
            "of the source you mean: only the Source Debugger shows that. Open Segment > Connections > Sources > "
            f"(your source) > Debugger and look for the test event ({where}). If it is not there, the key "
            "belongs to another source or workspace (or region: EU workspaces use "
            "https://events.eu1.segmentapis.com).",
        )
    return _status_verdict(status, test, per_event=False)


_KEY_SOURCE = "pass --write-key KEY or set SEGMENT_WRITE_KEY (Sources > your source > Settings > API Keys)"


def _status_verdict(status: int, test: TestEvent, *, per_event: bool) -> Verdict:
    said = test.event_message if per_event else test.body
    answer = f"HTTP {status}" + (f": {said}" if said else "")
    subject = "The API accepted the batch but rejected the test event" if per_event else "The API answered"
    retried = classify_status(status).action == RETRY
    client = (
        "The client retries this status with backoff."
        if retried
        else "The client drops events answered with this status and reports them (non_retryable_status)."
    )
    if status in (401, 403):
        return Verdict(
            False,
            "key",
            f"{subject} ({answer}): the write key is rejected.",
            "Use the write key of a server-side source (Sources > your source > Settings > API Keys), without "
            "spaces or quotes, and the host of its region (EU: https://events.eu1.segmentapis.com). " + client,
        )
    if status == 400:
        return Verdict(
            False,
            "payload",
            f"{subject} ({answer}): the payload is rejected.",
            "The API refused the body as malformed; with this library's own test event that points at something "
            "rewriting requests in between (a proxy). " + client,
        )
    if status == 413:
        return Verdict(
            False,
            "payload",
            f"{subject} ({answer}): the request is too large.",
            f"The test batch is only {test.size:,} bytes: a proxy or gateway in between limits body sizes "
            "(the API takes 32 KB per event and 500 KB per batch). " + client,
        )
    if status == 429:
        wait = parse_retry_after(_header(test, "retry-after") or None, time.time()).delay
        told = f"it asks to wait {wait:g} s (Retry-After)" if wait else "it gave no Retry-After"
        return Verdict(
            False,
            "rate_limit",
            f"{subject} ({answer}): rate limited; {told}.",
            "The client waits as told and retries without losing events (within max_rate_limit_duration). "
            "Sustained 429s mean more than about 1,000 requests/s per workspace: send fewer, larger batches "
            "(upload_size).",
        )
    if 500 <= status <= 599:
        wait = parse_retry_after(_header(test, "retry-after") or None, time.time()).delay
        return Verdict(
            False,
            "api",
            f"{subject} ({answer}): a failure on the API's side" + (f"; it asks to wait {wait:g} s." if wait else "."),
            f"Check {STATUS_PAGE}. " + client + " Events wait in the queue meanwhile (max_queue_size).",
        )
    if 300 <= status <= 399:
        location = _header(test, "location")
        return Verdict(
            False,
            "configuration",
            f"{subject} ({answer}): a redirect" + (f" to {location}" if location else "") + ".",
            "The client does not follow redirects: use the final URL as the host (https, no path). " + client,
        )
    if status == 404:
        return Verdict(
            False,
            "configuration",
            f"{subject} ({answer}): nothing serves /v1/batch there.",
            "Is the host the Tracking API's base URL (https://api.segment.io or your region's), without a path?",
        )
    return Verdict(False, "api" if retried else "payload", f"{subject} ({answer}).", client)


def _header(test: TestEvent, name: str) -> str:
    for key, value in test.headers.items():
        if key.lower() == name:
            return value
    return ""
