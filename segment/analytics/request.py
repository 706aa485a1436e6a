"""Sending one batch: the HTTP POST and the retry loop of SPEC 3.

:class:`BatchSender` applies :class:`~segment.analytics.retry.RetryPolicy` to
one batch: it builds the body from the queued bytes, adds the headers of
SPEC 3.2, classifies each outcome, waits (interruptibly) between attempts,
splits on 413, retries only the failed events of a 207, and returns a
:class:`BatchResult` saying what became of every event. Its clock, sleep and
random source are parameters, so tests run the whole loop in microseconds.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import ipaddress
import logging
import os
import random
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional, Protocol, Union
from urllib.parse import urlsplit

import requests

from segment.analytics import errors, retry
from segment.analytics.encoding import decode, encode
from segment.analytics.errors import APIError, DeliveryError
from segment.analytics.retry import RetryPolicy
from segment.analytics.version import VERSION

__all__ = ["APIError", "BatchResult", "BatchSender", "NetworkError", "RateLimitGate", "Response", "Transport"]

log = logging.getLogger("segment")

DEFAULT_HOST = "https://api.segment.io"
USER_AGENT = f"analytics-python/{VERSION}"
GZIP_LEVEL = 9  # what analytics-python uses; bodies are small, the extra CPU is negligible


@dataclass(frozen=True)
class Response:
    """A final HTTP answer: status, headers (case-insensitive mapping) and raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


class NetworkError(Exception):
    """No HTTP answer: ``kind`` is refused, reset, timeout, dns, tls, other, or configuration."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(f"{kind}: {cause}")
        self.kind = kind
        self.cause = cause


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(nested, BaseException):
                stack.append(nested)
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))


_CONFIG_ERRORS = (
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidProxyURL,
)


def network_error_kind(exc: BaseException) -> str:
    """Name the kind of a network-level failure (SPEC 4 ``network_errors`` keys, or ``configuration``)."""
    if isinstance(exc, _CONFIG_ERRORS):
        return "configuration"
    chain = list(_exception_chain(exc))
    if any(isinstance(e, (requests.exceptions.SSLError, ssl.SSLError)) for e in chain):
        return "tls"
    if any(isinstance(e, (requests.exceptions.Timeout, socket.timeout, TimeoutError)) for e in chain):
        return "timeout"
    if any(isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" for e in chain):
        return "dns"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused"
    if any(
        isinstance(
            e,
            (
                ConnectionResetError,
                ConnectionAbortedError,
                BrokenPipeError,
                http.client.RemoteDisconnected,
                http.client.IncompleteRead,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ),
        )
        or type(e).__name__ in ("ProtocolError", "IncompleteRead")
        for e in chain
    ):
        return "reset"
    text = str(exc).lower()
    if "refused" in text:
        return "refused"
    if "name or service not known" in text or "nodename nor servname" in text or "failed to resolve" in text:
        return "dns"
    return "other"


def batch_url(host: Optional[str]) -> str:
    """``<host>/v1/batch`` (the default host when ``host`` is empty)."""
    base = (host or DEFAULT_HOST).rstrip("/")
    return base + "/v1/batch"


def _is_loopback(hostname: Optional[str]) -> bool:
    if not hostname:
        return False
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class Transport:
    """One HTTP POST per call over a keep-alive ``requests`` session."""

    def __init__(
        self, host: Optional[str], timeout: float, proxies: Optional[Mapping[str, str]] = None, pool_size: int = 1
    ) -> None:
        self.url = batch_url(host)
        self.timeout = timeout
        self._session = requests.Session()
        # Read the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) once instead of on every request,
        # and keep ~/.netrc from replacing the Authorization header.
        self._session.trust_env = False
        env_proxies = requests.utils.get_environ_proxies(self.url)
        self.proxies = dict(proxies) if proxies else (dict(env_proxies) or None)
        # TLS verification stays on: certifi's bundle, or the one the environment names
        self._verify: Union[bool, str] = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._adapter: Optional[requests.adapters.BaseAdapter] = None
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 2), max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            log.warning("host %s uses plain http: events are sent unencrypted", parts.netloc)

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body``; return the final answer or raise :class:`NetworkError`.

        Goes straight to the session's adapter with a prepared request: ``Session.request`` would merge
        settings, look up proxies and cookies on every call, about a third of the cost of a request.
        Redirects are not followed (a 3xx is a final answer).
        """
        try:
            request = requests.PreparedRequest()
            request.prepare(method="POST", url=self.url, headers=headers, data=body)
            adapter = self._adapter or self._session.get_adapter(self.url)
            self._adapter = adapter
            answer = adapter.send(
                request, timeout=self.timeout, proxies=self.proxies, verify=self._verify, stream=False
            )
            content = answer.content
        except Exception as exc:
            raise NetworkError(network_error_kind(exc), exc) from exc
        return Response(answer.status_code, answer.headers, content)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()


class Poster(Protocol):
    """Anything that can POST a body: :class:`Transport`, or a fake in tests."""

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` with ``headers``."""
        ...


class Auth(Protocol):
    """Supplies the Authorization header value; OAuth can also be invalidated."""

    oauth: bool

    def header(self) -> str:
        """The Authorization header value for the next request."""
        ...

    def invalidate(self) -> None:
        """Forget the current token (after a 511)."""
        ...


class BasicAuth:
    """``Authorization: Basic base64("<writeKey>:")``."""

    oauth = False

    def __init__(self, write_key: str) -> None:
        self._value = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii")

    def header(self) -> str:
        """The constant Basic header."""
        return self._value

    def invalidate(self) -> None:
        """Nothing to forget."""


class RateLimitGate:
    """Rate-limit state shared by every consumer of one client (SPEC 3.4).

    While ``until`` lies in the future nobody sends. An episode starts with
    the first rate-limited response and ends with the first answer that is not
    rate-limited to a request sent after the last rate-limited response arrived.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.until = 0.0
        self.episode_start: Optional[float] = None
        self._last_limited_at = float("-inf")

    def wait_time(self, now: float) -> float:
        """Seconds until sending is allowed again."""
        return max(0.0, self.until - now)

    def limit(self, now: float, delay: float) -> float:
        """Record a rate-limited response arriving at ``now``; returns the episode's start."""
        with self._lock:
            if self.episode_start is None:
                self.episode_start = now
            self.until = max(self.until, now + delay)
            self._last_limited_at = now
            return self.episode_start

    def release(self, sent_at: float) -> None:
        """Record an answer that is not rate-limited to a request sent at ``sent_at``."""
        with self._lock:
            if self.episode_start is not None and sent_at >= self._last_limited_at:
                self.episode_start = None

    def reset(self) -> None:
        """Forget all state (used in a forked child)."""
        with self._lock:
            self.until = 0.0
            self.episode_start = None
            self._last_limited_at = float("-inf")


@dataclass
class BatchResult:
    """What became of every event of one batch."""

    delivered: list[tuple[list[bytes], bool]] = field(default_factory=list)  # (events, after a retry)
    dropped: list[tuple[list[bytes], DeliveryError]] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)
    attempts: int = 0


class StatsSink(Protocol):
    """The counters the loop updates as it goes."""

    def request_sent(self, body_bytes: int) -> None:
        """One HTTP request."""
        ...

    def retry(self, cause: str) -> None:
        """One retry, by status or network error kind."""
        ...

    def network_error(self, kind: str) -> None:
        """One network error."""
        ...

    def rate_limited_wait(self) -> None:
        """One Retry-After wait."""
        ...


class _NoStats:
    def request_sent(self, body_bytes: int) -> None:
        pass

    def retry(self, cause: str) -> None:
        pass

    def network_error(self, kind: str) -> None:
        pass

    def rate_limited_wait(self) -> None:
        pass


@dataclass(frozen=True)
class _Failure:
    """A retryable outcome of one attempt."""

    key: str  # status code or network error kind, for retries_by_status
    status: Optional[int]
    error: Optional[BaseException]
    retry_after: Optional[float]
    at: float


class _Run:
    """The state of one batch in the retry loop: groups left, attempts, budgets spent."""

    def __init__(self, work: list[list[bytes]]) -> None:
        self.work = work
        self.attempt = 0  # requests made for this batch so far
        self.counted = 0  # counted retries spent (SPEC 3.3)
        self.first_failure: Optional[float] = None
        self.result = BatchResult()

    def drop(
        self,
        events: list[bytes],
        reason: str,
        message: str,
        *,
        status: Optional[int] = None,
        cause: Optional[BaseException] = None,
    ) -> None:
        error = DeliveryError(reason, message, status=status, cause=cause, attempts=self.attempt)
        log.warning("dropping %d event(s): %s", len(events), error)
        self.result.dropped.append((events, error))

    def drop_head(
        self, reason: str, message: str, *, status: Optional[int] = None, cause: Optional[BaseException] = None
    ) -> None:
        self.drop(self.work.pop(0), reason, message, status=status, cause=cause)


_BATCH_PREFIX = b'{"batch":['


class BatchSender:
    """Delivers batches of encoded events under a :class:`RetryPolicy`.

    ``clock`` is monotonic seconds, ``wall_clock`` is epoch seconds (for
    ``sentAt`` and HTTP-date Retry-After), ``sleep(seconds)`` returns ``False``
    when the wait was interrupted by shutdown, ``stopped()`` tells whether
    shutdown has begun, ``rand()`` is uniform in [0, 1).
    """

    def __init__(
        self,
        write_key: str,
        poster: Poster,
        policy: RetryPolicy,
        *,
        auth: Optional[Auth] = None,
        gzip: bool = False,
        gate: Optional[RateLimitGate] = None,
        stats: Optional[StatsSink] = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Optional[Callable[[float], bool]] = None,
        stopped: Callable[[], bool] = lambda: False,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.poster = poster
        self.auth: Auth = auth or BasicAuth(write_key)
        # whether 511 is retried must follow whether there is a token to clear
        self.policy = policy if policy.oauth == self.auth.oauth else dataclasses.replace(policy, oauth=self.auth.oauth)
        self.gzip = gzip
        self.gate = gate or RateLimitGate()
        self.stats: StatsSink = stats or _NoStats()
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep or _plain_sleep
        self.stopped = stopped
        self.rand = rand
        self._write_key = write_key
        self._key_json = encode(write_key)
        self._warned_retry_after = False
        self._warned_error_responses = False

    # -- body and headers ---------------------------------------------------

    def _body(self, items: list[bytes]) -> bytes:
        sent_at = _iso_utc(self.wall_clock())
        tail = b'],"sentAt":"' + sent_at.encode("ascii") + b'","writeKey":' + self._key_json + b"}"
        return _BATCH_PREFIX + b",".join(items) + tail

    def envelope_size(self) -> int:
        """Bytes a body takes besides its events (``{"batch":[...],"sentAt":...,"writeKey":...}``).

        A batch's events, each counted with one separator byte, fit in the rest of the size limit.
        """
        return len(self._body([]))

    def _headers(self, attempt: int) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Authorization": self.auth.header(),
        }
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
        if attempt > 0:
            headers["X-Retry-Count"] = str(attempt)
        return headers

    def _log_body(self, body: bytes) -> None:
        if log.isEnabledFor(logging.DEBUG):
            text = body.decode("utf-8", "replace").replace(self._key_json.decode("utf-8"), '"[REDACTED]"')
            log.debug("request body: %s", text)

    # -- waiting --------------------------------------------------------------

    def _wait_gate(self) -> bool:
        """Wait while the client is rate-limited; ``False`` if shutdown interrupted the wait."""
        while True:
            remaining = self.gate.wait_time(self.clock())
            if remaining <= 0:
                return True
            log.debug("rate-limited: waiting %.2fs before sending", remaining)
            if not self.sleep(remaining):
                return False

    # -- the loop -------------------------------------------------------------

    def send(self, items: list[bytes]) -> BatchResult:
        """Deliver ``items`` (encoded events), retrying under the policy; never raises.

        Events left over when shutdown interrupts a wait are returned as ``pending``.
        """
        run = _Run([items] if items else [])
        while run.work:
            if self.stopped() or not self._wait_gate():
                break
            group = run.work[0]
            failure = self._attempt(run, group)
            if failure is not None and not self._after_failure(run, failure):
                break
        for group in run.work:
            run.result.pending.extend(group)
        return run.result

    def _attempt(self, run: _Run, group: list[bytes]) -> Optional[_Failure]:
        """Send ``group`` once; settle what can be settled, return the failure to retry (if any)."""
        try:
            headers = self._headers(run.attempt)
        except Exception as exc:  # noqa: BLE001 - e.g. no OAuth token could be had: retried like a network error
            run.attempt += 1
            run.result.attempts = run.attempt
            log.debug("attempt %d: no Authorization header: %s", run.attempt, exc)
            return _Failure("auth", None, exc, None, self.clock())
        body = self._body(group)
        self._log_body(body)
        wire = _gzip(body) if self.gzip else body
        sent_at = self.clock()
        self.stats.request_sent(len(wire))
        run.attempt += 1
        run.result.attempts = run.attempt
        try:
            response = self.poster.post(wire, headers)
        except NetworkError as exc:
            if retry.classify_network_error(exc.kind).action == retry.DROP:
                run.drop_head(
                    errors.CONFIGURATION_ERROR, f"cannot send to the configured host: {exc.cause}", cause=exc.cause
                )
                return None
            self.stats.network_error(exc.kind)
            log.debug("attempt %d: network error (%s): %s", run.attempt, exc.kind, exc.cause)
            return _Failure(exc.kind, None, exc.cause, None, self.clock())
        now = self.clock()
        status = response.status
        action = self.policy.classify(status).action
        if action == retry.DELIVERED:
            self.gate.release(sent_at)
            return self._after_success(run, response, group, now)
        if status == 413 and len(group) > 1:
            self.gate.release(sent_at)
            half = len(group) // 2
            run.work[0:1] = [group[:half], group[half:]]
            log.debug("413 for %d events: sending them in two halves", len(group))
            return None
        error = APIError(status, "http_error", _describe(response), response)
        if self.auth.oauth and status in (401, 403, 511):
            self.auth.invalidate()
        if action == retry.DROP:
            self.gate.release(sent_at)
            run.drop_head(errors.NON_RETRYABLE_STATUS, _describe(response), status=status, cause=error)
            return None
        header = response.headers.get("Retry-After")
        retry_after = retry.parse_retry_after(header, self.wall_clock())
        if retry_after.malformed and not self._warned_retry_after:
            self._warned_retry_after = True
            log.warning("ignoring unparsable Retry-After header %r", header)
        if retry_after.delay is None:
            self.gate.release(sent_at)
        log.debug("attempt %d: status %d", run.attempt, status)
        return _Failure(str(status), status, error, retry_after.delay, now)

    def _after_success(self, run: _Run, response: Response, group: list[bytes], now: float) -> Optional[_Failure]:
        """Settle a 2xx: the whole group, or per event when the body lists ``errorResponses``."""
        after_retry = run.attempt > 1
        split = self._per_event_failures(response, group)
        if split is None:
            run.work.pop(0)
            run.result.delivered.append((group, after_retry))
            return None
        retry_part, drops, delivered = split
        if delivered:
            run.result.delivered.append((delivered, after_retry))
        for status, events in drops.items():
            run.drop(
                events,
                errors.NON_RETRYABLE_STATUS,
                f"the API rejected these events with status {status}",
                status=status,
            )
        if retry_part is None:
            run.work.pop(0)
            return None
        status, events = retry_part
        run.work[0] = events
        return _Failure(str(status), status, None, None, now)

    def _after_failure(self, run: _Run, failure: _Failure) -> bool:
        """Apply the budgets to a retryable failure; wait if allowed. ``False`` if shutdown interrupted."""
        policy = self.policy
        now = failure.at
        if run.first_failure is None:
            run.first_failure = now
        if failure.retry_after is not None:
            episode_start = self.gate.limit(now, failure.retry_after)
            # the wait is until the shared gate opens, which another consumer may have pushed further out
            if not policy.rate_limit_fits(episode_start, now, self.gate.wait_time(now)):
                run.drop_head(
                    errors.RATE_LIMIT_DURATION_EXCEEDED,
                    f"Retry-After {failure.retry_after:g}s does not fit max_rate_limit_duration "
                    f"({policy.max_rate_limit_duration:g}s)",
                    status=failure.status,
                    cause=failure.error,
                )
                return True
            self.stats.retry(failure.key)
            self.stats.rate_limited_wait()
            return True  # the shared gate makes every consumer wait before the next send
        run.counted += 1
        if not policy.may_retry(run.counted):
            run.drop_head(
                errors.RETRIES_EXHAUSTED,
                f"gave up after {run.attempt} attempt(s)",
                status=failure.status,
                cause=failure.error,
            )
            return True
        delay = retry.backoff_delay(run.counted, self.rand())
        if not policy.backoff_fits(run.first_failure, now, delay):
            run.drop_head(
                errors.BACKOFF_DURATION_EXCEEDED,
                f"the next retry would end past max_total_backoff_duration ({policy.max_total_backoff_duration:g}s)",
                status=failure.status,
                cause=failure.error,
            )
            return True
        self.stats.retry(failure.key)
        log.debug("retry %d of %d in %.2fs", run.counted, policy.max_retries, delay)
        return self.sleep(delay)

    def _per_event_failures(
        self, response: Response, group: list[bytes]
    ) -> Optional[tuple[Optional[tuple[int, list[bytes]]], dict[int, list[bytes]], list[bytes]]]:
        """Read ``errorResponses`` from a 2xx body (SPEC 3.5).

        Returns ``None`` when the whole group was delivered, else
        ``(retry, drops, delivered)``: ``retry`` is ``(status, events)`` for
        the events to retry (or ``None``), ``drops`` maps a status to the
        events dropped with it, ``delivered`` lists the rest.
        """
        if b"errorResponses" not in response.body:
            return None
        try:
            entries = decode(response.body).get("errorResponses")
        except (ValueError, AttributeError):
            return None
        if not isinstance(entries, list) or not entries:
            return None
        verdicts: dict[int, int] = {}
        ignored = 0
        for entry in entries:
            index = entry.get("index") if isinstance(entry, dict) else None
            status = entry.get("status") if isinstance(entry, dict) else None
            if (
                not isinstance(index, int)
                or isinstance(index, bool)
                or not 0 <= index < len(group)
                or not isinstance(status, int)
                or isinstance(status, bool)
            ):
                ignored += 1
                continue
            verdicts[index] = status
        if ignored and not self._warned_error_responses:
            self._warned_error_responses = True
            log.warning("ignored %d errorResponses entries with a missing status or an index out of range", ignored)
        if not verdicts:
            return None
        retry_status: Optional[int] = None
        retry_items: list[bytes] = []
        drops: dict[int, list[bytes]] = {}
        delivered: list[bytes] = []
        for index, item in enumerate(group):
            status = verdicts.get(index)
            action = self.policy.classify(status).action if status is not None else retry.DELIVERED
            if status is None or action == retry.DELIVERED:
                delivered.append(item)
            elif action == retry.RETRY:
                retry_status = status if retry_status is None else retry_status
                retry_items.append(item)
            else:
                drops.setdefault(status, []).append(item)
        retry_part = (retry_status, retry_items) if retry_status is not None else None
        return retry_part, drops, delivered


def _describe(response: Response) -> str:
    text = response.body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {response.status}" + (f": {text}" if text else "")


def _gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def _iso_utc(epoch: float) -> str:
    second = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((epoch - second) * 1000):03d}+00:00"


def _plain_sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True
