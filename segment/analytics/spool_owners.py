"""Who owns which rows of a spool directory, and how a peer tells that an owner has died.

Every process that writes to a spool is an *owner*. For its whole lifetime it
holds an exclusive ``flock`` on its own lock file, ``PATH/owners/<key>.lock``.
The kernel releases that lock when the process ends, however it ends (normal
exit, ``os._exit``, SIGKILL, the OOM killer), so a peer that manages to take
the lock knows the owner is dead and may adopt its rows. The lock file is
created under a temporary name, locked, then renamed into place, so a visible
``<key>.lock`` is never unlocked while its owner lives.

``flock`` locks belong to the open file description, which a forked child
shares with its parent: the child must close its copy of the descriptor (never
unlock it, that would release the parent's lock) or the parent would look
alive after its death for as long as the child lives. :func:`close_inherited`
does that, and :class:`OwnerLock` registers every live lock so that an
``os.fork`` closes the copies in the child automatically.

Liveness by ``flock`` holds on local filesystems; a spool on a network
filesystem is not supported (SQLite's WAL mode does not support it either).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import time
import weakref
from typing import Optional

OWNERS_DIR = "owners"
_SUFFIX = ".lock"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 60.0
_KEY = re.compile(r"[0-9a-f]{16}")

_live_locks: weakref.WeakSet[OwnerLock] = weakref.WeakSet()
_short_locks: set[int] = set()  # descriptors holding a brief lock (open.lock) right now


def _open_flags() -> int:
    return os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class OwnerLock:
    """This process's claim on a spool directory: a lock file held exclusively while the owner lives."""

    def __init__(self, directory: str) -> None:
        """Create, lock and publish ``directory/owners/<key>.lock`` (raises ``OSError`` on failure)."""
        self.owners_dir = os.path.join(directory, OWNERS_DIR)
        self.pid = os.getpid()
        self.key = secrets.token_hex(8)
        self.fd: Optional[int] = None
        self._publish()
        _live_locks.add(self)

    @property
    def path(self) -> str:
        """Where the lock file is published."""
        return os.path.join(self.owners_dir, self.key + _SUFFIX)

    def _publish(self) -> None:
        tmp = os.path.join(self.owners_dir, f"{_TMP_PREFIX}{self.key}-{secrets.token_hex(4)}")
        fd = os.open(tmp, _open_flags() | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, self.path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.fd = fd

    def intact(self) -> bool:
        """True when the published lock file is still the one this owner holds."""
        return self.fd is not None and _is_published(self.path, self.fd)

    def republish(self) -> None:
        """Publish a new lock file under the same key (someone removed ours); the old one is dropped."""
        old = self.fd
        self._publish()
        if old is not None:
            os.close(old)

    def release(self) -> None:
        """Give up ownership for good: unlink the lock file (while still holding it), then unlock."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        _unlink_if_published(self.path, fd)
        os.close(fd)  # the kernel drops the flock with the last descriptor
        _live_locks.discard(self)

    def close_inherited(self) -> None:
        """In a forked child: close the inherited descriptor without unlocking (the parent keeps its lock)."""
        if self.pid == os.getpid():
            return
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        _live_locks.discard(self)


def _is_published(path: str, fd: int) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except OSError:
        return False


def _unlink_if_published(path: str, fd: int) -> None:
    if _is_published(path, fd):
        try:
            os.unlink(path)
        except OSError:
            pass


def hold_short_lock(fd: int) -> None:
    """Note that ``fd`` holds a brief lock, so that a fork meanwhile closes the child's copy."""
    _short_locks.add(fd)


def drop_short_lock(fd: int) -> None:
    """``fd`` is about to be closed by its holder."""
    _short_locks.discard(fd)


def close_inherited() -> None:
    """Close, in a forked child, every lock descriptor inherited from the parent (an ``os.fork`` hook)."""
    for lock in list(_live_locks):
        lock.close_inherited()
    for fd in list(_short_locks):  # another thread was opening a store when the fork happened
        try:
            os.close(fd)
        except OSError:
            pass
    _short_locks.clear()


if hasattr(os, "register_at_fork"):
    # Needed even when the child never touches the spool: an inherited descriptor keeps the parent's
    # lock alive after the parent dies, for as long as the child lives, so its rows would never be adopted.
    os.register_at_fork(after_in_child=close_inherited)


def lock_path(directory: str, key: str) -> str:
    """The lock file of owner ``key``."""
    return os.path.join(directory, OWNERS_DIR, key + _SUFFIX)


def _valid(key: object) -> bool:
    """Keys come from the database: never build a path from one that is not 16 hex digits."""
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def published_keys(directory: str) -> list[str]:
    """Keys of every published lock file (live or dead owners)."""
    try:
        names = os.listdir(os.path.join(directory, OWNERS_DIR))
    except OSError:
        return []
    return [name[: -len(_SUFFIX)] for name in names if name.endswith(_SUFFIX) and not name.startswith(".")]


def lock_if_dead(directory: str, key: str) -> tuple[bool, Optional[int]]:
    """Probe owner ``key``: ``(False, None)`` if alive; ``(True, fd)`` if dead, ``fd`` holding its lock.

    ``fd`` is ``None`` when the lock file does not exist at all (an owner whose file is gone is dead:
    files are published before their owner writes anything and removed only once it is gone).
    A malformed key is a dead owner without a file.
    """
    if not _valid(key):
        return True, None
    return _lock_if_dead(lock_path(directory, key))


def _lock_if_dead(path: str) -> tuple[bool, Optional[int]]:
    try:
        fd = os.open(path, _open_flags())
    except FileNotFoundError:
        return True, None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP):
            return False, None  # cannot tell: assume alive, never adopt on a guess
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False, None
    return True, fd


def is_alive(directory: str, key: str) -> bool:
    """Read-only liveness probe (a shared lock, released at once); used by ``spool status``."""
    if not _valid(key):
        return False
    try:
        fd = os.open(lock_path(directory, key), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def remove_dead_file(directory: str, key: str, fd: Optional[int]) -> None:
    """Unlink a dead owner's lock file (``fd`` holds its lock) and close ``fd``."""
    if fd is not None:
        if _valid(key):
            _unlink_if_published(lock_path(directory, key), fd)
        os.close(fd)


def sweep_stale_files(directory: str, known_keys: set[str]) -> None:
    """Remove lock files of dead owners that own nothing, and temporary files left by a crash."""
    owners_dir = os.path.join(directory, OWNERS_DIR)
    try:
        names = os.listdir(owners_dir)
    except OSError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(owners_dir, name)
        if name.startswith(_TMP_PREFIX):
            try:
                if now - os.lstat(path).st_mtime > _STALE_TMP_SECONDS:
                    dead, fd = _lock_if_dead(path)
                    if fd is not None:
                        _unlink_if_published(path, fd)
                        os.close(fd)
            except OSError:
                pass
        elif name.endswith(_SUFFIX) and name[: -len(_SUFFIX)] not in known_keys:
            key = name[: -len(_SUFFIX)]
            dead, fd = lock_if_dead(directory, key)
            if dead:
                remove_dead_file(directory, key, fd)
