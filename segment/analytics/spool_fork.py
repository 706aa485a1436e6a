"""Forking while a spool operation is in progress (delivery.md §7).

SQLite keeps a process's file-lock state in memory shared by all its connections: a child forked in
the middle of a transaction inherits locks that no thread of it will ever release, and its own
connection then finds the database "locked" for good. So a fork waits, briefly, for every open
store's operation in progress to end.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, Protocol

__all__ = ["FORK_WAIT", "watch"]

#: How long a fork waits for a store's operation in progress to end (a database held by a busy peer).
FORK_WAIT = 2.0


class Store(Protocol):
    """What a fork waits on: the lock a store holds during each of its operations."""

    def fork_lock(self) -> threading.Lock:
        """The store's lock."""
        ...


_stores: weakref.WeakSet[Any] = weakref.WeakSet()
_held: list[threading.Lock] = []


def watch(store: Store) -> None:
    """Make forks wait for ``store``'s operation in progress (held weakly)."""
    _stores.add(store)


def _before_fork() -> None:
    deadline = time.monotonic() + FORK_WAIT
    for store in list(_stores):
        lock = store.fork_lock()
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _held.append(lock)


def _after_in_parent() -> None:
    while _held:
        _held.pop().release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_in_parent)
    os.register_at_fork(after_in_child=_held.clear)  # the child's stores make new locks
