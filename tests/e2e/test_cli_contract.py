"""The e2e-cli driver contract (e2e-cli/README.md): bad input, the last-line verdict, exit codes, and a foreign server.

The last tests run the CLI against a minimal Tracking API written here with
``http.server`` only (not the project's mock), which checks that what it
stores is exactly what the CLI was asked to send, by ``messageId``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.e2e.harness import CLI_PATH, ROOT, cli

WRITE_KEY = "contract-key-5b2e"


def run(input_arg: Optional[str], *extra: str, stdin: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, CLI_PATH, *extra]
    if input_arg is not None:
        argv += ["--input", input_arg]
    env = {k: v for k, v in os.environ.items() if k != "E2E_CLI_DEBUG"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, input=stdin, env=env, cwd="/", check=False)


def verdict(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    result: dict[str, Any] = json.loads(lines[-1])
    assert set(result) == {"success", "error", "sentBatches"}
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == (0 if result["success"] else 1)
    return result


def failure(proc: subprocess.CompletedProcess[str]) -> str:
    result = verdict(proc)
    assert result["success"] is False
    assert result["sentBatches"] == 0
    assert isinstance(result["error"], str) and result["error"]
    return str(result["error"])


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_arg", "mentions"),
    [
        ("not json at all", ["not valid JSON"]),
        ("", ["not valid JSON"]),
        ('"a string"', ["JSON object"]),
        ('{"sequences": []}', ["writeKey", "required"]),
        ('{"writeKey": 42, "sequences": []}', ["writeKey"]),
        ('{"writeKey": "k", "sequences": {}}', ["sequences must be a list"]),
        (
            '{"writeKey": "k", "sequences": [{"events": [{"type": "purchase", "userId": "u"}]}]}',
            ["sequences[0].events[0].type", "purchase", "track"],
        ),
        ('{"writeKey": "k", "sequences": [{"events": [{"userId": "u"}]}]}', ["type is missing"]),
        ('{"writeKey": "k", "sequences": [{"events": [{"type": "track", "userId": "u"}]}]}', ["'event'"]),
        ('{"writeKey": "k", "sequences": [{"events": [{"type": "page", "name": "Home"}]}]}', ["userId"]),
        (
            '{"writeKey": "k", "sequences": [{"events": [{"type": "track", "userId": "u", "event": "E", '
            '"properties": [1]}]}]}',
            ["properties"],
        ),
        ('{"writeKey": "k", "sequences": [{"delayMs": "soon", "events": []}]}', ["delayMs"]),
        ('{"writeKey": "k", "sequences": [], "config": {"maxRetries": -1}}', ["config.maxRetries"]),
        ('{"writeKey": "k", "sequences": [], "config": {"flushInterval": "fast"}}', ["config.flushInterval"]),
        ('{"writeKey": "k", "apiHost": 7, "sequences": []}', ["apiHost"]),
    ],
)
def test_bad_input_is_a_clean_failure(input_arg: str, mentions: list[str]) -> None:
    error = failure(run(input_arg))
    for text in mentions:
        assert text in error


def test_missing_input_argument_is_a_clean_failure() -> None:
    assert "--input" in failure(run(None))


def test_unknown_argument_is_a_clean_failure() -> None:
    assert "unrecognized" in failure(run('{"writeKey": "k"}', "--bogus"))


def test_invalid_event_sends_nothing() -> None:
    # The whole input is checked before anything is sent: a valid first event is not delivered either.
    with TrackingAPI() as api:
        data = {
            "writeKey": WRITE_KEY,
            "apiHost": api.url,
            "sequences": [
                {"delayMs": 0, "events": [{"type": "track", "userId": "u", "event": "E"}]},
                {"delayMs": 0, "events": [{"type": "group", "userId": "u"}]},
            ],
        }
        error = failure(run(json.dumps(data)))
    assert "sequences[1].events[0] (group)" in error and "groupId" in error
    assert api.bodies == []


# -- output contract -----------------------------------------------------------------


def test_failure_names_the_reason_and_logs_go_to_stderr() -> None:
    data = {
        "writeKey": WRITE_KEY,
        "apiHost": "http://127.0.0.1:9",
        "config": {"maxRetries": 0},
        "sequences": [{"delayMs": 0, "events": [{"type": "track", "userId": "u", "event": "E"}]}],
    }
    proc = run(json.dumps(data))
    error = failure(proc)
    assert "retries_exhausted" in error and "refused" in error
    assert proc.stdout.count("\n") == 1  # the verdict is the only thing on stdout
    assert "retries_exhausted" in proc.stderr
    assert WRITE_KEY not in proc.stderr + proc.stdout


def test_input_from_a_file_and_from_stdin(tmp_path: Any) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"writeKey": "k", "sequences": []}', encoding="utf-8")
    assert verdict(run(f"@{path}")) == {"success": True, "error": None, "sentBatches": 0}
    assert verdict(run("-", stdin='{"writeKey": "k", "sequences": []}'))["success"] is True
    assert "cannot read" in failure(run(f"@{tmp_path / 'missing.json'}"))


def test_main_in_process_returns_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--input", '{"writeKey": "k", "sequences": []}']) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["success"] is True
    assert cli.main(["--input", "{"]) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["success"] is False


def test_config_mapping() -> None:
    spec = cli.parse_input(
        json.dumps(
            {
                "writeKey": "k",
                "config": {
                    "flushAt": 7,
                    "flushInterval": 250,
                    "maxRetries": 2,
                    "timeout": 3,
                    "maxTotalBackoffDuration": 9.5,
                    "maxRateLimitDuration": 0,
                },
            }
        )
    )
    assert spec.client_options == {
        "upload_size": 7,
        "upload_interval": 0.25,
        "max_retries": 2,
        "timeout": 3.0,
        "max_total_backoff_duration": 9.5,
        "max_rate_limit_duration": 0.0,
    }
    assert cli.parse_input('{"writeKey": "k", "config": {"flushInterval": 2}}').client_options == {
        "upload_interval": 2.0
    }
    assert cli.parse_input('{"writeKey": "k", "config": {"timeout": 1500}}').client_options == {"timeout": 1.5}
    assert cli.parse_input('{"writeKey": "k", "sequences": []}').api_host is None


def test_event_fields_map_to_client_arguments() -> None:
    spec = cli.parse_input(
        json.dumps(
            {
                "writeKey": "k",
                "sequences": [
                    {
                        "delayMs": 5,
                        "events": [
                            {
                                "type": "alias",
                                "previousId": "a",
                                "userId": "u",
                                "messageId": "m",
                                "timestamp": "2024-01-01T00:00:00Z",
                                "context": {"ip": "1"},
                                "integrations": {"All": True},
                                "traits": {"ignored": True},
                            },
                            {"type": "page", "anonymousId": "x", "name": "N", "category": "C", "properties": {"p": 1}},
                        ],
                    }
                ],
            }
        )
    )
    alias, page = spec.sequences[0].events
    assert spec.sequences[0].delay_ms == 5
    assert alias.kwargs == {
        "previous_id": "a",
        "user_id": "u",
        "message_id": "m",
        "timestamp": "2024-01-01T00:00:00Z",
        "context": {"ip": "1"},
        "integrations": {"All": True},
    }
    assert page.kwargs == {"anonymous_id": "x", "name": "N", "category": "C", "properties": {"p": 1}}


# -- a Tracking API that is not ours -------------------------------------------------


class TrackingAPI:
    """A minimal Tracking API on http.server: stores batches, de-duplicates by messageId.

    ``fail_first`` answers that many requests with 503 before accepting.
    """

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.fail_first = fail_first
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                body = json.loads(raw)
                with api.lock:
                    api.bodies.append(body)
                    api.headers.append(dict(self.headers.items()))
                    failing = len(api.bodies) <= api.fail_first
                    if not failing and self.path == "/v1/batch":
                        for event in body["batch"]:
                            api.events.setdefault(event["messageId"], event)
                status = 503 if failing else (200 if self.path == "/v1/batch" else 404)
                answer = json.dumps({"success": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TrackingAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


ASKED: list[dict[str, Any]] = [
    {
        "type": "track",
        "userId": "user-1",
        "event": "Order Completed",
        "messageId": "c-track",
        "properties": {"total": 99.5, "items": [{"sku": "A-1", "qty": 2}], "coupon": None, "gift": False},
        "timestamp": "2024-05-06T07:08:09.123Z",
        "context": {"ip": "198.51.100.4", "locale": "de-DE"},
        "integrations": {"All": True, "Salesforce": False},
    },
    {
        "type": "identify",
        "userId": "user-1",
        "anonymousId": "anon-1",
        "messageId": "c-identify",
        "traits": {"email": "ada@example.com", "name": "Ada Lovelace ✓"},
    },
    {
        "type": "page",
        "userId": "user-1",
        "name": "Pricing",
        "category": "Marketing",
        "messageId": "c-page",
        "properties": {"path": "/pricing"},
        "timestamp": "2024-05-06T09:08:09+02:00",
    },
    {
        "type": "screen",
        "anonymousId": "anon-2",
        "name": "Cart",
        "category": "Shop",
        "messageId": "c-screen",
        "properties": {"items": 3},
    },
    {
        "type": "group",
        "userId": "user-1",
        "groupId": "org-42",
        "messageId": "c-group",
        "traits": {"name": "Analytical Engines Ltd", "seats": 12},
    },
    {"type": "alias", "previousId": "anon-1", "userId": "user-1", "messageId": "c-alias"},
]


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def assert_stored_exactly(api: TrackingAPI, asked: list[dict[str, Any]]) -> None:
    assert sorted(api.events) == sorted(e["messageId"] for e in asked)
    delivered = [e["messageId"] for body in api.bodies[api.fail_first :] for e in body["batch"]]
    assert sorted(delivered) == sorted(api.events), "an event was delivered twice"
    for want in asked:
        got = api.events[want["messageId"]]
        for key, value in want.items():
            if key == "context":
                assert {k: got["context"][k] for k in value} == value
                assert got["context"]["library"]["name"] == "analytics-python"
            elif key == "timestamp":
                assert _instant(got["timestamp"]) == _instant(value)
            else:
                assert got[key] == value, (want["messageId"], key)
        assert got["timestamp"] and got["messageId"]


@pytest.fixture
def foreign_api() -> Iterator[TrackingAPI]:
    with TrackingAPI() as api:
        yield api


def test_a_foreign_tracking_api_receives_exactly_what_was_asked(foreign_api: TrackingAPI) -> None:
    data = {
        "writeKey": WRITE_KEY,
        "apiHost": foreign_api.url,
        "config": {"flushAt": 4},
        "sequences": [{"delayMs": 0, "events": ASKED[:3]}, {"delayMs": 50, "events": ASKED[3:]}],
    }
    result = verdict(run(json.dumps(data)))
    assert result == {"success": True, "error": None, "sentBatches": len(foreign_api.bodies)}
    assert_stored_exactly(foreign_api, ASKED)
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    for body, headers in zip(foreign_api.bodies, foreign_api.headers):
        assert body["writeKey"] == WRITE_KEY and body["sentAt"]
        assert headers["Authorization"] == auth
        assert headers["Content-Type"] == "application/json"
        assert "X-Retry-Count" not in headers


def test_a_foreign_tracking_api_that_fails_first_gets_each_event_once() -> None:
    with TrackingAPI(fail_first=2) as api:
        data = {
            "writeKey": WRITE_KEY,
            "apiHost": api.url,
            "config": {"maxRetries": 3},
            "sequences": [{"delayMs": 0, "events": ASKED}],
        }
        result = verdict(run(json.dumps(data)))
    assert result == {"success": True, "error": None, "sentBatches": 1}
    assert_stored_exactly(api, ASKED)
    assert [h.get("X-Retry-Count") for h in api.headers] == [None, "1", "2"]


def test_the_console_script_installs_from_e2e_cli_alone(tmp_path: Path) -> None:
    """``pip install ./e2e-cli`` gives an ``e2e-cli`` command that runs the driver."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            os.path.join(ROOT, "e2e-cli"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    script = target / "bin" / "e2e-cli"
    assert script.exists()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), ROOT]))
    done = subprocess.run(
        [sys.executable, str(script), "--input", "not json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["success"] is False and result["error"]


def test_the_library_distribution_installs_only_the_library(tmp_path: Path) -> None:
    """The SDK's wheel holds segment/analytics and nothing else, and declares no console script."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source)
    shutil.copytree(os.path.join(ROOT, "segment"), source / "segment", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    [wheel] = list(tmp_path.glob("segment_analytics_python-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    code = [name for name in names if ".dist-info/" not in name]
    assert code and all(name.startswith("segment/analytics/") for name in code), code
    assert not any(name.endswith("entry_points.txt") for name in names)
