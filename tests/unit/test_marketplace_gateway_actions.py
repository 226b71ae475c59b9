"""The Connect gateway's actions and ambiguous outcomes (a lost answer re-read before a second post)
and its notes and templates (HTTP faked with ``responses``, time with a fake)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import requests
from connect.client.testing import ConnectClientMocker
from structlog.testing import capture_logs

from processor.marketplace import (
    ActionRefused,
    ConnectGateway,
    GatewaySettings,
    NotFound,
    NotPending,
)

from ..gateway_support import (  # noqa: F401 - fixtures
    API_KEY,
    ENDPOINT,
    T0,
    FakeTime,
    a_request,
    body,
    fake_time_fixture,
    gateway_fixture,
    http_fixture,
    methods,
    retries_fixture,
    url,
)

# -- actions and ambiguous outcomes -------------------------------------------------------------


def test_approve_after_a_5xx_rereads_the_request_before_posting_again(
    http: Any, gateway: Any
) -> None:
    http.add("POST", url("requests/PR-1/approve"), status=503)
    http.add("GET", url("requests/PR-1"), json=a_request())
    http.add("POST", url("requests/PR-1/approve"), json=a_request(status="approved"))
    assert gateway().approve("PR-1", "TL-1")["status"] == "approved"
    assert methods(http) == [
        "POST requests/PR-1/approve",
        "GET requests/PR-1",
        "POST requests/PR-1/approve",
    ]
    assert body(http.calls[2]) == {"template_id": "TL-1"}


def test_approve_whose_response_was_lost_but_which_landed_is_a_success_without_a_second_post(
    http: Any, gateway: Any
) -> None:
    http.add(
        "POST", url("requests/PR-1/approve"), body=requests.ConnectionError("connection dropped")
    )
    http.add("GET", url("requests/PR-1"), json=a_request(status="approved"))
    with capture_logs() as logs:
        assert gateway().approve("PR-1", "TL-1")["status"] == "approved"
    assert methods(http) == ["POST requests/PR-1/approve", "GET requests/PR-1"]
    assert {"event": "connect_call_landed", "operation": "approve", "log_level": "info"} in logs


def test_an_action_whose_request_moved_on_meanwhile_is_not_pending(http: Any, gateway: Any) -> None:
    http.add("POST", url("requests/PR-1/fail"), body=requests.ReadTimeout("read timed out"))
    http.add("GET", url("requests/PR-1"), json=a_request(status="approved"))
    with pytest.raises(NotPending) as caught:
        gateway().fail("PR-1", "Subscription is locked")
    assert caught.value.status == "approved"
    assert len(http.calls) == 2


def test_approve_refused_because_it_already_went_through_is_idempotent(
    http: Any, gateway: Any
) -> None:
    http.add(
        "POST",
        url("requests/PR-1/approve"),
        status=400,
        json={"error_code": "REQ_003", "errors": ["Request must be in pending status."]},
    )
    http.add("GET", url("requests/PR-1"), json=a_request(status="approved"))
    assert gateway().approve("PR-1", "TL-1")["status"] == "approved"
    assert len(http.calls) == 2


def test_a_first_approve_found_approved_already_says_someone_else_approved_it(
    http: Any, gateway: Any
) -> None:
    """``first_attempt``: no approve of ours can have landed before, so the refusal is news."""
    refused = {"error_code": "REQ_003", "errors": ["Request must be in pending status."]}
    http.add("POST", url("requests/PR-1/approve"), status=400, json=refused)
    http.add("GET", url("requests/PR-1"), json=a_request(status="approved"))
    with pytest.raises(NotPending) as caught:
        gateway().approve("PR-1", "TL-1", first_attempt=True)
    assert caught.value.status == "approved"
    # Its own lost answer, within the same call, is still its own: landed, no error.
    http.add(
        "POST", url("requests/PR-2/approve"), body=requests.ConnectionError("connection dropped")
    )
    http.add("GET", url("requests/PR-2"), json=a_request("PR-2", status="approved"))
    assert gateway().approve("PR-2", "TL-1", first_attempt=True)["status"] == "approved"
    # A first send that timed out and landed late: refused at the second send, still its own.
    http.add("POST", url("requests/PR-3/approve"), body=requests.ReadTimeout("read timed out"))
    http.add("GET", url("requests/PR-3"), json=a_request("PR-3"))  # not applied yet
    http.add("POST", url("requests/PR-3/approve"), status=400, json=refused)
    http.add("GET", url("requests/PR-3"), json=a_request("PR-3", status="approved"))
    assert gateway().approve("PR-3", "TL-1", first_attempt=True)["status"] == "approved"


def test_a_definite_refusal_is_action_refused_or_not_pending(http: Any, gateway: Any) -> None:
    http.add(
        "POST",
        url("requests/PR-1/approve"),
        status=400,
        json={"error_code": "VAL_001", "errors": ["bad template"]},
    )
    http.add("GET", url("requests/PR-1"), json=a_request())
    http.add(
        "POST",
        url("requests/PR-2/fail"),
        status=400,
        json={"error_code": "REQ_003", "errors": ["not pending"]},
    )
    http.add("GET", url("requests/PR-2"), json=a_request("PR-2", status="failed"))
    http.add(
        "POST",
        url("requests/PR-3/approve"),
        status=400,
        json={"error_code": "REQ_003", "errors": ["no"]},
    )
    http.add("GET", url("requests/PR-3"), json=a_request("PR-3", status="inquiring"))
    market = gateway()
    with pytest.raises(ActionRefused) as refused:
        market.approve("PR-1", "TL-404")
    assert (refused.value.status_code, refused.value.error_code, refused.value.errors) == (
        400,
        "VAL_001",
        ("bad template",),
    )
    assert market.fail("PR-2", "reason")["status"] == "failed"  # our own earlier fail had landed
    with pytest.raises(NotPending) as moved:
        market.approve("PR-3", "TL-1")
    assert moved.value.status == "inquiring"


def test_fail_without_a_reason_is_refused_locally(http: Any, gateway: Any) -> None:
    market = gateway()
    for reason in ("", "   "):
        with pytest.raises(ValueError):
            market.fail("PR-1", reason)
    with pytest.raises(ValueError):
        market.approve("PR-1", "")
    assert len(http.calls) == 0


def test_schedule_confirm_assign_and_update_params_send_what_connect_expects(
    http: Any, gateway: Any
) -> None:
    http.add("POST", url("requests/PR-1/schedule"), json=a_request(status="scheduled"))
    http.add("POST", url("requests/PR-2/confirm"), json=a_request("PR-2", status="revoked"))
    http.add("POST", url("requests/PR-3/assign"), status=500)
    http.add(
        "POST",
        url("requests/PR-3/assign"),
        json=a_request("PR-3", assignee={"email": "ops@vendor.example"}),
    )
    http.add("PUT", url("requests/PR-4"), json=a_request("PR-4"))
    market = gateway()
    planned = T0 + timedelta(days=30)
    assert market.schedule("PR-1", planned)["status"] == "scheduled"
    assert market.confirm("PR-2")["status"] == "revoked"
    assert (
        market.assign("PR-3", email="ops@vendor.example")["assignee"]["email"]
        == "ops@vendor.example"
    )
    market.update_params("PR-4", {"subscription_id": "SUB-1"}, note="terminated at the vendor")
    assert body(http.calls[0]) == {"planned_date": planned.isoformat()}
    assert http.calls[1].request.body is None
    assert body(http.calls[3]) == {
        "email": "ops@vendor.example"
    }  # assign is safe to repeat: no re-read
    assert body(http.calls[4]) == {
        "asset": {"params": [{"id": "subscription_id", "value": "SUB-1"}]},
        "note": "terminated at the vendor",
    }
    with pytest.raises(ValueError):
        market.schedule("PR-1", datetime(2026, 11, 1))
    with pytest.raises(ValueError):
        market.assign("PR-3")


# -- notes and templates ------------------------------------------------------------------------


def test_notes_find_the_conversation_once_and_are_cut_to_2000_characters(
    http: Any, gateway: Any
) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1", "instance_id": "PR-1"}])
    http.add("POST", url("conversations/CO-1/messages"), status=201, json={"id": "ME-1"})
    market = gateway()
    assert market.post_note("PR-1", "x" * 2500) is True
    assert market.post_note("PR-1", "second") is True
    assert methods(http) == [
        "GET conversations",
        "POST conversations/CO-1/messages",
        "POST conversations/CO-1/messages",
    ]
    assert (
        dict(parse_qsl(urlsplit(http.calls[0].request.url).query, keep_blank_values=True)).get(
            "limit"
        )
        == "1"
    )
    assert "eq(instance_id,PR-1)" in unquote(http.calls[0].request.url)
    assert body(http.calls[1]) == {"text": "x" * 2000, "type": "message"}


def test_a_note_whose_post_was_lost_is_not_posted_twice(http: Any, gateway: Any) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1"}])
    http.add("POST", url("conversations/CO-1/messages"), status=504)
    http.add(
        "GET",
        url("conversations/CO-1/messages"),
        json=[{"id": "ME-9", "text": "Cancelled at the vendor."}],
    )
    assert gateway().post_note("PR-1", "Cancelled at the vendor.") is True
    assert [m for m in methods(http) if m.startswith("POST")] == [
        "POST conversations/CO-1/messages"
    ]


def test_a_note_with_a_once_key_is_posted_at_most_once(http: Any, gateway: Any) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1"}])
    http.add("GET", url("conversations/CO-1/messages"), json=[])
    http.add("POST", url("conversations/CO-1/messages"), status=201, json={"id": "ME-1"})
    http.add("GET", url("conversations"), json=[{"id": "CO-2"}])
    http.add(
        "GET",
        url("conversations/CO-2/messages"),
        json=[{"id": "ME-2", "text": "Waiting for the vendor."}],
    )
    market = gateway()
    assert market.post_note("PR-1", "Waiting for the vendor.", once_key="PR-1:waiting") is True
    assert market.post_note("PR-1", "Waiting for the vendor.", once_key="PR-1:waiting") is False
    # A note posted before a restart is found in the conversation itself.
    assert market.post_note("PR-2", "Waiting for the vendor.", once_key="PR-2:waiting") is False
    assert [m for m in methods(http) if m.startswith("POST")] == [
        "POST conversations/CO-1/messages"
    ]


def test_a_request_without_a_conversation_is_not_found(http: Any, gateway: Any) -> None:
    http.add("GET", url("conversations"), json=[])
    with pytest.raises(NotFound):
        gateway().post_note("PR-1", "hello")


def test_default_template_prefers_the_flagged_default_and_is_cached(fake_time: FakeTime) -> None:
    templates = [
        {"id": "TL-1", "name": "Activation", "scope": "asset", "type": "fulfillment"},
        {
            "id": "TL-2",
            "name": "Cancellation",
            "scope": "asset",
            "type": "fulfillment",
            "default": True,
        },
    ]
    with ConnectClientMocker(ENDPOINT) as mocker:
        mocker.products["PRD-1"].templates.filter(scope="asset", type="fulfillment").limit(100)[
            0:100
        ].mock(return_value=templates)
        mocker.products["PRD-2"].templates.filter(scope="asset", type="fulfillment").limit(100)[
            0:100
        ].mock(return_value=[])
        market = ConnectGateway(
            GatewaySettings(endpoint=ENDPOINT, api_key=API_KEY), sleep=fake_time.sleep
        )
        assert market.default_template("PRD-1") == "TL-2"
        assert market.default_template("PRD-1") == "TL-2"  # cached: the mock answers only once
        assert market.default_template("PRD-2") is None
