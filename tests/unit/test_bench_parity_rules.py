"""The call counts that make a benchmark's comparison like for like: how a call is named, and what
counts as a difference."""

from __future__ import annotations

from bench.parity import differences, render
from cancel_sandbox.traffic import shape


def test_a_call_is_named_by_method_and_path_shape() -> None:
    assert shape("post", "/public/v1/requests/PR-1234-5678-9012-001/approve") == (
        "POST /public/v1/requests/{id}/approve"
    )
    assert shape("GET", "/v1/subscriptions/SUB-0A1B2C3D") == "GET /v1/subscriptions/{id}"
    assert shape("GET", "/public/v1/requests") == "GET /public/v1/requests"
    assert shape("GET", "/v2/health") == "GET /v2/health"


def test_any_difference_in_any_call_is_named_and_equal_counts_are_none() -> None:
    same = {"GET /a": 3, "POST /b/{id}": 10}
    assert differences(same, dict(same)) == {}
    diff = differences({**same, "GET /extra": 1}, {**same, "POST /b/{id}": 9})
    assert diff == {"GET /extra": (1, 0), "POST /b/{id}": (10, 9)}
    assert (
        render(diff)
        == "GET /extra: processor 1, baseline 0; POST /b/{id}: processor 10, baseline 9"
    )
