"""The benchmark's workloads, run on this library at small scale: every event must reach the bench sink.

No timing is asserted here (speed lives in ``bench/run.py``); this only keeps
the workloads, the sink and the report code honest. The sink runs in a
thread in validating mode: it parses every body and counts duplicate ids.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from segment.analytics import encoding

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sink = _load("sink")
workloads = _load("workloads")
run = _load("run")

ENCODERS = [pytest.param(False, id="stdlib-json")]
if importlib.util.find_spec("orjson") is not None:
    ENCODERS.append(pytest.param(True, id="orjson"))


@pytest.fixture(scope="module")
def bench_sink() -> Iterator[Any]:
    with sink.SinkThread(validate=True) as server:
        yield server


@pytest.fixture()
def control(bench_sink: Any) -> Any:
    control = workloads.SinkControl(bench_sink.port)
    control.withhold(False)
    control.reset()
    return control


@pytest.fixture(params=ENCODERS)
def encoder(request: pytest.FixtureRequest) -> Iterator[bool]:
    was = encoding.orjson_in_use()
    encoding.use_orjson(request.param)
    assert encoding.orjson_in_use() is request.param
    yield request.param
    encoding.use_orjson(was)


def _assert_clean(control: Any) -> None:
    stats = control.stats()
    assert stats["duplicates"] == 0
    assert stats["bad_requests"] == 0
    assert stats["held"] == 0


def test_caller_workload_delivers_everything(control: Any, encoder: bool) -> None:
    result = workloads.caller_cost(control, n=2_000)
    assert result["delivered"] == result["expected"] == 2_000
    assert result["refused"] == 0
    assert result["caller_cpu_us"] > 0 and result["caller_wall_us"] > 0
    _assert_clean(control)


def test_throughput_workload_delivers_everything(control: Any, encoder: bool) -> None:
    result = workloads.throughput(control, n=2_000)
    assert result["delivered"] == result["expected"] == 2_000
    assert control.stats()["events"] == 2_000
    assert result["events_per_s"] > 0 and result["cpu_s"] > 0 and result["peak_rss_mb"] > 0
    _assert_clean(control)


def test_memory_workload_delivers_everything(control: Any, encoder: bool) -> None:
    result = workloads.memory(control, n=2_000)
    assert result["delivered"] == result["expected"] == 2_100
    assert control.stats()["events"] == 2_100  # the second phase, counted after the sink let go
    assert result["tracemalloc_bytes_per_event"] > 0
    assert "rss_bytes_per_event" in result
    _assert_clean(control)


def test_wire_workload_delivers_everything(control: Any, encoder: bool) -> None:
    result = workloads.wire(control, n=1_000)
    assert result["delivered"] == result["expected"] == 2_000
    assert control.stats()["gzip_requests"] == control.stats()["requests"] > 0  # the last phase is gzip
    assert result["gzip_body_bytes_per_event"] < result["plain_body_bytes_per_event"]
    assert result["plain_json_bytes_per_event"] == result["plain_body_bytes_per_event"]
    _assert_clean(control)


def test_backfill_workload_blocks_and_loses_nothing(control: Any, encoder: bool) -> None:
    result = workloads.backfill(control, n=5_000)
    assert result["on_full"] == "block"
    assert result["delivered"] == result["expected"] == result["offered"] == 5_000 and result["lost"] == 0
    assert control.stats()["events"] == 5_000 and result["events_per_s"] > 0
    _assert_clean(control)


def test_event_pool_is_deterministic_and_realistic() -> None:
    user_id, event, properties = workloads.make_event(12)
    assert (user_id, event) == ("user-00012", "Cart Updated")
    assert len(properties) == 11
    assert isinstance(properties["shipping"], dict) and isinstance(properties["items"], list)
    assert workloads.event_pool(3) == [workloads.make_event(i) for i in range(3)]


def test_sink_counts_gzip_and_withholds(control: Any, bench_sink: Any) -> None:
    import http.client

    body = sink.sample_batch_body(10)
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    packed = gz.compress(body) + gz.flush()
    conn = http.client.HTTPConnection("127.0.0.1", bench_sink.port, timeout=10)
    try:
        conn.request("POST", "/v1/batch", body=packed, headers={"Content-Encoding": "gzip"})
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, b'{"success":true}')
        control.withhold(True)
        conn.request("POST", "/v1/batch", body=body)
        control.wait_for(lambda s: s["held"] == 1)
        assert control.stats()["events"] == 10  # a held batch is not counted yet
        control.withhold(False)
        answer = conn.getresponse()
        assert answer.status == 200
        answer.read()
    finally:
        conn.close()
    stats = control.stats()
    assert (stats["events"], stats["requests"], stats["gzip_requests"]) == (20, 2, 1)
    assert stats["body_bytes"] == len(packed) + len(body)
    assert stats["raw_bytes"] == 2 * len(body)


def test_sink_ceiling_mode_runs(bench_sink: Any) -> None:
    result = sink.measure_ceiling(bench_sink.port, seconds=0.2, gzip=True)
    assert result["requests"] > 0 and result["events_per_s"] > 0


def test_report_table_and_goals() -> None:
    variants = [
        run.Variant("ref", "reference", "python", {}, False, BENCH),
        run.Variant("ours", "ours", "python", {}, False, BENCH),
        run.Variant("ours_orjson", "ours + orjson", "python", {}, True, BENCH),
    ]

    def runs(ref: float, ours: float, fast: float, field: str) -> dict[str, list[dict[str, Any]]]:
        return {"ref": [{field: ref}], "ours": [{field: ours}, {field: ours * 1.1}], "ours_orjson": [{field: fast}]}

    rows = run.summarize({"throughput": {**runs(10.0, 40.0, 45.0, "events_per_s")}}, variants)
    row = next(r for r in rows if r["key"] == "b_throughput")
    assert row["variants"]["ours"]["ratio"] == pytest.approx(4.2)
    assert row["variants"]["ours"]["met"] is True  # at least 3x
    assert row["variants"]["ours_orjson"]["met"] is False  # 4.5x is short of 5x
    table = run.render_table(rows, variants)
    assert "≥ 3x ✅" in table and "≥ 5x ❌" in table
    json.dumps(rows)  # the report is JSON-able


def test_report_ratio_pairs_each_repetition_with_its_reference_run() -> None:
    variants = [
        run.Variant("ref", "reference", "python", {}, False, BENCH),
        run.Variant("ours", "ours", "python", {}, False, BENCH),
    ]

    def reps(*values: float) -> list[dict[str, Any]]:
        return [{"rep": rep, "caller_cpu_us": value} for rep, value in enumerate(values)]

    runs = {"caller": {"ref": reps(40.0, 80.0, 40.0), "ours": reps(12.0, 24.0, 20.0)}}
    row = next(r for r in run.summarize(runs, variants) if r["key"] == "a_caller_cpu")
    ours = row["variants"]["ours"]
    assert ours["paired_ratio"]["min"] == pytest.approx(0.3) and ours["paired_ratio"]["max"] == pytest.approx(0.5)
    assert ours["ratio"] == pytest.approx(0.3)  # median of 0.3, 0.3, 0.5: a slow moment hit both runs of rep 1
    assert ours["ratio_of_medians"] == pytest.approx(0.5)
    assert ours["met"] is True
