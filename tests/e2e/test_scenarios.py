"""Every scenario of e2e-cli/scenarios/{basic,retry}: the CLI as a subprocess against the local mock API.

The scenarios selected for a session run concurrently (each with its own mock)
in one session fixture; each test then checks its own result.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.harness import runner

SCENARIOS = runner.load_scenarios()
JOBS = 4


@pytest.fixture(scope="session")
def scenario_results(request: pytest.FixtureRequest) -> dict[str, Any]:
    selected = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        module = getattr(item, "module", None)
        if callspec is not None and "scenario" in callspec.params and getattr(module, "__name__", "") == __name__:
            selected.append(callspec.params["scenario"])
    results = runner.run_scenarios(selected, jobs=JOBS)
    return {r.scenario.id: r for r in results}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(scenario: Any, scenario_results: dict[str, Any]) -> None:
    result = scenario_results[scenario.id]
    assert result.passed, result.report()


def test_there_are_at_least_30_scenarios_in_both_suites() -> None:
    suites = {s.suite for s in SCENARIOS}
    assert suites == {"basic", "retry"}
    assert len(SCENARIOS) >= 30


def _statuses(server: dict[str, Any]) -> set[int]:
    replies = list(server.get("replies", []))
    replies += [r["reply"] for r in server.get("rules", [])]
    if server.get("default"):
        replies.append(server["default"])
    found = {r.get("status", 200) for r in replies if r.get("action", "respond") == "respond"}
    for r in replies:
        found.update(r.get("fail_message_ids", {}).values())
    return found


def test_suites_cover_every_rule_of_spec_3() -> None:
    """delivery.md §3.1 status classes, network errors, Retry-After forms, budgets, 207 and 413 handling."""
    statuses: set[int] = set()
    text = ""
    for s in SCENARIOS:
        statuses |= _statuses(s.server)
        text += json.dumps(s.server) + json.dumps(s.input) + json.dumps(s.expect)
    required = {
        201,
        204,
        207,
        400,
        401,
        403,
        404,
        408,
        410,
        413,
        418,
        422,
        429,
        460,
        500,
        501,
        502,
        503,
        504,
        505,
        511,
        302,
        103,
        600,
        999,
    }
    assert required <= statuses, sorted(required - statuses)
    for needle in (
        '"action": "reset"',
        '"action": "hang"',
        '"action": "cut"',
        '"Retry-After": "1"',
        "{http_date+",
        '"Retry-After": "0"',
        "maxRateLimitDuration",
        "maxTotalBackoffDuration",
        "fail_message_ids",
        '"min_events": 2',
        "{unused_port}",
        "ftp://",
        '"delayMs": 600',
        "rate_limit_duration_exceeded",
        "backoff_duration_exceeded",
        "retries_exhausted",
    ):
        assert needle in text, needle
    kinds = {e.get("type") for s in SCENARIOS for e in runner.input_events(s.input)}
    assert {"track", "identify", "page", "screen", "group", "alias"} <= kinds
