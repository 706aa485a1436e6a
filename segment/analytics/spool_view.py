"""Read-only views of a spool directory: its status and every row, for ``spool status`` and ``spool export``.

Nothing here writes to the spool or becomes an owner, so both work on a spool
that live processes are using (each query is a short read transaction of its
own; SQLite's WAL lets readers and the writer proceed together).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Optional
from urllib.parse import quote

from . import spool_db, spool_owners
from .spool_db import Row

_EXPORT_CHUNK = 1000


@dataclass
class OwnerStatus:
    """One owner process of a spool: who it is, whether it is alive, how many events it is responsible for."""

    key: str
    pid: int
    host: str
    started: int
    alive: bool
    events: int


@dataclass
class SpoolStatus:
    """A snapshot of a spool directory (``SpoolStore.status()``, ``spool status``)."""

    path: str
    exists: bool
    events: int = 0
    bytes: int = 0
    oldest_age: Optional[float] = None
    owners: list[OwnerStatus] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return asdict(self)


def connect_read_only(directory: str) -> Optional[sqlite3.Connection]:
    """A read-only connection to the store in ``directory`` (``None`` when there is no store yet)."""
    db_path = os.path.join(os.path.abspath(directory), spool_db.DB_NAME)
    if not os.path.isfile(db_path):
        return None
    if not spool_db.header_ok(db_path):
        raise sqlite3.DatabaseError("file is not a database")
    uri = f"file:{quote(db_path)}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={spool_db.BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        if os.path.exists(db_path + "-wal"):
            raise
        # A closed WAL database in a directory we cannot write: SQLite cannot create the
        # shared-memory file. With no WAL there is nothing to recover, so read it as immutable.
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
    return conn


def read_status(path: str, now: Optional[float] = None) -> SpoolStatus:
    """Status of the spool at ``path``; raises ``SpoolUnavailable`` when it cannot be read."""
    directory = os.path.abspath(os.fspath(path))
    try:
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise spool_db.SpoolUnavailable("not_a_directory", f"spool path {directory!r} is not a directory")
        status = SpoolStatus(directory, exists=os.path.isdir(directory))
        if not status.exists:
            return status
        status.bytes = spool_db.disk_bytes(directory)
        status.set_aside = sorted(n for n in os.listdir(directory) if n.startswith(spool_db.CORRUPT_PREFIX))
        conn = connect_read_only(directory)
        if conn is None:
            return status
        try:
            counts = dict(conn.execute("SELECT owner, count(*) FROM events GROUP BY owner").fetchall())
            status.events = sum(counts.values())
            oldest = conn.execute("SELECT min(created) FROM events").fetchone()[0]
            if isinstance(oldest, (int, float)):
                status.oldest_age = max(0.0, (time.time() if now is None else now) - oldest)
            writers = conn.execute("SELECT id, key, pid, host, started, holder FROM owners ORDER BY id").fetchall()
            ids = {row[0] for row in writers}
            held: dict[int, int] = {}  # a process's events include those of the dead writers it took over
            for writer_id, *_, holder in writers:
                holder = holder if holder in ids else writer_id
                held[holder] = held.get(holder, 0) + int(counts.get(writer_id, 0))
            for writer_id, key, pid, host, started, holder in writers:
                if holder == writer_id or holder not in ids:
                    alive = spool_owners.is_alive(directory, key)
                    status.owners.append(OwnerStatus(key, pid, host, started, alive, held.get(writer_id, 0)))
        finally:
            conn.close()
        return status
    except (OSError, sqlite3.Error) as exc:
        raise spool_db.unavailable(exc, directory, "reading its status") from exc


def iter_rows(path: str) -> Iterator[Row]:
    """Every row of every owner, oldest first, read in short transactions; raises ``SpoolUnavailable``.

    Rows deleted by a live owner while this runs may or may not appear; rows appended
    meanwhile appear once (ids only grow).
    """
    directory = os.path.abspath(os.fspath(path))
    try:
        conn = connect_read_only(directory)
    except (OSError, sqlite3.Error) as exc:
        raise spool_db.unavailable(exc, directory, "opening it read-only") from exc
    if conn is None:
        return
    try:
        last = 0
        while True:
            try:
                chunk = conn.execute(
                    "SELECT id, created, data FROM events WHERE id > ? ORDER BY id LIMIT ?", (last, _EXPORT_CHUNK)
                ).fetchall()
            except sqlite3.Error as exc:
                raise spool_db.unavailable(exc, directory, "reading its rows") from exc
            if not chunk:
                return
            for row_id, created, data in chunk:
                yield Row(row_id, created if isinstance(created, int) else 0, spool_db.as_bytes(data))
            last = chunk[-1][0]
    finally:
        conn.close()
