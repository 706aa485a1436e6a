"""The durable spool's storage engine: a transactional on-disk queue of encoded events.

One :class:`SpoolStore` per process and spool directory. Callers hand it
encoded events (JSON bytes); it keeps them in SQLite (standard library, WAL
mode) until they are deleted as delivered or dropped. The design follows the
OpenTelemetry Collector's persistent queue: the store is transactional, what is
being sent is remembered in memory only, and rows handed out but never deleted
(the process died mid-send) are handed out again by whoever adopts them.

Guarantees

* ``append(items)`` is one transaction (group commit): all of ``items`` or none.
  A committed row survives the process ending in any way (exit, ``os._exit``,
  SIGKILL, the OOM killer): with ``synchronous="normal"`` (default) the commit
  is in the operating system's hands when ``append`` returns. After a power
  loss or an OS crash the store is still consistent, but commits made since
  the last checkpoint may be rolled back: the WAL is synced at checkpoints,
  which run every ``max_bytes / 16`` bytes of WAL, at most about 4 MB (some
  thousands of events). ``synchronous="full"`` fsyncs the WAL on every
  commit (one fsync per group commit) so that only a failing disk can lose a
  committed row.
* Rows belong to the owner (process) that appended them. A live owner never
  reads another live owner's rows. When an owner dies, however it dies, the
  kernel releases its lock file and the next ``adopt()`` of any process (or
  the opening of a new store) takes its rows over in one transaction that
  does not rewrite them (it changes who holds their writer), so their ids
  (oldest-first order), append times and bytes are kept and the cost does not
  grow with their number. See ``spool_owners`` for the liveness rule.
* ``read`` never writes; ``delete(ids)`` is one transaction. Delivery built on
  it is at-least-once: a row read and sent but not deleted before a crash is
  read again by its adopter.
* Limits: ``max_bytes`` bounds the database, its WAL and its shared-memory
  file together (free pages go back to the filesystem, at most 8 MB per call
  below the limit: the database uses incremental auto-vacuum); ``max_age`` (seconds since append) expires rows. Both are
  applied by :meth:`SpoolStore.enforce_limits`, which returns what it dropped.
  Rows whose bytes are not UTF-8 JSON objects come back from ``read`` in
  ``ReadResult.corrupt`` instead of ``rows``.
* Errors: every disk or database problem (read-only or missing permissions,
  a path that is a file, no space, a damaged file, a lock held too long)
  raises :class:`SpoolUnavailable` and closes the store (its lock is released,
  so what it holds is adopted by a peer or the next start). Nothing else is
  raised except for programming errors: ``ValueError`` for bad limits given to
  the constructor, ``TypeError`` for an item that is not bytes.
* A damaged database (not SQLite, truncated, failing SQLite's quick check) is
  detected when a store opens with no other live owner on the directory: it
  is renamed ``corrupt-<time>-<rand>.db`` (the newest two are kept; they do not
  count towards ``max_bytes``), a fresh store is started and every row that can
  still be read is copied into it (counted as adopted). With live peers it is
  left alone and the constructor raises ``SpoolUnavailable("corrupt")``.
* Forks: SQLite connections never cross a fork. :meth:`SpoolStore.after_fork_in_child`
  (also run by itself when a method notices a new pid) abandons the inherited
  connection unclosed and the child becomes a new owner on first use.

Limits: the directory must be on a local filesystem of one host (``flock`` and
WAL shared memory do not work across NFS hosts). Expiry follows append order:
it stops at the first row that is not expired. Each owner trims only its own
rows, never rows in flight (``keep``); a spool filled by live peers is trimmed
by them.

The client drives it from :mod:`~segment.analytics.spool_writer` (append, limits, adoption) and
:mod:`~segment.analytics.spool_source` (reads through :class:`~segment.analytics.spool_reader.SpoolReader`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Callable, NamedTuple, Optional, Union

from . import spool_db, spool_fork, spool_open, spool_owners
from .spool_db import STORAGE_CORRUPT, STORAGE_EXPIRED, STORAGE_FULL, Dropped, Row, SpoolUnavailable
from .spool_maintenance import adopt_dead_owners, enforce
from .spool_view import SpoolStatus, read_status

__all__ = [
    "STORAGE_CORRUPT",
    "STORAGE_EXPIRED",
    "STORAGE_FULL",
    "Dropped",
    "ReadResult",
    "Row",
    "SpoolStatus",
    "SpoolStore",
    "SpoolUnavailable",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
MIN_MAX_BYTES = 1024 * 1024
_abandoned: list[sqlite3.Connection] = []  # connections inherited through fork: never closed, never used


class ReadResult(NamedTuple):
    """What ``read`` found: good rows, undecodable rows (to report and delete), and the last id examined."""

    rows: list[Row]
    corrupt: list[Row]
    last_id: int


class SpoolStore:
    """This process's handle on a spool directory (see the module docstring for the guarantees)."""

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        synchronous: str = "normal",
        clock: Callable[[], float] = time.time,
        trust_appended: bool = False,
    ) -> None:
        """Open (creating if needed) the spool at ``path``, become an owner and adopt dead owners' rows.

        What opening adopted (or salvaged from a damaged file) is counted in :attr:`recovered`.
        With ``trust_appended`` (the client, whose rows come from its own JSON encoder) rows this store
        appended are only checked for being whole when read back, not parsed again; every other row is.
        Raises :class:`SpoolUnavailable` when the spool cannot be used and ``ValueError`` for bad limits.
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"storage_max_bytes must be an int of at least {MIN_MAX_BYTES}")
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not max_age > 0:
            raise ValueError("storage_max_age must be a positive number of seconds")
        if synchronous not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        self.path = os.path.abspath(os.fspath(path))
        self.max_bytes = max_bytes
        self.max_age = float(max_age)
        self.synchronous = synchronous
        self._clock = clock
        self._wal_bytes = min(4 * 1024 * 1024, max_bytes // 16)
        self._lock = threading.Lock()
        spool_fork.watch(self)
        self._pid = os.getpid()
        self._conn: Optional[sqlite3.Connection] = None
        self._owner: Optional[spool_owners.OwnerLock] = None
        self._owner_id = 0
        self._first_own_id: Optional[int] = None  # the first row this store appended
        self._trust_appended = trust_appended
        self._closed = False
        self.adoptions = 0  # bumped whenever rows were adopted or salvaged (readers must rescan)
        self.recovered = 0  # rows adopted or salvaged by this process, in total
        with self._lock:
            self._call("opening", self._open)
        self.adopt()

    # -- connection and ownership -------------------------------------------------------------

    def _open(self) -> None:
        opened = spool_open.open_store(self.path, synchronous=self.synchronous, wal_bytes=self._wal_bytes)
        self._conn, self._owner, self._owner_id = opened.conn, opened.owner, opened.owner_id
        self._pid = os.getpid()
        if opened.salvaged:
            self.recovered += opened.salvaged
            self.adoptions += 1

    def _locked(self) -> threading.Lock:
        """The store's lock; in a forked child, first a fresh one (the parent's may have been held at fork)."""
        if self._pid != os.getpid():
            self.after_fork_in_child()
        return self._lock

    def _use(self) -> sqlite3.Connection:
        """The connection for this process (opening a new owner after a fork); call with the lock held."""
        if self._closed:
            raise SpoolUnavailable("closed", f"spool {self.path!r} is closed")
        if self._conn is None:
            self._open()
        assert self._conn is not None
        return self._conn

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` with the lock held; turn any disk or database error into SpoolUnavailable and close."""
        try:
            return fn(*args)
        except (sqlite3.Error, OSError, SpoolUnavailable) as exc:
            error = spool_db.unavailable(exc, self.path, doing)
            if error.reason != "closed":
                self._shut()
            raise error from exc

    def _shut(self) -> None:
        conn, self._conn = self._conn, None
        self._closed = True
        if conn is not None:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.close()
            except sqlite3.Error:
                pass
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.release()

    def _forget_inherited(self) -> None:
        if self._conn is not None:
            _abandoned.append(self._conn)  # closing it could disturb the parent's WAL state
        self._conn = None
        if self._owner is not None:
            self._owner.close_inherited()
        self._owner = None
        self._pid = os.getpid()

    def fork_lock(self) -> threading.Lock:
        """The lock held during each operation (a fork waits for it: see :mod:`spool_fork`)."""
        return self._lock

    def after_fork_in_child(self) -> None:
        """In a forked child: abandon the parent's connection and lock (untouched); become an owner lazily.

        Idempotent, and a no-op in the process that opened the store. Every method also
        runs it by itself when it notices a new pid, so calling it is optional but early.
        """
        if self._pid == os.getpid():
            return
        self._lock = threading.Lock()
        self._forget_inherited()
        self.recovered = 0  # the child counts its own

    def close(self) -> None:
        """Close the store; the rows it still holds are adopted by a peer or by the next store opened here."""
        with self._locked():
            self._shut()

    @property
    def owner_key(self) -> Optional[str]:
        """This owner's key (the name of its lock file), ``None`` before first use in a forked child."""
        return self._owner.key if self._owner is not None else None

    # -- the queue ----------------------------------------------------------------------------

    def append(self, items: Sequence[bytes]) -> list[int]:
        """Store ``items`` (encoded events) in one transaction; return their ids, in order.

        Raises ``TypeError`` (a programming error) if an item is not bytes-like.
        """
        if not items:
            return []
        if not all(isinstance(item, (bytes, bytearray, memoryview)) for item in items):
            raise TypeError("SpoolStore.append takes encoded events (bytes)")
        created = int(self._clock())
        with self._locked():
            return list(self._call("appending", self._append, items, created))

    def _append(self, items: Sequence[bytes], created: int) -> range:
        conn = self._use()
        owner = self._owner_id
        with spool_db.transaction(conn):
            conn.executemany(
                "INSERT INTO events(owner, created, data) VALUES (?, ?, ?)", [(owner, created, bytes(d)) for d in items]
            )
            last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        first = last - len(items) + 1
        if self._first_own_id is None and self._trust_appended:
            self._first_own_id = first  # salvaged or adopted rows are older, or another owner's
        return range(first, last + 1)

    def read(self, after_id: int, max_count: int, max_bytes: int) -> ReadResult:
        """This owner's rows with ``id > after_id``, oldest first: at most ``max_count`` rows and ``max_bytes``.

        At least one row is returned when any is there, whatever its size. Undecodable
        rows are returned in ``corrupt`` (the caller reports and deletes them); nothing is written.
        """
        with self._locked():
            return self._call("reading", self._read, after_id, max_count, max_bytes)  # type: ignore[no-any-return]

    def _read(self, after_id: int, max_count: int, max_bytes: int) -> ReadResult:
        conn = self._use()
        rows: list[Row] = []
        corrupt: list[Row] = []
        last, size = after_id, 0
        slots = spool_db.held_slots(conn, self._owner_id)
        trusted = self._first_own_id  # rows this store appended in this process: valid JSON when written
        for row_id, created, value, owner in spool_db.oldest_rows(conn, slots, after_id, max(1, max_count)):
            data = spool_db.as_bytes(value)
            if rows and size + len(data) > max_bytes:
                break
            row = Row(row_id, created if isinstance(created, int) else 0, data)
            own = trusted is not None and owner == self._owner_id and row_id >= trusted
            if isinstance(created, int) and (spool_db.looks_whole(data) if own else spool_db.decodes(data)):
                rows.append(row)
                size += len(data)
            else:
                corrupt.append(row)
            last = row_id
        return ReadResult(rows, corrupt, last)

    def delete(self, ids: Iterable[int]) -> int:
        """Delete this owner's rows ``ids`` (delivered or reported) in one transaction; return how many."""
        wanted = list(ids)
        if not wanted:
            return 0
        with self._locked():
            return self._call("deleting", self._delete, wanted)  # type: ignore[no-any-return]

    def _delete(self, ids: list[int]) -> int:
        conn = self._use()
        before = conn.total_changes
        with spool_db.transaction(conn):
            slots = spool_db.held_slots(conn, self._owner_id)
            marks = ",".join("?" * len(slots))
            conn.executemany(f"DELETE FROM events WHERE id = ? AND owner IN ({marks})", [(i, *slots) for i in ids])
        return conn.total_changes - before

    def count(self) -> int:
        """How many rows this owner holds now."""
        with self._locked():
            return self._call("counting", self._count)  # type: ignore[no-any-return]

    def _count(self) -> int:
        conn = self._use()
        slots = spool_db.held_slots(conn, self._owner_id)
        marks = ",".join("?" * len(slots))
        return int(conn.execute(f"SELECT count(*) FROM events WHERE owner IN ({marks})", slots).fetchone()[0])

    def last_id(self) -> int:
        """The newest row id in the spool (any owner's; 0 when empty): rows appended later have larger ids."""
        with self._locked():
            return self._call("reading", self._last_id)  # type: ignore[no-any-return]

    def _last_id(self) -> int:
        row = self._use().execute("SELECT max(id) FROM events").fetchone()
        return int(row[0] or 0)

    def disk_bytes(self) -> int:
        """Bytes the spool holds on disk now (database, WAL and shared memory, every owner's rows)."""
        return spool_db.disk_bytes(self.path)

    # -- adoption and limits ------------------------------------------------------------------

    def adopt(self) -> int:
        """Take over, in one transaction, the rows of every dead owner; return how many."""
        with self._locked():
            adopted: int = self._call("adopting", self._adopt)
        return adopted

    def _adopt(self) -> int:
        conn = self._use()
        assert self._owner is not None
        adopted, self._owner_id = adopt_dead_owners(conn, self.path, self._owner, self._owner_id)
        if adopted:
            self.recovered += adopted
            self.adoptions += 1
        return adopted

    def enforce_limits(self, now: Optional[float] = None, keep: Collection[int] = ()) -> list[Dropped]:
        """Drop this owner's rows beyond ``max_age``, then its oldest rows until the spool fits ``max_bytes``.

        Rows whose ids are in ``keep`` (in flight) are never dropped. Returns the dropped rows,
        already deleted, for the caller to report (``storage_expired`` / ``storage_full``).
        """
        when = self._clock() if now is None else now
        with self._locked():
            return self._call("enforcing limits", self._enforce, when, keep)  # type: ignore[no-any-return]

    def _enforce(self, when: float, keep: Collection[int]) -> list[Dropped]:
        conn = self._use()
        return enforce(conn, self.path, self._owner_id, when - self.max_age, self.max_bytes, keep)

    def status(self) -> SpoolStatus:
        """Events, bytes on disk, oldest event's age and owners of the whole spool (read-only)."""
        return read_status(self.path, self._clock())
