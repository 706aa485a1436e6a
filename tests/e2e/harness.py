"""Load the e2e-cli modules (their folder name has a dash, so they are not importable by name)."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
E2E_DIR = os.path.join(ROOT, "e2e-cli")
CLI_PATH = os.path.join(E2E_DIR, "cli.py")
DEMO_PATH = os.path.join(E2E_DIR, "demo.py")
if E2E_DIR not in sys.path:
    sys.path.append(E2E_DIR)  # as when the scripts run as `python e2e-cli/<script>.py`: finds checkout.py


def load(filename: str) -> ModuleType:
    """Import ``e2e-cli/<filename>`` once, as module ``e2e_cli_<stem>``."""
    name = "e2e_cli_" + os.path.splitext(filename)[0]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(E2E_DIR, filename))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


runner = load("runner.py")
cli = load("cli.py")
