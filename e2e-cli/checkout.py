"""Run this folder's scripts against the library of the checkout they live in."""

from __future__ import annotations

import os
import sys


def use_checkout() -> None:
    """Put the repository root first on ``sys.path`` when it holds ``segment/analytics``.

    Run as ``python e2e-cli/<script>.py`` from a checkout (or an editable
    install), the scripts then test this tree's library rather than another
    installed copy. Installed elsewhere, this does nothing.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "segment", "analytics", "__init__.py")):
        if not any(os.path.abspath(p or os.curdir) == root for p in sys.path):
            sys.path.insert(0, root)
