"""Paging on every listed collection, and the rest of the surface, through connect-openapi-client.

``client.assets[A].requests.all().count()`` raised before (no ``Content-Range``); the same holds
now for conversations, messages, templates, marketplaces and the ``subscriptions`` namespace.
Then the calls a fulfillment processor and its tests make besides the request workflow: request
and template renders, conversation create, marketplaces, billing requests (none on this mock).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from connect.client import ClientError, ConnectClient, R

from cancel_sandbox.marketplace.records import Request

from ..mock_support import Running, clock, start  # noqa: F401 - fixtures


def client_of(mp: Running, **kwargs: object) -> ConnectClient:
    return ConnectClient(mp.app.config.api_key, endpoint=mp.api, use_specs=False, **kwargs)


def _busy_asset(mp: Running, requests_wanted: int) -> str:
    """A subscription with ``requests_wanted`` requests: cancels created, then revoked."""
    asset = next(a for a in mp.store.assets.values() if a.status == "active")
    for _ in range(requests_wanted - len(asset.request_ids)):
        created = mp.call("POST", "/requests", {"type": "cancel", "asset": {"id": asset.id}})
        assert created.status_code == 201, created.text
        assert mp.act(created.json()["id"], "fail", {"reason": "Kept."}).status_code == 200
    return asset.id


@pytest.fixture
def mp(start: Callable[..., Running]) -> Running:
    return start(generate=20, seed=9)


def test_asset_requests_are_paged_and_counted(mp: Running) -> None:
    asset_id = _busy_asset(mp, 7)
    client = client_of(mp, default_limit=3)
    listed = list(client.assets[asset_id].requests.all())
    assert [r["id"] for r in listed] == mp.store.assets[asset_id].request_ids
    assert client.assets[asset_id].requests.all().count() == 7
    assert client.assets[asset_id].requests.filter(status="failed").count() == 6
    page = mp.get(f"/assets/{asset_id}/requests?limit=2&offset=4")
    assert page.headers["Content-Range"] == "items 4-5/7" and len(page.json()) == 2
    assert set(page.json()[0]) >= {"id", "type", "status", "events"}
    for bad in ("limit=-1", "limit=x", "offset=-2", "limit=100000", "eq(no_such_field,1)"):
        refused = mp.get(f"/assets/{asset_id}/requests?{bad}")
        assert refused.status_code == 400 and refused.json()["error_code"] == "VAL_001", bad
    assert mp.get("/assets/AS-0000-0000-0000/requests").status_code == 404


def test_conversations_messages_and_templates_are_counted(mp: Running) -> None:
    client = client_of(mp, default_limit=2)
    request = next(mp.pending())
    conversation = mp.store.conversation_of[request.id]
    for number in range(5):
        client.conversations[conversation].messages.create(payload={"text": f"note {number}"})
    assert client.conversations[conversation].messages.all().count() == 5
    assert len(list(client.conversations[conversation].messages.all())) == 5
    assert client.conversations.filter(instance_id=request.id).count() == 1
    assert client.conversations.all().count() == len(mp.store.conversations)
    product = request.asset.product
    assert client.products[product.id].templates.all().count() == len(product.templates)
    assert [t["id"] for t in client.products[product.id].templates.all()] == [
        t["id"] for t in product.templates
    ]
    assert client.marketplaces.all().count() == len(mp.store.marketplaces)
    for path in ("/conversations", f"/conversations/{conversation}/messages",
                 f"/products/{product.id}/templates", "/marketplaces"):  # fmt: skip
        assert mp.get(f"{path}?limit=-1").status_code == 400, path
        assert "Content-Range" in mp.get(path).headers, path


def test_subscriptions_namespace(mp: Running) -> None:
    subscriptions = client_of(mp, default_limit=7).ns("subscriptions")
    active = [a for a in mp.store.assets.values() if a.status == "active"]
    assert subscriptions.assets.filter(status="active").count() == len(active)
    first = subscriptions.assets[active[0].id].get()
    assert first == mp.get(f"/assets/{active[0].id}").json()
    assert subscriptions.requests.all().count() == 0
    assert list(subscriptions.requests.filter(R().asset.id.eq(active[0].id))) == []
    with pytest.raises(ClientError) as missing:
        subscriptions.requests["BRP-0000-0000-0000"].get()
    assert missing.value.status_code == 404
    assert mp.get("/subscriptions/requests?eq(no_such,1)").status_code == 400


def test_marketplaces(mp: Running) -> None:
    client = client_of(mp)
    listed = list(client.marketplaces.all())
    assert [m["id"] for m in listed] == sorted(mp.store.marketplaces)
    assert client.marketplaces[listed[0]["id"]].get() == listed[0]
    assert [m["id"] for m in client.marketplaces.filter(name=listed[1]["name"])] == [
        listed[1]["id"]
    ]
    with pytest.raises(ClientError) as missing:
        client.marketplaces["MP-99999"].get()
    assert missing.value.status_code == 404


def _approved(mp: Running) -> Request:
    request = next(mp.pending())
    mp.call(
        "PUT",
        f"/requests/{request.id}",
        {"asset": {"params": [{"id": "subscription_id", "value": "SUB-R1"}]}},
    )
    template = request.asset.product.approve_template()
    assert mp.act(request.id, "approve", {"template_id": template}).status_code == 200
    return request


def test_request_and_template_render(mp: Running) -> None:
    approved = _approved(mp)
    rendered = mp.get(f"/requests/{approved.id}/render")
    assert rendered.status_code == 200 and rendered.headers["content-type"].startswith(
        "text/markdown"
    )
    assert rendered.text == approved.activation_key and "SUB-R1" in rendered.text
    pending = next(mp.pending())
    refused = mp.get(f"/requests/{pending.id}/render")
    assert refused.status_code == 400 and refused.json()["error_code"] == "REQ_003"
    product, template = approved.asset.product.id, approved.asset.product.approve_template()
    client = client_of(mp)
    by_request = mp.get(f"/products/{product}/templates/{template}/render?request_id={approved.id}")
    assert by_request.json() == approved.activation_key
    by_asset = mp.get(
        f"/products/{product}/templates/{template}/render?asset_id={approved.asset.id}"
    )
    assert by_asset.status_code == 200 and "SUB-R1" in by_asset.json()
    assert client.products[product].templates[template]("render").get(
        params={"request_id": approved.id}
    ) == (approved.activation_key)
    missing = mp.get(f"/products/{product}/templates/{template}/render")
    assert missing.status_code == 400 and missing.json()["errors"] == ["Missed fields: request_id."]
    assert (
        mp.get(
            f"/products/{product}/templates/TL-000-000-000/render?request_id={approved.id}"
        ).status_code
        == 404
    )


def test_conversation_create(start: Callable[..., Running]) -> None:
    mp = start(
        generate=20, seed=9, may_create_conversations=True
    )  # a key that may (not a vendor's)
    client = client_of(mp)
    created = client.conversations.create(
        payload={"instance_id": "TA-1234-5678-9012", "topic": "Tier account"}
    )
    assert created["instance_id"] == "TA-1234-5678-9012" and created["id"].startswith("CO-")
    assert client.conversations[created["id"]].get() == created
    assert [c["id"] for c in client.conversations.filter(instance_id="TA-1234-5678-9012")] == [
        created["id"]
    ]
    client.conversations[created["id"]].messages.create(payload={"text": "hello"})
    assert client.conversations[created["id"]].messages.all().count() == 1
    request = next(mp.pending())
    for body in ({"instance_id": request.id}, {"instance_id": "TA-1234-5678-9012"}, {"topic": "x"}):
        with pytest.raises(ClientError) as refused:
            client.conversations.create(payload=body)
        assert refused.value.status_code == 400
