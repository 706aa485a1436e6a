"""Run analytics-python 2.4.0's own test suite, unmodified, against 2.4.0 and against this project.

    python3 bench/reference_suite/run.py            # or: make reference-suite
    python3 bench/reference_suite/run.py --library ours --verbose

What it does (standard library only, any python3 >= 3.9):

1. Makes ``.reference-suite/venv-2.4.0`` and uses its pip to ``pip download --no-deps``
   ``segment-analytics-python==2.4.0`` into ``.reference-suite/wheels`` (kept for later runs), then
   installs that wheel there with pytest, pytest-timeout and mock (the suite imports ``mock``).
2. Makes ``.reference-suite/venv-ours`` with this project's runtime requirements, PyJWT (the OAuth
   tests need it) and the same test tools; this project is imported from the repository
   (``PYTHONPATH``), and each run checks which ``segment/analytics`` was imported.
3. Extracts the 7 test modules the wheel ships under ``segment/analytics/test/`` into
   ``.reference-suite/suite/``, checking each against the sha256 in the wheel's RECORD (so they are
   byte for byte what 2.4.0 ships), and puts ``conftest.py`` from this folder beside them: it sends
   requests for ``https://api.segment.io`` to a local sink and keeps everything else off the network.
4. Starts the sink (127.0.0.1, answers every request ``200 {}``, after a 5 ms delay), runs each
   module in its own pytest process for each library, reads the JUnit XML, and prints passed/failed
   per module and in total, and each failing test with a one-line reason.

Tests listed in ``private_internals.txt`` (2.4.0's private ``Consumer`` internals, its private
session, its OAuth poller thread) are expected to fail against this project; the exit status is 0
when 2.4.0 passes everything and every failure of ours is listed there, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REF_VERSION = "2.4.0"
REF_REQUIREMENT = f"segment-analytics-python=={REF_VERSION}"
WHEEL_NAME = f"segment_analytics_python-{REF_VERSION}-py3-none-any.whl"
TEST_PREFIX = "segment/analytics/test/"
TEST_TOOLS = ["pytest", "pytest-timeout", "mock"]
PER_TEST_TIMEOUT = 60  # a hang guard: no reference test takes more than a few seconds
PER_MODULE_TIMEOUT = 900
SINK_DELAY = 0.005  # a little latency, as from a real network (test_should_timeout needs the read to wait)
LIBRARIES = ("reference", "ours")


def log(message: str) -> None:
    """Progress on stderr; the report goes to stdout."""
    print(message, file=sys.stderr, flush=True)


def clean_env(keep_proxies: bool = False) -> dict[str, str]:
    """The environment without PYTHON* variables, writing no bytecode; for test runs, without proxies too.

    pip keeps the proxy settings it may need to reach PyPI; the tests must reach only 127.0.0.1.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTHON") and (keep_proxies or not k.lower().endswith("_proxy"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(
    cmd: list[str], cwd: Optional[str] = None, env: Optional[dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; exit with its output when it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env or clean_env(keep_proxies=True))
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{(done.stdout + done.stderr)[-3000:]}")
    return done


# -- virtualenvs and the wheel ---------------------------------------------------------------------


def ensure_venv(path: Path, requirements: list[str], stamp_text: str) -> Path:
    """A virtualenv at ``path`` with ``requirements`` installed; rebuilt when ``stamp_text`` changes."""
    python = path / "bin" / "python"
    stamp = path / ".installed"
    if not requirements and python.exists():
        return python
    if python.exists() and stamp.exists() and stamp.read_text() == stamp_text:
        return python
    if stamp.exists():  # made for other requirements: start again
        shutil.rmtree(path)
    if not python.exists():
        log(f"creating {path} ...")
        run([sys.executable, "-m", "venv", str(path)])
    if requirements:
        run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements])
        stamp.write_text(stamp_text)
    return python


def ensure_wheel(cache: Path, pip_python: Path) -> Path:
    """The 2.4.0 wheel, downloaded from PyPI once (``pip download --no-deps``)."""
    wheels = cache / "wheels"
    wheel = wheels / WHEEL_NAME
    if not wheel.exists():
        log(f"downloading {REF_REQUIREMENT} ...")
        wheels.mkdir(parents=True, exist_ok=True)
        run(
            [
                *(str(pip_python), "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps"),
                *("--only-binary=:all:", "-d", str(wheels), REF_REQUIREMENT),
            ]
        )
    if not wheel.exists():
        raise SystemExit(f"pip download did not produce {wheel}")
    return wheel


def extract_suite(wheel: Path, suite: Path) -> list[str]:
    """Write the wheel's test modules (checked against its RECORD) and our conftest into ``suite``."""
    if suite.exists():
        shutil.rmtree(suite)
    suite.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        record_name = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        digests = {}
        for line in archive.read(record_name).decode().splitlines():
            parts = line.rsplit(",", 2)
            if len(parts) == 3 and parts[1].startswith("sha256="):
                digests[parts[0]] = parts[1][len("sha256=") :]
        modules = []
        for name in sorted(archive.namelist()):
            base = name[len(TEST_PREFIX) :]
            if (
                not name.startswith(TEST_PREFIX)
                or "/" in base
                or not base.startswith("test_")
                or not base.endswith(".py")
            ):
                continue
            data = archive.read(name)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if digests.get(name) != digest:
                raise SystemExit(f"{name} does not match the wheel's RECORD")
            (suite / base).write_bytes(data)
            modules.append(base)
    shutil.copy(HERE / "conftest.py", suite / "conftest.py")
    # anchors pytest's rootdir here, so the repository's pytest.ini plays no part
    (suite / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return modules


def declared_tests(path: Path) -> list[str]:
    """``Class::method`` of every ``test*`` method of the module's classes (what unittest collects)."""
    tree = ast.parse(path.read_text())
    return [
        f"{node.name}::{item.name}"
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test")
    ]


# -- the sink --------------------------------------------------------------------------------------


class Sink(ThreadingHTTPServer):
    """Answers every POST ``200 {}`` (keep-alive) and counts requests by path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up before the answer (a test of a tiny timeout) is not an error."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def take_counts(self) -> dict[str, int]:
        """Requests by path since the last call."""
        with self.lock:
            counts, self.requests = self.requests, {}
        return counts


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Sink

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests[self.path] = self.server.requests.get(self.path, 0) + 1
        time.sleep(SINK_DELAY)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


# -- running and reading results -------------------------------------------------------------------


@dataclass
class Outcome:
    """One test's result."""

    test: str  # module.py::Class::method
    passed: bool
    reason: str = ""


@dataclass
class ModuleRun:
    """One module run against one library."""

    module: str
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        """Tests that passed."""
        return sum(o.passed for o in self.outcomes)


def one_line(text: Optional[str]) -> str:
    """The first meaningful line of a failure message, shortened."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= 160 else line[:157] + "..."
    return "(no message)"


def problem_reason(problem: ET.Element) -> str:
    """One line for a failure or error: its message, or the last ``E`` line of its traceback."""
    message = problem.get("message") or ""
    if message and message != "collection failure":
        return one_line(message)
    raised = [line[1:].strip() for line in (problem.text or "").splitlines() if line.startswith("E ")]
    return one_line(raised[-1] if raised else message or problem.text)


def run_module(python: Path, env: dict[str, str], suite: Path, module: str, xml: Path) -> ModuleRun:
    """Run one module in its own pytest process and read its JUnit XML."""
    declared = declared_tests(suite / module)
    started = time.monotonic()
    cmd = [str(python), "-m", "pytest", module, "-q", f"--timeout={PER_TEST_TIMEOUT}", f"--junitxml={xml}"]
    try:
        done = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=PER_MODULE_TIMEOUT)
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        output = f"the module did not finish within {PER_MODULE_TIMEOUT}s"
    result = ModuleRun(module, seconds=time.monotonic() - started)
    found: dict[str, Outcome] = {}
    collection_error = ""
    if xml.exists():
        for case in ET.parse(xml).iter("testcase"):
            cls = case.get("classname", "").split(".")[-1]
            name = case.get("name", "")
            problem = next((c for c in case if c.tag in ("failure", "error")), None)
            if not name or not cls or cls == module[:-3]:  # a collection error has no class
                if problem is not None:
                    collection_error = "cannot import the module: " + problem_reason(problem)
                continue
            test = f"{module}::{cls}::{name}"
            skipped = next((c for c in case if c.tag == "skipped"), None)
            if problem is not None:
                previous = found.get(test)
                reason = problem_reason(problem)
                if problem.tag == "error" and previous is not None and previous.passed:
                    reason = "error in teardown: " + reason
                found[test] = Outcome(test, False, reason)
            elif skipped is not None:
                found[test] = Outcome(test, False, "skipped: " + one_line(skipped.get("message")))
            elif test not in found:
                found[test] = Outcome(test, True)
    for item in declared:
        test = f"{module}::{item}"
        outcome = found.pop(test, None)
        if outcome is None:
            last_line = output.strip().splitlines()[-1] if output.strip() else ""
            reason = collection_error or f"not run: {one_line(last_line)}"
            outcome = Outcome(test, False, reason)
        result.outcomes.append(outcome)
    result.outcomes.extend(found.values())  # anything collected that the AST did not declare
    return result


def probe(python: Path, env: dict[str, str]) -> str:
    """``<version> <file>`` of the ``segment.analytics`` the interpreter imports."""
    code = "import segment.analytics as a, segment.analytics.version as v; print(v.VERSION, a.__file__)"
    return run([str(python), "-c", code], cwd="/", env=env).stdout.strip()


def load_private_list() -> dict[str, str]:
    """``test id -> why it may fail`` from private_internals.txt."""
    entries: dict[str, str] = {}
    for line in (HERE / "private_internals.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test, _, why = line.partition(" ")
        entries[test] = why.strip(" -—")
    return entries


def main() -> int:
    """Set up, run, report; 0 when 2.4.0 passes all and every failure of ours is a listed private one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", choices=("both", *LIBRARIES), default="both")
    parser.add_argument("--cache", type=Path, default=ROOT / ".reference-suite", help="where venvs, wheel, suite go")
    parser.add_argument("--module", action="append", help="run only this module (e.g. test_client.py); repeatable")
    parser.add_argument("--verbose", action="store_true", help="also list the accepted failures with their reason")
    parser.add_argument("--json", type=Path, help="write every outcome to this file")
    args = parser.parse_args()
    cache: Path = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    libraries = LIBRARIES if args.library == "both" else (args.library,)

    ref_dir = cache / "venv-2.4.0"
    wheel = ensure_wheel(cache, ensure_venv(ref_dir, [], ""))
    ref_python = ensure_venv(ref_dir, [str(wheel), *TEST_TOOLS], f"{wheel.name}:{','.join(TEST_TOOLS)}")
    ours_requirements = [
        line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if line.strip()
    ] + ["PyJWT[crypto]>=2.0", *TEST_TOOLS]
    ours_python = ensure_venv(cache / "venv-ours", ours_requirements, ",".join(ours_requirements))
    suite = cache / "suite"
    modules = extract_suite(wheel, suite)
    if args.module:
        modules = [m for m in modules if m in args.module]

    sink = Sink()
    threading.Thread(target=sink.serve_forever, name="reference-suite-sink", daemon=True).start()
    pythons = {"reference": ref_python, "ours": ours_python}
    runs: dict[str, list[ModuleRun]] = {}
    sink_counts: dict[str, dict[str, int]] = {}
    try:
        for library in libraries:
            env = clean_env()
            env["REFERENCE_SUITE_SINK"] = sink.url
            if library == "ours":
                env["PYTHONPATH"] = str(ROOT)
            imported = probe(pythons[library], env)
            expected_under = str(ROOT / "segment") if library == "ours" else str(cache / "venv-2.4.0")
            if expected_under not in imported or (library == "reference" and not imported.startswith(REF_VERSION)):
                raise SystemExit(f"{library}: imported the wrong segment.analytics: {imported}")
            log(f"{library}: segment.analytics {imported}")
            results_dir = cache / "results" / library
            shutil.rmtree(results_dir, ignore_errors=True)
            results_dir.mkdir(parents=True)
            sink.take_counts()
            runs[library] = []
            for module in modules:
                log(f"  {library}: {module} ...")
                runs[library].append(
                    run_module(pythons[library], env, suite, module, results_dir / (module[:-3] + ".xml"))
                )
            sink_counts[library] = sink.take_counts()
    finally:
        sink.shutdown()
        sink.server_close()
    return report(runs, sink_counts, load_private_list(), args)


def report(
    runs: dict[str, list[ModuleRun]],
    sink_counts: dict[str, dict[str, int]],
    private: dict[str, str],
    args: argparse.Namespace,
) -> int:
    """Print the tables and the failures; the exit status."""
    libraries = list(runs)
    labels = {"reference": f"analytics-python {REF_VERSION}", "ours": "this project"}
    first = runs[libraries[0]]
    total_tests = sum(len(r.outcomes) for r in first)
    print(f"\nanalytics-python {REF_VERSION}'s own test suite, unmodified: {len(first)} modules, {total_tests} tests\n")

    def cell(module_runs: list[ModuleRun], seconds: bool = True) -> str:
        passed = sum(r.passed for r in module_runs)
        count = sum(len(r.outcomes) for r in module_runs)
        took = f" ({sum(r.seconds for r in module_runs):5.1f}s)" if seconds else ""
        return f"{passed:>3} of {count:<3} passed{took}"

    width = max(len(cell(first)), *(len(labels[lib]) for lib in libraries)) + 4
    header = f"{'module':<18}" + "".join(f"{labels[lib]:>{width}}" for lib in libraries)
    print(header)
    print("-" * len(header))
    for index, module_run in enumerate(first):
        cells = [cell([runs[lib][index]]) for lib in libraries]
        print(f"{module_run.module:<18}" + "".join(f"{c:>{width}}" for c in cells))
    print("-" * len(header))
    print(f"{'total':<18}" + "".join(f"{cell(runs[lib]):>{width}}" for lib in libraries) + "\n")
    for lib in libraries:
        counts = sink_counts.get(lib, {})
        by_path = dict(sorted(counts.items()))
        print(f"the local sink received {sum(counts.values())} request(s) from {labels[lib]}: {by_path}")
    print()

    status = 0
    for lib in libraries:
        failures = [o for r in runs[lib] for o in r.outcomes if not o.passed]
        if lib == "reference":
            if failures:
                status = 1
                print(f"failing against {labels[lib]} ({len(failures)}):")
                for o in failures:
                    print(f"  {o.test}: {o.reason}")
            continue
        unexpected = [o for o in failures if o.test not in private]
        accepted = [o for o in failures if o.test in private]
        print(f"failing against {labels[lib]}: {len(failures)}, {len(accepted)} of them listed as private internals")
        if unexpected:
            status = 1
            print(f"\n  NOT accepted ({len(unexpected)}): these use public names and must pass")
            for o in unexpected:
                print(f"  {o.test}: {o.reason}")
        if accepted:
            print(f"\n  accepted ({len(accepted)}; private_internals.txt says why):")
            for o in accepted:
                print(f"  {o.test}: {o.reason}")
                if args.verbose:
                    print(f"      why acceptable: {private[o.test]}")
        passing_listed = sorted(o.test for r in runs[lib] for o in r.outcomes if o.passed and o.test in private)
        if passing_listed:
            print(f"\n  listed in private_internals.txt but passing now ({len(passing_listed)}):")
            for test in passing_listed:
                print(f"  {test}")
    if args.json:
        payload = {
            lib: {r.module: [o.__dict__ for o in r.outcomes] for r in module_runs} for lib, module_runs in runs.items()
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
