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
from .retry import DropReason
from .spool_db import STORAGE_EXPIRED, STORAGE_FULL, Dropped, Row

log = logging.getLogger("segment")

MAX_DROPS_PER_CALL = 10_000
RECLAIM_PAGES_PER_CALL = 2048  # 8 MB of 4 KB pages: bounds the pause of one enforce_limits() after a drain
_CHUNK = 500
_RECLAIM_BUSY_MS = 50
_ANY = "SELECT 1 FROM events WHERE owner = ? LIMIT 1"


def adopt_dead_owners(
    conn: sqlite3.Connection, directory: str, owner: spool_owners.OwnerLock, owner_id: int
) -> tuple[int, int]:
    """Take over, in one transaction, every dead owner's rows: ``(rows adopted, this owner's id)``.

    An owner is dead when its lock file can be locked or is gone. Taking over is one
    update of ``owners.holder`` (the rows themselves are not rewritten). The dead
    owners' locks are held until that is committed, then their files are removed.
    The returned id differs from ``owner_id`` only when this owner had to register
    again (someone deleted its row).
    """
    owner_id = _check_self(conn, directory, owner, owner_id)
    holders = conn.execute(
        "SELECT id, key FROM owners WHERE id = holder AND id != ?", (owner_id,)
    ).fetchall()  # the live-or-dead processes (a writer adopted by another is not one)
    dead: list[tuple[int, str, Optional[int]]] = []
    adopted = 0
    try:
        for other_id, key in holders:
            is_dead, fd = spool_owners.lock_if_dead(directory, key)
            if is_dead:
                dead.append((other_id, key, fd))
        orphaned = conn.execute(
            "SELECT 1 FROM owners WHERE holder IS NULL OR holder NOT IN (SELECT id FROM owners) LIMIT 1"
        ).fetchone()
        if dead or orphaned:
            with spool_db.transaction(conn):
                gone = [other_id for other_id, _, _ in dead]
                marks = ",".join("?" * len(gone)) or "NULL"
                slots = [
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM owners WHERE holder IN ({marks}) OR holder IS NULL"
                        " OR holder NOT IN (SELECT id FROM owners)",
                        gone,
                    )
                ]
                for slot in slots:
                    conn.execute("UPDATE owners SET holder = ? WHERE id = ?", (owner_id, slot))
                    adopted += conn.execute("SELECT count(*) FROM events WHERE owner = ?", (slot,)).fetchone()[0]
        _forget_empty_writers(conn, owner_id)
    finally:
        for _, key, fd in dead:
            spool_owners.remove_dead_file(directory, key, fd)
    if dead:
        known = {row[0] for row in conn.execute("SELECT key FROM owners WHERE id = holder")}
        spool_owners.sweep_stale_files(directory, known)
    return adopted, owner_id


def _forget_empty_writers(conn: sqlite3.Connection, owner_id: int) -> None:
    """Delete the ``owners`` rows of adopted writers that have no rows left (each costs a query per read)."""
    slots = conn.execute("SELECT id FROM owners WHERE holder = ? AND id != ?", (owner_id, owner_id)).fetchall()
    empty = [slot for (slot,) in slots if conn.execute(_ANY, (slot,)).fetchone() is None]
    if empty:
        with spool_db.transaction(conn):
            for slot in empty:  # checked again inside the transaction: only this owner appends to none of them
                if conn.execute(_ANY, (slot,)).fetchone() is None:
                    conn.execute("DELETE FROM owners WHERE id = ? AND holder = ?", (slot, owner_id))


def _check_self(conn: sqlite3.Connection, directory: str, owner: spool_owners.OwnerLock, owner_id: int) -> int:
    """Repair this owner's claim if someone removed its lock file (a peer may then have taken its rows)."""
    if not owner.intact():
        log.warning("spool %r: this process's lock file was removed by someone; publishing it again", directory)
        owner.republish()
    row = conn.execute("SELECT holder FROM owners WHERE id = ?", (owner_id,)).fetchone()
    if row is not None and row[0] == owner_id:
        return owner_id
    if row is not None:  # a peer took this owner's rows: take them back (they may be sent twice, never lost)
        with spool_db.transaction(conn):
            conn.execute("UPDATE owners SET holder = ? WHERE id = ? OR holder = ?", (owner_id, owner_id, owner_id))
        return owner_id
    old_id = owner_id
    owner_id = spool_db.register_owner(conn, owner.key)
    with spool_db.transaction(conn):
        conn.execute("UPDATE events SET owner = ? WHERE owner = ?", (owner_id, old_id))
    return owner_id


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
    slots = spool_db.held_slots(conn, owner_id)
    first = [conn.execute(_FIRST, (slot,)).fetchone() for slot in slots]
    if any(row is not None and not (isinstance(row[0], int) and row[0] >= expire_before) for row in first):
        dropped += _drop(conn, slots, keep, STORAGE_EXPIRED, MAX_DROPS_PER_CALL, lambda r: r.created < expire_before)
    total = spool_db.disk_bytes(directory)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if total > max_bytes:
        _reclaim(conn)
        total = spool_db.disk_bytes(directory)
    elif free * page_size > max(1 << 20, total // 4):  # after a drain: a few MB per call, not all at once
        _reclaim(conn, RECLAIM_PAGES_PER_CALL)
        total = spool_db.disk_bytes(directory)
    target = max_bytes - max_bytes // 20
    rounds = 0
    while total > max_bytes or (rounds and total > target):
        budget = MAX_DROPS_PER_CALL - len(dropped)
        if budget <= 0 or rounds >= 8:
            break
        rounds += 1
        got = _drop(conn, slots, keep, STORAGE_FULL, min(budget, _rows_for(conn, total - target)), None)
        if not got:
            break
        dropped += got
        _reclaim(conn)
        total = spool_db.disk_bytes(directory)
    return dropped


_PAGE_PRAGMAS = ("page_size", "page_count", "freelist_count")
_FIRST = "SELECT created FROM events WHERE owner = ? ORDER BY id LIMIT 1"


def _rows_for(conn: sqlite3.Connection, excess: int) -> int:
    """How many rows to drop to free about ``excess`` bytes, from the store's bytes per row."""
    page_size, pages, free = (conn.execute(f"PRAGMA {name}").fetchone()[0] for name in _PAGE_PRAGMAS)
    rows = conn.execute("SELECT count(*) FROM events").fetchone()[0] or 1
    per_row: float = max(1.0, (pages - free) * page_size / rows)
    return max(1, math.ceil(excess / per_row))


def _drop(
    conn: sqlite3.Connection,
    slots: list[int],
    keep: Collection[int],
    reason: DropReason,
    limit: int,
    expired: Optional[Callable[[Row], bool]],
) -> list[Dropped]:
    """Delete up to ``limit`` of the oldest rows of ``slots`` not in ``keep`` (while ``expired``, if given)."""
    victims: list[Row] = []
    last = 0
    while len(victims) < limit:
        chunk = spool_db.oldest_rows(conn, slots, last, _CHUNK)
        if not chunk:
            break
        for row_id, created, data, _ in chunk:
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


def _reclaim(conn: sqlite3.Connection, pages: int = 0) -> None:
    """Give free pages (all, or ``pages`` of them) back to the filesystem and fold the WAL into the database.

    The checkpoint waits on readers of other processes for ``_RECLAIM_BUSY_MS`` at most.
    """
    conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")  # execute() would step once: one page
    conn.execute(f"PRAGMA busy_timeout={_RECLAIM_BUSY_MS}")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.execute(f"PRAGMA busy_timeout={spool_db.BUSY_TIMEOUT_MS}")
