"""Command line: ``python -m segment.analytics <command> ...``.

Commands (each lives in its own module, which adds its sub-parser through
``register(subparsers)`` and sets ``handler`` to a function returning the exit
status):

* ``spool status PATH [--json]``, ``spool export PATH``, ``spool drain PATH
  --write-key KEY [--host URL]``: :mod:`segment.analytics.spool_cli`.
* ``doctor [--write-key KEY] [--host URL] [--no-send] [--json] [--timeout S]``:
  :mod:`segment.analytics.doctor`.

Exit status: 0 on success, 1 when the command ran but failed (its reason on
stderr), 2 for usage errors (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Optional

# Modules providing ``register(subparsers)``, in the order they appear in ``--help``.
COMMAND_MODULES = ("spool_cli", "doctor")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command module's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="python -m segment.analytics", description="Tools for the Segment analytics library."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
