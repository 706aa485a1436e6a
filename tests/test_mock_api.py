"""Tests of the local mock Tracking API (segment.analytics.testing), over real HTTP."""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from segment.analytics.testing import MockTrackingAPI, RecordedRequest, Reply, Rule, realistic_profile
from segment.analytics.testing.mock_api import HANDLER_THREAD_NAME

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def api() -> Iterator[MockTrackingAPI]:
    with MockTrackingAPI() as mock:
        yield mock


def _batch(*message_ids: str) -> dict[str, Any]:
    return {
        "batch": [{"type": "track", "event": "E", "userId": "u", "messageId": m} for m in message_ids],
        "sentAt": "2024-01-01T00:00:00Z",
        "writeKey": "wk",
    }


def _post(
    api: MockTrackingAPI,
    *message_ids: str,
    retry: int | None = None,
    session: requests.Session | None = None,
    timeout: float = 2.0,
) -> requests.Response:
    headers = {"X-Retry-Count": str(retry)} if retry is not None else {}
    sender = session or requests
    return sender.post(f"{api.url}/v1/batch", json=_batch(*message_ids), headers=headers, timeout=timeout)


def test_default_200_records_headers_gzip_body_and_retry_count(api: MockTrackingAPI) -> None:
    payload = json.dumps(_batch("m1", "m2")).encode()
    auth = "Basic " + base64.b64encode(b"wk:").decode()
    r = requests.post(
        f"{api.url}/v1/batch",
        data=gzip.compress(payload),
        headers={
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
            "Authorization": auth,
            "User-Agent": "analytics-python/9.9.9",
        },
        timeout=2,
    )
    assert r.status_code == 200
    assert r.json() == {"success": True}
    assert r.headers["Content-Type"] == "application/json"
    r2 = _post(api, "m3", retry=3)
    assert r2.status_code == 200

    first, second = api.requests()
    assert isinstance(first, RecordedRequest)
    assert (first.index, second.index) == (0, 1)
    assert first.method == "POST"
    assert first.path == "/v1/batch"
    assert first.raw_body[:2] == b"\x1f\x8b"  # as on the wire
    assert first.body == json.loads(payload)
    assert [e["messageId"] for e in first.batch] == ["m1", "m2"]
    assert first.header("authorization") == auth
    assert first.header("USER-AGENT") == "analytics-python/9.9.9"
    assert first.header("content-type") == "application/json"
    assert first.header("X-Missing") is None
    assert first.retry_count is None
    assert second.retry_count == 3
    assert first.reply_status == 200
    assert first.arrived <= second.arrived
    assert abs(first.wall_time - time.time()) < 60
    assert api.message_ids() == ["m1", "m2", "m3"]
    assert api.request_count() == 2
    assert api.event_count() == 3


def test_script_is_answered_in_order_then_default(api: MockTrackingAPI) -> None:
    api.script(Reply(500), Reply(429), Reply(200, body={"custom": 1}))
    statuses = [_post(api, f"m{i}").status_code for i in range(4)]
    assert statuses == [500, 429, 200, 200]
    assert api.requests()[0].reply_status == 500
    api.set_default(Reply(503))
    r = _post(api, "m4")
    assert r.status_code == 503
    assert r.json()["code"] == "error"
    assert [r.reply_status for r in api.requests()] == [500, 429, 200, 200, 503]
    assert api.message_ids() == ["m2", "m3"]
    assert api.received_message_ids() == ["m0", "m1", "m2", "m3", "m4"]


def test_script_runs_before_rules(api: MockTrackingAPI) -> None:
    api.add_rule(Rule(Reply(502)))
    api.script(Reply(504))
    assert [_post(api, "a").status_code for _ in range(3)] == [504, 502, 502]


def test_rules_match_retry_count_events_message_id_and_times(api: MockTrackingAPI) -> None:
    api.add_rule(Rule(Reply(413), min_events=3))
    api.add_rule(Rule(Reply(500), retry_count=None, times=1))
    api.add_rule(Rule(Reply(502), retry_count=2))
    api.add_rule(Rule(Reply(408), contains_message_id="special", max_events=1))
    assert _post(api, "a").status_code == 500  # first attempt, rule used once
    assert _post(api, "a").status_code == 200  # times spent -> default
    assert _post(api, "a", retry=1).status_code == 200
    assert _post(api, "a", retry=2).status_code == 502
    assert _post(api, "a", "b", "c").status_code == 413
    assert _post(api, "special").status_code == 408
    assert _post(api, "special", "x").status_code == 200  # max_events fails
    other = requests.post(f"{api.url}/v2/other", json=_batch("a", "b", "c"), timeout=2)
    assert other.status_code == 200  # path None only matches /v1/...
    api.add_rule(Rule(Reply(404), path="/v2/other"))
    assert requests.post(f"{api.url}/v2/other", json={}, timeout=2).status_code == 404


def test_retry_after_header_passes_through(api: MockTrackingAPI) -> None:
    api.script(Reply(429, headers={"Retry-After": "1", "X-Extra": "yes"}))
    r = _post(api, "a")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    assert r.headers["X-Extra"] == "yes"
    assert "Retry-After" not in _post(api, "a").headers


def test_reset_action_gives_connection_error(api: MockTrackingAPI) -> None:
    api.script(Reply(action="reset"))
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        _post(api, "lost")
    assert "ConnectionResetError" in repr(info.value)  # an RST, not a polite close
    (rec,) = api.requests()
    assert rec.reply_status is None
    assert rec.action == "reset"
    assert api.events() == []
    assert api.received_message_ids() == ["lost"]
    assert _post(api, "ok").status_code == 200


def test_cut_action_gives_truncated_response(api: MockTrackingAPI) -> None:
    api.script(Reply(action="cut"))
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        _post(api, "a")
    assert api.requests()[0].reply_status is None
    assert api.event_count() == 0


def test_hang_with_delay_gives_read_timeout(api: MockTrackingAPI) -> None:
    api.script(Reply(action="hang", delay=0.3))
    with pytest.raises(requests.exceptions.ReadTimeout):
        _post(api, "a", timeout=0.1)
    assert _post(api, "b").status_code == 200
    # after `delay` the mock closes the connection without answering
    api.script(Reply(action="hang", delay=0.3))
    body = json.dumps(_batch("c")).encode()
    request = (
        f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", api.port), timeout=2) as sock:
        t0 = time.monotonic()
        sock.sendall(request)
        assert sock.recv(1024) == b""
        assert 0.25 <= time.monotonic() - t0 < 1.5


def test_delay_then_respond(api: MockTrackingAPI) -> None:
    api.script(Reply(200, delay=0.2))
    t0 = time.monotonic()
    assert _post(api, "a").status_code == 200
    assert time.monotonic() - t0 >= 0.19


def _handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == HANDLER_THREAD_NAME]


def test_stop_returns_promptly_while_a_hang_is_in_progress() -> None:
    api = MockTrackingAPI().start()
    idle = requests.Session()  # keeps an idle keep-alive connection open
    assert _post(api, "idle", session=idle).status_code == 200
    api.script(Reply(action="hang"))
    outcome: list[BaseException | int] = []

    def client() -> None:
        try:
            outcome.append(_post(api, "a", timeout=5).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert api.wait_for_requests(2, timeout=2)
    time.sleep(0.1)
    assert thread.is_alive()  # still hanging
    t0 = time.monotonic()
    api.stop()
    assert time.monotonic() - t0 < 1.0
    assert _handler_threads() == []  # the hanging and the idle connection's threads ended
    idle.close()
    thread.join(2)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.exceptions.ConnectionError)


def test_fail_message_ids_gives_207_with_batch_indexes(api: MockTrackingAPI) -> None:
    api.script(Reply(fail_message_ids={"b": 500, "d": 400, "not-in-batch": 500}))
    r = _post(api, "a", "b", "c", "d")
    assert r.status_code == 207
    errors = r.json()["errorResponses"]
    assert [(e["index"], e["status"]) for e in errors] == [(1, 500), (3, 400)]
    assert all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert api.message_ids() == ["a", "c"]
    assert api.event_count() == 2
    assert api.requests()[0].error_indexes == (1, 3)
    assert api.received_message_ids() == ["a", "b", "c", "d"]
    # an explicit non-200 status is kept; a batch without those ids gets a plain reply
    api.script(Reply(status=200, fail_message_ids={"zz": 500}), Reply(status=500, fail_message_ids={"x": 503}))
    assert _post(api, "e").json() == {"success": True}
    r3 = _post(api, "x")
    assert r3.status_code == 500
    assert r3.json()["errorResponses"][0]["index"] == 0
    assert api.message_ids() == ["a", "c", "e"]


def test_profile_is_deterministic_for_a_seed(api: MockTrackingAPI) -> None:
    weights = [(1.0, Reply(200)), (1.0, Reply(500)), (1.0, Reply(429))]

    def run(seed: int) -> list[int]:
        api.reset()
        api.set_profile(weights, seed=seed)
        return [_post(api, "a", session=session).status_code for _ in range(20)]

    with requests.Session() as session:
        first, again, other = run(7), run(7), run(8)
    assert first == again
    assert set(first) == {200, 500, 429}
    assert first != other
    api.set_default(Reply(201))  # the default replaces the profile
    assert _post(api, "a").status_code == 201


def test_realistic_profile_mix() -> None:
    profile = realistic_profile(1)
    assert MockTrackingAPI.realistic_profile(1) == profile
    total = sum(w for w, _ in profile)
    share: dict[str, float] = {}
    for w, r in profile:
        key = r.action if r.action != "respond" else f"{r.status}{'+ra' if 'Retry-After' in r.headers else ''}"
        key += "+slow" if r.delay else ""
        share[key] = share.get(key, 0) + w / total
    assert share["200"] == pytest.approx(0.88)
    assert share["429+ra"] == pytest.approx(0.04)
    assert share["reset"] == pytest.approx(0.02)
    assert share["503+ra"] == pytest.approx(0.01)
    assert share["408"] == pytest.approx(0.01)
    assert share["200+slow"] == pytest.approx(0.01)
    assert sum(share[k] for k in ("500", "502", "503", "504")) == pytest.approx(0.03)
    assert not any(400 <= r.status < 500 and r.status not in (408, 429) for _, r in profile)


def test_control_endpoints_from_another_session(api: MockTrackingAPI) -> None:
    control = requests.Session()
    config: dict[str, Any] = {
        "replies": [{"status": 503, "headers": {"Retry-After": "1"}}],
        "rules": [{"reply": {"status": 500}, "retry_count": None, "times": 1}],
        "default": {"status": 202},
    }
    r = control.post(f"{api.url}/_mock/script", json=config, timeout=2)
    assert r.status_code == 200, r.text
    assert [_post(api, "a").status_code for _ in range(3)] == [503, 500, 202]
    assert _post(api, "b", retry=1).status_code == 202

    recorded = control.get(f"{api.url}/_mock/requests", timeout=2).json()
    assert [r["reply_status"] for r in recorded] == [503, 500, 202, 202]
    assert [r["retry_count"] for r in recorded] == [None, None, None, 1]
    assert recorded[0]["path"] == "/v1/batch"
    assert recorded[0]["body"]["batch"][0]["messageId"] == "a"
    assert "X-Retry-Count" in recorded[3]["headers"]
    assert isinstance(recorded[0]["arrived"], float)
    events = control.get(f"{api.url}/_mock/events", timeout=2).json()
    assert [e["messageId"] for e in events] == ["a", "b"]
    assert control.get(f"{api.url}/_mock/stats", timeout=2).json()["requests"] == 4
    assert api.request_count() == 4  # control requests are not recorded

    bad = control.post(f"{api.url}/_mock/script", json={"replies": [{"status": 200, "bogus": 1}]}, timeout=2)
    assert bad.status_code == 400
    assert control.get(f"{api.url}/_mock/nope", timeout=2).status_code == 404

    assert control.post(f"{api.url}/_mock/reset", timeout=2).status_code == 200
    assert control.get(f"{api.url}/_mock/requests", timeout=2).json() == []
    assert _post(api, "c").status_code == 200  # default back to 200
    control.post(f"{api.url}/_mock/script", json={"profile": "realistic", "seed": 1}, timeout=2)
    assert len(api.requests()) == 1


def test_keep_alive_reuses_one_connection(api: MockTrackingAPI) -> None:
    with requests.Session() as session:
        _post(api, "a", session=session)
        _post(api, "b", session=session)
        api.script(Reply(500))
        _post(api, "c", session=session)  # error answers keep the connection too
    assert api.connection_count() == 1
    ports = {r.client_port for r in api.requests()}
    assert len(ports) == 1
    assert {r.connection_id for r in api.requests()} == {1}
    _post(api, "d")  # no session: a new connection
    assert api.connection_count() == 2


def test_413_with_large_body_is_answered_after_reading_it(api: MockTrackingAPI) -> None:
    api.script(Reply(413))
    big: dict[str, Any] = {"batch": [{"messageId": "big", "properties": {"blob": "x" * 2_000_000}}]}
    with requests.Session() as session:
        r = session.post(f"{api.url}/v1/batch", json=big, timeout=5)
        assert r.status_code == 413
        assert _post(api, "next", session=session).status_code == 200
    assert api.connection_count() == 1
    assert api.requests()[0].batch[0]["messageId"] == "big"


def test_chunked_request_body_is_decoded(api: MockTrackingAPI) -> None:
    data = json.dumps(_batch("c1", "c2")).encode()
    chunks = iter([data[:10], data[10:]])
    r = requests.post(f"{api.url}/v1/batch", data=chunks, timeout=2)
    assert r.status_code == 200
    assert api.message_ids() == ["c1", "c2"]


def test_record_false_only_counts() -> None:
    with MockTrackingAPI(record=False) as api:
        api.script(Reply(fail_message_ids={"b": 500}), Reply(500))
        _post(api, "a", "b")
        _post(api, "c")
        _post(api, "d", "e")
        assert api.requests() == []
        assert api.events() == []
        assert api.request_count() == 3
        assert api.event_count() == 3  # a, d, e
        assert api.wait_for_events(3, timeout=0.5)


def test_wait_helpers_time_out_and_wake_up(api: MockTrackingAPI) -> None:
    assert api.wait_for_requests(1, timeout=0.05) is False
    threading.Timer(0.1, lambda: _post(api, "a", "b")).start()
    assert api.wait_for_events(2, timeout=2) is True
    assert api.wait_for_requests(1, timeout=0) is True


def test_reset_clears_state(api: MockTrackingAPI) -> None:
    api.script(Reply(500))
    api.add_rule(Rule(Reply(502)))
    api.set_default(Reply(503))
    _post(api, "a")
    api.reset()
    assert api.requests() == []
    assert api.request_count() == 0
    assert _post(api, "b").status_code == 200


def test_from_dict_and_validation() -> None:
    reply = Reply.from_dict({"status": 429, "headers": {"Retry-After": "1"}, "delay": 0, "action": "respond"})
    assert reply == Reply(429, headers={"Retry-After": "1"})
    rule = Rule.from_dict({"reply": {"status": 500}, "retry_count": None, "times": 2})
    assert rule.retry_count is None and rule.times == 2 and rule.reply.status == 500
    assert Rule.from_dict({"reply": {}}).retry_count == "any"
    with pytest.raises(ValueError):
        Reply.from_dict({"status": 200, "oops": 1})
    with pytest.raises(ValueError):
        Reply(action="explode")
    with pytest.raises(ValueError):
        Rule.from_dict({"times": 1})
    with pytest.raises(ValueError):
        MockTrackingAPI(host="0.0.0.0")
    with pytest.raises(RuntimeError):
        _ = MockTrackingAPI().url


def test_binds_to_loopback_only(api: MockTrackingAPI) -> None:
    assert api.url == f"http://127.0.0.1:{api.port}"
    assert api.port > 0
    with MockTrackingAPI(host="localhost") as other:
        assert other.url.startswith("http://127.0.0.1:")


def test_cli_runs_until_interrupted(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": [{"status": 503}]}))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "segment.analytics.testing", "--port", "0", "--script", str(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), line
        assert requests.post(f"{url}/v1/batch", json=_batch("a"), timeout=2).status_code == 503
        assert requests.post(f"{url}/v1/batch", json=_batch("a"), timeout=2).status_code == 200
        proc.terminate()
        assert proc.wait(timeout=3) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
