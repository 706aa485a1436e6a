"""The spool's SQLite file: schema, settings, health checks, setting a damaged file aside, and read-only access.

Layout of a spool directory (the library owns everything in it)::

    PATH/spool.db            the store (plus spool.db-wal and spool.db-shm while in use)
    PATH/owners/<key>.lock   one per live owner process (see spool_owners)
    PATH/open.lock           serialises opening, checking and setting aside
    PATH/corrupt-*.db        damaged stores set aside (the newest two are kept)

Schema: ``events(id INTEGER PRIMARY KEY AUTOINCREMENT, owner, created, data BLOB)``
with an index on ``owner``; ``owners(id, key, pid, host, started, holder)``.
``events.owner`` is the writer and never changes; ``owners.holder`` is the live
owner responsible for that writer's rows (the writer itself while it lives), so
adopting a dead owner's rows is one small update of ``owners``, whatever their
number. Ids are never reused (AUTOINCREMENT), so id order is append order across
all processes, and an in-memory "everything up to id N is handed out" stays true.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import itertools
import json
import logging
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from .retry import DropReason
from .spool_owners import drop_short_lock, hold_short_lock

log = logging.getLogger("segment")

DB_NAME = "spool.db"
OPEN_LOCK = "open.lock"
CORRUPT_PREFIX = "corrupt-"
APPLICATION_ID = 0x53475350  # "SGSP"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
_HEADER = b"SQLite format 3\x00"


# The drop reasons the spool reports (they are defined, with every other reason, in retry.DropReason).
STORAGE_FULL = DropReason.STORAGE_FULL
STORAGE_EXPIRED = DropReason.STORAGE_EXPIRED
STORAGE_CORRUPT = DropReason.STORAGE_CORRUPT


class Row(NamedTuple):
    """One spooled event: its id (append order), append time (epoch seconds) and the original bytes."""

    id: int
    created: int
    data: bytes


class Dropped(NamedTuple):
    """A row removed by ``enforce_limits`` (already deleted): ``reason`` is storage_full or storage_expired."""

    reason: DropReason
    row: Row


_warned_modes: set[str] = set()


class SpoolUnavailable(Exception):
    """The spool cannot be used now; the caller falls back to memory (the store is closed).

    ``reason`` is one of ``not_a_directory``, ``permission``, ``read_only``,
    ``full``, ``corrupt``, ``busy``, ``cannot_open``, ``foreign``,
    ``newer_version``, ``io``, ``closed``. The text names the path and what was being done, never an
    event's content.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def classify(exc: BaseException) -> str:
    """Map an ``OSError`` or ``sqlite3.Error`` to a :class:`SpoolUnavailable` reason."""
    if isinstance(exc, OSError):
        return {
            errno.EACCES: "permission",
            errno.EPERM: "permission",
            errno.EROFS: "read_only",
            errno.ENOSPC: "full",
            errno.EDQUOT: "full",
            errno.EFBIG: "full",
            errno.ENOTDIR: "not_a_directory",
            errno.EEXIST: "not_a_directory",
            errno.EISDIR: "not_a_directory",
            errno.EWOULDBLOCK: "busy",
        }.get(exc.errno or 0, "io")
    text = str(exc).lower()
    for needle, reason in (
        ("full", "full"),
        ("readonly", "read_only"),
        ("read-only", "read_only"),
        ("malformed", "corrupt"),
        ("not a database", "corrupt"),
        ("quick_check", "corrupt"),
        ("locked", "busy"),
        ("busy", "busy"),
        ("unable to open", "cannot_open"),
    ):
        if needle in text:
            return reason
    return "io"


def as_bytes(value: object) -> bytes:
    """A stored value as bytes (a damaged or foreign row may hold text, a number or NULL)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value if value is not None else "").encode("utf-8", "surrogatepass")


def decodes(data: bytes) -> bool:
    """True when ``data`` is a UTF-8 JSON object (strict: no NaN or Infinity), as every spooled event is."""
    try:
        return isinstance(json.loads(data.decode("utf-8"), parse_constant=_reject), dict)
    except (ValueError, RecursionError):
        return False


def looks_whole(data: bytes) -> bool:
    """The cheap check for a row this process wrote itself (it was valid JSON when appended): not cut short."""
    if data[:1] != b"{" or data[-1:] != b"}":
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _reject(name: str) -> object:
    raise ValueError(name)


def unavailable(exc: BaseException, path: str, doing: str) -> SpoolUnavailable:
    """A :class:`SpoolUnavailable` for ``exc`` raised while ``doing`` something with the spool at ``path``."""
    if isinstance(exc, SpoolUnavailable):
        return exc
    reason = classify(exc)
    error = SpoolUnavailable(reason, f"spool {path!r} unavailable ({reason}) while {doing}: {exc}")
    error.__cause__ = exc
    return error


def prepare_directory(path: str) -> str:
    """Create ``path`` (mode 0700) and its ``owners`` folder if missing; return the absolute path."""
    directory = os.path.abspath(path)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise SpoolUnavailable("not_a_directory", f"spool path {directory!r} exists and is not a directory")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(directory, "owners"), mode=0o700, exist_ok=True)
    mode = os.stat(directory).st_mode
    if mode & 0o077 and directory not in _warned_modes:
        _warned_modes.add(directory)
        log.warning(
            "spool directory %r is accessible to other users (mode %o); events may hold personal data",
            directory,
            mode & 0o777,
        )
    return directory


@contextmanager
def open_lock(directory: str, timeout: float = BUSY_TIMEOUT_MS / 1000) -> Iterator[None]:
    """Hold ``PATH/open.lock`` exclusively (opening, checking and setting aside happen one process at a time)."""
    fd = os.open(os.path.join(directory, OPEN_LOCK), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    hold_short_lock(fd)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        yield
    finally:
        drop_short_lock(fd)
        os.close(fd)


def disk_bytes(directory: str) -> int:
    """Bytes the store holds on disk: the database, its WAL and its shared-memory file."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(os.path.join(directory, DB_NAME + suffix)).st_size
        except OSError:
            pass
    return total


def header_ok(db_path: str) -> bool:
    """False when the file exists, is not empty and does not start with SQLite's magic header."""
    try:
        mode = os.stat(db_path).st_mode
    except FileNotFoundError:
        return True
    if not stat.S_ISREG(mode):  # a directory, a FIFO (opening it would block), a device: not ours to touch
        raise SpoolUnavailable("not_a_directory", f"spool database {db_path!r} is not a regular file")
    with open(db_path, "rb") as f:
        head = f.read(len(_HEADER))
    return head == b"" or head == _HEADER


def connect(db_path: str, *, synchronous: str, wal_bytes: int) -> sqlite3.Connection:
    """Open (creating if needed) the store in WAL mode with the schema in place."""
    if not os.path.lexists(db_path):
        os.close(os.open(db_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600))
    fresh = os.path.getsize(db_path) == 0
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if fresh:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only possible before the first table
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolUnavailable("io", f"spool {db_path!r}: cannot use WAL mode (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        conn.execute(f"PRAGMA journal_size_limit={wal_bytes}")
        conn.execute(f"PRAGMA wal_autocheckpoint={max(16, wal_bytes // 4096)}")
        _ensure_schema(conn, db_path)
    except BaseException:
        conn.close()
        raise
    return conn


def _ensure_schema(conn: sqlite3.Connection, db_path: str) -> None:
    with transaction(conn):
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            conn.execute(
                "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, owner INTEGER NOT NULL,"
                " created INTEGER NOT NULL, data BLOB NOT NULL)"
            )
            conn.execute("CREATE INDEX events_owner ON events(owner)")
            conn.execute(
                "CREATE TABLE owners(id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL,"
                " pid INTEGER NOT NULL, host TEXT NOT NULL, started INTEGER NOT NULL, holder INTEGER)"
            )
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif app_id != APPLICATION_ID or not {"events", "owners"} <= tables:
            raise SpoolUnavailable("foreign", f"{db_path!r} is an SQLite database this library did not write")
        elif version > SCHEMA_VERSION:
            raise SpoolUnavailable("newer_version", f"spool {db_path!r} was written by a newer library version")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        raise
    conn.execute("COMMIT")


def register_owner(conn: sqlite3.Connection, key: str) -> int:
    """Insert this process's row in ``owners``, holding itself; return its small integer id."""
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO owners(key, pid, host, started) VALUES (?, ?, ?, ?)",
            (key, os.getpid(), socket.gethostname(), int(time.time())),
        )
        owner_id = int(cur.lastrowid or 0)
        conn.execute("UPDATE owners SET holder = id WHERE id = ?", (owner_id,))
    return owner_id


def held_slots(conn: sqlite3.Connection, owner_id: int) -> list[int]:
    """The writers whose rows ``owner_id`` is responsible for: itself, and the dead writers it adopted."""
    return [row[0] for row in conn.execute("SELECT id FROM owners WHERE holder = ? ORDER BY id", (owner_id,))]


_OLDEST = "SELECT id, created, data, owner FROM events WHERE owner = ? AND id > ? ORDER BY id LIMIT ?"


def oldest_rows(conn: sqlite3.Connection, slots: list[int], after_id: int, limit: int) -> list[tuple[Any, ...]]:
    """Rows ``(id, created, data, owner)`` of the writers ``slots`` with ``id > after_id``, oldest first.

    At most ``limit`` rows.

    One index range scan per writer, merged: the cost does not depend on other owners' rows.
    """
    if len(slots) == 1:
        return conn.execute(_OLDEST, (slots[0], after_id, limit)).fetchall()
    runs = [conn.execute(_OLDEST, (slot, after_id, limit)).fetchall() for slot in slots]
    return list(itertools.islice(heapq.merge(*runs), limit))
