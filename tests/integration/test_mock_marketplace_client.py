"""The real connect-openapi-client against the running mock: it cannot tell the difference.

Everything goes through ``ConnectClient(api_key, endpoint=<mock>/public/v1)`` as the processor's
gateway uses it: R() filters, iteration over several pages (Content-Range), ``count()``, get,
actions, conversations, templates, and ``ClientError`` for refusals and for a wrong key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from connect.client import ClientError, ConnectClient, R

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.marketplace import MarketplaceSettings, MockClock, approve_template, create_app
from processor.ops.serving import ServerThread

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def marketplace() -> Iterator[tuple[object, ServerThread]]:
    app = create_app(MarketplaceSettings(generate=250, seed=17, clock=MockClock(START)))
    with ServerThread(app) as server:
        yield app, server


def client_for(server: ServerThread, key: str, **kwargs: object) -> ConnectClient:
    return ConnectClient(key, endpoint=server.url + "/public/v1", use_specs=False, **kwargs)


def pending_query() -> R:
    return R().type.eq("cancel") & R().status.eq("pending")


def test_iterates_every_page_and_counts(marketplace: tuple[object, ServerThread]) -> None:
    app, server = marketplace
    client = client_for(server, app.config.api_key, default_limit=100, resourceset_append=False)  # type: ignore[attr-defined]
    resources = (
        client.requests.filter(pending_query())
        .order_by("created", "id")
        .select("-activation_key", "-template")
    )
    ids = [doc["id"] for doc in resources]
    store = app.store  # type: ignore[attr-defined]
    expected = sorted(
        (r for r in store.requests.values() if r.type == "cancel" and r.status == "pending"),
        key=lambda r: (r.created, r.id),
    )
    assert ids == [r.id for r in expected] and len(ids) == 250  # three pages of 100
    assert client.requests.filter(pending_query()).count() == 250
    assert client.requests.filter(
        pending_query(), R().asset.connection.type.eq("preview")
    ).count() == sum(1 for r in expected if r.asset.connection["type"] == "preview")


def test_filters_with_dates_lists_and_nested_fields(
    marketplace: tuple[object, ServerThread],
) -> None:
    app, server = marketplace
    client = client_for(server, app.config.api_key)  # type: ignore[attr-defined]
    store = app.store  # type: ignore[attr-defined]
    since = START - timedelta(days=10)
    product = sorted(store.products)[0]
    query = (
        pending_query()
        & R().created.ge(since)
        & R().asset.product.id.in_([product])
        & R().id.out(["PR-0"])
    )
    got = {doc["id"] for doc in client.requests.filter(query).all()}
    assert got == {
        r.id
        for r in store.requests.values()
        if r.type == "cancel"
        and r.status == "pending"
        and r.created >= since
        and r.asset.product.id == product
    }
    assert got
    first = client.requests.filter(pending_query()).order_by("-created").first()
    assert (
        first["created"]
        == max(
            r.created
            for r in store.requests.values()
            if r.type == "cancel" and r.status == "pending"
        ).isoformat()
    )


def test_get_approve_fail_and_refusals(marketplace: tuple[object, ServerThread]) -> None:
    app, server = marketplace
    client = client_for(server, app.config.api_key, max_retries=0)  # type: ignore[attr-defined]
    store = app.store  # type: ignore[attr-defined]
    first, second = sorted(
        (r for r in store.requests.values() if r.type == "cancel" and r.status == "pending"),
        key=lambda r: r.id,
    )[:2]
    doc = client.requests[first.id].get()
    assert doc["id"] == first.id and doc["asset"]["id"] == first.asset.id
    template = approve_template(first.asset.product)
    approved = client.requests[first.id]("approve").post(payload={"template_id": template})
    assert approved["status"] == "approved" and approved["asset"]["status"] == "terminated"
    with pytest.raises(ClientError) as refused:
        client.requests[first.id]("approve").post(payload={"template_id": template})
    assert refused.value.status_code == 400
    assert refused.value.error_code == "REQ_003"
    assert refused.value.errors and "approved" in refused.value.errors[0]
    failed = client.requests[second.id]("fail").post(payload={"reason": "Outstanding balance."})
    assert (
        failed["status"] == "failed" and client.assets[second.asset.id].get()["status"] == "active"
    )
    with pytest.raises(ClientError) as missing:
        client.requests["PR-0000-0000-0000-001"].get()
    assert missing.value.status_code == 404 and missing.value.error_code == "REQ_001"


def test_conversations_and_templates(marketplace: tuple[object, ServerThread]) -> None:
    app, server = marketplace
    client = client_for(server, app.config.api_key)  # type: ignore[attr-defined]
    request = next(r for r in app.store.requests.values() if r.status == "pending")  # type: ignore[attr-defined]
    conversation = client.conversations.filter(instance_id=request.id).first()
    assert conversation["instance_id"] == request.id
    message = client.conversations[conversation["id"]].messages.create(
        payload={"text": "Noted.", "type": "message"}
    )
    assert message["text"] == "Noted."
    templates = client.products[request.asset.product.id].templates.filter(
        scope="asset", type="fulfillment"
    )
    assert approve_template(request.asset.product) in [t["id"] for t in templates]


def test_a_wrong_key_is_a_401_client_error(marketplace: tuple[object, ServerThread]) -> None:
    _app, server = marketplace
    client = client_for(server, "ApiKey SU-000-000-000:not-the-secret", max_retries=0)
    with pytest.raises(ClientError) as error:
        client.requests.filter(pending_query()).count()
    assert error.value.status_code == 401 and error.value.error_code == "AUTH_001"
    assert "not-the-secret" not in str(error.value)


def test_injected_errors_reach_the_client_as_503() -> None:
    app = create_app(
        MarketplaceSettings(
            generate=3, clock=MockClock(START), faults=FaultSettings(error_rate=1.0)
        )
    )
    with ServerThread(app) as server:
        client = client_for(server, app.config.api_key, max_retries=0)
        with pytest.raises(ClientError) as error:
            client.requests.filter(pending_query()).first()
        assert error.value.status_code == 503
