"""``python -m segment.analytics doctor``: "are my events arriving?", answered in the playbook's order.

Configuration (key present, host URL valid), DNS, TCP, TLS (certificate, CA bundle, proxy), then one
test event through the library's own transport, and a verdict in plain words; beside them, what
silently stops delivery inside a process (gevent/eventlet patching, uWSGI without threads, a fork
after the client started)::

    python -m segment.analytics doctor [--write-key KEY] [--host URL] [--no-send] [--json] [--timeout S]

The key may also come from ``SEGMENT_WRITE_KEY``; it never appears in the output. Exit status 0 when
the test event was accepted (with ``--no-send``: when no check failed), 1 otherwise. From inside an
application, ``print(render_text(diagnose(...)))`` reports that process's own state.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from segment.analytics.auth import basic_value
from segment.analytics.doctor_net import (
    FAIL,
    WARN,
    Check,
    check_ca_bundle,
    check_dns,
    check_host,
    check_tcp,
    check_tls,
    check_write_key,
)
from segment.analytics.doctor_process import check_clients, check_green, check_uwsgi
from segment.analytics.doctor_send import TestEvent, Verdict, send_test_event, verdict_for
from segment.analytics.logs import redact
from segment.analytics.version import VERSION

__all__ = ["Report", "diagnose", "main", "register", "render_json", "render_text"]

DEFAULT_TIMEOUT = 10.0
KEY_VARIABLE = "SEGMENT_WRITE_KEY"


@dataclass
class Report:
    """Every check, the test event (if sent), the verdict and the exit status."""

    checks: list[Check]
    test_event: Optional[TestEvent]
    verdict: Verdict
    exit_status: int
    secrets: list[str] = field(default_factory=list, repr=False)  # scrubbed from every rendering

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (secrets scrubbed)."""
        data = {
            "library": {"name": "segment-analytics-python", "version": VERSION},
            "python": platform.python_version(),
            "checks": [check.to_dict() for check in self.checks],
            "test_event": None if self.test_event is None else self.test_event.to_dict(),
            "verdict": self.verdict.to_dict(),
            "exit_status": self.exit_status,
        }
        return dict(_scrub(data, self.secrets))


def diagnose(
    write_key: Optional[str] = None,
    host: Optional[str] = None,
    *,
    send: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    key_source: str = "--write-key",
) -> Report:
    """Run every check (and, with ``send``, the test event); never raises.

    ``write_key`` ``None`` reads ``SEGMENT_WRITE_KEY``.
    """
    if write_key is None:
        write_key, key_source = os.environ.get(KEY_VARIABLE) or None, KEY_VARIABLE
    checks = [check_write_key(write_key, key_source)]
    host_check, target = check_host(host)
    checks.append(host_check)
    if target is not None:
        checks.append(check_ca_bundle(target))
        dns, addresses = check_dns(target, timeout)
        checks.append(dns)
        if addresses:
            tcp, address = check_tcp(target, addresses, timeout)
            checks.append(tcp)
            checks.append(check_tls(target, address, timeout))
    checks += [_guarded("gevent/eventlet", check_green), _guarded("uWSGI", check_uwsgi)]
    checks.append(_guarded("clients", check_clients))
    test: Optional[TestEvent] = None
    if send and write_key and target is not None:
        test = send_test_event(write_key, host, timeout)
        checks.append(_test_check(test))
    verdict = verdict_for(test, key_missing=not write_key)
    if send:
        status = 0 if verdict.accepted else 1
    else:
        status = 1 if any(check.status == FAIL for check in checks) else 0
        if target is None or not write_key:
            status = 1
    secrets = [write_key, basic_value(write_key)[len("Basic ") :]] if write_key else []
    if target is not None and target.proxy_password:
        secrets.append(target.proxy_password)
    return Report(checks, test, verdict, status, secrets)


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a check that breaks is reported, never raised
        return Check(name, WARN, f"could not be checked: {type(exc).__name__}: {exc}")


def _test_check(test: TestEvent) -> Check:
    where = f"messageId {test.message_id}"
    if test.kind is not None:
        return Check("test event", FAIL, f"no answer: {test.kind} ({test.error}) after {test.ms:.0f} ms; {where}")
    status = test.status or 0
    ok = 200 <= status <= 299 and test.event_status is None
    text = f"HTTP {status} in {test.ms:.0f} ms" + (
        "" if test.event_status is None else f", event status {test.event_status}"
    )
    return Check(
        "test event", "ok" if ok else FAIL, f'{text}; {where}, event "{test.event}"', details={"status": status}
    )


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every secret (and every registered one, see ``logs``) removed from its strings."""
    if isinstance(value, str):
        for secret in secrets:
            if len(secret) >= 4:
                value = value.replace(secret, "[REDACTED]")
        return redact(value)
    if isinstance(value, dict):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item, secrets) for item in value]
    return value


_LABELS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def render_text(report: Report) -> str:
    """The report for a terminal: one line per check, advice under it, then the verdict."""
    lines = [f"Segment doctor: segment-analytics-python {VERSION}, Python {platform.python_version()}", ""]
    width = max(len(check.name) for check in report.checks)
    for check in report.checks:
        lines.append(f"  {_LABELS.get(check.status, check.status)}  {check.name:<{width}}  {check.summary}")
        if check.advice and check.status in (WARN, FAIL):
            lines.append(f"        {'':<{width}}  -> {check.advice}")
    verdict = report.verdict
    lines += ["", ("OK: " if verdict.accepted else "PROBLEM: ") + verdict.title, verdict.advice]
    problems = [c for c in report.checks if c.status in (WARN, FAIL) and c.name != "test event"]
    if verdict.accepted and problems:
        names = ", ".join(c.name for c in problems)
        lines.append(f"But see above ({names}): what the client does in your process may still differ.")
    lines.append(f"(exit status {report.exit_status})")
    return str(_scrub("\n".join(lines), report.secrets)) + "\n"


def render_json(report: Report) -> str:
    """The report as one JSON object."""
    return str(_scrub(json.dumps(report.to_dict()), report.secrets)) + "\n"


# -- the command line -------------------------------------------------------------------------------


def register(commands: Any) -> None:
    """Add the ``doctor`` command to ``commands`` (an argparse sub-parsers action)."""
    doctor = commands.add_parser(
        "doctor",
        help="are my events arriving? check the key, host, network, TLS and process, send one test event",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    doctor.add_argument("--write-key", metavar="KEY", help=f"the source's write key (default: ${KEY_VARIABLE})")
    doctor.add_argument("--host", metavar="URL", help="Tracking API base URL (default: https://api.segment.io)")
    doctor.add_argument("--no-send", action="store_true", help="run every check but do not send the test event")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="S", help="seconds per network step (10)"
    )
    doctor.set_defaults(handler=run_command)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"--timeout must be between 0 and 3600 seconds, got {text}")
    return value


def run_command(args: argparse.Namespace) -> int:
    """The ``doctor`` command's handler: print the report, return the exit status."""
    logger = logging.getLogger("segment")  # the report says it all: no stray log lines on the terminal
    quiet = logging.NullHandler()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(quiet)
    try:
        report = diagnose(args.write_key, args.host, send=not args.no_send, timeout=args.timeout)
    finally:
        logger.removeHandler(quiet)
        logger.propagate = propagate
    text = render_json(report) if args.json else render_text(report)
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    sys.stdout.write(text.encode(encoding, "backslashreplace").decode(encoding))  # whatever a server said
    sys.stdout.flush()
    return report.exit_status


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``doctor`` on its own (``argv`` without the command name); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m segment.analytics")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *(argv or [])])
    return int(args.handler(args))
