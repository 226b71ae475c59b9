"""What the gateway gained for policies: listing cancels by status (revocations), approving with an
effective date, and the schedule / revoke / confirm round trip, against the mock marketplace; and
the retry layer under the new listing, with ``responses``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import responses

from cancel_sandbox.marketplace import MarketplaceSettings, MockClock, approve_template, create_app
from processor.marketplace import ConnectGateway, GatewaySettings, NotPending, Selector
from processor.ops.serving import ServerThread

START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def connect() -> Iterator[tuple[Any, ConnectGateway, MockClock]]:
    clock = MockClock(START)
    app = create_app(MarketplaceSettings(generate=12, seed=3, clock=clock))
    with ServerThread(app) as server:
        gateway = ConnectGateway(
            GatewaySettings(
                endpoint=f"{server.url}/public/v1",
                api_key=app.config.api_key,
                backoff_base=0.01,
                backoff_max=0.02,
            )
        )
        yield app, gateway, clock
        gateway.close()


def pending_ids(gateway: ConnectGateway) -> list[str]:
    return sorted(r["id"] for r in gateway.iter_pending(Selector()))


def test_schedule_revoke_confirm_and_the_revoking_listing(
    connect: tuple[Any, ConnectGateway, MockClock],
) -> None:
    app, gateway, clock = connect
    first, second = pending_ids(gateway)[:2]
    planned = START + timedelta(days=10)
    assert gateway.schedule(first, planned)["status"] == "scheduled"
    assert (
        gateway.schedule(first, planned)["status"] == "scheduled"
    )  # repeating it is recognised as done
    gateway.schedule(second, planned)
    requests.post(
        f"{gateway.settings.endpoint}/requests/{first}/revoke",
        json={"reason": "kept"},
        headers={"Authorization": app.config.api_key},
        timeout=10,
    ).raise_for_status()

    assert [r["id"] for r in gateway.iter_cancels(Selector(), "revoking")] == [first]
    product = app.store.requests[second].asset.product.id
    scheduled = [r for r in gateway.iter_cancels(Selector(products=(product,)), "scheduled")]
    assert second in {r["id"] for r in scheduled} and first not in {r["id"] for r in scheduled}
    assert {r["asset"]["product"]["id"] for r in scheduled} == {
        product
    }  # the generator adds scheduled ones too
    assert gateway.confirm(first)["status"] == "revoked"
    assert (
        gateway.confirm(first)["status"] == "revoked"
    )  # a repeat after a lost answer is a success
    assert list(gateway.iter_cancels(Selector(), "revoking")) == []

    clock.set(planned + timedelta(seconds=1))  # Connect returns the other one to pending
    assert second in pending_ids(gateway)
    with pytest.raises(NotPending) as caught:
        gateway.confirm(second)
    assert caught.value.status == "pending"


def test_approve_tells_connect_when_the_cancellation_took_effect(
    connect: tuple[Any, ConnectGateway, MockClock],
) -> None:
    app, gateway, _ = connect
    request_id = pending_ids(gateway)[0]
    template = approve_template(app.store.requests[request_id].asset.product)
    effective = START - timedelta(days=14)
    approved = gateway.approve(request_id, template, effective_date=effective)
    assert approved["status"] == "approved"
    assert datetime.fromisoformat(approved["effective_date"].replace("Z", "+00:00")) == effective
    with pytest.raises(ValueError, match="timezone-aware"):
        gateway.approve(request_id, template, effective_date=datetime(2026, 1, 1))


def test_listing_by_status_refuses_a_status_cancels_never_have() -> None:
    gateway = ConnectGateway(
        GatewaySettings(
            endpoint="https://connect.example/public/v1", api_key="ApiKey SU-1:secret-123"
        )
    )
    with pytest.raises(ValueError, match="status must be one of"):
        list(gateway.iter_cancels(Selector(), "purchase"))


def test_the_revoking_listing_goes_through_the_retry_layer() -> None:
    sleeps: list[float] = []
    gateway = ConnectGateway(
        GatewaySettings(
            endpoint="https://connect.example/public/v1",
            api_key="ApiKey SU-1:secret-123",
            backoff_base=1,
        ),
        sleep=sleeps.append,
    )
    item = {
        "id": "PR-1-1-1-001",
        "type": "cancel",
        "status": "revoking",
        "created": "2026-10-01T10:00:00+00:00",
    }
    with responses.RequestsMock() as http:
        http.get(
            "https://connect.example/public/v1/requests", status=503, json={"errors": ["down"]}
        )
        http.get(
            "https://connect.example/public/v1/requests",
            json=[item],
            headers={"Content-Range": "items 0-0/1"},
        )
        assert list(gateway.iter_cancels(Selector(products=("PRD-1-1-1",)), "revoking")) == [item]
        query = unquote(http.calls[-1].request.url or "")
    assert len(sleeps) == 1  # one retry after the 503
    assert "eq(status,revoking)" in query and "eq(type,cancel)" in query and "PRD-1-1-1" in query
