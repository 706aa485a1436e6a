"""asyncio: ``aflush``/``ashutdown`` never block the event loop, return what ``flush``/``shutdown`` return,
and can be cancelled without leaving anything waiting; ``track()`` from a coroutine stays a queue put.

The Tracking API runs in its own process so that the loop lag measured here is the library's alone.
Loop lag is sampled every 10 ms by a task that sleeps 10 ms and records how late it woke up.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import segment.analytics as analytics
from segment.analytics import ArgumentError, Client

from ._runtime_helpers import ApiProcess, percentiles
from .conftest import WRITE_KEY

LAG_BOUND = 0.020  # the loop-lag bound of issue 10: samples every 10 ms stay under 20 ms


@pytest.fixture(scope="module")
def api_process() -> Iterator[ApiProcess]:
    with ApiProcess() as api:
        yield api


@pytest.fixture
def api(api_process: ApiProcess) -> ApiProcess:
    api_process.reset()
    return api_process


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A 127.0.0.1 port that refuses connections (bound, never listening) for the test's duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class LagSampler:
    """Sleeps 10 ms again and again on the running loop and records how late each wake-up was."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.010)
            self.lags.append(loop.time() - start - 0.010)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> list[float]:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        return self.lags


def ms(values: list[float]) -> str:
    p50, p99 = percentiles(values, 50, 99)
    return f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max {max(values, default=0) * 1e3:.2f} ms"


async def track_from_coroutines(client: Client, tasks: int, each: int) -> list[float]:
    """``tasks`` coroutines each tracking ``each`` events, yielding to the loop after every call."""
    durations: list[float] = []

    async def producer(n: int) -> None:
        for i in range(each):
            start = time.perf_counter()
            client.track(f"user-{n}", "Coroutine Event", {"i": i}, message_id=f"m-{n}-{i}")
            durations.append(time.perf_counter() - start)
            await asyncio.sleep(0)

    await asyncio.gather(*(producer(n) for n in range(tasks)))
    return durations


@pytest.mark.parametrize("server", ["fast", "hanging", "refusing"])
def test_10000_tracks_then_aflush_and_ashutdown_keep_the_loop_responsive(
    server: str, api: ApiProcess, refused_url: str
) -> None:
    """Loop lag stays under 20 ms through the burst and the waits; the waits return what flush/shutdown would.

    Other processes on the machine can only add lag, never remove it. So each run first measures the lag
    of an idle loop for 0.3 s (the machine's noise: a fraction of a millisecond when it is quiet) and is
    judged against 20 ms plus that; a run over it is repeated, three runs at most, and the best is judged.
    A library that blocked the loop (for the 0.5 s of a wait, say) fails every run.
    """
    verdicts: list[str] = []
    for _ in range(3):
        noise = max(asyncio.run(idle_lags(0.3)))
        r = one_run(server, api, refused_url)
        worst = max(r["lags_burst"] + r["lags_wait"])
        verdicts.append(f"{worst * 1e3:.1f} ms (noise {noise * 1e3:.1f} ms)")
        print(
            f"\n[{server}] track(): {ms(r['durations'])}; loop lag during the burst: {ms(r['lags_burst'])}; "
            f"during aflush/ashutdown: {ms(r['lags_wait'])}; idle loop: max {noise * 1e3:.2f} ms; "
            f"aflush {r['flush_took'] * 1e3:.0f} ms -> {r['flushed']}, ashutdown {r['shutdown_took'] * 1e3:.0f} ms "
            f"-> {r['shut']}"
        )
        if worst < LAG_BOUND + noise:
            return
    raise AssertionError(f"loop lag over {LAG_BOUND * 1e3:.0f} ms in every run: {verdicts}")


async def idle_lags(seconds: float) -> list[float]:
    sampler = LagSampler()
    sampler.start()
    await asyncio.sleep(seconds)
    return await sampler.stop() or [0.0]


def one_run(server: str, api: ApiProcess, refused_url: str) -> dict[str, Any]:
    """10,000 track() calls from 100 coroutines, then aflush and ashutdown, with the loop lag sampled."""
    api.reset()
    host = refused_url if server == "refusing" else api.url
    if server == "hanging":
        api.configure(default={"action": "hang", "delay": 3})  # each request hangs past aflush's timeout
    wait = 30.0 if server == "fast" else 0.5

    async def main() -> dict[str, Any]:
        client = Client(WRITE_KEY, host=host, timeout=10)
        sampler = LagSampler()
        sampler.start()
        await asyncio.sleep(0.05)
        durations = await track_from_coroutines(client, tasks=100, each=100)
        burst = len(sampler.lags)
        start = time.monotonic()
        flushed = await client.aflush(timeout=wait)
        flush_took = time.monotonic() - start
        pending_after_flush = client.stats()["pending"]
        start = time.monotonic()
        shut = await client.ashutdown(timeout=wait)
        shutdown_took = time.monotonic() - start
        lags = await sampler.stop()
        return {
            "durations": durations,
            "lags_burst": lags[:burst],
            "lags_wait": lags[burst:],
            "flushed": flushed,
            "pending_after_flush": pending_after_flush,
            "flush_took": flush_took,
            "shut": shut,
            "pending_after_shutdown": client.stats()["pending"],
            "shutdown_took": shutdown_took,
        }

    r = asyncio.run(main())
    assert len(r["durations"]) == 10_000
    assert r["flushed"] == r["pending_after_flush"]  # what flush() would return
    assert r["shut"] == r["pending_after_shutdown"]
    if server == "fast":
        assert r["flushed"] == 0 and r["shut"] == 0
        ids = api.message_ids()
        assert len(ids) == len(set(ids)) == 10_000
    else:
        assert r["flushed"] == 10_000 and r["shut"] == 10_000  # nothing got through, and all of it is counted
        assert r["flush_took"] < wait + 2 and r["shutdown_took"] < wait + 2  # hang guards
    return r


def test_aflush_waits_for_exactly_what_flush_waits_for(api: ApiProcess) -> None:
    async def main() -> tuple[int, int, int]:
        client = Client(WRITE_KEY, host=api.url, upload_interval=30)  # nothing leaves before a flush
        for i in range(250):
            client.track("u", "e", {"i": i})
        first = await client.aflush()
        delivered = client.stats()["delivered"]
        again = await client.aflush(timeout=0)  # nothing queued: returns at once
        await client.ashutdown()
        return first, delivered, again

    assert asyncio.run(main()) == (0, 250, 0)
    assert len(set(api.message_ids())) == 250


def test_a_cancelled_aflush_leaves_nothing_waiting_and_the_events_are_still_delivered(api: ApiProcess) -> None:
    api.configure(replies=[{"action": "hang", "delay": 1.0}])  # the first request hangs 1 s, then 200s

    async def main() -> tuple[int, list[str], int, int]:
        client = Client(WRITE_KEY, host=api.url, timeout=0.5)
        for i in range(20):
            client.track("u", "e", {"i": i})
        before = set(threading.enumerate())
        task = asyncio.ensure_future(client.aflush())  # no timeout: it would wait until delivered
        await asyncio.sleep(0.2)
        assert not task.done()
        new = [t.name for t in set(threading.enumerate()) - before if not t.name.startswith("segment-")]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        waiting = len(client.queue._on_settled)
        left = await client.aflush(timeout=20)  # the retry after the hang delivers them
        shut = await client.ashutdown(timeout=5)
        return waiting, new, left, shut

    waiting, new_threads, left, shut = asyncio.run(main())
    assert waiting == 0
    assert new_threads == []  # aflush started no thread (no executor) to wait in
    assert (left, shut) == (0, 0)
    assert len(set(api.message_ids())) == 20


def test_an_aflush_whose_loop_was_closed_under_it_does_not_hurt_the_consumer(api: ApiProcess) -> None:
    api.configure(replies=[{"action": "hang", "delay": 0.5}])  # the first request hangs, then 200s
    client = Client(WRITE_KEY, host=api.url, timeout=0.3)
    loop = asyncio.new_event_loop()
    task = loop.create_task(client.aflush())  # kept referenced: its wake-up stays registered
    try:
        client.track("u", "e", message_id="before")
        loop.run_until_complete(asyncio.sleep(0.1))
        loop.close()  # the task is still waiting: its wake-up will find the loop closed
        assert len(client.queue._on_settled) == 1
        assert client.flush(20) == 0  # the batch settles, the wake-up is refused, the consumer carries on
        assert len(client.queue._on_settled) == 0
        client.track("u", "e", message_id="after")
        assert client.flush(20) == 0
    finally:
        client.shutdown(5)
        loop.close()
    assert task.done() is False  # its loop is gone: it can never finish
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # (asyncio would complain at exit)
    task.get_coro().close()
    assert sorted(set(api.message_ids())) == ["after", "before"]


def test_a_cancelled_ashutdown_leaves_the_client_closed_and_shutdown_finishes(api: ApiProcess) -> None:
    api.configure(replies=[{"action": "hang", "delay": 1.0}])

    async def main() -> tuple[bool, int]:
        client = Client(WRITE_KEY, host=api.url, timeout=0.5)
        for i in range(20):
            client.track("u", "e", {"i": i})
        task = asyncio.ensure_future(client.ashutdown())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        accepted, _ = client.track("u", "after")
        return accepted, await client.ashutdown(timeout=20)

    accepted, left = asyncio.run(main())
    assert accepted is False  # shutdown had begun: the client refuses new events
    assert left == 0
    assert len(set(api.message_ids())) == 20


def test_many_tasks_flushing_at_once(api: ApiProcess) -> None:
    async def main() -> list[int]:
        client = Client(WRITE_KEY, host=api.url, thread=2)

        async def task(n: int) -> int:
            for i in range(50):
                client.track(f"u{n}", "e", {"i": i})
                await asyncio.sleep(0)
            return await client.aflush(timeout=30)

        results = await asyncio.gather(*(task(n) for n in range(20)))
        results.append(await client.ashutdown(timeout=30))
        return results

    assert asyncio.run(main()) == [0] * 21
    assert len(set(api.message_ids())) == 1000


def test_aflush_restarts_consumers_stopped_by_join(api: ApiProcess) -> None:
    async def main() -> int:
        client = Client(WRITE_KEY, host=api.url)
        client.join()
        client.track("u", "after join")
        left = await client.aflush(timeout=10)
        await client.ashutdown()
        return left

    assert asyncio.run(main()) == 0
    assert len(api.message_ids()) == 1


@pytest.mark.parametrize("options", [{"send": False}, {"sync_mode": True}])
def test_aflush_and_ashutdown_without_consumers(options: dict[str, Any], api: ApiProcess) -> None:
    async def main() -> tuple[int, int, int]:
        client = Client(WRITE_KEY, host=api.url, **options)
        client.track("u", "e")
        first = await client.aflush()
        shut = await client.ashutdown()
        return first, shut, await client.ashutdown()

    assert asyncio.run(main()) == (0, 0, 0)


def test_ashutdown_twice_and_after_shutdown(api: ApiProcess) -> None:
    async def main() -> list[int]:
        client = Client(WRITE_KEY, host=api.url)
        client.track("u", "e")
        results = [await client.ashutdown(), await client.ashutdown()]
        other = Client(WRITE_KEY, host=api.url)
        other.track("u", "e2")
        results += [other.shutdown(5), await other.ashutdown(), await other.aflush()]
        return results

    assert asyncio.run(main()) == [0, 0, 0, 0, 0]
    assert len(api.message_ids()) == 2


@pytest.mark.parametrize("call", ["aflush", "ashutdown"])
@pytest.mark.parametrize("bad", [-1, float("nan"), "1"])
def test_bad_timeouts_are_misuse(call: str, bad: Any, api: ApiProcess) -> None:
    client = Client(WRITE_KEY, host=api.url)
    method: Callable[..., Any] = getattr(client, call)
    try:
        with pytest.raises(ArgumentError, match="timeout"):
            asyncio.run(method(timeout=bad))
    finally:
        client.shutdown(5)


def test_module_level_aflush_and_ashutdown(api: ApiProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analytics, "default_client", None)
    monkeypatch.setattr(analytics, "write_key", None)

    async def main() -> tuple[int, int, int, int, bool]:
        nothing = await analytics.aflush()  # no client and no write key: nothing can have been sent
        monkeypatch.setattr(analytics, "write_key", WRITE_KEY)
        monkeypatch.setattr(analytics, "host", api.url)
        monkeypatch.setattr(analytics, "upload_interval", 30)
        for i in range(30):
            analytics.track("u", "module level", {"i": i})
        first = await analytics.aflush(timeout=10)
        delivered = analytics.stats()["delivered"]
        left = await analytics.ashutdown(timeout=10)
        return nothing, first, delivered, left, analytics.default_client is None

    try:
        assert asyncio.run(main()) == (0, 0, 30, 0, True)
    finally:
        analytics.shutdown(5)
    assert len(set(api.message_ids())) == 30


def test_aflush_and_ashutdown_with_the_spool(api: ApiProcess, tmp_path: Path) -> None:
    """With storage=, settling takes several steps: the wait runs in the executor, a 0.25 s slice at a time."""
    api.configure(replies=[{"action": "hang", "delay": 1.0}])

    async def main() -> tuple[int, int, int]:
        client = Client(WRITE_KEY, host=api.url, timeout=0.5, storage=str(tmp_path / "spool"))
        for i in range(50):
            client.track("u", "spooled", {"i": i})
        short = await client.aflush(timeout=0.3)  # the first request hangs: not yet
        task = asyncio.ensure_future(client.aflush())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        left = await client.aflush(timeout=20)
        shut = await client.ashutdown(timeout=10)
        return short, left, shut

    short, left, shut = asyncio.run(main())
    assert short == 50 and (left, shut) == (0, 0)
    assert len(set(api.message_ids())) == 50
