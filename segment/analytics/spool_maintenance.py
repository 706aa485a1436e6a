"""What keeps a spool healthy beside the queue itself: adopting dead owners' rows and applying the limits.

Both run on the caller's connection with the store's lock held (see ``SpoolStore.adopt`` and
``SpoolStore.enforce_limits``).
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Collection
from typing import Callable, Optional

from . import spool_db, spool_owners
from .spool_db import STORAGE_EXPIRED, STORAGE_FULL, Dropped, Row

log = logging.getLogger("segment")

MAX_DROPS_PER_CALL = 10_000
_CHUNK = 500
_RECLAIM_BUSY_MS = 50


def adopt_dead_owners(
    conn: sqlite3.Connection, directory: str, owner: spool_owners.OwnerLock, owner_id: int
) -> tuple[int, int]:
    """Reassign every dead owner's rows to ``owner_id`` in one transaction: ``(rows adopted, owner id)``.

    An owner is dead when its lock file can be locked or is gone. The dead owners' locks
    are held until their rows are reassigned and their ``owners`` rows deleted, then
    their files are removed. The returned owner id differs from ``owner_id`` only when a
    peer wrongly adopted this owner (someone deleted its lock file) and it re-registered.
    """
    owner_id = _check_self(conn, directory, owner, owner_id)
    others = conn.execute("SELECT id, key FROM owners WHERE id != ?", (owner_id,)).fetchall()
    dead: list[tuple[int, str, Optional[int]]] = []
    adopted = 0
    try:
        for other_id, key in others:
            is_dead, fd = spool_owners.lock_if_dead(directory, key)
            if is_dead:
                dead.append((other_id, key, fd))
        if dead:
            before = conn.total_changes
            with spool_db.transaction(conn):
                for other_id, _, _ in dead:
                    conn.execute("UPDATE events SET owner = ? WHERE owner = ?", (owner_id, other_id))
                adopted = conn.total_changes - before
                conn.executemany("DELETE FROM owners WHERE id = ?", [(other_id,) for other_id, _, _ in dead])
    finally:
        for _, key, fd in dead:
            spool_owners.remove_dead_file(directory, key, fd)
    known = {row[0] for row in conn.execute("SELECT key FROM owners")}
    spool_owners.sweep_stale_files(directory, known)
    return adopted, owner_id


def _check_self(conn: sqlite3.Connection, directory: str, owner: spool_owners.OwnerLock, owner_id: int) -> int:
    """Repair this owner's claim if someone removed its lock file (and a peer then adopted its rows)."""
    if not owner.intact():
        log.warning("spool %r: this process's lock file was removed by someone; publishing it again", directory)
        owner.republish()
    if conn.execute("SELECT 1 FROM owners WHERE id = ?", (owner_id,)).fetchone():
        return owner_id
    with spool_db.transaction(conn):
        new_id = spool_db.register_owner(conn, owner.key)
        conn.execute("UPDATE events SET owner = ? WHERE owner = ?", (new_id, owner_id))
    return new_id


def enforce(
    conn: sqlite3.Connection,
    directory: str,
    owner_id: int,
    expire_before: float,
    max_bytes: int,
    keep: Collection[int],
) -> list[Dropped]:
    """Drop this owner's expired rows, then its oldest rows while the spool is over ``max_bytes``.

    When the spool goes over ``max_bytes`` it is brought down to 95% of it, so that a
    full spool does not trim a few rows on every append. At most ``MAX_DROPS_PER_CALL``
    rows are dropped per call (their bytes are returned for reporting); the next call
    continues.
    """
    dropped: list[Dropped] = []
    first = conn.execute("SELECT created FROM events WHERE owner = ? ORDER BY id LIMIT 1", (owner_id,)).fetchone()
    if first is not None and first[0] < expire_before:
        dropped += _drop(conn, owner_id, keep, STORAGE_EXPIRED, MAX_DROPS_PER_CALL, lambda r: r.created < expire_before)
    total = spool_db.disk_bytes(directory)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if total > max_bytes or free * page_size > max(1 << 20, total // 4):
        _reclaim(conn)
        total = spool_db.disk_bytes(directory)
    target = max_bytes - max_bytes // 20
    rounds = 0
    while total > max_bytes or (rounds and total > target):
        budget = MAX_DROPS_PER_CALL - len(dropped)
        if budget <= 0 or rounds >= 8:
            break
        rounds += 1
        got = _drop(conn, owner_id, keep, STORAGE_FULL, min(budget, _rows_for(conn, total - target)), None)
        if not got:
            break
        dropped += got
        _reclaim(conn)
        total = spool_db.disk_bytes(directory)
    return dropped


_PAGE_PRAGMAS = ("page_size", "page_count", "freelist_count")


def _rows_for(conn: sqlite3.Connection, excess: int) -> int:
    """How many rows to drop to free about ``excess`` bytes, from the store's bytes per row."""
    page_size, pages, free = (conn.execute(f"PRAGMA {name}").fetchone()[0] for name in _PAGE_PRAGMAS)
    rows = conn.execute("SELECT count(*) FROM events").fetchone()[0] or 1
    per_row: float = max(1.0, (pages - free) * page_size / rows)
    return max(1, math.ceil(excess / per_row))


def _drop(
    conn: sqlite3.Connection,
    owner_id: int,
    keep: Collection[int],
    reason: str,
    limit: int,
    expired: Optional[Callable[[Row], bool]],
) -> list[Dropped]:
    """Delete up to ``limit`` of this owner's oldest rows not in ``keep`` (while ``expired``, if given)."""
    victims: list[Row] = []
    last = 0
    while len(victims) < limit:
        chunk = conn.execute(
            "SELECT id, created, data FROM events WHERE owner = ? AND id > ? ORDER BY id LIMIT ?",
            (owner_id, last, _CHUNK),
        ).fetchall()
        if not chunk:
            break
        for row_id, created, data in chunk:
            row = Row(row_id, created if isinstance(created, int) else 0, spool_db.as_bytes(data))
            if expired is not None and not expired(row):
                chunk = []
                break
            if row_id not in keep:
                victims.append(row)
                if len(victims) >= limit:
                    break
        if not chunk:
            break
        last = chunk[-1][0]
    if victims:
        with spool_db.transaction(conn):
            conn.executemany("DELETE FROM events WHERE id = ?", [(row.id,) for row in victims])
    return [Dropped(reason, row) for row in victims]


def _reclaim(conn: sqlite3.Connection) -> None:
    """Give free pages back to the filesystem and fold the WAL into the database (briefly waiting on readers)."""
    conn.executescript("PRAGMA incremental_vacuum;")  # execute() would step once: one page per call
    conn.execute(f"PRAGMA busy_timeout={_RECLAIM_BUSY_MS}")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.execute(f"PRAGMA busy_timeout={spool_db.BUSY_TIMEOUT_MS}")
