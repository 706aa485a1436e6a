"""The e2e-cli driver (e2e-cli/README.md): send what one JSON input describes, print one JSON verdict.

Usage::

    e2e-cli --input '{"writeKey": "...", "apiHost": "http://127.0.0.1:8080",
                      "sequences": [{"delayMs": 0, "events": [{"type": "track", ...}]}],
                      "config": {"flushAt": 10, "flushInterval": 500, "maxRetries": 3}}'
    python e2e-cli/cli.py --input '...'        # from a checkout

The last line of stdout is ``{"success": bool, "error": str|null, "sentBatches": int}``;
everything else (library logs, a summary of ``client.stats()``) goes to stderr.
The exit code is 0 on success and 1 otherwise. See ``e2e-cli/README.md`` for
the whole contract.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

try:  # installed: the package is importable; from a checkout: this folder is sys.path[0]
    from segment_e2e_cli.checkout import use_checkout
except ImportError:
    from checkout import use_checkout  # type: ignore[no-redef]

use_checkout()

from segment.analytics import Client  # noqa: E402
from segment.analytics.errors import ArgumentError  # noqa: E402

__all__ = ["EVENT_TYPES", "InputError", "Outcome", "RunSpec", "main", "parse_input", "run"]

#: The event types the driver accepts, each the name of the ``Client`` method that sends it.
EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")

#: Input field -> keyword argument of the ``Client`` call.
_FIELD_ARGS = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "messageId": "message_id",
    "timestamp": "timestamp",
    "traits": "traits",
    "event": "event",
    "properties": "properties",
    "name": "name",
    "category": "category",
    "previousId": "previous_id",
    "groupId": "group_id",
    "context": "context",
    "integrations": "integrations",
}
_ARG_FIELDS = {arg: name for name, arg in _FIELD_ARGS.items()}
_COMMON = ("messageId", "timestamp", "context", "integrations")
#: Which input fields each event type takes (others are ignored with a warning).
_TYPE_FIELDS = {
    "track": ("userId", "anonymousId", "event", "properties", *_COMMON),
    "identify": ("userId", "anonymousId", "traits", *_COMMON),
    "page": ("userId", "anonymousId", "name", "category", "properties", *_COMMON),
    "screen": ("userId", "anonymousId", "name", "category", "properties", *_COMMON),
    "group": ("userId", "anonymousId", "groupId", "traits", *_COMMON),
    "alias": ("userId", "previousId", *_COMMON),
}
_TOP_LEVEL = frozenset({"writeKey", "apiHost", "cdnHost", "sequences", "config"})
_CONFIG_KEYS = frozenset(
    {"flushAt", "flushInterval", "maxRetries", "timeout", "maxTotalBackoffDuration", "maxRateLimitDuration"}
)


class InputError(Exception):
    """The input cannot be run; the message is the ``error`` the driver reports."""


@dataclass(frozen=True)
class EventCall:
    """One event of the input: the ``Client`` method and its keyword arguments."""

    where: str  # e.g. "sequences[0].events[2]"
    type: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class SequenceSpec:
    """One entry of ``sequences``: a pause, then events sent back to back."""

    delay_ms: float
    events: list[EventCall]


@dataclass(frozen=True)
class RunSpec:
    """A validated input: what to send, where, and the ``Client`` options to send it with."""

    write_key: str
    api_host: Optional[str]
    sequences: list[SequenceSpec]
    client_options: dict[str, Any]

    @property
    def event_count(self) -> int:
        """How many events the input asks to send."""
        return sum(len(s.events) for s in self.sequences)


@dataclass
class Outcome:
    """The verdict printed on the last line of stdout, plus the counters behind it."""

    success: bool
    error: Optional[str]
    sent_batches: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The one-line JSON verdict (e2e-cli/README.md)."""
        return json.dumps({"success": self.success, "error": self.error, "sentBatches": self.sent_batches})


# -- input ---------------------------------------------------------------------------


def _warn(text: str) -> None:
    print(f"e2e-cli: warning: {text}", file=sys.stderr)


def _number(name: str, value: Any, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a number, got {json.dumps(value)}")
    if value < 0 or (positive and value == 0):
        raise InputError(f"{name} must be {'positive' if positive else 'zero or more'}, got {value!r}")
    return float(value)


def _whole(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {json.dumps(value)}")
    return value


def _seconds_or_ms(name: str, value: Any) -> float:
    """A value above 100 is milliseconds, otherwise seconds (e2e-cli/README.md)."""
    number = _number(name, value, positive=True)
    return number / 1000.0 if number > 100 else number


def _client_options(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InputError(f"config must be an object, got {json.dumps(config)}")
    for key in sorted(set(config) - _CONFIG_KEYS):
        _warn(f"ignoring unknown config.{key}")
    options: dict[str, Any] = {}
    if config.get("flushAt") is not None:
        options["upload_size"] = _whole("config.flushAt", config["flushAt"], minimum=1)
    if config.get("flushInterval") is not None:
        options["upload_interval"] = _seconds_or_ms("config.flushInterval", config["flushInterval"])
    if config.get("maxRetries") is not None:
        options["max_retries"] = _whole("config.maxRetries", config["maxRetries"], minimum=0)
    if config.get("timeout") is not None:
        options["timeout"] = _seconds_or_ms("config.timeout", config["timeout"])
    if config.get("maxTotalBackoffDuration") is not None:
        options["max_total_backoff_duration"] = _number(
            "config.maxTotalBackoffDuration", config["maxTotalBackoffDuration"], positive=False
        )
    if config.get("maxRateLimitDuration") is not None:
        options["max_rate_limit_duration"] = _number(
            "config.maxRateLimitDuration", config["maxRateLimitDuration"], positive=False
        )
    return options


def _event_call(where: str, event: Any) -> EventCall:
    if not isinstance(event, dict):
        raise InputError(f"{where} must be an object, got {json.dumps(event)}")
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        shown = "missing" if kind is None else json.dumps(kind)
        raise InputError(f"{where}.type is {shown}; expected one of {', '.join(EVENT_TYPES)}")
    allowed = _TYPE_FIELDS[kind]
    kwargs: dict[str, Any] = {}
    for key, value in event.items():
        if key == "type" or value is None:
            continue
        if key not in allowed:
            what = "unknown field" if key not in _FIELD_ARGS else f"field not used by {kind}"
            _warn(f"{where}: ignoring {what} {key!r}")
            continue
        kwargs[_FIELD_ARGS[key]] = value
    return EventCall(where, kind, kwargs)


def parse_input(text: str) -> RunSpec:
    """Parse and check the ``--input`` JSON; raise :class:`InputError` naming what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"--input must be a JSON object, got {type(data).__name__}")
    for key in sorted(set(data) - _TOP_LEVEL):
        _warn(f"ignoring unknown input field {key!r}")
    write_key = data.get("writeKey")
    if not isinstance(write_key, str) or not write_key:
        raise InputError(
            "writeKey is required (a non-empty string)"
            if write_key is None
            else f"writeKey must be a non-empty string, got {json.dumps(write_key)}"
        )
    api_host = data.get("apiHost")
    if api_host is not None and (not isinstance(api_host, str) or not api_host):
        raise InputError(f"apiHost must be a non-empty string, got {json.dumps(api_host)}")
    raw_sequences = data.get("sequences", [])
    if not isinstance(raw_sequences, list):
        raise InputError(f"sequences must be a list, got {json.dumps(raw_sequences)}")
    sequences = []
    for i, raw in enumerate(raw_sequences):
        where = f"sequences[{i}]"
        if not isinstance(raw, dict):
            raise InputError(f"{where} must be an object, got {json.dumps(raw)}")
        delay = raw.get("delayMs", 0)
        delay_ms = 0.0 if delay is None else _number(f"{where}.delayMs", delay, positive=False)
        events = raw.get("events", [])
        if not isinstance(events, list):
            raise InputError(f"{where}.events must be a list, got {json.dumps(events)}")
        sequences.append(SequenceSpec(delay_ms, [_event_call(f"{where}.events[{j}]", e) for j, e in enumerate(events)]))
    return RunSpec(write_key, api_host, sequences, _client_options(data.get("config")))


def _argument_message(call: EventCall, exc: ArgumentError) -> str:
    name = _ARG_FIELDS.get(exc.field, exc.field)
    text = str(exc)
    for arg, camel in _ARG_FIELDS.items():
        text = text.replace(arg, camel)
    return f"{call.where} ({call.type}): {text} (field {name!r})"


def check_events(spec: RunSpec) -> None:
    """Run every call through the library's argument checks without sending anything.

    The input is refused as a whole (nothing sent) when one event would raise
    in the caller's thread, e.g. a track without ``event``.
    """
    dry = Client(spec.write_key, send=False, exit_timeout=0)
    try:
        for sequence in spec.sequences:
            for call in sequence.events:
                try:
                    getattr(dry, call.type)(**call.kwargs)
                except ArgumentError as exc:
                    raise InputError(_argument_message(call, exc)) from None
    finally:
        dry.shutdown(timeout=0)


# -- running -------------------------------------------------------------------------


def _describe_drop(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or type(exc).__name__
    status = getattr(exc, "status", None)
    if status is not None:
        return f"{reason} (status {status})"
    kind = getattr(exc, "kind", None)
    if kind:
        return f"{reason} (network error: {kind})"
    return reason


def _failure_text(stats: dict[str, Any], drops: list[tuple[BaseException, int]], total: int) -> str:
    groups: OrderedDict[str, list[Any]] = OrderedDict()
    for exc, count in drops:
        key = _describe_drop(exc)
        if key not in groups:
            groups[key] = [0, getattr(exc, "message", None) or str(exc)]
        groups[key][0] += count
    missing = total - int(stats.get("delivered", 0))
    parts = [f"{label} for {count} event(s): {detail}" for label, (count, detail) in groups.items()]
    pending = int(stats.get("pending", 0))
    if pending:
        parts.append(f"{pending} event(s) still pending when the client shut down")
    if not parts:
        parts.append(f"delivered {stats.get('delivered', 0)} of {total} event(s)")
    return f"{missing} of {total} event(s) not delivered: " + "; ".join(parts)


def run(
    spec: RunSpec,
    *,
    flush_timeout: Optional[float] = None,
    debug: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Send the events of ``spec`` with a real :class:`Client` and judge the result.

    Success means every event was delivered and none was dropped or left
    pending (``client.stats()`` and ``on_error`` agree on it).
    """
    drops: list[tuple[BaseException, int]] = []
    lock = threading.Lock()

    def on_error(exc: BaseException, events: list[dict[str, Any]]) -> None:
        with lock:
            drops.append((exc, len(events)))

    if debug:
        logging.getLogger("segment").setLevel(logging.DEBUG)
    client = Client(spec.write_key, host=spec.api_host, on_error=on_error, exit_timeout=0, **spec.client_options)
    refused = 0
    try:
        for sequence in spec.sequences:
            if sequence.delay_ms > 0:
                sleep(sequence.delay_ms / 1000.0)
            for call in sequence.events:
                ok, _ = getattr(client, call.type)(**call.kwargs)
                refused += 0 if ok else 1
        client.flush(flush_timeout)
    finally:
        client.shutdown(flush_timeout)
    stats = client.stats()
    total = spec.event_count
    with lock:
        dropped = list(drops)
    success = (
        not dropped and not refused and stats["dropped"] == 0 and stats["pending"] == 0 and stats["delivered"] == total
    )
    error = None if success else _failure_text(stats, dropped, total)
    return Outcome(success, error, int(stats.get("batches_delivered", 0)), stats)


# -- command line --------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit 2
        raise InputError(f"bad arguments: {message} (usage: e2e-cli --input '<JSON>')")


def _read_input(value: str) -> str:
    """``--input`` is the JSON itself; ``-`` reads stdin and ``@FILE`` reads a file."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise InputError(f"cannot read --input file {value[1:]!r}: {exc.strerror}") from None
    return value


def _summary(stats: dict[str, Any]) -> str:
    keys = ("accepted", "delivered", "delivered_after_retry", "dropped", "pending", "retries", "requests")
    text = ", ".join(f"{k} {stats.get(k, 0)}" for k in keys)
    extra = {k: stats[k] for k in ("dropped_by_reason", "retries_by_status") if stats.get(k)}
    return text + (f", {json.dumps(extra, sort_keys=True)}" if extra else "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``e2e-cli`` console script; returns the exit code (0 success, 1 failure)."""
    parser = _Parser(prog="e2e-cli", description="Send events described by one JSON input (e2e-cli/README.md).")
    parser.add_argument("--input", required=True, help="the input JSON ('-' for stdin, '@FILE' for a file)")
    parser.add_argument("--debug", action="store_true", help="log the library's debug output to stderr")
    parser.add_argument(
        "--flush-timeout",
        type=float,
        default=None,
        help="seconds to wait for delivery before giving up (default: until done)",
    )
    debug = os.environ.get("E2E_CLI_DEBUG", "") not in ("", "0", "false")
    try:
        args = parser.parse_args(argv)
        debug = debug or args.debug
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.DEBUG if debug else logging.WARNING,
            format="e2e-cli: %(levelname)s %(name)s: %(message)s",
        )
        spec = parse_input(_read_input(args.input))
        check_events(spec)
        outcome = run(spec, flush_timeout=args.flush_timeout, debug=debug)
        print(f"e2e-cli: {_summary(outcome.stats)}", file=sys.stderr)
    except InputError as exc:
        outcome = Outcome(False, f"invalid input: {exc}")
    except Exception as exc:  # the last line must be the verdict, whatever happened
        if debug:
            logging.getLogger("e2e-cli").exception("unexpected error")
        outcome = Outcome(False, f"unexpected error: {type(exc).__name__}: {exc}")
    if not outcome.success:
        print(f"e2e-cli: FAILED: {outcome.error}", file=sys.stderr)
    sys.stderr.flush()
    print(outcome.to_json(), flush=True)
    return 0 if outcome.success else 1


if __name__ == "__main__":
    sys.exit(main())
