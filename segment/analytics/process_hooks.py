"""Process events: interpreter exit, ``os.fork()``, and the way a forked pool worker exits.

Every open pipeline is drained (boundedly) at interpreter exit and rebuilt in a forked child. A
forked child may end in ``os._exit`` (``multiprocessing`` and ``ProcessPoolExecutor`` workers, celery's
prefork children), which skips ``atexit``: a child that starts sending registers its drain with the
exit hooks those pools do run (``multiprocessing.util.Finalize``, billiard's, celery's
``worker_process_shutdown``), each imported only if the process already loaded it. uWSGI forks without
Python's at-fork hooks: under it, a pipeline notices the new process id on its next call.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from typing import Any, Callable, Protocol

log = logging.getLogger("segment")


class Drainable(Protocol):
    """What the hooks call on each pipeline."""

    def at_exit(self) -> None:
        """Deliver what is left within the exit budget and say what could not be."""

    def after_fork_in_child(self) -> None:
        """Start over with fresh locks, queue and session in a forked child."""


_pipelines: weakref.WeakSet[Any] = weakref.WeakSet()
_child_hooks: list[Callable[[], None]] = []  # run once in a forked child, before the pipelines
_forked = False  # this process is a fork of a Python process: it may well end in os._exit
_pid = os.getpid()
_unseen_lock = threading.Lock()  # only ever taken in a child the at-fork hooks did not see

#: uWSGI forks its workers from C without running Python's at-fork hooks (unless started with
#: ``--py-call-osafterfork``); under it the pipelines compare process ids on every call instead.
unhooked_forks = "uwsgi" in sys.modules


def register(pipeline: Drainable) -> None:
    """Drain ``pipeline`` at exit and rebuild it after a fork (held weakly).

    A pipeline created in a forked child or in a ``multiprocessing`` child (a pool worker that made its
    first client itself; a ``forkserver`` worker imports this module after its fork) also gets the
    pool-worker drain at once: nothing else would run it if the worker ends in ``os._exit``.
    """
    _pipelines.add(pipeline)
    if _forked or _in_pool_process():
        register_worker_drain(pipeline)


def on_fork_child(hook: Callable[[], None]) -> None:
    """Run ``hook`` in every forked child (module-level state such as locks)."""
    _child_hooks.append(hook)


def register_worker_drain(pipeline: Drainable) -> None:
    """In a forked child: drain ``pipeline`` when a pool worker exits through ``os._exit``."""
    ref = weakref.ref(pipeline)

    def drain(*_: Any, **__: Any) -> None:
        target = ref()
        if target is not None:
            _guarded(target.at_exit)

    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.Finalize(None, drain, exitpriority=100)
    billiard_util = sys.modules.get("billiard.util")
    if billiard_util is not None:
        billiard_util.Finalize(None, drain, exitpriority=100)
    celery_signals = sys.modules.get("celery.signals")
    if celery_signals is not None:
        celery_signals.worker_process_shutdown.connect(drain, weak=False)


def _in_pool_process() -> bool:
    process = sys.modules.get("multiprocessing.process")
    return process is not None and process.parent_process() is not None


def _guarded(call: Callable[[], None]) -> None:
    try:
        call()
    except Exception:
        log.exception("error while draining")


def _exit_all() -> None:
    for pipeline in list(_pipelines):
        _guarded(pipeline.at_exit)


def forked_unseen() -> bool:
    """Whether this process was forked without the at-fork hooks running; if so they run now, once."""
    if os.getpid() == _pid:
        return False
    with _unseen_lock:
        if os.getpid() != _pid:  # another thread of this child may have run them meanwhile
            _fork_child_all()
    return True


def _fork_child_all() -> None:
    global _forked, _pid
    _forked = True
    _pid = os.getpid()
    for hook in _child_hooks:
        _guarded(hook)
    for pipeline in list(_pipelines):
        _guarded(pipeline.after_fork_in_child)


atexit.register(_exit_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fork_child_all)
