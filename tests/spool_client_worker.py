"""Processes for tests/test_spool_client.py and tests/test_spool_crash.py: ``python spool_client_worker.py MODE JSON``.

Every mode uses only the public API (``Client(..., storage=PATH)``, the module-level
settings, ``stats()``, ``flush``/``shutdown``) and prints one fact per line, flushed at
once so that a SIGKILL loses nothing that was printed:

* ``A <messageId> <time.monotonic()>``: a call returned ``(True, message)`` (the time is
  taken after the call returned, so the event was accepted before it);
* ``B <messageId> <hex of the message's JSON>``: the bytes the library sends for it
  (``--bytes``), to compare with what the API received;
* ``E <reason> <count> <messageId>...``: ``on_error`` was called;
* ``S <messageId>...``: ``on_success`` was called (``"report_success": true``);
* ``W <text>``: a WARNING (or worse) on the ``segment`` logger;
* ``RSS <kB>``: the process's resident memory (``/proc/self/status``);
* ``FLUSH <left>``, ``SHUTDOWN <left>``, ``STATS <json>``, ``FORK ...``, ``POOL ...``: results of the steps.

``JSON`` configures the run (see :func:`produce`).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import segment.analytics as analytics
from segment.analytics import Client
from segment.analytics.encoding import encode

WRITE_KEY = "test-write-key-9f8e7d"
_out = threading.Lock()


def _fresh_lock() -> None:  # a forked child must not inherit the lock held by another thread
    global _out
    _out = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock)


def say(*parts: object) -> None:
    """One line on stdout, written and flushed at once (safe from any thread)."""
    line = " ".join(str(p) for p in parts) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


class _Relay(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say("W", record.getMessage().replace("\n", " | "))


def _listen_to_logs() -> None:
    logger = logging.getLogger("segment")
    logger.addHandler(_Relay(logging.WARNING))
    logger.propagate = False


def on_error(exc: BaseException, events: list[dict[str, Any]]) -> None:
    say("E", getattr(exc, "reason", type(exc).__name__), len(events), *(e.get("messageId", "?") for e in events))


def on_success(events: list[dict[str, Any]]) -> None:
    say("S", *(e.get("messageId", "?") for e in events))


def rss_kb() -> int:
    """VmRSS of this process, in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def client_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The options every mode gives its ``Client``; ``cfg["options"]`` adds or overrides."""
    options: dict[str, Any] = {
        "host": cfg["host"],
        "storage": cfg["path"],
        "storage_sync_interval": cfg.get("sync", 0.05),
        "exit_timeout": cfg.get("exit_timeout", 0.3),
        "upload_interval": 0.05,
        "on_error": on_error,
    }
    if cfg.get("report_success"):
        options["on_success"] = on_success
    options.update(cfg.get("options", {}))
    return options


def track_events(client: Any, cfg: dict[str, Any], count: Optional[int], tag: str, start: int = 0) -> int:
    """Track ``count`` events (for ever when None) at ``cfg["rate"]`` per second; returns how many were accepted."""
    rate = float(cfg.get("rate", 0)) or None
    pad = "x" * int(cfg.get("pad", 20))
    show_bytes = bool(cfg.get("bytes"))
    rss_every = int(cfg.get("rss_every", 0))
    fsize_after = cfg.get("fsize_after")
    began = time.monotonic()
    accepted = 0
    i = start
    while count is None or i < start + count:
        if fsize_after is not None and i == fsize_after:
            deadline = time.monotonic() + 10  # a hang guard: the spool holds events before the disk fills
            while client.stats()["stored"] < fsize_after // 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            limit_file_size(cfg["path"], int(cfg["fsize_room"]))
        ok, message = client.track(f"user-{i % 7}", "Spool Tested", {"tag": tag, "n": i, "pad": pad})
        if ok:
            accepted += 1
            say("A", message["messageId"], repr(time.monotonic()))
            if show_bytes:
                say("B", message["messageId"], encode(message).hex())
        if rss_every and (i - start + 1) % rss_every == 0:
            say("RSS", rss_kb())
        i += 1
        if rate:
            ahead = began + (i - start) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    return accepted


def limit_file_size(path: str, room: int) -> None:
    """Let files grow only ``room`` bytes past the spool's current size (a disk that is about to be full)."""
    used = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith("spool.db"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (used + room, resource.RLIM_INFINITY))
    say("FSIZE", used + room)


def then(client: Any, steps: list[str]) -> None:
    """Run the steps after tracking: ``flush:T``, ``shutdown:T``, ``stats``, ``sleep:T``, ``wait:FILE`` and endings."""
    for step in steps:
        name, _, arg = step.partition(":")
        if name == "flush":
            say("FLUSH", client.flush(float(arg) if arg else None))
        elif name == "shutdown":
            say("SHUTDOWN", client.shutdown(float(arg) if arg else None))
        elif name == "stats":
            say("STATS", json.dumps(client.stats(), sort_keys=True))
        elif name == "sleep":
            time.sleep(float(arg))
        elif name == "wait":
            while not os.path.exists(arg):
                time.sleep(0.02)
        elif name == "until_pending":  # flush until nothing is pending, within arg seconds
            deadline = time.monotonic() + float(arg)
            while client.flush(0.5) and time.monotonic() < deadline:
                pass
        elif name == "sys_exit":
            sys.exit(0)
        elif name == "sigterm":  # unhandled: the default action ends the process at once, no atexit
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        elif name == "os_exit":
            os._exit(0)
        elif name == "hang":
            time.sleep(3600)
        else:
            raise SystemExit(f"unknown step {step!r}")


def produce(cfg: dict[str, Any]) -> None:
    """A client on ``cfg["path"]`` sending to ``cfg["host"]``: track ``count`` events, then the ``then`` steps.

    Keys: ``path``, ``host``, ``sync`` (storage_sync_interval), ``options`` (more Client
    options), ``count`` (None: for ever), ``rate`` (events/s, 0: as fast as it can),
    ``pad`` (bytes of padding per event), ``tag``, ``bytes`` (print each message's JSON),
    ``rss_every``, ``fsize_after``/``fsize_room`` (limit file sizes once that many events
    were tracked and half of them are in the spool), ``drop_privileges`` (become nobody first), ``module`` (use the
    module-level client and ``analytics.storage`` instead of a ``Client``).
    """
    if cfg.get("drop_privileges") and os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    _listen_to_logs()
    if cfg.get("module"):
        options = client_options(cfg)
        analytics.write_key = WRITE_KEY
        for name, value in options.items():
            setattr(analytics, name, value)
        client: Any = analytics
    else:
        client = Client(WRITE_KEY, **client_options(cfg))
    say("READY", os.getpid(), json.dumps(client.stats(), sort_keys=True))
    track_events(client, cfg, cfg.get("count"), cfg.get("tag", "p"))
    then(client, cfg.get("then", []))


def forker(cfg: dict[str, Any]) -> None:
    """A parent and an ``os.fork()`` child both track through one spool-backed client.

    The parent tracks ``count`` events and flushes (its spool is open), then forks. The child
    tracks ``child_count`` events, waits ``child_wait`` seconds and ends in ``os._exit`` (no
    exit drain). The parent then tracks ``count`` more events and runs the ``then`` steps.
    """
    _listen_to_logs()
    client = Client(WRITE_KEY, **client_options(cfg))
    track_events(client, cfg, cfg.get("count", 10), "parent")
    client.flush(5)
    pid = os.fork()
    if pid == 0:
        try:
            track_events(client, cfg, cfg.get("child_count", 10), "child")
            time.sleep(float(cfg.get("child_wait", 0.3)))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    track_events(client, cfg, cfg.get("count", 10), "parent", start=1000)
    then(client, cfg.get("then", []))


_pool_client: Optional[Client] = None
_pool_cfg: dict[str, Any] = {}


def _pool_task(i: int) -> int:
    assert _pool_client is not None
    return track_events(_pool_client, _pool_cfg, 20, f"w{i}", start=100 * i)


def pool(cfg: dict[str, Any]) -> None:
    """A fork-start ``multiprocessing`` Pool whose workers track through the parent's client and end in os._exit."""
    global _pool_client, _pool_cfg
    _listen_to_logs()
    _pool_cfg = cfg
    _pool_client = Client(WRITE_KEY, **client_options(cfg))
    track_events(_pool_client, cfg, 5, "main")
    _pool_client.flush(0.5)  # the spool is open before the fork
    workers = multiprocessing.get_context("fork").Pool(2, maxtasksperchild=cfg.get("tasks_per_child", 2))
    counts = workers.map(_pool_task, range(6), chunksize=1)
    workers.close()
    workers.join()
    say("POOL", json.dumps(counts))
    then(_pool_client, cfg.get("then", []))


if __name__ == "__main__":
    mode, config = sys.argv[1], json.loads(sys.argv[2])
    {"produce": produce, "fork": forker, "pool": pool}[mode](config)
