"""Malformed input answers 400 in Connect's error shape, never a 5xx: one test per known defect.

Each test names the defect it pins: a non-object ``asset`` on ``PUT`` (was a 500), an object
parameter value (was stored as Python's repr), a value outside a choice parameter's choices (was
accepted), ``assign`` to an unknown user id (was accepted), unknown routes and methods (were
plain-text ``Not Found``), and a create that carries a fulfillment parameter (was refused).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from ..mock_support import Running, clock, start  # noqa: F401 - fixtures

NOT_OBJECTS: list[Any] = ["x", 5, ["x"], True, []]


def _error(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error_code", "errors"} and body["errors"], body
    assert all(isinstance(message, str) and message for message in body["errors"])
    return dict(body)


@pytest.fixture
def mp(start: Callable[..., Running]) -> Running:
    return start(generate=30, seed=4)


@pytest.mark.parametrize("asset", NOT_OBJECTS)
def test_put_with_a_non_object_asset_is_a_400(mp: Running, asset: Any) -> None:
    request = next(mp.pending())
    body = _error(mp.call("PUT", f"/requests/{request.id}", {"asset": asset}))
    assert body == {"error_code": "VAL_001", "errors": ["asset: an object is required."]}
    assert mp.store.requests[request.id].params == request.params


@pytest.mark.parametrize("value", [{"a": 1}, ["a"], True])
def test_a_structured_parameter_value_is_refused_not_stored_as_repr(
    mp: Running, value: Any
) -> None:
    request = next(mp.pending())
    before = dict(mp.store.requests[request.id].params)
    put = mp.call(
        "PUT",
        f"/requests/{request.id}",
        {"asset": {"params": [{"id": "subscription_id", "value": value}]}},
    )
    assert "a string is required" in _error(put)["errors"][0]
    assert mp.store.requests[request.id].params == before


def test_numbers_are_taken_as_their_text(mp: Running) -> None:
    request = next(mp.pending())
    put = mp.call(
        "PUT",
        f"/requests/{request.id}",
        {"asset": {"params": [{"id": "subscription_id", "value": 42}]}},
    )
    assert put.status_code == 200
    params = {p["id"]: p["value"] for p in put.json()["asset"]["params"]}
    assert params["subscription_id"] == "42"


def test_a_choice_parameter_takes_only_its_choices(mp: Running) -> None:
    request = next(mp.pending())

    def put(value: str) -> Any:
        return mp.call(
            "PUT",
            f"/requests/{request.id}",
            {"asset": {"params": [{"id": "cancellation_reason", "value": value}]}},
        )

    refused = _error(put("cheaper elsewhere"))
    assert (
        "not one of its choices" in refused["errors"][0] and "too_expensive" in refused["errors"][0]
    )
    assert put("too_expensive").status_code == 200
    assert mp.store.requests[request.id].params["cancellation_reason"] == "too_expensive"
    assert put("").status_code == 200  # clearing is allowed


def test_structured_value_is_refused_with_a_reason(mp: Running) -> None:
    request = next(mp.pending())
    put = mp.call(
        "PUT",
        f"/requests/{request.id}",
        {"asset": {"params": [{"id": "subscription_id", "structured_value": {"a": 1}}]}},
    )
    assert "structured_value cannot be written" in _error(put)["errors"][0]


@pytest.mark.parametrize(
    "body", [{"id": "UR-000-000-000"}, {"id": 5}, {"id": ""}, {"email": "nobody"}]
)
def test_assign_needs_a_known_user_id_or_an_email_address(mp: Running, body: Any) -> None:
    request = next(mp.pending())
    _error(mp.act(request.id, "assign", body))
    assert mp.store.requests[request.id].assignee is None


def test_assign_by_a_seeded_user_id(mp: Running) -> None:
    request = next(mp.pending())
    user = sorted(mp.store.users.values(), key=lambda u: u["id"])[0]
    assigned = mp.act(request.id, "assign", {"id": user["id"]})
    assert assigned.status_code == 200 and assigned.json()["assignee"] == user


def test_unknown_routes_and_methods_answer_in_connect_shape(mp: Running) -> None:
    assert _error(mp.get("/no-such-collection"), 404)["error_code"] == "REQ_001"
    assert _error(mp.get("/requests/PR-1/render/extra"), 404)["error_code"] == "REQ_001"
    refused = mp.call("PATCH", "/requests")
    assert _error(refused, 405)["errors"] == ['Method "PATCH" not allowed.']
    assert set(refused.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert _error(mp.call("DELETE", "/assets/AS-1"), 405)["error_code"] == "REQ_002"


def test_create_takes_any_declared_parameter_but_still_checks_values(mp: Running) -> None:
    active = next(a for a in mp.store.assets.values() if a.status == "active")
    created = mp.call(
        "POST",
        "/requests",
        {
            "type": "cancel",
            "asset": {"id": active.id, "params": [{"id": "subscription_id", "value": "SUB-X"}]},
        },
    )
    assert created.status_code == 201, created.text
    other = next(a for a in mp.store.assets.values() if a.status == "active" and a.id != active.id)
    wrong = mp.call(
        "POST",
        "/requests",
        {
            "type": "cancel",
            "asset": {"id": other.id, "params": [{"id": "cancellation_reason", "value": "nope"}]},
        },
    )
    _error(wrong)
    assert mp.store.assets[other.id].status == "active"


def test_no_malformed_body_reaches_a_server_error(mp: Running) -> None:
    """Every write route with every kind of wrong JSON value: 4xx in Connect's shape."""
    request = next(mp.pending())
    conversation = mp.store.conversation_of[request.id]
    routes = [
        ("POST", "/requests"),
        ("PUT", f"/requests/{request.id}"),
        *[
            ("POST", f"/requests/{request.id}/{a}")
            for a in ("approve", "fail", "assign", "schedule")
        ],
        ("POST", "/conversations"),
        ("POST", f"/conversations/{conversation}/messages"),
    ]
    bodies: list[Any] = [
        "x", 5, ["x"], None, {"asset": "x"}, {"asset": {"params": "x"}},
        {"asset": {"params": [5]}}, {"asset": {"params": [{"id": ["x"]}]}}, {"asset": {"id": 5}},
        {"type": "cancel", "asset": {"id": {"a": 1}}}, {"note": 5}, {"template_id": ["x"]},
        {"reason": {"a": 1}}, {"planned_date": 5}, {"effective_date": {"a": 1}},
        {"text": 5}, {"instance_id": 5}, {"topic": ["x"], "instance_id": "X-1"},
    ]  # fmt: skip
    seen: set[int] = set()
    for (method, path), body in itertools.product(routes, bodies):
        response = mp.call(method, path, body)
        seen.add(response.status_code)
        assert response.status_code < 500, (method, path, body, response.text)
        if response.status_code >= 400:
            _error(response, response.status_code)
    assert 400 in seen
    raw = mp.http.post(f"{mp.api}/requests", data=b"{not json", timeout=10)
    assert _error(raw)["errors"] == ["body: the request body is not valid JSON."]
