"""The request workflow on the mock marketplace (which action from which status, and what it does
to the subscription), conversations, templates and subscriptions, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests

from cancel_sandbox.marketplace import DEFAULT_API_KEY, MockClock, approve_template
from cancel_sandbox.marketplace.records import Request

from ..mock_support import (  # noqa: F401 - fixtures
    KEY_ID,
    START,
    Running,
    catalog,
    clock,
    start,
    template_of,
    workflow,
)

# -- status rules ---------------------------------------------------------------------------------

FUTURE = (START + timedelta(days=3)).isoformat()
ALLOWED = {
    "approve": ({"pending"}, "approved"),
    "fail": ({"pending"}, "failed"),
    "inquire": ({"pending"}, "inquiring"),
    "pend": ({"inquiring"}, "pending"),
    "schedule": ({"pending"}, "scheduled"),
    "revoke": ({"scheduled"}, "revoking"),
    "confirm": ({"revoking"}, "revoked"),
    "assign": ({"pending", "inquiring", "scheduled", "revoking"}, None),
}
PATHS = {  # how to bring a pending request into each status
    "pending": [],
    "inquiring": ["inquire"],
    "scheduled": ["schedule"],
    "revoking": ["schedule", "revoke"],
    "approved": ["approve"],
    "failed": ["fail"],
    "revoked": ["schedule", "revoke", "confirm"],
}


def _body(action: str, request: Request) -> dict[str, Any]:
    return {
        "approve": {"template_id": template_of(request)},
        "fail": {"reason": "Refused by the vendor."},
        "schedule": {"planned_date": FUTURE},
        "revoke": {"reason": "Changed my mind."},
        "assign": {"email": "agent@vendor.example"},
    }.get(action, {})


@pytest.mark.parametrize("status", list(PATHS))
@pytest.mark.parametrize("action", list(ALLOWED))
def test_each_action_is_allowed_only_from_its_statuses(
    workflow: Running, action: str, status: str
) -> None:
    request = next(workflow.queue)  # type: ignore[attr-defined]
    for step in PATHS[status]:
        assert workflow.act(request.id, step, _body(step, request)).status_code == 200
    assert workflow.get(f"/requests/{request.id}").json()["status"] == status
    seq = workflow.ledger()[-1]["seq"]
    response = workflow.act(request.id, action, _body(action, request))
    allowed, target = ALLOWED[action]
    if status in allowed:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == (target or status)
        assert any(e["id"] == request.id and e["actor"] == KEY_ID for e in workflow.ledger(seq))
    else:
        assert response.status_code == 400
        assert response.json()["error_code"] == "REQ_003"
        assert workflow.get(f"/requests/{request.id}").json()["status"] == status
        assert [e for e in workflow.ledger(seq) if e["id"] == request.id] == []


def test_approve_terminates_the_subscription_and_renders_the_template(
    start: Callable[..., Running],
) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    seq = mp.ledger()[-1]["seq"]
    response = mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert response.status_code == 200
    doc = response.json()
    sub_id = request.asset.params["subscription_id"]
    assert (
        doc["status"] == "approved"
        and sub_id in doc["activation_key"]
        and request.id in doc["activation_key"]
    )
    assert doc["template"]["id"] == template_of(request)
    assert doc["asset"]["status"] == "terminated"
    assert mp.get(f"/assets/{request.asset.id}").json()["status"] == "terminated"
    changes = [(e["kind"], e["id"], e["from"], e["to"], e["actor"]) for e in mp.ledger(seq)]
    assert changes == [
        ("request", request.id, "pending", "approved", KEY_ID),
        ("asset", request.asset.id, "terminating", "terminated", KEY_ID),
    ]
    again = mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert again.status_code == 400 and again.json()["error_code"] == "REQ_003"


def test_the_ledger_times_changes_to_the_microsecond_while_objects_keep_whole_seconds(
    start: Callable[..., Running], clock: MockClock
) -> None:
    mp = start(generate=10)
    first, second = list(mp.pending())[:2]
    seq = mp.ledger()[-1]["seq"]
    clock.advance(0.25)
    mp.act(first.id, "approve", {"template_id": template_of(first)})
    clock.advance(0.5)
    doc = mp.act(second.id, "approve", {"template_id": template_of(second)}).json()
    stamps = {
        e["id"]: datetime.fromisoformat(e["at"]) for e in mp.ledger(seq) if e["kind"] == "request"
    }
    # Benchmarks time approvals from the ledger: whole seconds would read 0.5 s as 0 or 1.
    assert stamps == {
        first.id: START + timedelta(seconds=0.25),
        second.id: START + timedelta(seconds=0.75),
    }
    assert datetime.fromisoformat(doc["updated"]) == START  # Connect's precision on the object


def test_fail_reactivates_the_subscription_and_keeps_the_reason(
    start: Callable[..., Running],
) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    missing = mp.act(request.id, "fail", {})
    assert missing.status_code == 400 and missing.json() == {
        "error_code": "REQ_005",
        "errors": ["Missed fields: reason."],
    }
    response = mp.act(request.id, "fail", {"reason": "Outstanding balance."})
    assert (
        response.json()["status"] == "failed"
        and response.json()["reason"] == "Outstanding balance."
    )
    assert mp.get(f"/assets/{request.asset.id}").json()["status"] == "active"
    assert [(e["kind"], e["to"]) for e in mp.ledger()[-2:]] == [
        ("request", "failed"),
        ("asset", "active"),
    ]


def test_approve_needs_a_template_of_the_requests_own_product(
    start: Callable[..., Running],
) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    other = next(p for p in mp.store.products.values() if p.id != request.asset.product.id)
    assert mp.act(request.id, "approve", {}).json() == {
        "error_code": "REQ_005",
        "errors": ["Missed fields: template_id."],
    }
    foreign = mp.act(request.id, "approve", {"template_id": approve_template(other)})
    assert foreign.status_code == 400 and foreign.json()["error_code"] == "VAL_001"
    inquire_template = next(
        t["id"] for t in request.asset.product.templates if t["type"] == "inquire"
    )
    assert mp.act(request.id, "approve", {"template_id": inquire_template}).status_code == 400
    assert mp.get(f"/requests/{request.id}").json()["status"] == "pending"
    tile = mp.act(request.id, "approve", {"activation_tile": "Done by hand."})
    assert tile.status_code == 200 and tile.json()["activation_key"] == "Done by hand."


def test_scheduled_request_returns_to_pending_when_the_clock_passes(
    start: Callable[..., Running], clock: MockClock
) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    assert mp.act(request.id, "schedule", {}).json()["error_code"] == "REQ_005"
    past = mp.act(
        request.id, "schedule", {"planned_date": (START - timedelta(hours=1)).isoformat()}
    )
    assert past.status_code == 400 and past.json()["error_code"] == "VAL_001"
    planned = START + timedelta(hours=6)
    assert (
        mp.act(request.id, "schedule", {"planned_date": planned.isoformat()}).json()["status"]
        == "scheduled"
    )
    clock.advance(6 * 3600 - 1)
    assert mp.get(f"/requests/{request.id}").json()["status"] == "scheduled"
    clock.advance(1)
    assert mp.get(f"/requests/{request.id}").json()["status"] == "pending"
    entry = mp.ledger(object_id=request.id)[-1]
    assert (entry["from"], entry["to"], entry["actor"]) == ("scheduled", "pending", "system")


def test_revoke_and_confirm_give_the_subscription_back(start: Callable[..., Running]) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    mp.act(request.id, "schedule", {"planned_date": FUTURE})
    assert mp.act(request.id, "revoke", {"reason": "Stay."}).json()["status"] == "revoking"
    assert mp.act(request.id, "confirm").json()["status"] == "revoked"
    assert mp.get(f"/assets/{request.asset.id}").json()["status"] == "active"


def test_assign_by_id_or_email(start: Callable[..., Running]) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    by_email = mp.act(request.id, "assign", {"email": "agent@vendor.example"}).json()["assignee"]
    assert by_email["email"] == "agent@vendor.example" and by_email["id"].startswith("UR-")
    agent = sorted(mp.store.users)[0]  # the default catalog's agents are the known users
    by_id = mp.act(request.id, "assign", {"id": agent}).json()["assignee"]
    assert by_id == mp.store.users[agent]
    assert mp.act(request.id, "assign", {}).status_code == 400
    entries = [e for e in mp.ledger(object_id=request.id) if e["event"] == "assigned"]
    assert [(e["from"], e["to"], e["actor"]) for e in entries] == [
        (None, by_email["id"], KEY_ID),
        (by_email["id"], agent, KEY_ID),
    ]
    assert mp.act(request.id, "unassign").json()["assignee"] == ""


def test_put_updates_parameters_and_note_only_while_editable(start: Callable[..., Running]) -> None:
    mp = start(generate=10)
    request = next(mp.pending())
    body = {
        "asset": {"params": [{"id": "subscription_id", "value": "SUB-NEW", "value_error": ""}]},
        "note": "checked",
    }
    updated = mp.call("PUT", f"/requests/{request.id}", body).json()
    assert updated["note"] == "checked"
    assert (
        next(p for p in updated["asset"]["params"] if p["id"] == "subscription_id")["value"]
        == "SUB-NEW"
    )
    unknown = mp.call(
        "PUT", f"/requests/{request.id}", {"asset": {"params": [{"id": "nope", "value": "x"}]}}
    )
    assert unknown.status_code == 400 and unknown.json()["error_code"] == "VAL_001"
    mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert "SUB-NEW" in mp.get(f"/requests/{request.id}").json()["activation_key"]
    late = mp.call("PUT", f"/requests/{request.id}", {"note": "too late"})
    assert late.status_code == 400 and late.json()["error_code"] == "REQ_003"


def test_creating_a_cancel_needs_an_active_subscription(start: Callable[..., Running]) -> None:
    mp = start(generate=10)
    active = next(a for a in mp.store.assets.values() if a.status == "active")
    created = mp.call("POST", "/requests", {"type": "cancel", "asset": {"id": active.id}})
    assert created.status_code == 201
    doc = created.json()
    assert (
        doc["type"] == "cancel"
        and doc["status"] == "pending"
        and doc["asset"]["status"] == "terminating"
    )
    assert doc["id"].startswith("PR-" + active.id[3:] + "-")
    assert mp.get(f"/conversations?instance_id={doc['id']}").json()[0]["instance_id"] == doc["id"]
    again = mp.call("POST", "/requests", {"type": "cancel", "asset": {"id": active.id}})
    assert again.status_code == 400 and "terminating" in again.json()["errors"][0]
    assert (
        mp.call("POST", "/requests", {"type": "purchase", "asset": {"id": active.id}}).status_code
        == 400
    )
    assert (
        mp.call(
            "POST", "/requests", {"type": "cancel", "asset": {"id": "AS-0000-0000-0000"}}
        ).status_code
        == 400
    )
    assert [e["event"] for e in mp.ledger(object_id=doc["id"])] == ["created"]


def test_the_call_shapes_of_the_legacy_sdk(start: Callable[..., Running]) -> None:
    """connect-sdk 22 lists with django-filter parameters and posts actions with a trailing
    slash."""
    mp = start(generate=30)
    products = sorted(mp.store.products)[:2]
    filters = {"limit": "1000", "status": "pending", "asset.product.id__in": ",".join(products)}
    listed = requests.get(
        f"{mp.server.url}/public/v1/requests",
        params=filters,
        timeout=10,
        headers={"Authorization": DEFAULT_API_KEY, "Content-Type": "application/json"},
    )
    expected = {
        r.id
        for r in mp.store.requests.values()
        if r.status == "pending" and r.asset.product.id in products
    }
    assert {d["id"] for d in listed.json()} == expected
    request = mp.store.requests[sorted(expected)[0]]
    approved = requests.post(
        f"{mp.server.url}/public/v1/requests/{request.id}/approve/",
        timeout=10,
        json={"template_id": template_of(request)},
        headers={"Authorization": DEFAULT_API_KEY},
    )
    assert approved.status_code == 200 and approved.json()["status"] == "approved"


def test_unknown_request_and_action(start: Callable[..., Running]) -> None:
    mp = start(generate=2)
    missing = mp.get("/requests/PR-0000-0000-0000-001")
    assert missing.status_code == 404 and missing.json()["error_code"] == "REQ_001"
    request = next(mp.pending())
    assert mp.act(request.id, "teleport").status_code == 404
    assert (
        mp.act(request.id, "approve/", {"template_id": template_of(request)}).status_code == 200
    )  # legacy SDK slash


# -- conversations, templates, subscriptions -------------------------------------------------------


def test_conversation_and_messages(start: Callable[..., Running]) -> None:
    mp = start(generate=5)
    request = next(mp.pending())
    conversations = mp.get(f"/conversations?instance_id={request.id}").json()
    assert (
        len(conversations) == 1
        and mp.get(f"/conversations?eq(instance_id,{request.id})").json() == conversations
    )
    conversation_id = conversations[0]["id"]
    assert conversation_id.startswith("CO-")
    assert mp.get(f"/conversations/{conversation_id}").json()["instance_id"] == request.id
    posted = mp.call(
        "POST",
        f"/conversations/{conversation_id}/messages",
        {"text": "Terminated at the vendor.", "type": "message"},
    )
    assert posted.status_code == 201 and posted.json()["text"] == "Terminated at the vendor."
    assert (
        mp.call(
            "POST",
            f"/conversations/{conversation_id}/messages",
            {"text": "internal", "type": "private"},
        ).status_code
        == 201
    )
    assert [m["text"] for m in mp.get(f"/conversations/{conversation_id}/messages").json()] == [
        "Terminated at the vendor.",
        "internal",
    ]
    assert (
        mp.call("POST", f"/conversations/{conversation_id}/messages", {"text": ""}).json()[
            "error_code"
        ]
        == "REQ_005"
    )
    assert (
        mp.call(
            "POST", f"/conversations/{conversation_id}/messages", {"text": "x", "type": "shout"}
        ).status_code
        == 400
    )
    assert [(e["event"], e["actor"]) for e in mp.ledger(object_id=request.id)] == [
        ("message", KEY_ID)
    ] * 2


def test_templates_and_products(catalog: Running) -> None:
    product = sorted(catalog.store.products.values(), key=lambda p: p.id)[0]
    templates = catalog.get(
        f"/products/{product.id}/templates?eq(scope,asset)&eq(type,fulfillment)"
    ).json()
    assert templates and templates[0]["id"] == approve_template(product)
    assert all(t["scope"] == "asset" and t["type"] == "fulfillment" for t in templates)
    assert {
        t["type"] for t in catalog.get(f"/products/{product.id}/templates?type=inquire").json()
    } == {"inquire"}
    assert catalog.get(f"/products/{product.id}").json()["name"] == product.name
    assert catalog.get("/products/PRD-000-000-000").status_code == 404


def test_subscription_shape_and_listing(catalog: Running) -> None:
    asset = next(
        a
        for a in catalog.store.assets.values()
        if a.product.billing_period and a.status == "active"
    )
    doc = catalog.get(f"/assets/{asset.id}").json()
    assert doc["status"] == "active" and doc["product"]["id"] == asset.product.id
    assert {p["id"]: p["value"] for p in doc["params"]}["subscription_id"].startswith("SUB-")
    assert all(isinstance(item["quantity"], str) for item in doc["items"])
    assert (
        doc["billing"]["next_date"] > START.isoformat()
        and doc["billing"]["period"]["uom"] == asset.product.billing_period
    )
    assert {"customer", "tier1", "tier2"} <= set(doc["tiers"])
    listed = catalog.call("GET", "/assets?eq(status,active)&limit=1000").json()
    assert {d["id"] for d in listed} == {
        a.id for a in catalog.store.assets.values() if a.status == "active"
    }
