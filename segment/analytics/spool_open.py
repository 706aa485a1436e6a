"""Opening a spool: checking its database, and setting a damaged one aside while salvaging what it can.

A store is checked (SQLite's magic header, then ``PRAGMA quick_check``, which
reads every page: about 65 ms for 140 MB from the page cache) only when no
other owner is alive on the directory. That is also the only time a damaged
file may be set aside, since live peers have it open; with live peers a damage
found later surfaces as ``SpoolUnavailable("corrupt")`` in whoever meets it,
and the next store opened alone sets the file aside.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from typing import NamedTuple, Optional
from urllib.parse import quote

from .spool_db import (
    CORRUPT_PREFIX,
    DB_NAME,
    as_bytes,
    classify,
    connect,
    header_ok,
    open_lock,
    prepare_directory,
    register_owner,
    transaction,
)
from .spool_owners import OwnerLock, is_alive, published_keys

log = logging.getLogger("segment")

KEEP_CORRUPT = 2
_SALVAGE_CHUNK = 500


class Opened(NamedTuple):
    """A store opened by :func:`open_store`: connection, owner lock and id, rows salvaged from a damaged file."""

    conn: sqlite3.Connection
    owner: OwnerLock
    owner_id: int
    salvaged: int


def open_store(path: str, *, synchronous: str, wal_bytes: int) -> Opened:
    """Open the spool at ``path`` as a new owner, checking (and if need be replacing) a damaged database.

    The file is checked (magic header, then SQLite's quick check, which reads every
    page) only when no other owner is alive: that is also the only time it may be set
    aside, since live peers have it open. Raises ``OSError``, ``sqlite3.Error`` or
    ``SpoolUnavailable``.
    """
    directory = prepare_directory(path)
    db_path = os.path.join(directory, DB_NAME)
    with open_lock(directory):
        owner = OwnerLock(directory)
        try:
            keys = [key for key in published_keys(directory) if key != owner.key]
            alone = not any(is_alive(directory, key) for key in keys)
            aside: Optional[str] = None
            try:
                if not header_ok(db_path):
                    raise sqlite3.DatabaseError("file is not a database")
                conn = connect(db_path, synchronous=synchronous, wal_bytes=wal_bytes)
                try:
                    if alone:
                        quick_check(conn)
                except BaseException:
                    conn.close()
                    raise
            except sqlite3.DatabaseError as exc:
                if not alone or classify(exc) != "corrupt":
                    raise
                aside = set_aside(directory)
                conn = connect(db_path, synchronous=synchronous, wal_bytes=wal_bytes)
            try:
                owner_id = register_owner(conn, owner.key)
                salvaged = salvage(aside, conn, owner_id) if aside is not None else 0
            except BaseException:
                conn.close()
                raise
        except BaseException:
            owner.release()
            raise
    return Opened(conn, owner, owner_id, salvaged)


def quick_check(conn: sqlite3.Connection) -> None:
    """Raise ``sqlite3.DatabaseError`` unless SQLite's quick integrity check passes (reads every page)."""
    result = conn.execute("PRAGMA quick_check(1)").fetchone()
    if not result or result[0] != "ok":
        raise sqlite3.DatabaseError(f"quick_check failed: {result[0] if result else 'no answer'}")


def set_aside(directory: str) -> str:
    """Rename a damaged store (and its WAL and shm) to ``corrupt-<time>-<rand>.db``; return the new path."""
    db_path = os.path.join(directory, DB_NAME)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = os.path.join(directory, f"{CORRUPT_PREFIX}{stamp}-{secrets.token_hex(3)}.db")
    for suffix in ("-wal", "-shm", ""):  # the WAL must never be left beside a fresh database
        try:
            os.rename(db_path + suffix, aside + suffix)
        except FileNotFoundError:
            pass
    log.warning("spool database %r was damaged; set aside as %r and a fresh one started", db_path, aside)
    _prune_set_aside(directory)
    return aside


def _prune_set_aside(directory: str) -> None:
    names = sorted(n for n in os.listdir(directory) if n.startswith(CORRUPT_PREFIX) and n.endswith(".db"))
    for name in names[:-KEEP_CORRUPT]:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(os.path.join(directory, name + suffix))
            except OSError:
                pass


def salvage(aside: str, conn: sqlite3.Connection, owner_id: int) -> int:
    """Copy every readable row of a set-aside store into ``conn`` as ``owner_id``'s; return how many.

    Rows are read one by one by id, from the oldest up and from the newest down, each
    scan stopping at the damage; ids and append times are kept. What lies between is
    lost (the log says how many rows were saved). Rows whose bytes came out garbled are
    caught later by ``read`` as corrupt.
    """
    try:
        source = sqlite3.connect(f"file:{quote(aside)}?mode=ro", uri=True, isolation_level=None)
        source.execute("PRAGMA writable_schema=ON")  # tolerate a file shorter than its header says
    except sqlite3.Error:
        return 0
    saved = 0
    try:
        lowest_saved = 0
        for query, args in (
            ("SELECT id, created, data FROM events WHERE id > ? ORDER BY id", (0,)),
            ("SELECT id, created, data FROM events WHERE id > ? ORDER BY id DESC", (0,)),
        ):
            chunk: list[tuple[int, int, bytes]] = []
            try:
                for row_id, created, data in source.execute(query, args):
                    if not isinstance(row_id, int) or row_id <= 0:
                        continue  # a damaged page can yield ids the query excluded: no reader could hand them out
                    if query.endswith("DESC") and row_id <= lowest_saved:
                        break
                    chunk.append((int(row_id), _as_int(created), as_bytes(data)))
                    if len(chunk) >= _SALVAGE_CHUNK:
                        saved += _insert(conn, owner_id, chunk)
                        lowest_saved = max(lowest_saved, chunk[-1][0])
                        chunk = []
            except sqlite3.Error:
                pass
            saved += _insert(conn, owner_id, chunk)
            if chunk and not query.endswith("DESC"):
                lowest_saved = max(lowest_saved, chunk[-1][0])
    finally:
        source.close()
    log.warning("spool: salvaged %d events from the damaged database %r", saved, aside)
    return saved


def _insert(conn: sqlite3.Connection, owner_id: int, rows: list[tuple[int, int, bytes]]) -> int:
    if not rows:
        return 0
    before = conn.total_changes
    with transaction(conn):
        conn.executemany(
            "INSERT OR IGNORE INTO events(id, owner, created, data) VALUES (?, ?, ?, ?)",
            [(i, owner_id, c, d) for i, c, d in rows],
        )
    return conn.total_changes - before


def _as_int(value: object) -> int:
    return value if isinstance(value, int) else int(time.time())
