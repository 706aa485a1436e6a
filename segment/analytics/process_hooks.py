"""Process events: interpreter exit, ``os.fork()``, and the way a forked pool worker exits.

Every open pipeline is drained (boundedly) at interpreter exit and rebuilt in a forked child. A
forked child may end in ``os._exit`` (``multiprocessing`` and ``ProcessPoolExecutor`` workers, celery's
prefork children), which skips ``atexit``: a child that starts sending registers its drain with the
exit hooks those pools do run (``multiprocessing.util.Finalize``, billiard's, celery's
``worker_process_shutdown``), each imported only if the process already loaded it.

The rebuild in a child waits for the child's first call (:func:`catch_up`), not the fork itself: a
gevent or eventlet worker forked from an unpatched master (``gunicorn -k gevent --preload``) patches
``threading`` in between, and locks made before the patch would block its hub. The at-fork hook only
raises :data:`watch`. uWSGI forks its workers from C without Python's at-fork hooks (unless started
with ``--py-call-uwsgi-fork-hooks``): under it ``watch`` stays up, and the calls compare process ids.
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
_pid = os.getpid()  # the process the pipelines were last built (or rebuilt) for
_catch_up_lock = threading.Lock()  # only ever taken in a child, to rebuild once

#: uWSGI forks its workers from C without running Python's at-fork hooks.
unhooked_forks = "uwsgi" in sys.modules
#: Whether the pipelines must call :func:`catch_up` before anything else (after a fork; always under uWSGI).
watch = unhooked_forks


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
            if watch:
                _guarded(catch_up)
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
    if watch:
        _guarded(catch_up)
    for pipeline in list(_pipelines):
        _guarded(pipeline.at_exit)


def catch_up() -> None:
    """In a process forked since the pipelines were built: run the child hooks and rebuild them, once.

    Cheap when there was no fork (:data:`watch` is down); hot paths test ``watch`` themselves first.
    """
    global watch
    if not watch:
        return
    if os.getpid() != _pid:
        with _catch_up_lock:
            if os.getpid() != _pid:  # another thread of this child may have done it meanwhile
                _fork_child_all()
    watch = unhooked_forks


def _fork_child_all() -> None:
    global _forked, _pid
    _forked = True
    _pid = os.getpid()
    for hook in _child_hooks:
        _guarded(hook)
    for pipeline in list(_pipelines):
        _guarded(pipeline.after_fork_in_child)


def _after_fork_in_child() -> None:
    global _forked, watch
    _forked = True
    watch = True  # the rebuild waits for the first call: see the module docstring


atexit.register(_exit_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
