"""Segment analytics for Python: ``import segment.analytics as analytics``.

Set ``analytics.write_key`` (and any other setting below), then call
``analytics.track(...)`` and friends. The default :class:`Client`,
``analytics.default_client``, is created from these settings by the first
module-level call (once, even when threads or greenlets race to make it).
``flush()``, ``join()`` and ``shutdown()`` (and ``aflush()``/``ashutdown()``
for asyncio) act on it; ``shutdown()`` also discards it, so the next call
starts a new client from the settings as they are then. ``flush_after``
flushes after each invocation of a serverless handler.
"""

from __future__ import annotations

import inspect
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from segment.analytics import process_hooks
from segment.analytics.client import Client
from segment.analytics.errors import APIError, ArgumentError, DeliveryError
from segment.analytics.serverless import flush_after
from segment.analytics.version import VERSION

if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    P = ParamSpec("P")
R = TypeVar("R")

__version__ = VERSION
__all__ = [
    "APIError",
    "ArgumentError",
    "Client",
    "DeliveryError",
    "aflush",
    "alias",
    "ashutdown",
    "flush",
    "flush_after",
    "group",
    "identify",
    "join",
    "page",
    "screen",
    "shutdown",
    "stats",
    "track",
]

# Settings read when the default client is created.
write_key = Client.DefaultConfig.write_key
host = Client.DefaultConfig.host
on_error = Client.DefaultConfig.on_error
on_success = Client.DefaultConfig.on_success
debug = Client.DefaultConfig.debug
log_handler = Client.DefaultConfig.log_handler
send = Client.DefaultConfig.send
sync_mode = Client.DefaultConfig.sync_mode
max_queue_size = Client.DefaultConfig.max_queue_size
max_queue_bytes = Client.DefaultConfig.max_queue_bytes
on_full = Client.DefaultConfig.on_full
block_timeout = Client.DefaultConfig.block_timeout
gzip = Client.DefaultConfig.gzip
timeout = Client.DefaultConfig.timeout
max_retries = Client.DefaultConfig.max_retries
max_total_backoff_duration = Client.DefaultConfig.max_total_backoff_duration
max_rate_limit_duration = Client.DefaultConfig.max_rate_limit_duration
proxies = Client.DefaultConfig.proxies
thread = Client.DefaultConfig.thread
upload_size = Client.DefaultConfig.upload_size
upload_interval = Client.DefaultConfig.upload_interval
exit_timeout = Client.DefaultConfig.exit_timeout

# Durable spool (README, "Durable spool").
storage = Client.DefaultConfig.storage
storage_max_bytes = Client.DefaultConfig.storage_max_bytes
storage_max_age = Client.DefaultConfig.storage_max_age
storage_sync_interval = Client.DefaultConfig.storage_sync_interval

# OAuth settings.
oauth_client_id = Client.DefaultConfig.oauth_client_id
oauth_client_key = Client.DefaultConfig.oauth_client_key
oauth_key_id = Client.DefaultConfig.oauth_key_id
oauth_auth_server = Client.DefaultConfig.oauth_auth_server
oauth_scope = Client.DefaultConfig.oauth_scope

#: The settings above, passed to the default client by name when it is created.
_SETTINGS = tuple(name for name in Client.DefaultConfig.__dict__ if not name.startswith("_"))

default_client: Optional[Client] = None
_default_lock = threading.Lock()


def _reset_lock_after_fork() -> None:
    global _default_lock
    _default_lock = threading.Lock()


process_hooks.on_fork_child(_reset_lock_after_fork)


def _client() -> Client:
    """The default client, created once from the module settings on first use."""
    global default_client
    client = default_client
    if client is not None:
        return client
    if process_hooks.watch:
        process_hooks.catch_up()  # in a fresh fork: a new _default_lock first
    with _default_lock:
        if default_client is not None:
            return default_client
        settings = globals()
        default_client = Client(**{name: settings[name] for name in _SETTINGS})
        return default_client


def _on_default_client(method: Callable[Concatenate[Client, P], R]) -> Callable[P, R]:
    """``method`` called on the default client (created on first use), with the same arguments."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(_client(), *args, **kwargs)

    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = f"{method.__doc__} (on the default client: see :meth:`Client.{method.__name__}`)"
    parameters = list(inspect.signature(method).parameters.values())[1:]
    call.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return call


track = _on_default_client(Client.track)
identify = _on_default_client(Client.identify)
group = _on_default_client(Client.group)
alias = _on_default_client(Client.alias)
page = _on_default_client(Client.page)
screen = _on_default_client(Client.screen)


def _existing_or_configured() -> Optional[Client]:
    """The default client; created when a write key is set, else ``None`` (nothing can have been sent)."""
    if default_client is None and not write_key:
        return None
    return _client()


def flush(timeout: Optional[float] = None) -> int:
    """Flush the default client; returns the events still undelivered (see :meth:`Client.flush`)."""
    client = _existing_or_configured()
    return client.flush(timeout) if client is not None else 0


def join(timeout: Optional[float] = None) -> None:
    """Stop the default client's consumer threads (see :meth:`Client.join`)."""
    client = _existing_or_configured()
    if client is not None:
        client.join(timeout)


def shutdown(timeout: Optional[float] = None) -> int:
    """Flush and close the default client, then discard it; returns the events left undelivered."""
    global default_client
    client = _existing_or_configured()
    with _default_lock:
        if default_client is client:
            default_client = None
    return client.shutdown(timeout) if client is not None else 0


async def aflush(timeout: Optional[float] = None) -> int:
    """Flush the default client without blocking the event loop (see :meth:`Client.aflush`)."""
    client = _existing_or_configured()
    return await client.aflush(timeout) if client is not None else 0


async def ashutdown(timeout: Optional[float] = None) -> int:
    """:func:`shutdown` without blocking the event loop (see :meth:`Client.ashutdown`)."""
    global default_client
    client = _existing_or_configured()
    with _default_lock:
        if default_client is client:
            default_client = None
    return await client.ashutdown(timeout) if client is not None else 0


def stats() -> dict[str, Any]:
    """The default client's delivery counters (see :meth:`Client.stats`)."""
    return _client().stats()
