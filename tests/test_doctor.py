"""``python -m segment.analytics doctor``: checks, test event, verdict, exit status (README "Are my events arriving?").

Every run targets 127.0.0.1 (the mock Tracking API, a closed port, a self-signed TLS server) or a
name under ``.invalid``, which never resolves.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segment.analytics import doctor
from segment.analytics.doctor_process import check_uwsgi
from segment.analytics.testing import MockTrackingAPI, Reply

from ._http import LocalHTTPServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "doctor-secret-write-key-7f3e9a"
BASIC = base64.b64encode(f"{KEY}:".encode()).decode()


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SEGMENT_WRITE_KEY",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The doctor in this process (fast); returns (exit status, stdout), checking the key never shows."""
    status = doctor.main(list(argv))
    out, err = capsys.readouterr()
    assert KEY not in out + err and BASIC not in out + err
    return status, out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    status, out = run(capsys, *argv, "--json")
    report = json.loads(out)
    assert report["exit_status"] == status
    return status, report


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the test event and the verdict, status by status ----------------------------------------------


@pytest.mark.parametrize(
    ("reply", "words", "side"),
    [
        (Reply(400, body={"code": "bad_request", "message": "Invalid JSON"}), "the payload is rejected", "payload"),
        (Reply(401), "the write key is rejected", "key"),
        (Reply(403), "the write key is rejected", "key"),
        (Reply(413), "too large", "payload"),
        (Reply(429, headers={"Retry-After": "7"}), "rate limited; it asks to wait 7 s (Retry-After)", "rate_limit"),
        (Reply(429), "rate limited; it gave no Retry-After", "rate_limit"),
        (Reply(500), "a failure on the API's side", "api"),
        (Reply(503, headers={"Retry-After": "2"}), "a failure on the API's side", "api"),
        (Reply(404), "nothing serves /v1/batch", "configuration"),
        (
            Reply(301, headers={"Location": "https://elsewhere.invalid/"}),
            "a redirect to https://elsewhere",
            "configuration",
        ),
        (Reply(action="reset"), "network error (reset) on your side", "network"),
        (Reply(action="cut"), "network error (reset) on your side", "network"),
    ],
)
def test_each_answer_gets_its_verdict_and_exit_status_1(
    capsys: pytest.CaptureFixture[str], api: MockTrackingAPI, reply: Reply, words: str, side: str
) -> None:
    api.script(reply)
    status, out = run(capsys, "--write-key", KEY, "--host", api.url)
    assert status == 1
    assert words in out
    if side == "api":
        assert "https://status.segment.com" in out
    status, report = run_json(capsys, "--write-key", KEY, "--host", api.url)  # the default reply: 200
    assert status == 0 and report["verdict"]["side"] == "none"
    api.script(reply)
    status, report = run_json(capsys, "--write-key", KEY, "--host", api.url)
    assert (status, report["verdict"]["side"], report["verdict"]["accepted"]) == (1, side, False)
    assert words in report["verdict"]["title"]


def test_200_is_accepted_and_points_at_the_source_debugger(
    capsys: pytest.CaptureFixture[str], api: MockTrackingAPI
) -> None:
    status, out = run(capsys, "--write-key", KEY, "--host", api.url)
    assert status == 0
    assert "accepted the test batch (HTTP 200)" in out and "Source Debugger" in out
    [request] = api.requests()  # one real batch, built by the library
    [event] = request.batch
    assert request.path == "/v1/batch" and request.retry_count is None
    assert request.header("Authorization") == f"Basic {BASIC}"
    assert request.header("User-Agent").startswith("analytics-python/")
    assert request.body["writeKey"] == KEY and "sentAt" in request.body
    assert event["type"] == "track" and event["event"] == "Segment Doctor Test"
    assert event["context"]["library"]["name"] == "analytics-python"
    assert f'look for the test event (messageId {event["messageId"]}, event "Segment Doctor Test")' in out


def test_207_rejecting_the_test_event_is_not_accepted(capsys: pytest.CaptureFixture[str], api: MockTrackingAPI) -> None:
    api.script(Reply(207, body={"errorResponses": [{"index": 0, "status": 400, "message": "bad property"}]}))
    status, report = run_json(capsys, "--write-key", KEY, "--host", api.url)
    assert status == 1
    assert report["verdict"]["title"].startswith("The API accepted the batch but rejected the test event")
    assert "bad property" in report["verdict"]["title"] and report["verdict"]["side"] == "payload"
    assert report["test_event"]["event_status"] == 400
    api.script(Reply(207, body={"errorResponses": [{"index": 3, "status": 400}]}))  # not our event
    assert run_json(capsys, "--write-key", KEY, "--host", api.url)[0] == 0


def test_a_hang_past_timeout_is_a_timeout_on_your_side(
    capsys: pytest.CaptureFixture[str], api: MockTrackingAPI
) -> None:
    api.script(Reply(action="hang", delay=10))
    status, report = run_json(capsys, "--write-key", KEY, "--host", api.url, "--timeout", "0.5")
    assert status == 1
    assert report["test_event"]["kind"] == "timeout"
    assert "network error (timeout) on your side" in report["verdict"]["title"]
    assert "firewall" in report["verdict"]["advice"]


def test_a_closed_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_json(capsys, "--write-key", KEY, "--host", f"http://127.0.0.1:{closed_port()}")
    assert status == 1
    assert check(report, "TCP")["status"] == "fail" and "refused" in check(report, "TCP")["summary"]
    assert check(report, "TLS")["status"] == "skip"
    assert report["test_event"]["kind"] == "refused" and "(refused) on your side" in report["verdict"]["title"]
    status, out = run(capsys, "--write-key", KEY, "--host", f"http://127.0.0.1:{closed_port()}", "--no-send")
    assert status == 1 and "FAIL  TCP" in out


def test_an_unresolvable_name_is_a_dns_failure(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_json(capsys, "--write-key", KEY, "--host", "http://nonexistent.invalid", "--timeout", "5")
    assert status == 1
    assert check(report, "DNS")["status"] == "fail" and "does not resolve" in check(report, "DNS")["summary"]
    assert not any(c["name"] in ("TCP", "TLS") for c in report["checks"])
    assert report["test_event"]["kind"] == "dns"
    assert "(dns) on your side" in report["verdict"]["title"] and "DNS" in report["verdict"]["advice"]


# -- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "30",
            "-subj",
            "/CN=doctor-test/O=Doctor Test Org",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[str]:
    """A tiny HTTPS Tracking API on 127.0.0.1 with a self-signed certificate, answering 200."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    with LocalHTTPServer(lambda request: (200, b'{"success": true}'), tls=context) as server:
        yield server.url


def test_a_self_signed_certificate_fails_tls(capsys: pytest.CaptureFixture[str], tls_server: str) -> None:
    status, report = run_json(capsys, "--write-key", KEY, "--host", tls_server)
    assert status == 1
    tls = check(report, "TLS")
    assert tls["status"] == "fail" and "self-signed certificate" in tls["summary"]
    assert "REQUESTS_CA_BUNDLE" in tls["advice"]
    assert check(report, "CA bundle")["details"]["source"] == "requests' default (certifi)"
    assert report["test_event"]["kind"] == "tls" and "(tls) on your side" in report["verdict"]["title"]


def test_trusting_the_certificate_shows_it_and_delivers(
    capsys: pytest.CaptureFixture[str], tls_server: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    status, report = run_json(capsys, "--write-key", KEY, "--host", tls_server)
    assert status == 0, report
    tls = check(report, "TLS")
    assert tls["status"] == "ok" and tls["details"]["subject"] == "CN=doctor-test, O=Doctor Test Org"
    assert tls["details"]["issuer"] == "CN=doctor-test, O=Doctor Test Org" and tls["details"]["days_left"] in (
        28,
        29,
        30,
    )
    assert tls["details"]["names"] == ["127.0.0.1"] and tls["details"]["version"].startswith("TLSv1.")
    assert check(report, "CA bundle")["details"] == {"path": str(certificate[0]), "source": "REQUESTS_CA_BUNDLE"}
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0].parent / "missing.pem"))
    status, report = run_json(capsys, "--write-key", KEY, "--host", tls_server, "--no-send")
    assert status == 1 and check(report, "CA bundle")["status"] == "fail"


def test_https_to_a_plain_http_server_is_a_tls_failure(
    capsys: pytest.CaptureFixture[str], api: MockTrackingAPI
) -> None:
    status, report = run_json(capsys, "--write-key", KEY, "--host", api.url.replace("http://", "https://"))
    assert status == 1
    assert check(report, "TCP")["status"] == "ok" and check(report, "TLS")["status"] == "fail"
    assert report["test_event"]["kind"] == "tls"


# -- configuration, --no-send, --json, the key --------------------------------------------------------


def test_no_send_runs_every_check_but_the_post(capsys: pytest.CaptureFixture[str], api: MockTrackingAPI) -> None:
    status, report = run_json(capsys, "--write-key", KEY, "--host", api.url, "--no-send")
    assert status == 0 and api.requests() == []
    assert report["test_event"] is None and report["verdict"]["side"] == "not_sent"
    names = [c["name"] for c in report["checks"]]
    assert names == ["write key", "host", "CA bundle", "DNS", "TCP", "TLS", "gevent/eventlet", "uWSGI", "clients"]


def test_json_shape(capsys: pytest.CaptureFixture[str], api: MockTrackingAPI) -> None:
    status, report = run_json(capsys, "--write-key", KEY, "--host", api.url)
    assert status == 0
    assert set(report) == {"library", "python", "checks", "test_event", "verdict", "exit_status"}
    for item in report["checks"]:
        assert set(item) == {"name", "status", "summary", "advice", "details"}
        assert item["status"] in ("ok", "warn", "fail", "skip")
    assert set(report["verdict"]) == {"accepted", "side", "title", "advice"}
    assert report["test_event"]["status"] == 200 and report["test_event"]["message_id"].startswith("doctor-")
    assert report["test_event"]["event"] == "Segment Doctor Test"


def test_the_key_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], api: MockTrackingAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    status, out = run(capsys, "--host", api.url)
    assert status == 0 and "from SEGMENT_WRITE_KEY" in out
    assert api.requests()[0].header("Authorization") == f"Basic {BASIC}"


def test_without_a_key_nothing_is_sent(capsys: pytest.CaptureFixture[str], api: MockTrackingAPI) -> None:
    status, report = run_json(capsys, "--host", api.url)
    assert status == 1 and api.requests() == []
    assert check(report, "write key")["status"] == "fail" and "no write key" in report["verdict"]["title"]
    assert run_json(capsys, "--host", api.url, "--no-send")[0] == 1
    assert run_json(capsys, "--write-key", "", "--host", api.url)[0] == 1


def test_the_key_never_appears_even_when_the_server_echoes_it(
    capsys: pytest.CaptureFixture[str], api: MockTrackingAPI
) -> None:
    echo = {"message": f"key {KEY} / Basic {BASIC} not allowed", "key": KEY}
    for reply in (Reply(401, body=echo, headers={"Retry-After": KEY}), Reply(200, body=echo)):
        api.script(reply)
        run(capsys, "--write-key", KEY, "--host", api.url)  # run() asserts the key is absent
        api.script(reply)
        _, report = run_json(capsys, "--write-key", KEY, "--host", api.url)
        assert "[REDACTED]" in json.dumps(report)


def test_a_key_pasted_into_the_host_url_is_not_printed(
    capsys: pytest.CaptureFixture[str], api: MockTrackingAPI
) -> None:
    host = api.url.replace("http://", f"http://{KEY}@")
    status, _ = run(capsys, "--write-key", KEY, "--host", host, "--no-send")
    assert status == 0


@pytest.mark.parametrize("host", ["ftp://127.0.0.1", "http://", "http://127.0.0.1:99999", "not a url", "http://[::1"])
def test_a_bad_host_url_is_a_configuration_failure(capsys: pytest.CaptureFixture[str], host: str) -> None:
    status, report = run_json(capsys, "--write-key", KEY, "--host", host)
    assert status == 1 and check(report, "host")["status"] == "fail"
    assert report["test_event"] is None


def test_a_host_with_a_path_is_warned_about(capsys: pytest.CaptureFixture[str], api: MockTrackingAPI) -> None:
    api.set_default(Reply(404))
    status, report = run_json(capsys, "--write-key", KEY, "--host", api.url + "/v1")
    assert check(report, "host")["status"] == "warn" and "drop the path '/v1'" in check(report, "host")["advice"]
    assert status == 1 and "nothing serves /v1/batch" in report["verdict"]["title"]


def test_a_proxy_is_reported_without_its_password_and_checked_instead_of_the_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://proxyuser:pr0xy-passw0rd@127.0.0.1:{port}")
    status, out = run(capsys, "--write-key", KEY, "--host", "http://collector.example.invalid", "--no-send")
    assert "pr0xy-passw0rd" not in out and f"http://proxyuser:***@127.0.0.1:{port}" in out
    assert "the proxy 127.0.0.1" in out and "FAIL  TCP" in out and status == 1
    _, report = run_json(capsys, "--write-key", KEY, "--host", "http://collector.example.invalid")
    assert "pr0xy-passw0rd" not in json.dumps(report)
    assert report["test_event"]["kind"] in ("refused", "other")


# -- what silently stops delivery in a process ---------------------------------------------------


class FakeUwsgi:
    def __init__(self, opt: dict[Any, Any]) -> None:
        self.opt = opt


@pytest.mark.parametrize(
    ("opt", "status", "words"),
    [
        ({}, "fail", "without --enable-threads"),
        ({"enable-threads": False}, "fail", "without --enable-threads"),
        ({b"enable-threads": b"false"}, "fail", "without --enable-threads"),
        ({"enable-threads": True}, "warn", "without Python's fork hooks"),
        ({"threads": b"4"}, "warn", "without Python's fork hooks"),
        ({"enable-threads": True, "lazy-apps": True}, "ok", "threads enabled"),
        ({b"enable-threads": b"true", b"py-call-uwsgi-fork-hooks": b"true"}, "ok", "threads enabled"),
    ],
)
def test_uwsgi_without_threads_or_fork_hooks(
    monkeypatch: pytest.MonkeyPatch, opt: dict[Any, Any], status: str, words: str
) -> None:
    monkeypatch.setitem(sys.modules, "uwsgi", FakeUwsgi(opt))
    result = check_uwsgi()
    assert (result.status, words in result.summary) == (status, True), result


def run_script(code: str, api: MockTrackingAPI) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT), MOCK_URL=api.url),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_gevent_patching_complete_partial_and_late(api: MockTrackingAPI) -> None:
    common = """
        import json, os, warnings; warnings.simplefilter("ignore")
        from segment.analytics import doctor
        def green():
            report = doctor.diagnose("k-green", os.environ["MOCK_URL"], send=False, timeout=5)
            return next(c for c in report.checks if c.name == "gevent/eventlet")
    """
    complete = run_script(
        "from gevent import monkey; monkey.patch_all()\n"
        + textwrap.dedent(common)
        + """
check = green(); print(json.dumps([check.status, check.summary]))""",
        api,
    )
    assert complete[0] == "ok" and "gevent monkey-patched" in complete[1]
    partial = run_script(
        "from gevent import monkey; monkey.patch_socket()\n"
        + textwrap.dedent(common)
        + """
check = green(); print(json.dumps([check.status, check.summary]))""",
        api,
    )
    assert partial[0] == "fail" and "but not threading" in partial[1]
    late = run_script(
        textwrap.dedent(common)
        + """
from segment.analytics import Client
client = Client("k-green", host=os.environ["MOCK_URL"])
from gevent import monkey; monkey.patch_all()
check = green(); print(json.dumps([check.status, check.summary]))""",
        api,
    )
    assert late[0] == "warn" and "patched after 1 client(s) were built" in late[1]


def test_a_fork_below_python_is_reported(api: MockTrackingAPI) -> None:
    report = run_script(
        """
        import ctypes, json, os
        import segment.analytics as analytics
        from segment.analytics import doctor
        analytics.write_key = "k-fork"
        analytics.host = os.environ["MOCK_URL"]
        analytics.track("u", "before the fork")
        analytics.flush()
        read, write = os.pipe()
        pid = ctypes.PyDLL(None).fork()  # libc fork: Python's at-fork hooks do not run (uWSGI's way)
        if pid == 0:
            analytics.track("u", "lost in the child")
            check = next(c for c in doctor.diagnose(send=False, timeout=2).checks if c.name == "clients")
            os.write(write, json.dumps([check.status, check.summary, check.advice]).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        os.close(write)
        child = json.loads(os.read(read, 65536))
        mine = next(c for c in doctor.diagnose(send=False, timeout=2).checks if c.name == "clients")
        print(json.dumps({"child": child, "parent": [mine.status, mine.summary]}))
        """,
        api,
    )
    status, summary, advice = report["child"]
    assert status == "fail" and "forked without Python's fork hooks" in summary and "default client" in summary
    assert "lazy-apps" in advice
    assert report["parent"][0] == "ok" and "running, 1 consumer(s) alive, 1 delivered" in report["parent"][1]


def test_an_ordinary_fork_is_fine_and_drops_are_shown(api: MockTrackingAPI) -> None:
    report = run_script(
        """
        import json, os
        from segment.analytics import Client, doctor
        client = Client("k-fork", host=os.environ["MOCK_URL"], max_queue_size=1)
        client.join()
        client.track("u", "queued"); client.track("u", "dropped")
        def clients():
            check = next(c for c in doctor.diagnose(send=False, timeout=2).checks if c.name == "clients")
            return [check.status, check.summary]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, json.dumps(clients()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        os.close(write)
        print(json.dumps({"child": json.loads(os.read(read, 65536)), "parent": clients()}))
        """,
        api,
    )
    assert report["child"][0] == "ok" and report["child"][1].startswith("client 1: forked, 0 consumer(s) alive")
    assert report["parent"][0] == "warn" and report["parent"][1].endswith("1 dropped (1 queue_full)")


def test_a_key_with_spaces_around_it_is_warned_about(capsys: pytest.CaptureFixture[str], api: MockTrackingAPI) -> None:
    api.set_default(Reply(401))
    status, report = run_json(capsys, "--write-key", f" {KEY}\n", "--host", api.url)
    assert check(report, "write key")["status"] == "warn" and "spaces" in check(report, "write key")["summary"]
    assert status == 1 and report["verdict"]["side"] == "key"


def test_whatever_the_server_says_reaches_an_ascii_terminal(api: MockTrackingAPI) -> None:
    api.set_default(Reply(400, body={"message": "clé refusée \u2603 " + KEY}))
    for extra in ([], ["--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "segment.analytics", "doctor", "--host", api.url, "--write-key", KEY, *extra],
            capture_output=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="ascii"),
        )
        assert done.returncode == 1, done.stderr
        out = done.stdout.decode("ascii")
        assert "the payload is rejected" in (json.loads(out)["verdict"]["title"] if extra else out)
        assert KEY not in out and b"Traceback" not in done.stderr


def test_the_command_line_dispatch(api: MockTrackingAPI) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SEGMENT_WRITE_KEY=KEY)
    done = subprocess.run(
        [sys.executable, "-m", "segment.analytics", "doctor", "--host", api.url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"]["accepted"] is True
    assert KEY not in done.stdout + done.stderr and BASIC not in done.stdout + done.stderr
    api.script(Reply(503))
    done = subprocess.run(
        [sys.executable, "-m", "segment.analytics", "doctor", "--host", api.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1 and "API's side" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "segment.analytics", "doctor", "--timeout", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2 and "--timeout" in done.stderr and "Traceback" not in done.stderr
