"""``flush_after``: serverless handlers deliver what each invocation tracked before the sandbox is frozen.

The first tests call decorated handlers in this process against the local Tracking API. The last ones
run a simulated AWS Lambda runtime in a real subprocess: after each invocation returns, the "sandbox" is
frozen (SIGSTOP) before the server is asked what it has, so only what was delivered before the handler
returned counts; the sandbox is finally recycled with SIGKILL (no exit hook runs).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

import segment.analytics as analytics
from segment.analytics import ArgumentError, Client, flush_after
from segment.analytics.serverless import DEFAULT_TIMEOUT, FlushAfter
from segment.analytics.testing import MockTrackingAPI, Reply

from ._runtime_helpers import child_env
from .conftest import WRITE_KEY


class LambdaContext:
    """What AWS Lambda passes as ``context``: the time left before the invocation is cut off."""

    def __init__(self, millis: float) -> None:
        self.deadline = time.monotonic() + millis / 1000.0

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def ids(api: MockTrackingAPI) -> set[str]:
    return {str(event["messageId"]) for event in api.events()}


def test_a_decorated_handler_returns_its_value_and_its_events_are_delivered(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    client = make_client(upload_interval=30)  # nothing would leave before a flush
    flusher = flush_after(client=client, timeout=10)

    @flusher
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        """The handler's docstring."""
        for i in range(event["n"]):
            client.track("u", "invoked", {"i": i}, message_id=f"a-{i}")
        return {"status": 200}

    assert handler({"n": 30}, None) == {"status": 200}
    assert ids(api) == {f"a-{i}" for i in range(30)}
    assert flusher.left == 0
    assert handler.__name__ == "handler" and handler.__doc__ == "The handler's docstring."


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_a_handler_that_raises_is_flushed_and_its_exception_is_untouched(
    error: BaseException, make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    client = make_client(upload_interval=30)

    @flush_after(client=client)
    def handler(event: Any, context: Any) -> None:
        client.track("u", "before the failure", message_id="r-1")
        raise error

    with pytest.raises(type(error)) as raised:
        handler({}, LambdaContext(3000))
    assert raised.value is error
    assert ids(api) == {"r-1"}


def test_the_bare_decorator_flushes_the_default_client(api: MockTrackingAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analytics, "default_client", None)
    monkeypatch.setattr(analytics, "write_key", WRITE_KEY)
    monkeypatch.setattr(analytics, "host", api.url)
    monkeypatch.setattr(analytics, "upload_interval", 30)

    @analytics.flush_after
    def handler(event: Any, context: Any) -> str:
        analytics.track("u", "default client", message_id=f"d-{event}")
        return "ok"

    try:
        assert [handler(n, LambdaContext(3000)) for n in range(3)] == ["ok"] * 3
        assert ids(api) == {"d-0", "d-1", "d-2"}
        # shut down and discarded: the next invocation's flush finds the new default client
        analytics.shutdown(5)
        assert handler(3, LambdaContext(3000)) == "ok"
        assert ids(api) == {"d-0", "d-1", "d-2", "d-3"}
    finally:
        analytics.shutdown(5)


def test_what_cannot_be_delivered_in_the_time_left_is_warned_about_with_its_count(
    make_client: Callable[..., Client], api: MockTrackingAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.set_default(Reply(action="hang", delay=5))
    client = make_client(upload_interval=30, timeout=10)
    flusher = flush_after(client=client, margin=0.5)

    @flusher
    def handler(event: Any, context: Any) -> None:
        for i in range(12):
            client.track("u", "stuck", {"i": i})

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="segment"):
        handler({}, LambdaContext(1200))  # 1.2 s left: the flush may take 0.7 s
    took = time.monotonic() - started
    assert took < 3.0  # hang guard: the flush stopped within the time Lambda left
    client.shutdown(0)
    assert flusher.left == 12
    warnings = [r.getMessage() for r in caplog.records if "flush_after" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("segment: 12 event(s) not delivered within 0.")
    assert WRITE_KEY not in caplog.text


def test_async_handlers_await_aflush(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    client = make_client(upload_interval=30)
    flusher = flush_after(client=client)

    @flusher
    async def handler(event: Any, context: Any) -> int:
        for i in range(40):
            client.track("u", "async", {"i": i}, message_id=f"as-{event}-{i}")
            await asyncio.sleep(0)
        if event == 1:
            raise ValueError("the second invocation fails")
        return event

    assert inspect.iscoroutinefunction(handler)  # frameworks that look before they await still see a coroutine
    assert asyncio.run(handler(0, LambdaContext(3000))) == 0
    with pytest.raises(ValueError):
        asyncio.run(handler(1, None))
    assert ids(api) == {f"as-{n}-{i}" for n in (0, 1) for i in range(40)}
    assert flusher.left == 0


def test_as_a_context_manager(make_client: Callable[..., Client], api: MockTrackingAPI) -> None:
    client = make_client(upload_interval=30)
    with flush_after(client=client, timeout=10) as flushed:
        client.track("u", "in a with block", message_id="cm-1")
    assert flushed.left == 0 and ids(api) == {"cm-1"}

    async def main() -> Optional[int]:
        async with flush_after(client=client, context=LambdaContext(3000)) as flushed:
            client.track("u", "in an async with block", message_id="cm-2")
        return flushed.left

    assert asyncio.run(main()) == 0 and ids(api) == {"cm-1", "cm-2"}

    with pytest.raises(KeyError):
        with flush_after(client=client):
            client.track("u", "before a KeyError", message_id="cm-3")
            raise KeyError("x")
    assert ids(api) == {"cm-1", "cm-2", "cm-3"}


class Hostile:
    """An argument whose attribute lookup raises (a framework proxy used outside its context)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("working outside of request context")


class BrokenContext:
    def get_remaining_time_in_millis(self) -> Any:
        raise OSError("no deadline")


class WeirdContext:
    def get_remaining_time_in_millis(self) -> Any:
        return "soon"


def test_the_budget() -> None:
    default = FlushAfter(DEFAULT_TIMEOUT, 0.5, None, None)
    assert default.budget(None) == DEFAULT_TIMEOUT == 5.0
    assert default.budget(LambdaContext(900_000)) == 5.0  # a 15-minute Lambda still flushes for 5 s at most
    assert 1.3 <= default.budget(LambdaContext(2000)) <= 1.5  # 2 s left less the 0.5 s margin
    assert default.budget(LambdaContext(300)) == 0.0  # less than the margin left: send, do not wait
    assert default.budget(BrokenContext()) == 5.0
    assert default.budget(WeirdContext()) == 5.0
    uncapped = FlushAfter(None, 0.25, None, None)
    assert uncapped.budget(None) is None
    assert 59.0 <= (uncapped.budget(LambdaContext(60_000)) or 0) <= 59.75
    assert FlushAfter(2.0, 0, None, None).budget(LambdaContext(10_000)) == 2.0


def test_the_context_is_found_wherever_the_handler_receives_it(
    make_client: Callable[..., Client], api: MockTrackingAPI
) -> None:
    api.set_default(Reply(action="hang", delay=5))
    client = make_client(upload_interval=30, timeout=10)
    flusher = flush_after(client=client, timeout=30)

    @flusher
    def handler(*args: Any, **kwargs: Any) -> None:
        client.track("u", "e")

    for args, kwargs in [
        ((Hostile(), LambdaContext(600)), {}),  # a hostile argument is skipped
        ((), {"event": {}, "context": LambdaContext(600)}),
        ((object(), object(), LambdaContext(600)), {}),
    ]:
        started = time.monotonic()
        handler(*args, **kwargs)
        assert time.monotonic() - started < 2.0  # the Lambda deadline, not the 30 s timeout (hang guard)
    assert flusher.left == 3
    client.shutdown(0)


@pytest.mark.parametrize(
    "options", [{"margin": -1}, {"margin": float("nan")}, {"margin": "1"}, {"timeout": -1}, {"timeout": "5"}]
)
def test_bad_options_are_misuse(options: dict[str, Any]) -> None:
    with pytest.raises(ArgumentError):
        flush_after(**options)


def test_a_timeout_given_as_the_handler_is_misuse() -> None:
    with pytest.raises(ArgumentError, match="keyword"):
        flush_after(5)  # type: ignore[call-overload]


# -- a simulated Lambda runtime: invoke, freeze, look, thaw; recycle at the end -----------------------

RUNTIME = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import segment.analytics as analytics
    from segment.analytics import Client

    analytics.write_key = {key!r}
    analytics.host = {host!r}
    analytics.upload_interval = 30  # nothing leaves between invocations unless flush_after sends it
    analytics.timeout = 10

    class Context:
        def __init__(self, millis):
            self.deadline = time.monotonic() + millis / 1000.0

        def get_remaining_time_in_millis(self):
            return int((self.deadline - time.monotonic()) * 1000)

    @analytics.flush_after
    def handler(event, context):
        for i in range(event["n"]):
            analytics.track("user", "Invoked", {{"i": i}}, message_id="%s-%d" % (event["id"], i))
        if event.get("raise"):
            raise RuntimeError("the handler failed")
        return "ok"

    client = Client({key!r}, host={host!r}, upload_interval=30, timeout=10)
    flusher = analytics.flush_after(client=client)

    @flusher
    async def async_handler(event, context):
        for i in range(event["n"]):
            client.track("user", "Invoked", {{"i": i}}, message_id="%s-%d" % (event["id"], i))
            await asyncio.sleep(0)
        if event.get("raise"):
            raise RuntimeError("the handler failed")
        return "ok"

    for line in sys.stdin:  # the runtime's next-invocation loop: one event per line
        event = json.loads(line)
        context = Context(event["budget_ms"])
        try:
            if event.get("async"):
                result = asyncio.run(async_handler(event, context))
            else:
                result = handler(event, context)
        except RuntimeError as exc:
            result = str(exc)
        print(json.dumps({{"id": event["id"], "result": result}}), flush=True)
    """
)


def run_sandbox(tmp_path: Path, api: MockTrackingAPI, invocations: list[dict[str, Any]]) -> tuple[list[Any], str]:
    """Invoke each event, freezing the sandbox after each one returns; check what the API has while frozen."""
    script = tmp_path / "runtime.py"
    script.write_text(RUNTIME.format(key=WRITE_KEY, host=api.url))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    seen_while_frozen: list[Any] = []
    try:
        for event in invocations:
            proc.stdin.write(json.dumps(event) + "\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            os.kill(proc.pid, signal.SIGSTOP)  # the invocation returned: the platform freezes the sandbox
            try:
                seen_while_frozen.append((reply, ids(api)))
            finally:
                os.kill(proc.pid, signal.SIGCONT)
    finally:
        proc.kill()  # the sandbox is recycled: no exit hook runs
        proc.wait(30)
        stderr = proc.stderr.read()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    return seen_while_frozen, stderr


def test_a_lambda_sandbox_frozen_after_each_invocation_loses_nothing(tmp_path: Path) -> None:
    invocations = [
        {"id": f"inv{k}", "n": 25, "budget_ms": 3000, "raise": k % 4 == 3, "async": k % 3 == 2} for k in range(12)
    ]
    with MockTrackingAPI() as api:
        seen, stderr = run_sandbox(tmp_path, api, invocations)
        final = ids(api)
    expected: set[str] = set()
    for event, (reply, delivered) in zip(invocations, seen):
        expected |= {f"{event['id']}-{i}" for i in range(25)}
        assert reply["result"] == ("the handler failed" if event["raise"] else "ok")
        assert delivered == expected, f"after {event['id']}: missing {sorted(expected - delivered)[:5]}"
    assert final == expected
    assert "not delivered" not in stderr, stderr


def test_a_lambda_sandbox_whose_api_hangs_returns_in_time_and_says_what_it_left(tmp_path: Path) -> None:
    with MockTrackingAPI() as api:
        api.set_default(Reply(action="hang", delay=10))
        started = time.monotonic()
        seen, stderr = run_sandbox(tmp_path, api, [{"id": "stuck", "n": 7, "budget_ms": 1200}])
        took = time.monotonic() - started
    assert seen[0][0]["result"] == "ok" and seen[0][1] == set()
    assert took < 8.0  # hang guard: the invocation ended within Lambda's time, not the request timeout
    assert "segment: 7 event(s) not delivered within 0." in stderr, stderr
    assert WRITE_KEY not in stderr
