"""The doctor's checks of the process itself: what silently stops delivery even when the network is fine.

* gevent / eventlet monkey-patching: complete and done before the client was built, or not;
* a uWSGI worker without threads (``enable-threads``), or forked without Python's fork hooks;
* a client whose process was forked after it started (its consumer threads stayed in the parent).

These matter inside the application: ``python -m segment.analytics doctor`` run from a shell sees a
fresh process; call :func:`segment.analytics.doctor.diagnose` from the application (a view, a shell
in the worker) to see its own state.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Any, Optional

from segment.analytics import process_hooks
from segment.analytics.doctor_net import FAIL, OK, WARN, Check

__all__ = ["check_clients", "check_green", "check_uwsgi"]

_GREEN_MODULES = ("threading", "socket", "ssl", "time", "select")


def _lock_type() -> type:
    return type(threading.Lock())


def _pipelines() -> list[Any]:
    # the live pipelines of this process (process_hooks holds them weakly for the exit drain), rebuilt
    # first if the process forked since their last call, as that call would have done
    if process_hooks.watch:
        process_hooks.catch_up()
    return list(process_hooks._pipelines)


def check_green() -> Check:
    """gevent or eventlet: not loaded, fully patched (fine), partly patched or patched too late (not fine)."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if gevent_monkey is not None:
        name = "gevent"
        patched = [m for m in _GREEN_MODULES if gevent_monkey.is_module_patched(m)]
    elif eventlet_patcher is not None:
        name = "eventlet"
        names = {"threading": "thread", "socket": "socket", "time": "time", "select": "select", "ssl": "socket"}
        patched = [m for m in _GREEN_MODULES if eventlet_patcher.is_monkey_patched(names[m])]
    else:
        return Check("gevent/eventlet", OK, "not monkey-patched: consumers are ordinary threads")
    details: dict[str, Any] = {"library": name, "patched": patched}
    if not patched:
        return Check("gevent/eventlet", OK, f"{name} is loaded but patches nothing: consumers are ordinary threads")
    if "threading" not in patched or "socket" not in patched:
        missing = [m for m in ("threading", "socket") if m not in patched]
        return Check(
            "gevent/eventlet",
            FAIL,
            f"{name} patched {', '.join(patched)} but not {', '.join(missing)}: consumers may block the hub or hang",
            f"patch everything first thing, before other imports ({name}'s patch_all / monkey_patch)",
            details,
        )
    late = [p for p in _pipelines() if type(getattr(p.buffer, "_lock", None)) is not _lock_type()]
    if late:
        return Check(
            "gevent/eventlet",
            WARN,
            f"{name} patched after {len(late)} client(s) were built: their consumers are native threads, and "
            "flush() blocks the whole hub while it waits",
            "monkey-patch before importing segment.analytics (or build the client afterwards)",
            details,
        )
    return Check(
        "gevent/eventlet",
        OK,
        f"{name} monkey-patched ({', '.join(patched)}): consumers run as greenlets and send whenever your code "
        "yields to the hub (I/O, sleep); a long CPU-bound stretch delays delivery",
        details=details,
    )


def _option(opt: Any, name: str) -> Any:
    for key in (name, name.encode()):
        if key in opt:
            value = opt[key]
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


def _true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "")
    return bool(value)


def check_uwsgi() -> Check:
    """Under uWSGI: are Python threads enabled, and do workers get Python's fork hooks."""
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        try:
            uwsgi = importlib.import_module("uwsgi")  # only importable inside uWSGI
        except ImportError:
            return Check("uWSGI", OK, "not running under uWSGI")
    opt = getattr(uwsgi, "opt", None) or {}
    threads = _option(opt, "threads")
    try:
        many_threads = int(threads or 0) > 1
    except (TypeError, ValueError):
        many_threads = False
    enabled = _true(_option(opt, "enable-threads")) if _option(opt, "enable-threads") is not None else False
    details = {"enable-threads": enabled, "threads": threads}
    if not (enabled or many_threads):
        return Check(
            "uWSGI",
            FAIL,
            "uWSGI worker without --enable-threads: the client's consumer threads never run, events pile up "
            "in the queue and are lost",
            "add enable-threads = true (or threads = N) to the uWSGI configuration",
            details,
        )
    lazy = any(_true(_option(opt, name)) for name in ("lazy-apps", "lazy") if _option(opt, name) is not None)
    hooks = _option(opt, "py-call-uwsgi-fork-hooks")
    details.update({"lazy-apps": lazy, "py-call-uwsgi-fork-hooks": hooks is not None and _true(hooks)})
    if not lazy and not (hooks is not None and _true(hooks)):
        return Check(
            "uWSGI",
            WARN,
            "threads enabled; but workers are forked without Python's fork hooks: the library starts a client "
            "built while the app loads over in each worker (on its first call), yet a thread running in the "
            "master at the fork can leave a worker's interpreter locked",
            "set lazy-apps = true or py-call-uwsgi-fork-hooks = true",
            details,
        )
    return Check("uWSGI", OK, "threads enabled; workers get a working client after the fork", details=details)


def check_clients() -> Check:
    """Every client of this process: forked without the fork hooks, consumers dead, drops so far."""
    pipelines = _pipelines()
    if not pipelines:
        return Check("clients", OK, "no client in this process (run the doctor inside your application to see it)")
    default = _default_pipeline()
    me = os.getpid()
    findings: list[dict[str, Any]] = []
    worst = OK
    words = []
    for index, pipeline in enumerate(pipelines, 1):
        label = "default client" if pipeline is default else f"client {index}"
        finding, status, text = _one_client(pipeline, me)
        finding["client"] = label
        findings.append(finding)
        words.append(f"{label}: {text}")
        worst = FAIL if FAIL in (worst, status) else WARN if WARN in (worst, status) else OK
    advice = ""
    if any(f.get("forked_without_hooks") for f in findings):
        advice = (
            "build the client after the fork (e.g. uWSGI lazy-apps = true or py-call-uwsgi-fork-hooks = true; "
            "gunicorn: not in the master with --preload, or in post_fork)"
        )
    elif any(f.get("dropped") for f in findings):
        advice = "see client.stats()['dropped_by_reason'] and the WARNING summaries on the 'segment' logger"
    return Check("clients", worst, "; ".join(words), advice, {"clients": findings})


def _default_pipeline() -> Optional[Any]:
    package = sys.modules.get("segment.analytics")
    client = getattr(package, "default_client", None)
    return getattr(client, "_pipeline", None)


def _one_client(pipeline: Any, me: int) -> tuple[dict[str, Any], str, str]:
    state = getattr(getattr(pipeline, "state", None), "value", "?")
    finding: dict[str, Any] = {"state": state, "pid": getattr(pipeline, "pid", None), "this_pid": me}
    if finding["pid"] not in (None, me):
        # forked below Python (no at-fork hooks ran): its locks may be held by threads that do not exist here
        finding["forked_without_hooks"] = True
        finding["queue_depth"] = len(getattr(pipeline.buffer, "_items", ()))
        text = (
            f"built in process {finding['pid']}, this is {me}: forked without Python's fork hooks, so its "
            f"consumer threads do not exist here ({finding['queue_depth']} events queued and never sent)"
        )
        return finding, FAIL, text
    stats = pipeline.stats()
    alive = sum(1 for consumer in pipeline.consumers if consumer.is_alive())
    finding.update(
        consumers_alive=alive,
        queue_depth=stats["queue_depth"],
        pending=stats["pending"],
        dropped=stats["dropped"],
        dropped_by_reason=stats["dropped_by_reason"],
        delivered=stats["delivered"],
    )
    text = f"{state}, {alive} consumer(s) alive, {stats['delivered']:,} delivered, {stats['pending']:,} pending"
    if state == "running" and pipeline.config.send and not pipeline.config.sync_mode and not alive:
        return finding, FAIL, text + ": its consumer threads are gone (events queue up and are never sent)"
    if stats["dropped"]:
        reasons = ", ".join(f"{count:,} {reason}" for reason, count in sorted(stats["dropped_by_reason"].items()))
        return finding, WARN, text + f", {stats['dropped']:,} dropped ({reasons})"
    return finding, OK, text
