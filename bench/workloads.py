"""The benchmark workloads, importable by the reference's interpreter and by ours.

Only the public API both libraries share is used: ``Client(write_key,
host=..., ...)``, ``client.track(...)`` (which returns ``(accepted, message)``
in both), ``client.flush()`` and ``client.shutdown()``. The standard library
only, so the reference's virtualenv needs nothing else.

Each workload talks to a running ``bench/sink.py`` (reset, counters,
withhold) and returns a dict of figures, always with ``expected`` and
``delivered`` (the sink's own count) so a run that lost or duplicated an event
is never reported as a result. As a program it runs one workload and prints
one JSON line::

    python bench/workloads.py caller|throughput|memory|wire|backfill --port N [--n N] [--orjson on|off]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import http.client
import inspect
import json
import logging
import os
import resource
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable, Optional

WRITE_KEY = "bench-write-key-0123456789"
_BASE_DT = _dt.datetime(2026, 11, 25, 9, 30, tzinfo=_dt.timezone.utc)
_EVENTS = ("Order Completed", "Product Viewed", "Cart Updated", "Checkout Started", "Coupon Applied")
POOL_SIZE = 1000

Event = tuple[str, str, dict[str, Any]]


def make_event(i: int) -> Event:
    """A realistic track call ``(user_id, event, properties)``: 11 properties, a datetime, a nested dict, lists."""
    return (
        f"user-{i % 5000:05d}",
        _EVENTS[i % len(_EVENTS)],
        {
            "order_id": f"ord-{i:08d}",
            "revenue": round(10 + (i % 997) * 0.37, 2),
            "currency": "EUR" if i % 4 == 0 else "USD",
            "quantity": i % 7 + 1,
            "coupon": None if i % 3 else "WINTER25",
            "first_purchase": i % 11 == 0,
            "ordered_at": _BASE_DT + _dt.timedelta(seconds=i),
            "shipping": {"method": "ground", "city": "São Paulo" if i % 5 == 0 else "Lyon", "express": i % 2 == 0},
            "items": [
                {"sku": f"SKU-{i % 97}", "price": 19.99, "qty": 1},
                {"sku": f"SKU-{(i + 1) % 97}", "price": 5.25, "qty": 2},
            ],
            "tags": ["sale", "newsletter"] if i % 2 else ["organic"],
            "page": "/checkout/confirm",
        },
    )


def event_pool(size: int = POOL_SIZE) -> list[Event]:
    """``size`` distinct events, built before timing starts; workloads cycle through them."""
    return [make_event(i) for i in range(size)]


# -- the sink's control interface ------------------------------------------------------------------


class SinkControl:
    """Reset, read and steer a running ``bench/sink.py`` over its ``/_sink/`` endpoints."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """The base URL to give the SDK as ``host``."""
        return f"http://{self.host}:{self.port}"

    def _call(self, method: str, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=b"" if method == "POST" else None)
            answer = conn.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"sink control {path}: HTTP {answer.status}")
            return dict(json.loads(data))
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        """The sink's counters."""
        return self._call("GET", "/_sink/stats")

    def reset(self) -> dict[str, Any]:
        """Zero the sink's counters."""
        return self._call("POST", "/_sink/reset")

    def withhold(self, on: bool) -> dict[str, Any]:
        """Hold every answer (``on``) or answer everything held (``not on``)."""
        return self._call("POST", "/_sink/withhold?on=" + ("1" if on else "0"))

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """Poll the counters until ``predicate`` holds; raises on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink did not reach the expected state: {stats}")
            time.sleep(0.005)


# -- the library under test ------------------------------------------------------------------------


def library_info() -> dict[str, Any]:
    """Which ``segment.analytics`` was imported, its version and whether orjson encodes."""
    import segment.analytics as analytics
    from segment.analytics.version import VERSION

    info: dict[str, Any] = {"file": analytics.__file__, "version": VERSION, "orjson": False}
    try:
        from segment.analytics import encoding  # only in this library
    except ImportError:
        return info
    info["orjson"] = encoding.orjson_in_use()
    return info


def set_orjson(enabled: bool) -> None:
    """Switch this library's optional orjson encoder; a no-op for the reference (no such switch)."""
    try:
        from segment.analytics import encoding
    except ImportError:
        return
    encoding.use_orjson(enabled)


def new_client(control: SinkControl, **options: Any) -> Any:
    """A ``Client`` sending to the sink; ``options`` are passed as given (defaults otherwise)."""
    from segment.analytics import Client

    return Client(WRITE_KEY, host=control.url, **options)


def _quiet_logs() -> None:
    # The reference logs a WARNING for every refused event (queue full); without a
    # handler Python's last-resort handler would print each one. Both libraries get this.
    logger = logging.getLogger("segment")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _thread_switches() -> tuple[int, int]:
    """Voluntary and involuntary context switches of the calling thread (zeros where unsupported)."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    if who is None:
        return (0, 0)
    usage = resource.getrusage(who)
    return (usage.ru_nvcsw, usage.ru_nivcsw)


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _track_all(client: Any, pool: list[Event], n: int, start: int = 0) -> int:
    """Call ``track`` for events ``start`` .. ``start + n`` of the pool; returns how many were refused.

    A refused event (queue full) is offered again after 1 ms, as a caller
    applying back-pressure would: every event must reach the sink.
    """
    refused = 0
    size = len(pool)
    track = client.track
    for i in range(start, start + n):
        user_id, event, properties = pool[i % size]
        while not track(user_id, event, properties)[0]:
            refused += 1
            time.sleep(0.001)
    return refused


def _verify(control: SinkControl, expected: int) -> dict[str, Any]:
    stats = control.stats()
    if stats["events"] != expected or stats["duplicates"] or stats["bad_requests"]:
        raise RuntimeError(f"the sink counted {stats['events']} events, expected {expected}: {stats}")
    return stats


# -- the workloads ---------------------------------------------------------------------------------


def caller_cost(control: SinkControl, n: int = 20_000, chunks: int = 5) -> dict[str, Any]:
    """(a) Microseconds per ``track()`` in the calling thread: CPU time of that thread, and wall time.

    The queue is made large enough (``max_queue_size=n``) that no call is
    refused; the consumer runs and delivers meanwhile, as it would in an app.
    The ``n`` calls are timed in ``chunks`` slices and the median slice is
    reported (the mean over all calls is kept too), so that a burst of noise
    from the machine does not decide the figure.
    """
    pool = event_pool()
    control.reset()
    client = new_client(control, max_queue_size=max(n, 10_000))
    for user_id, event, properties in pool[:50]:  # warm up (imports, first connection)
        client.track(user_id, event, properties)
    client.flush()
    control.reset()
    gc.collect()
    track = client.track
    size = len(pool)
    refused = 0
    per_chunk = max(n // chunks, 1)
    switches0 = _thread_switches()
    cpu_slices: list[float] = []
    wall_slices: list[float] = []
    done = 0
    while done < n:
        count = min(per_chunk, n - done)
        cpu0 = time.thread_time()
        wall0 = time.perf_counter()
        for i in range(done, done + count):
            user_id, event, properties = pool[i % size]
            if not track(user_id, event, properties)[0]:
                refused += 1
        wall_slices.append((time.perf_counter() - wall0) / count)
        cpu_slices.append((time.thread_time() - cpu0) / count)
        done += count
    switches = [after - before for after, before in zip(_thread_switches(), switches0)]
    client.flush()
    stats = _verify(control, n - refused)
    client.shutdown()
    return {
        "expected": n,
        "delivered": stats["events"],
        "refused": refused,
        "caller_voluntary_switches": switches[0],
        "caller_involuntary_switches": switches[1],
        "caller_cpu_us": statistics.median(cpu_slices) * 1e6,
        "caller_wall_us": statistics.median(wall_slices) * 1e6,
        "caller_cpu_us_mean": sum(c * 1e6 for c in cpu_slices) / len(cpu_slices),
        "caller_wall_us_mean": sum(w * 1e6 for w in wall_slices) / len(wall_slices),
    }


def throughput(control: SinkControl, n: int = 100_000) -> dict[str, Any]:
    """(b, c, peak RSS) Events/s from the first ``track()`` to ``flush()`` returning, default settings.

    Also the process's CPU seconds (user + sys, every thread) over the same
    window, scaled to 100,000 delivered events, and its peak resident memory.
    """
    pool = event_pool()
    control.reset()
    client = new_client(control)
    gc.collect()
    rss_before = _rss_bytes()
    cpu0 = _cpu()
    wall0 = time.perf_counter()
    refused = _track_all(client, pool, n)
    client.flush()
    wall = time.perf_counter() - wall0
    cpu = _cpu() - cpu0
    stats = _verify(control, n)
    peak = _peak_rss_bytes()
    client.shutdown()
    return {
        "expected": n,
        "delivered": stats["events"],
        "refused_retried": refused,
        "seconds": wall,
        "events_per_s": n / wall,
        "cpu_s": cpu,
        "cpu_s_per_100k": cpu * 100_000 / n,
        "requests": stats["requests"],
        "events_per_request": n / max(stats["requests"], 1),
        "rss_before_mb": rss_before / 2**20,
        "peak_rss_mb": peak / 2**20,
    }


def memory(control: SinkControl, n: int = 10_000) -> dict[str, Any]:
    """(d) Memory per queued event, with ``n`` events queued while the sink withholds its answers.

    One full batch (100 events) is sent first and held by the sink, so the
    single consumer is stuck in its request and every further event stays
    queued. Measured twice: resident memory before/after queueing, then again
    with tracemalloc (Python allocations still alive after queueing).
    """
    pool = event_pool()
    client = new_client(control, max_queue_size=2 * n)
    prime = 100
    results: dict[str, Any] = {}
    sent = 0
    for method in ("rss", "tracemalloc"):
        control.reset()
        control.withhold(True)
        try:
            _track_all(client, pool, prime, start=sent)
            control.wait_for(lambda s: s["held"] >= 1)
            time.sleep(0.05)  # let the consumer settle into its request
            gc.collect()
            if method == "tracemalloc":
                tracemalloc.start()
                before = tracemalloc.get_traced_memory()[0]
            else:
                before = _rss_bytes()
            _track_all(client, pool, n, start=sent + prime)
            gc.collect()
            if method == "tracemalloc":
                after = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
            else:
                after = _rss_bytes()
            results[f"{method}_bytes_per_event"] = (after - before) / n
        finally:
            control.withhold(False)
        client.flush()
        sent += prime + n
        _verify(control, prime + n)
    client.shutdown()
    results.update({"expected": prime + n, "delivered": prime + n, "queued": n})
    results["bytes_per_queued_event"] = results["tracemalloc_bytes_per_event"]
    return results


def wire(control: SinkControl, n: int = 5_000) -> dict[str, Any]:
    """(e) Bytes on the wire per event (request bodies as sent, and with headers), gzip off and on."""
    pool = event_pool()
    results: dict[str, Any] = {"expected": 2 * n}
    delivered = 0
    for gzip in (False, True):
        control.reset()
        client = new_client(control, gzip=gzip, max_queue_size=max(n, 10_000))
        _track_all(client, pool, n)
        client.flush()
        stats = _verify(control, n)
        client.shutdown()
        delivered += stats["events"]
        key = "gzip" if gzip else "plain"
        if gzip and stats["gzip_requests"] != stats["requests"]:
            raise RuntimeError(f"gzip=True but only {stats['gzip_requests']} of {stats['requests']} were gzipped")
        results[f"{key}_body_bytes_per_event"] = stats["body_bytes"] / n
        results[f"{key}_wire_bytes_per_event"] = (stats["body_bytes"] + stats["header_bytes"]) / n
        results[f"{key}_json_bytes_per_event"] = stats["raw_bytes"] / n
        results[f"{key}_events_per_request"] = n / max(stats["requests"], 1)
    results["delivered"] = delivered
    return results


#: The settings a bulk job would use (README "Bulk imports and backfills"); both libraries get them.
BACKFILL_OPTIONS = {"upload_size": 500, "thread": 2}


def backfill(control: SinkControl, n: int = 1_000_000) -> dict[str, Any]:
    """(f) A backfill: ``n`` events from a tight loop, each offered once, no sleep, no second try.

    This library runs with ``on_full="block"`` (the caller waits for room, so nothing may be lost);
    the reference has no such option and runs otherwise the same way: when its queue is full the
    call is refused and the event is lost. Figures: delivered events per second from the first
    ``track()`` to ``flush()`` returning, and the events lost (``n`` minus what the sink counted).
    """
    from segment.analytics import Client

    pool = event_pool()
    control.reset()
    options: dict[str, Any] = dict(BACKFILL_OPTIONS)
    blocking = "on_full" in inspect.signature(Client.__init__).parameters
    if blocking:
        options["on_full"] = "block"
    client = new_client(control, **options)
    track = client.track
    size = len(pool)
    refused = 0
    gc.collect()
    cpu0 = _cpu()
    wall0 = time.perf_counter()
    for i in range(n):
        user_id, event, properties = pool[i % size]
        if not track(user_id, event, properties)[0]:
            refused += 1
    client.flush()
    wall = time.perf_counter() - wall0
    cpu = _cpu() - cpu0
    stats = _verify(control, n - refused)  # every accepted event arrived, once
    client.shutdown()
    lost = n - stats["events"]
    if blocking and lost:
        raise RuntimeError(f"on_full='block' lost {lost} events")
    return {
        "expected": n - refused,
        "delivered": stats["events"],
        "offered": n,
        "lost": lost,
        "on_full": options.get("on_full", "(none: refuses when full)"),
        "seconds": wall,
        "events_per_s": stats["events"] / wall,
        "calls_per_s": n / wall,
        "cpu_s_per_100k": cpu * 100_000 / max(stats["events"], 1),
        "requests": stats["requests"],
        "peak_rss_mb": _peak_rss_bytes() / 2**20,
    }


WORKLOADS: dict[str, Callable[..., dict[str, Any]]] = {
    "caller": caller_cost,
    "throughput": throughput,
    "memory": memory,
    "wire": wire,
    "backfill": backfill,
}


def run(name: str, port: int, n: Optional[int] = None, orjson: bool = True) -> dict[str, Any]:
    """Run workload ``name`` against the sink on ``port``; returns its figures and the library used."""
    _quiet_logs()
    set_orjson(orjson)
    control = SinkControl(port)
    kwargs = {} if n is None else {"n": n}
    result = WORKLOADS[name](control, **kwargs)
    result["workload"] = name
    result["library"] = library_info()
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: run one workload and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description="Run one benchmark workload against a running sink.")
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--orjson", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    result = run(args.workload, args.port, args.n, args.orjson == "on")
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
