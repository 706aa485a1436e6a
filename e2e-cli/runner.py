"""Run the e2e scenario suites: each scenario drives the CLI as a subprocess against the local mock API.

A scenario (``e2e-cli/scenarios/<suite>/<name>.json``) holds the CLI input
(without ``apiHost``), the mock's script and the expected outcome; see
``e2e-cli/README.md``. For each scenario the runner starts a
:class:`~segment.analytics.testing.MockTrackingAPI`, scripts it, runs the
CLI with ``apiHost`` set to the mock, then checks the CLI's verdict (last
stdout line, exit code) and what the mock received. Usage::

    python e2e-cli/runner.py [--suite basic,retry] [-k TEXT] [--jobs N] [--cli CMD] [-v]

It prints one line per scenario and ends with ``N passed, N failed``; the exit
code is 1 when a scenario failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Optional, Sequence

try:  # installed: the package is importable; from a checkout: this folder is sys.path[0]
    from segment_e2e_cli.checkout import use_checkout
except ImportError:
    from checkout import use_checkout  # type: ignore[no-redef]

use_checkout()

from dateutil.parser import isoparse  # noqa: E402

from segment.analytics.testing import MockTrackingAPI, RecordedRequest  # noqa: E402

__all__ = [
    "CLI_PATH",
    "SCENARIO_DIR",
    "SUITES",
    "CliResult",
    "Scenario",
    "ScenarioResult",
    "check_events",
    "default_cli",
    "load_scenarios",
    "main",
    "run_cli",
    "run_scenario",
    "run_scenarios",
]

HERE = os.path.dirname(os.path.abspath(__file__))
#: The driver this runner tests by default (run with the current interpreter).
CLI_PATH = os.path.join(HERE, "cli.py")
#: Where the scenario suites live, one folder per suite.
SCENARIO_DIR = os.path.join(HERE, "scenarios")
#: The suites, in the order they run.
SUITES = ("basic", "retry")

_SCENARIO_KEYS = frozenset({"name", "description", "input", "raw_input", "server", "expect"})
_EXPECT_KEYS = frozenset(
    {
        "success",
        "error_contains",
        "requests",
        "retry_counts",
        "authorization",
        "message_ids",
        "sent_batches",
        "batch_sizes",
        "min_gaps",
        "max_seconds",
        "duplicates_allowed",
        "in_order",
    }
)
#: Wall-clock limit of one CLI run.
CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class Scenario:
    """One scenario: CLI input, mock script, expectations (see e2e-cli/README.md)."""

    suite: str
    name: str
    description: str
    input: Optional[dict[str, Any]]
    raw_input: Optional[str]
    server: dict[str, Any]
    expect: dict[str, Any]
    path: str

    @property
    def id(self) -> str:
        """``suite/name``."""
        return f"{self.suite}/{self.name}"


@dataclass
class CliResult:
    """What one CLI run printed and returned."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    verdict: Optional[dict[str, Any]] = None
    problem: Optional[str] = None  # why ``verdict`` could not be read


@dataclass
class ScenarioResult:
    """The outcome of one scenario: ``failures`` is empty when it passed."""

    scenario: Scenario
    failures: list[str] = field(default_factory=list)
    cli: Optional[CliResult] = None
    requests: list[RecordedRequest] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether every expectation held."""
        return not self.failures

    def report(self, verbose: bool = False) -> str:
        """One line (plus details when failed, and the CLI's stderr when ``verbose``)."""
        head = f"{'PASS' if self.passed else 'FAIL'} {self.scenario.id} ({self.seconds:.2f}s)"
        lines = [head]
        lines.extend(f"    - {f}" for f in self.failures)
        if (verbose or not self.passed) and self.cli is not None:
            lines.append(f"    verdict: {self.cli.stdout.strip().splitlines()[-1] if self.cli.stdout.strip() else '-'}")
            if verbose or not self.passed:
                lines.append(f"    statuses: {[r.reply_status if r.reply_status else r.action for r in self.requests]}")
                lines.extend(f"    stderr| {line}" for line in self.cli.stderr.strip().splitlines()[-15:])
        return "\n".join(lines)


# -- loading -------------------------------------------------------------------------------


def load_scenarios(suites: Sequence[str] = SUITES, root: str = SCENARIO_DIR) -> list[Scenario]:
    """Read every ``<root>/<suite>/*.json`` scenario, sorted by name; malformed files raise ``ValueError``."""
    scenarios = []
    for suite in suites:
        folder = os.path.join(root, suite)
        if not os.path.isdir(folder):
            raise ValueError(f"no scenario suite {suite!r} in {root}")
        for filename in sorted(os.listdir(folder)):
            if filename.endswith(".json"):
                scenarios.append(_load(suite, os.path.join(folder, filename)))
    names = [s.id for s in scenarios]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate scenario names: {', '.join(duplicates)}")
    return scenarios


def _load(suite: str, path: str) -> Scenario:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    where = os.path.relpath(path)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a scenario is a JSON object")
    unknown = sorted(set(data) - _SCENARIO_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown scenario field(s) {unknown}")
    expect = data.get("expect")
    if not isinstance(expect, dict) or not isinstance(expect.get("success"), bool):
        raise ValueError(f"{where}: expect.success (a boolean) is required")
    unknown = sorted(set(expect) - _EXPECT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown expect field(s) {unknown}")
    if ("input" in data) == ("raw_input" in data):
        raise ValueError(f"{where}: give exactly one of input (an object) and raw_input (a string)")
    name = data.get("name") or os.path.splitext(os.path.basename(path))[0]
    return Scenario(
        suite,
        name,
        data.get("description", ""),
        data.get("input"),
        data.get("raw_input"),
        data.get("server") or {},
        expect,
        path,
    )


# -- placeholders ------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(mock_url|unused_port|http_date([+-]\d+))\}")


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _substitute(value: Any, mock_url: str) -> Any:
    """Replace ``{mock_url}``, ``{unused_port}`` and ``{http_date+N}`` (an HTTP-date N s from now)."""
    if isinstance(value, dict):
        return {k: _substitute(v, mock_url) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, mock_url) for v in value]
    if not isinstance(value, str) or "{" not in value:
        return value

    def repl(match: re.Match[str]) -> str:
        if match.group(1) == "mock_url":
            return mock_url
        if match.group(1) == "unused_port":
            return str(_unused_port())
        return formatdate(time.time() + int(match.group(2)), usegmt=True)

    return _PLACEHOLDER.sub(repl, value)


# -- running the CLI ---------------------------------------------------------------------


def default_cli() -> list[str]:
    """The command that runs the driver from this checkout: ``<python> e2e-cli/cli.py``."""
    return [sys.executable, CLI_PATH]


def run_cli(input_text: str, cli: Optional[Sequence[str]] = None, timeout: float = CLI_TIMEOUT) -> CliResult:
    """Run ``<cli> --input <input_text>`` and read the verdict from the last line of stdout."""
    command = [*(cli or default_cli()), "--input", input_text]
    env = dict(os.environ)
    env.pop("E2E_CLI_DEBUG", None)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return CliResult(-1, out, err, time.monotonic() - started, None, f"the CLI did not finish in {timeout:g}s")
    result = CliResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        result.problem = "the CLI printed nothing on stdout"
        return result
    try:
        verdict = json.loads(lines[-1])
    except ValueError:
        result.problem = f"the last stdout line is not JSON: {lines[-1][:200]!r}"
        return result
    if not isinstance(verdict, dict):
        result.problem = f"the last stdout line is not a JSON object: {lines[-1][:200]!r}"
        return result
    result.verdict = verdict
    return result


def check_verdict(result: CliResult) -> list[str]:
    """The driver's output contract, whatever the scenario: keys, types, exit code, no traceback."""
    if result.verdict is None:
        return [result.problem or "no verdict"]
    problems = []
    verdict = result.verdict
    if set(verdict) != {"success", "error", "sentBatches"}:
        problems.append(f"verdict keys are {sorted(verdict)}, expected error, sentBatches, success")
    success, error, sent = verdict.get("success"), verdict.get("error"), verdict.get("sentBatches")
    if not isinstance(success, bool):
        problems.append(f"success is {success!r}, not a boolean")
    if not (isinstance(sent, int) and not isinstance(sent, bool) and sent >= 0):
        problems.append(f"sentBatches is {sent!r}, not a whole number")
    if success is True and error is not None:
        problems.append(f"success with an error: {error!r}")
    if success is False and not (isinstance(error, str) and error.strip()):
        problems.append(f"failure without a non-empty error: {error!r}")
    expected_code = 0 if success is True else 1
    if result.returncode != expected_code:
        problems.append(f"exit code {result.returncode}, expected {expected_code}")
    if "Traceback (most recent call last)" in result.stderr + result.stdout:
        problems.append("the CLI printed a traceback")
    return problems


# -- checking what the server received ------------------------------------------------------

_ID_FIELDS = ("type", "userId", "anonymousId", "event", "name", "category", "previousId", "groupId")
_DICT_FIELDS = ("properties", "traits", "integrations")


def input_events(input_data: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event of a CLI input, in order."""
    if not isinstance(input_data, dict) or not isinstance(input_data.get("sequences"), list):
        return []
    return [
        e
        for s in input_data["sequences"]
        if isinstance(s, dict)
        for e in (s.get("events") or [])
        if isinstance(e, dict)
    ]


def _same_instant(a: Any, b: Any) -> bool:
    try:
        return bool(isoparse(str(a)) == isoparse(str(b)))
    except (ValueError, OverflowError):
        return False


def compare_event(asked: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Differences between an input event and the event the server stored (empty when faithful).

    Ids, names and dicts must be equal; ``context`` must hold every given key
    (the library adds ``library``); ``timestamp`` must be the same instant.
    """
    mid = asked.get("messageId")
    problems = []
    for key in _ID_FIELDS:
        if asked.get(key) is not None and got.get(key) != asked[key]:
            problems.append(f"{mid}: {key} is {got.get(key)!r}, asked {asked[key]!r}")
    for key in _DICT_FIELDS:
        if asked.get(key) is not None and got.get(key) != asked[key]:
            problems.append(f"{mid}: {key} is {json.dumps(got.get(key))[:200]}, asked {json.dumps(asked[key])[:200]}")
    if asked.get("context") is not None:
        raw_context = got.get("context")
        context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
        for key, value in asked["context"].items():
            if context.get(key) != value:
                problems.append(f"{mid}: context.{key} is {context.get(key)!r}, asked {value!r}")
    if asked.get("timestamp") is not None and not _same_instant(asked["timestamp"], got.get("timestamp")):
        problems.append(f"{mid}: timestamp is {got.get('timestamp')!r}, asked {asked['timestamp']!r}")
    for key in ("messageId", "timestamp", "type"):
        if not got.get(key):
            problems.append(f"{mid}: no {key} on the wire")
    library = got["context"].get("library") if isinstance(got.get("context"), dict) else None
    if not (isinstance(library, dict) and library.get("name") and library.get("version")):
        problems.append(f"{mid}: context.library is {library!r}")
    return problems


def check_events(
    asked: list[dict[str, Any]],
    stored: list[dict[str, Any]],
    expected_ids: Optional[list[str]] = None,
    duplicates_allowed: bool = False,
) -> list[str]:
    """Compare the events the server stored with the events the CLI was asked to send.

    ``expected_ids`` is the exact list of ``messageId`` the server must hold
    (default: every input event); each must arrive once unless
    ``duplicates_allowed``, and with the fields it was sent with.
    """
    problems: list[str] = []
    by_id = {e["messageId"]: e for e in asked if isinstance(e.get("messageId"), str)}
    if expected_ids is None:
        expected_ids = list(by_id)
    stored_ids = [str(e.get("messageId")) for e in stored]
    if duplicates_allowed:
        if sorted(set(stored_ids)) != sorted(set(expected_ids)):
            problems.append(f"server stored {sorted(set(stored_ids))}, expected {sorted(set(expected_ids))}")
    elif sorted(stored_ids) != sorted(expected_ids):
        missing = sorted(set(expected_ids) - set(stored_ids))
        extra = sorted(set(stored_ids) - set(expected_ids))
        twice = sorted({m for m in stored_ids if stored_ids.count(m) > 1})
        problems.append(f"server stored the wrong events: missing {missing}, unexpected {extra}, twice {twice}")
    for event in stored:
        mid = event.get("messageId")
        if mid in by_id:
            problems.extend(compare_event(by_id[mid], event))
    return problems


def check_requests(
    requests: list[RecordedRequest], write_key: Optional[str], authorization: Optional[str]
) -> list[str]:
    """The wire format of delivery.md §2 and 3.2 on every request the mock received."""
    problems = []
    for r in requests:
        where = f"request {r.index + 1}"
        if r.method != "POST" or r.path.split("?")[0] != "/v1/batch":
            problems.append(f"{where}: {r.method} {r.path}, expected POST /v1/batch")
        if authorization is not None and r.header("Authorization") != authorization:
            problems.append(f"{where}: Authorization is {r.header('Authorization')!r}, expected {authorization!r}")
        if (r.header("Content-Type") or "").split(";")[0].strip() != "application/json":
            problems.append(f"{where}: Content-Type is {r.header('Content-Type')!r}")
        if not (r.header("User-Agent") or "").startswith("analytics-python/"):
            problems.append(f"{where}: User-Agent is {r.header('User-Agent')!r}")
        body = r.body if isinstance(r.body, dict) else None
        if body is None or not isinstance(body.get("batch"), list) or not body["batch"]:
            problems.append(f"{where}: the body is not a JSON object with a non-empty batch")
            continue
        if write_key is not None and body.get("writeKey") != write_key:
            problems.append(f"{where}: writeKey in the body is {body.get('writeKey')!r}")
        if not isinstance(body.get("sentAt"), str) or not _same_instant(body["sentAt"], body["sentAt"]):
            problems.append(f"{where}: sentAt is {body.get('sentAt')!r}")
    return problems


def basic_auth(write_key: str) -> str:
    """``Basic base64("<writeKey>:")`` (delivery.md §3.2)."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii")


# -- one scenario --------------------------------------------------------------------------


def _expect_eq(failures: list[str], label: str, got: Any, want: Any) -> None:
    if got != want:
        failures.append(f"{label}: got {got!r}, expected {want!r}")


def run_scenario(scenario: Scenario, cli: Optional[Sequence[str]] = None) -> ScenarioResult:
    """Run one scenario against a fresh mock API and check every expectation."""
    started = time.monotonic()
    result = ScenarioResult(scenario)
    expect = scenario.expect
    with MockTrackingAPI() as api:
        api.configure(_substitute(scenario.server, api.url))
        input_data: Optional[dict[str, Any]] = None
        if scenario.raw_input is not None:
            text = scenario.raw_input
        else:
            input_data = _substitute(dict(scenario.input or {}), api.url)
            input_data.setdefault("apiHost", api.url)
            text = json.dumps(input_data)
        cli_result = run_cli(text, cli)
        result.cli = cli_result
        result.requests = requests = api.requests()
        stored = api.events()
    failures = result.failures
    failures.extend(check_verdict(cli_result))
    verdict = cli_result.verdict or {}

    _expect_eq(failures, "success", verdict.get("success"), expect["success"])
    wanted_errors = expect.get("error_contains")
    if isinstance(wanted_errors, str):
        wanted_errors = [wanted_errors]
    for text_part in wanted_errors or []:
        if text_part.lower() not in str(verdict.get("error") or "").lower():
            failures.append(f"error {verdict.get('error')!r} does not mention {text_part!r}")
    if "requests" in expect:
        _expect_eq(failures, "requests", len(requests), expect["requests"])
    if "retry_counts" in expect:
        _expect_eq(failures, "X-Retry-Count per request", [r.retry_count for r in requests], expect["retry_counts"])
    if "batch_sizes" in expect:
        _expect_eq(failures, "events per request", [len(r.batch) for r in requests], expect["batch_sizes"])
    # sentBatches: requests answered 2xx that delivered at least one event
    sent = expect.get("sent_batches", sum(1 for r in requests if r.delivered_events()))
    if cli_result.verdict is not None:
        _expect_eq(failures, "sentBatches", verdict.get("sentBatches"), sent)
    for i, gap in enumerate(expect.get("min_gaps") or []):
        if gap is None or i + 1 >= len(requests):
            continue
        seconds = requests[i + 1].arrived - requests[i].arrived
        if seconds < gap:
            failures.append(f"request {i + 2} came {seconds:.2f}s after request {i + 1}, expected >= {gap}s")
    if "max_seconds" in expect and cli_result.seconds > expect["max_seconds"]:
        failures.append(f"the CLI took {cli_result.seconds:.2f}s, expected <= {expect['max_seconds']}s")

    write_key = input_data.get("writeKey") if input_data else None
    authorization = expect.get("authorization")
    if authorization is None and isinstance(write_key, str):
        authorization = basic_auth(write_key)
    failures.extend(check_requests(requests, write_key if isinstance(write_key, str) else None, authorization))
    failures.extend(_check_stored(input_events(input_data), stored, expect))
    if expect.get("in_order"):
        order = [e.get("messageId") for e in input_events(input_data)]
        _expect_eq(failures, "order of stored events", [e.get("messageId") for e in stored], order)
    result.seconds = time.monotonic() - started
    return result


def _check_stored(asked: list[dict[str, Any]], stored: list[dict[str, Any]], expect: dict[str, Any]) -> list[str]:
    """What the mock stored against what the CLI was asked to send.

    With ``message_ids`` the server must hold exactly those; on an expected
    success, every input event; otherwise (an expected failure) whatever
    arrived must be an input event, faithfully sent.
    """
    expected_ids = expect.get("message_ids")
    duplicates_allowed = bool(expect.get("duplicates_allowed"))
    if expected_ids is not None:
        return check_events(asked, stored, expected_ids, duplicates_allowed)
    if expect["success"]:
        if any(not isinstance(e.get("messageId"), str) for e in asked):
            problems = [] if len(stored) == len(asked) else [f"server stored {len(stored)} events, asked {len(asked)}"]
            by_id = {e["messageId"]: e for e in asked if isinstance(e.get("messageId"), str)}
            return problems + [
                p for e in stored if e.get("messageId") in by_id for p in compare_event(by_id[e["messageId"]], e)
            ]
        return check_events(asked, stored, None, duplicates_allowed)
    asked_ids = [str(e["messageId"]) for e in asked if isinstance(e.get("messageId"), str)]
    arrived = [str(e.get("messageId")) for e in stored if e.get("messageId") in asked_ids]
    problems = [
        f"server stored an event the CLI was not asked to send: {e.get('messageId')}"
        for e in stored
        if e.get("messageId") not in asked_ids and asked_ids
    ]
    return problems + check_events(
        asked, [e for e in stored if e.get("messageId") in asked_ids], arrived, duplicates_allowed
    )


def run_scenarios(
    scenarios: Sequence[Scenario], jobs: int = 4, cli: Optional[Sequence[str]] = None, on_result: Optional[Any] = None
) -> list[ScenarioResult]:
    """Run scenarios ``jobs`` at a time (each has its own mock); results in the input order.

    ``on_result(result)`` is called as each one finishes.
    """

    def one(scenario: Scenario) -> ScenarioResult:
        try:
            result = run_scenario(scenario, cli)
        except Exception as exc:  # noqa: BLE001 - a broken scenario file must not stop the others
            result = ScenarioResult(scenario, [f"runner error: {type(exc).__name__}: {exc}"])
        if on_result is not None:
            on_result(result)
        return result

    if jobs <= 1:
        return [one(s) for s in scenarios]
    # slowest first (by their sleeps), so the pool is not left waiting on one long scenario at the end
    order = sorted(range(len(scenarios)), key=lambda i: -_expected_cost(scenarios[i]))
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="e2e-scenario") as pool:
        futures = {i: pool.submit(one, scenarios[i]) for i in order}
        return [futures[i].result() for i in range(len(scenarios))]


def _expected_cost(scenario: Scenario) -> float:
    text = json.dumps(scenario.server) + json.dumps(scenario.input)
    return len(re.findall(r"Retry-After|hang|\b5\d\d\b|reset|cut|delayMs\": [1-9]", text))


# -- command line --------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the suites; print one line per scenario and ``N passed, N failed``; 1 when any failed."""
    parser = argparse.ArgumentParser(prog="runner.py", description="Run the e2e-cli scenario suites.")
    parser.add_argument("--suite", default=",".join(SUITES), help="comma-separated suites (default: basic,retry)")
    parser.add_argument("-k", dest="keyword", default="", help="only scenarios whose suite/name contains this")
    parser.add_argument("--jobs", type=int, default=4, help="scenarios run at once (default 4)")
    parser.add_argument("--cli", default=None, help="command that runs the driver (default: python e2e-cli/cli.py)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the CLI's stderr for every scenario")
    args = parser.parse_args(argv)
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    try:
        scenarios = [s for s in load_scenarios(suites) if args.keyword in s.id]
    except (OSError, ValueError) as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for s in scenarios:
            print(f"{s.id}: {s.description}")
        return 0
    cli = shlex.split(args.cli) if args.cli else None
    started = time.monotonic()
    results = run_scenarios(
        scenarios, max(1, args.jobs), cli, on_result=lambda r: print(r.report(args.verbose), flush=True)
    )
    passed = sum(1 for r in results if r.passed)
    failed = len(results) - passed
    print(f"ran {len(results)} scenario(s) from {', '.join(suites)} in {time.monotonic() - started:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
