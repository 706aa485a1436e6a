"""Shared fixtures: a real local Tracking API and clients that are always shut down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from segment.analytics import Client
from segment.analytics.testing import MockTrackingAPI

from ._net import Servers

WRITE_KEY = "test-write-key-9f8e7d"


class ErrorLog:
    """Collects ``on_error`` / ``on_success`` calls from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors: list[tuple[BaseException, list[dict[str, Any]]]] = []
        self.successes: list[list[dict[str, Any]]] = []

    def on_error(self, exc: BaseException, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.errors.append((exc, events))

    def on_success(self, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.successes.append(events)

    def dropped_ids(self) -> list[str]:
        with self.lock:
            return [event["messageId"] for _, events in self.errors for event in events]

    def reasons(self) -> list[str]:
        with self.lock:
            return [getattr(exc, "reason", "?") for exc, _ in self.errors]


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 must not be routed through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def serve() -> Iterator[Servers]:
    """Raw local servers (tests/_net.py), all closed after the test."""
    servers = Servers()
    yield servers
    servers.close()


@pytest.fixture
def api() -> Iterator[MockTrackingAPI]:
    with MockTrackingAPI() as server:
        yield server


@pytest.fixture
def errors() -> ErrorLog:
    return ErrorLog()


@pytest.fixture
def make_client(api: MockTrackingAPI, errors: ErrorLog) -> Iterator[Callable[..., Client]]:
    """Build clients pointed at the mock API, with on_error/on_success recorded; shut down after the test."""
    clients: list[Client] = []

    def factory(**options: Any) -> Client:
        options.setdefault("host", api.url)
        options.setdefault("on_error", errors.on_error)
        options.setdefault("on_success", errors.on_success)
        client = Client(options.pop("write_key", WRITE_KEY), **options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.shutdown(timeout=2)
