"""The wire format in one place: the batch envelope, its headers, its sizes and timestamps.

A batch body is ``{"batch":[<event>,...],"sentAt":"<ISO-8601>","writeKey":"<key>"}``, built by
joining events that were encoded once, when they were tracked. See ``docs/delivery.md``.
"""

from __future__ import annotations

import time
import zlib
from typing import Optional

from segment.analytics.encoding import decode, encode
from segment.analytics.version import VERSION

__all__ = [
    "BATCH_SIZE_LIMIT",
    "DEFAULT_HOST",
    "GZIP_LEVEL",
    "MAX_MSG_SIZE",
    "USER_AGENT",
    "Envelope",
    "batch_url",
    "error_responses",
    "gzip",
    "headers",
    "iso_utc",
]

DEFAULT_HOST = "https://api.segment.io"
USER_AGENT = f"analytics-python/{VERSION}"
GZIP_LEVEL = 9  # what analytics-python uses; bodies are small, the extra CPU is negligible

#: The largest message the Tracking API accepts, once encoded.
MAX_MSG_SIZE = 32 << 10
#: The Tracking API accepts batches under 500 KB; stay below with room to spare.
BATCH_SIZE_LIMIT = 475_000

_BATCH_PREFIX = b'{"batch":['


def batch_url(host: Optional[str]) -> str:
    """``<host>/v1/batch`` (the default host when ``host`` is empty)."""
    return (host or DEFAULT_HOST).rstrip("/") + "/v1/batch"


def iso_utc(epoch: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds (``2024-01-02T03:04:05.678+00:00``)."""
    second = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((epoch - second) * 1000):03d}+00:00"


class Envelope:
    """Builds batch bodies for one write key."""

    def __init__(self, write_key: str) -> None:
        self.key_json = encode(write_key)

    def body(self, items: list[bytes], sent_at: float) -> bytes:
        """The JSON body for ``items`` (encoded events), stamped ``sentAt`` = ``sent_at`` (epoch seconds)."""
        tail = b'],"sentAt":"' + iso_utc(sent_at).encode("ascii") + b'","writeKey":' + self.key_json + b"}"
        return _BATCH_PREFIX + b",".join(items) + tail

    def size(self) -> int:
        """Bytes a body takes besides its events.

        A batch's events, each counted with one separator byte, fit in ``BATCH_SIZE_LIMIT - size()``.
        """
        return len(self.body([], 0.0))

    def redacted(self, body: bytes) -> str:
        """``body`` as text with the write key replaced, for DEBUG logs."""
        return body.decode("utf-8", "replace").replace(self.key_json.decode("utf-8"), '"[REDACTED]"')


def headers(authorization: str, gzipped: bool, retry_count: int) -> dict[str, str]:
    """The headers of one request: ``X-Retry-Count`` only from the second request of a batch on."""
    result = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Authorization": authorization,
    }
    if gzipped:
        result["Content-Encoding"] = "gzip"
    if retry_count > 0:
        result["X-Retry-Count"] = str(retry_count)
    return result


def gzip(body: bytes) -> bytes:
    """``body`` gzip-compressed."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def error_responses(body: bytes, size: int) -> tuple[Optional[dict[int, int]], int]:
    """Per-event results of a 2xx body: ``({index: status}, entries ignored)`` for a batch of ``size``.

    ``None`` when the body lists none or cannot be read (not JSON, nested too deeply, numbers too
    long): a 2xx means the API took the whole batch. Entries whose index is out of range or whose index
    or status is not an integer are ignored and counted.
    """
    if b"errorResponses" not in body:
        return None, 0
    try:
        entries = decode(body).get("errorResponses")
    except Exception:  # noqa: BLE001 - whatever the body is, the batch was taken
        return None, 0
    if not isinstance(entries, list):
        return None, 0
    verdicts: dict[int, int] = {}
    ignored = 0
    for entry in entries:
        index = entry.get("index") if isinstance(entry, dict) else None
        status = entry.get("status") if isinstance(entry, dict) else None
        if type(index) is int and type(status) is int and 0 <= index < size:
            verdicts[index] = status
        else:
            ignored += 1
    return verdicts, ignored
