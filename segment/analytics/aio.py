"""asyncio: ``await client.aflush()`` and ``await client.ashutdown()`` without blocking the event loop.

They return what :meth:`Client.flush` and :meth:`Client.shutdown` return (the events left undelivered)
and keep the same ``timeout``. No thread waits on the loop's behalf: the buffer calls back from the
consumer thread that settles the last batch before the flush mark, and the callback wakes the awaiting
task with ``loop.call_soon_threadsafe`` (one wake-up per await, whatever the number of batches). The task
also wakes every 0.25 s to see whether the consumers are still alive, as the blocking ``flush`` does.
Cancelling the awaiting task removes the callback: nothing is left waiting. With the spool
(``Client(storage=...)``), whose settling takes several steps (commit, read, send), the wait runs in the
loop's default executor in slices of at most 0.25 s: a cancelled await leaves at most one slice to
finish. A cancelled ``aflush``
leaves the events queued (the consumers deliver them as usual); a cancelled ``ashutdown`` leaves the
client closed to new events with the consumers delivering what it had accepted: calling ``shutdown``
or ``ashutdown`` again finishes the job.

``track()`` and the other calls need nothing of this: from a coroutine they are a queue put.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Optional

from segment.analytics.buffer import EventBuffer
from segment.analytics.pipeline import Pipeline

__all__ = ["aflush", "ashutdown"]

RECHECK = 0.25  # seconds between checks that the consumers are alive while waiting
JOIN_POLL = 0.002  # seconds between checks that stopped consumers have exited


async def aflush(pipeline: Pipeline, timeout: Optional[float]) -> int:
    """Send what is queued now and wait, on the loop, until it is delivered or reported; the events left."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    mark = pipeline.start_flush()
    if mark is not None:
        await _settled(pipeline, mark, deadline)
    return pipeline.pending()


async def ashutdown(pipeline: Pipeline, timeout: Optional[float]) -> int:
    """Refuse new events, deliver what was accepted and stop the consumers, on the loop; the events left."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    mark = pipeline.start_shutdown()
    if mark is not None:
        await _settled(pipeline, mark, deadline)
        pipeline.join(0.0)  # tell the consumers (and the spool's writer) to stop; idle once the mark settled
        while _busy(pipeline) and _left(loop, deadline) > 0:
            await asyncio.sleep(min(JOIN_POLL, _left(loop, deadline)))
    return pipeline.finish_shutdown(0.0)


async def _settled(pipeline: Pipeline, mark: int, deadline: Optional[float]) -> bool:
    """Wait until the events before ``mark`` are settled; ``False`` at the deadline or if the consumers died."""
    source = pipeline.source
    if not isinstance(source, EventBuffer):
        return await _settled_in_slices(pipeline, mark, deadline)
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake() -> None:  # any thread
        try:
            loop.call_soon_threadsafe(_resolve, woken)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    cancel = source.when_settled(mark, wake)
    try:
        while not woken.done():
            if not _alive(pipeline):
                return False
            wait = min(RECHECK, _left(loop, deadline))
            if wait <= 0:
                return False
            await asyncio.wait((woken,), timeout=wait)
        return True
    finally:
        cancel()


async def _settled_in_slices(pipeline: Pipeline, mark: int, deadline: Optional[float]) -> bool:
    """The spool's wait, run in the default executor a slice of at most ``RECHECK`` seconds at a time."""
    loop = asyncio.get_running_loop()
    while True:
        wait = min(RECHECK, _left(loop, deadline))
        if wait <= 0:
            return False
        alive = functools.partial(_alive, pipeline)
        if await loop.run_in_executor(None, pipeline.source.wait_settled, mark, wait, alive):
            return True
        if not alive():
            return False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _alive(pipeline: Pipeline) -> bool:
    return pipeline.workers.alive()


def _busy(pipeline: Pipeline) -> bool:
    spool = pipeline.spool
    return _alive(pipeline) or (spool is not None and spool.writer.alive())


def _left(loop: asyncio.AbstractEventLoop, deadline: Optional[float]) -> float:
    return float("inf") if deadline is None else deadline - loop.time()
