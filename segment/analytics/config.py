"""A client's options, checked once and frozen (README "Configuration" lists them)."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from segment.analytics.buffer import DEFAULT_MAX_QUEUE_BYTES
from segment.analytics.errors import ArgumentError
from segment.analytics.retry import (
    DEFAULT_MAX_RATE_LIMIT_DURATION,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_TOTAL_BACKOFF_DURATION,
    RetryPolicy,
)
from segment.analytics.wire import MAX_MSG_SIZE

__all__ = ["ON_FULL", "Config", "DefaultConfig", "ErrorCallback", "Message", "SuccessCallback", "check_timeout"]

Message = dict[str, Any]
ErrorCallback = Callable[[BaseException, list[Message]], Any]
SuccessCallback = Callable[[list[Message]], Any]

#: What a call does when the queue is full (``on_full``).
ON_FULL = ("drop_new", "drop_oldest", "block")


class DefaultConfig:
    """Defaults of every option (the module-level settings read these too)."""

    write_key: Optional[str] = None
    host: Optional[str] = None
    on_error: Optional[ErrorCallback] = None
    on_success: Optional[SuccessCallback] = None
    debug = False
    log_handler: Optional[logging.Handler] = None
    send = True
    sync_mode = False
    max_queue_size = 10000
    max_queue_bytes = DEFAULT_MAX_QUEUE_BYTES
    on_full = "drop_new"
    block_timeout: float = 5.0
    gzip = False
    timeout: float = 15
    max_retries = DEFAULT_MAX_RETRIES
    max_total_backoff_duration: float = DEFAULT_MAX_TOTAL_BACKOFF_DURATION
    max_rate_limit_duration: float = DEFAULT_MAX_RATE_LIMIT_DURATION
    proxies: Optional[dict[str, str]] = None
    thread = 1
    upload_interval: float = 0.5
    upload_size = 100
    exit_timeout: float = 5.0
    oauth_client_id: Optional[str] = None
    oauth_client_key: Optional[str] = None
    oauth_key_id: Optional[str] = None
    oauth_auth_server = "https://oauth2.segment.io"
    oauth_scope = "tracking_api:write"
    storage: Optional[str] = None
    storage_max_bytes = 256 * 1024 * 1024
    storage_max_age: float = 7 * 24 * 3600.0
    storage_sync_interval: float = 0.2


@dataclass(frozen=True, eq=False)
class Config:
    """Every option of one client, validated on construction (misuse raises :class:`ArgumentError`)."""

    write_key: str = field(repr=False)
    host: Optional[str] = DefaultConfig.host
    on_error: Optional[ErrorCallback] = DefaultConfig.on_error
    on_success: Optional[SuccessCallback] = DefaultConfig.on_success
    debug: bool = DefaultConfig.debug
    log_handler: Optional[logging.Handler] = DefaultConfig.log_handler
    send: bool = DefaultConfig.send
    sync_mode: bool = DefaultConfig.sync_mode
    max_queue_size: int = DefaultConfig.max_queue_size
    max_queue_bytes: int = DefaultConfig.max_queue_bytes
    on_full: str = DefaultConfig.on_full
    block_timeout: float = DefaultConfig.block_timeout
    gzip: bool = DefaultConfig.gzip
    timeout: float = DefaultConfig.timeout
    max_retries: int = DefaultConfig.max_retries
    max_total_backoff_duration: float = DefaultConfig.max_total_backoff_duration
    max_rate_limit_duration: float = DefaultConfig.max_rate_limit_duration
    proxies: Optional[Mapping[str, str]] = DefaultConfig.proxies
    thread: int = DefaultConfig.thread
    upload_interval: float = DefaultConfig.upload_interval
    upload_size: int = DefaultConfig.upload_size
    exit_timeout: float = DefaultConfig.exit_timeout
    oauth_client_id: Optional[str] = DefaultConfig.oauth_client_id
    oauth_client_key: Optional[str] = field(default=DefaultConfig.oauth_client_key, repr=False)
    oauth_key_id: Optional[str] = DefaultConfig.oauth_key_id
    oauth_auth_server: str = DefaultConfig.oauth_auth_server
    oauth_scope: str = DefaultConfig.oauth_scope
    storage: Optional[str] = DefaultConfig.storage
    storage_max_bytes: int = DefaultConfig.storage_max_bytes
    storage_max_age: float = DefaultConfig.storage_max_age
    storage_sync_interval: float = DefaultConfig.storage_sync_interval

    def __post_init__(self) -> None:
        if not isinstance(self.write_key, str) or not self.write_key:
            raise ArgumentError(
                "write_key", f"write_key must be a non-empty string, got {type(self.write_key).__name__}"
            )
        if self.host is not None and not isinstance(self.host, str):
            raise ArgumentError("host", f"host must be a URL string, got {type(self.host).__name__}")
        for name in ("max_queue_size", "thread", "upload_size"):
            _positive_int(name, getattr(self, name))
        for name in ("upload_interval", "exit_timeout", "block_timeout"):
            _non_negative(name, getattr(self, name))
        _positive_int("max_queue_bytes", self.max_queue_bytes)
        if self.max_queue_bytes < MAX_MSG_SIZE:
            message = f"max_queue_bytes must be at least {MAX_MSG_SIZE} (one event of the largest size), got"
            raise ArgumentError("max_queue_bytes", f"{message} {self.max_queue_bytes!r}")
        if not isinstance(self.on_full, str) or self.on_full not in ON_FULL:
            choices = ", ".join(repr(choice) for choice in ON_FULL)
            raise ArgumentError("on_full", f"on_full must be one of {choices}, got {self.on_full!r}")
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ArgumentError("timeout", f"timeout must be a positive number of seconds, got {timeout!r}")
        for name in ("on_error", "on_success"):
            callback = getattr(self, name)
            if callback and not callable(callback):
                raise ArgumentError(name, f"{name} must be callable, got {type(callback).__name__}")
        if self.proxies is not None:
            object.__setattr__(self, "proxies", dict(self.proxies))
        self._check_storage()
        self.policy()  # the budgets: None or negative raises ValueError

    def _check_storage(self) -> None:
        storage = self.storage
        if storage is not None:
            if not isinstance(storage, (str, os.PathLike)) or not os.fspath(storage):
                raise ArgumentError(
                    "storage", f"storage must be a directory path or None, got {type(storage).__name__}"
                )
            object.__setattr__(self, "storage", os.path.abspath(os.fspath(storage)))
        size = self.storage_max_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 << 20:
            raise ArgumentError("storage_max_bytes", f"storage_max_bytes must be a whole number >= 1 MiB, got {size!r}")
        for name in ("storage_max_age", "storage_sync_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ArgumentError(name, f"{name} must be a positive number of seconds, got {value!r}")

    @property
    def oauth(self) -> bool:
        """Whether OAuth client credentials are configured (all three given)."""
        return bool(self.oauth_client_id and self.oauth_client_key and self.oauth_key_id)

    def policy(self) -> RetryPolicy:
        """The retry policy these options describe."""
        try:
            return RetryPolicy(
                self.max_retries, self.max_total_backoff_duration, self.max_rate_limit_duration, self.oauth
            )
        except ValueError as exc:
            field = str(exc).split(" ", 1)[0]
            raise ArgumentError(field, str(exc)) from None


def check_timeout(value: Any, name: str = "timeout") -> Optional[float]:
    """A ``flush``/``join``/``shutdown`` timeout: ``None`` or infinity (wait for ever) or seconds >= 0.

    NaN, negative numbers and non-numbers are misuse (:class:`ArgumentError`).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ArgumentError(name, f"{name} must be None or a number of seconds >= 0, got {value!r}")
    return None if math.isinf(value) else float(value)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(name, f"{name} must be a positive whole number, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ArgumentError(name, f"{name} must be a non-negative number, got {value!r}")
