"""``python -m segment.analytics spool ...``: look into a spool directory without disturbing it.

* ``spool status PATH [--json]``: events, bytes on disk, oldest event's age,
  owners (live or dead, with their events) and damaged files set aside.
* ``spool export PATH``: every event of every owner, oldest first, one JSON
  object per line on stdout (the bytes that would be sent). Undecodable rows
  are skipped and counted on stderr (exit status 1; stdout still holds every
  good row). Export copies: live owners keep delivering what it printed.
* ``spool drain PATH --write-key KEY [--host URL] [--timeout S]``: adopt the
  events of every process that has ended and deliver them, then exit (for a
  spool whose process will not come back). Exit status 0 when the spool is
  empty at the end.

``status`` and ``export`` are read-only and safe while processes are using the spool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .spool import SpoolUnavailable
from .spool_db import decodes
from .spool_view import SpoolStatus, iter_rows, read_status


def register(commands: Any) -> None:
    """Add the ``spool`` command and its sub-commands to ``commands`` (an argparse sub-parsers action)."""
    spool = commands.add_parser("spool", help="inspect or export a durable spool directory")
    sub = spool.add_subparsers(dest="spool_command", metavar="SUBCOMMAND", required=True)
    status = sub.add_parser("status", help="events, bytes on disk, oldest event's age, owners")
    status.add_argument("path", metavar="PATH", help="the spool directory (Client(storage=PATH))")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=cmd_status)
    export = sub.add_parser("export", help="print every spooled event as JSON lines, oldest first")
    export.add_argument("path", metavar="PATH", help="the spool directory (Client(storage=PATH))")
    export.set_defaults(handler=cmd_export)
    drain = sub.add_parser("drain", help="deliver the events of processes that ended, then exit")
    drain.add_argument("path", metavar="PATH", help="the spool directory (Client(storage=PATH))")
    drain.add_argument("--write-key", default=os.environ.get("SEGMENT_WRITE_KEY"), help="or SEGMENT_WRITE_KEY")
    drain.add_argument("--host", default=None, help="Tracking API base URL (default https://api.segment.io)")
    drain.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    drain.set_defaults(handler=cmd_drain)


def _age(seconds: float) -> str:
    """``3d 4h``, ``4h 12m``, ``12m 5s``, ``5s``: the two largest units."""
    rest = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        value, rest = divmod(rest, size)
        if value or parts or unit == "s":
            parts.append(f"{value}{unit}")
    return " ".join(parts[:2])


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _print_status(status: SpoolStatus) -> None:
    print(f"spool:   {status.path}")
    oldest = "" if status.oldest_age is None else f" (oldest appended {_age(status.oldest_age)} ago)"
    print(f"events:  {status.events}{oldest}")
    print(f"on disk: {_size(status.bytes)}")
    alive = [o for o in status.owners if o.alive]
    print(f"owners:  {len(alive)} alive, {len(status.owners) - len(alive)} gone")
    for o in status.owners:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o.started))
        state = "alive" if o.alive else "gone (its events go to the next process that opens the spool)"
        print(f"  {o.key}  pid {o.pid} on {o.host}, since {started}: {o.events} events, {state}")
    for name in status.set_aside:
        print(f"set aside (damaged, kept for inspection): {name}")


def cmd_status(args: argparse.Namespace) -> int:
    """``spool status``."""
    try:
        status = read_status(args.path)
    except SpoolUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not status.exists:
        print(f"error: no spool at {status.path!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status.to_dict(), sort_keys=True))
    else:
        _print_status(status)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``spool export``."""
    if not os.path.isdir(args.path):
        print(f"error: no spool at {args.path!r} (not a directory)", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    skipped: list[int] = []
    exported = 0
    try:
        for row in iter_rows(args.path):
            if not decodes(row.data):
                skipped.append(row.id)
                continue
            # Compact JSON holds no raw line break; one outside a string is whitespace, so this is safe.
            out.write(row.data.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n")
            exported += 1
        out.flush()
    except SpoolUnavailable as exc:
        print(f"error: {exc} (after {exported} events)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `... | head`: stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if skipped:
        shown = ", ".join(str(i) for i in skipped[:20]) + (" ..." if len(skipped) > 20 else "")
        print(f"warning: {len(skipped)} rows could not be decoded and were skipped (ids {shown})", file=sys.stderr)
        return 1
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """``spool drain``: a client on the spool adopts what ended processes left, delivers it and closes."""
    from .client import Client  # the command line's other commands do not need the client

    if not args.write_key:
        print("error: a write key is needed (--write-key or SEGMENT_WRITE_KEY)", file=sys.stderr)
        return 1
    if not os.path.isdir(args.path):
        print(f"error: no spool at {args.path!r} (not a directory)", file=sys.stderr)
        return 1
    client = Client(args.write_key, host=args.host, storage=args.path, upload_interval=0.05)
    left = client.flush(args.timeout)
    stats = client.stats()
    client.shutdown(0 if left else args.timeout)
    print(f"adopted:   {stats['recovered']} events")
    print(f"delivered: {stats['delivered']}")
    print(f"dropped:   {stats['dropped']} {stats['dropped_by_reason'] or ''}".rstrip())
    print(f"left:      {left} (kept in the spool)")
    try:
        remaining = read_status(args.path)
    except SpoolUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    alive = sum(o.events for o in remaining.owners if o.alive)
    if alive:
        print(f"{alive} events belong to processes still running: they deliver them themselves")
    return 0 if remaining.events == 0 else 1
