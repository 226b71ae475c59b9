"""The mock Connect marketplace as a service: authentication and limits, faults, persistence,
seeding and generation, admin endpoints, the web page and the command.

Split by subject: RQL and paging in test_mock_marketplace_rql.py, the request workflow in
test_mock_marketplace_workflow.py, Connect payloads in test_mock_marketplace_import.py,
validation in test_mock_marketplace_validation.py, the rest of the surface in
test_mock_marketplace_surface.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.marketplace import (
    DEFAULT_API_KEY,
    MarketplaceSettings,
    MockClock,
    SeedError,
    approve_template,
    create_app,
)
from cancel_sandbox.marketplace.records import render_asset, render_request
from cancel_sandbox.marketplace.serialize import Serializer
from cancel_sandbox.marketplace.store import Store

from ..mock_support import SECRET, START, Running, clock, start, template_of  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]


# -- authentication, limits, secrets ------------------------------------------------------------


def test_the_api_needs_the_exact_key_and_never_echoes_it(start: Callable[..., Running]) -> None:
    mp = start(generate=3)
    url = mp.server.url + "/public/v1/requests"
    unauthorized = {"error_code": "AUTH_001", "errors": ["API request is unauthorized."]}
    for headers in (
        {},
        {"Authorization": "ApiKey SU-000-000-000:wrong"},
        {"Authorization": SECRET},
        {"Authorization": DEFAULT_API_KEY + "x"},
        {"Authorization": DEFAULT_API_KEY[:-1]},
        {"Authorization": DEFAULT_API_KEY.replace("ApiKey ", "ApiKey  ")},
    ):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 401 and response.json() == unauthorized
    # The whitespace around a field value is not part of it (RFC 9110 section 5.5): the mock
    # strips it itself, so this holds whether or not the ASGI server already did.
    for padded in (DEFAULT_API_KEY + " ", DEFAULT_API_KEY + "\t", DEFAULT_API_KEY + "  "):
        assert requests.get(url, headers={"Authorization": padded}, timeout=10).status_code == 200
    assert mp.admin("GET", "/admin/stats").status_code == 200
    request = next(mp.pending())
    mp.act(request.id, "approve", {"template_id": template_of(request)})
    for path in ("/", "/admin/ledger", "/admin/stats", "/admin/faults", "/healthz"):
        assert SECRET not in mp.admin("GET", path).text


def test_bodies_over_the_limit_are_refused(start: Callable[..., Running]) -> None:
    mp = start(generate=3, max_body_bytes=2048)
    request = next(mp.pending())
    response = mp.act(request.id, "fail", {"reason": "x" * 5000})
    assert response.status_code == 413 and response.json()["error_code"] == "VAL_001"
    assert mp.get(f"/requests/{request.id}").json()["status"] == "pending"
    not_json = mp.http.post(
        f"{mp.server.url}/public/v1/requests/{request.id}/fail", data=b"{reason", timeout=10
    )
    assert not_json.status_code == 400


# -- faults -----------------------------------------------------------------------------------


def test_faults_at_start_and_at_run_time(start: Callable[..., Running]) -> None:
    mp = start(generate=6, faults=FaultSettings(error_rate=1.0))
    request = next(mp.pending())
    before = mp.ledger()[-1]["seq"]
    failing = mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert failing.status_code == 503 and mp.ledger(before) == []  # refused before acting
    assert (
        mp.admin("GET", "/healthz").status_code == 200
        and mp.admin("GET", "/admin/stats").status_code == 200
    )

    assert (
        mp.admin("PUT", "/admin/faults", json={"throttle_rate": 1.0, "retry_after": 7}).status_code
        == 200
    )
    throttled = mp.get(f"/requests/{request.id}")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"

    mp.admin("PUT", "/admin/faults", json={"drop_rate": 1.0})
    # The response starts, then the connection breaks: requests reports a broken body.
    with pytest.raises(
        (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)
    ):
        mp.act(request.id, "approve", {"template_id": template_of(request)})
    assert [(e["kind"], e["to"]) for e in mp.ledger(before, object_id=request.id)] == [
        ("request", "approved")
    ]
    assert mp.store.requests[request.id].status == "approved"

    mp.admin("PUT", "/admin/faults", json={"latency_ms": 1.0})
    delayed = mp.admin("GET", "/admin/stats").json()["faults"]["delayed"]
    assert mp.get(f"/requests/{request.id}").json()["status"] == "approved"
    assert mp.admin("GET", "/admin/stats").json()["faults"]["delayed"] == delayed + 1
    assert mp.admin("GET", "/admin/faults").json()["latency_ms"] == 1.0

    bad = mp.admin("PUT", "/admin/faults", json={"error_rate": 2})
    assert bad.status_code == 400 and mp.admin("GET", "/admin/faults").json()["latency_ms"] == 1.0
    assert mp.admin("PUT", "/admin/faults", json={}).json()["latency_ms"] == 0.0


def test_share_of_errors_follows_the_rate(start: Callable[..., Running]) -> None:
    mp = start(generate=2, faults=FaultSettings(error_rate=0.3, seed=1))
    request = next(mp.pending())
    codes = Counter(mp.get(f"/requests/{request.id}").status_code for _ in range(200))
    assert set(codes) == {200, 503} and 30 <= codes[503] <= 90


# -- persistence ----------------------------------------------------------------------------------


def test_state_survives_a_restart_with_a_state_file(
    start: Callable[..., Running], tmp_path: Path, clock: MockClock
) -> None:
    state = tmp_path / "marketplace.sqlite"
    first = start(generate=12, state_file=state)
    requests_ = list(first.pending())
    first.act(requests_[0].id, "approve", {"template_id": template_of(requests_[0])})
    first.act(requests_[1].id, "fail", {"reason": "No."})
    first.act(requests_[2].id, "assign", {"email": "agent@vendor.example"})
    first.act(
        requests_[3].id, "schedule", {"planned_date": (START + timedelta(hours=1)).isoformat()}
    )
    conversation = first.get(f"/conversations?instance_id={requests_[2].id}").json()[0]["id"]
    first.call("POST", f"/conversations/{conversation}/messages", {"text": "Kept."})
    active = next(a for a in first.store.assets.values() if a.status == "active")
    created = first.call(
        "POST", "/requests", {"type": "cancel", "asset": {"id": active.id}}
    ).json()["id"]
    snapshot = {
        path: first.get(path).json()
        for path in (
            f"/requests/{requests_[0].id}",
            f"/requests/{requests_[2].id}",
            f"/requests/{created}",
            f"/assets/{requests_[1].asset.id}",
            f"/conversations/{conversation}/messages",
        )
    }
    ledger, stats = first.ledger(), first.admin("GET", "/admin/stats").json()
    first.server.stop()

    second = start(generate=500, state_file=state)  # the file wins over generating
    assert {path: second.get(path).json() for path in snapshot} == snapshot
    assert second.ledger() == ledger
    assert {
        k: v for k, v in second.admin("GET", "/admin/stats").json().items() if k != "faults"
    } == {k: v for k, v in stats.items() if k != "faults"}
    second.act(requests_[4].id, "fail", {"reason": "After restart."})
    assert second.ledger()[-2]["seq"] == ledger[-1]["seq"] + 1
    clock.advance(3600)
    assert second.get(f"/requests/{requests_[3].id}").json()["status"] == "pending"


# -- seeding and generation ------------------------------------------------------------------------


def test_the_example_seed_file_loads(start: Callable[..., Running]) -> None:
    mp = start(seed_file=REPO / "config" / "seed.example.yaml")
    store = mp.store
    # PRD-555-666-777 comes with the imported Connect request (connect_requests).
    assert {"PRD-123-456-789", "PRD-987-654-321", "PRD-555-666-777"} == set(store.products)
    first = mp.get("/requests/PR-1000-2000-3001-002").json()
    assert first["status"] == "pending" and first["asset"]["status"] == "terminating"
    assert {p["id"]: p["value"] for p in first["asset"]["params"]}[
        "cancellation_reason"
    ] == "too_expensive"
    assert (
        first["asset"]["items"][0]["mpn"] == "BACKUP-PREMIUM"
        and first["asset"]["items"][0]["quantity"] == "25"
    )
    tied = [d for d in mp.get("/requests?eq(created,2025-01-10T08:00:00+00:00)").json()]
    assert len(tied) == 2
    preview = mp.get("/assets/AS-1000-2000-3003").json()
    assert preview["connection"]["id"] == "CT-0000-0000-0000"
    assert mp.get("/assets/AS-1000-2000-3004").json()["status"] == "active"
    assert approve_template(store.products["PRD-123-456-789"]) == "TL-123-456-789"
    assert (
        sum(1 for r in store.requests.values() if r.type == "cancel" and r.status == "pending")
        == 2 + 20 + 1
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "subscriptions:\n  - {product: PRD-000-000-000}\n",
            "subscriptions[0].product: unknown product",
        ),
        (
            "requests:\n  - {subscription: AS-1-2-3}\n",
            "requests[0].subscription: unknown subscription",
        ),
        ("products:\n  - {name: X, items: []}\n", "products[0].items"),
        ("produce: []\n", "unknown top-level key"),
        ("products: [\n", "not valid YAML"),
    ],
)
def test_a_bad_seed_file_names_the_entry(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(content)
    with pytest.raises(SeedError, match=message.replace("[", r"\[").replace("]", r"\]")):
        create_app(MarketplaceSettings(seed_file=path, clock=MockClock(START)))


def _summary(store: Store) -> list[tuple[str, str, str, str, dict[str, str]]]:
    return sorted(
        (r.id, r.status, r.created.isoformat(), r.asset.params.get("subscription_id", ""), r.params)
        for r in store.requests.values()
    )


def test_generation_is_deterministic_and_varied() -> None:
    def made(seed: int) -> Store:
        return create_app(
            MarketplaceSettings(generate=200, seed=seed, clock=MockClock(START))
        ).store

    store = made(21)
    assert _summary(store) == _summary(made(21))
    assert {r.id for r in store.requests.values()}.isdisjoint(
        {r.id for r in made(22).requests.values()}
    )
    cancels = [r for r in store.requests.values() if r.type == "cancel" and r.status == "pending"]
    assert len(cancels) == 200
    assert (
        len({r.asset.product.id for r in cancels}) >= 3
        and len({r.asset.marketplace["id"] for r in cancels}) >= 3
    )
    assert {r.asset.connection["type"] for r in cancels} == {"production", "test", "preview"}
    assert all(
        r.asset.connection["id"] == "CT-0000-0000-0000"
        for r in cancels
        if r.asset.connection["type"] == "preview"
    )
    assert max(Counter(r.asset.tiers["customer"]["id"] for r in cancels).values()) >= 3
    with_reason = [r for r in cancels if r.params.get("cancellation_reason")]
    assert 0 < len(with_reason) < len(cancels)
    assert max(Counter(r.created for r in cancels).values()) >= 2
    assert {r.type for r in store.requests.values()} >= {"cancel", "purchase"}
    assert {r.status for r in store.requests.values()} >= {
        "pending",
        "approved",
        "failed",
        "scheduled",
    }
    assert any(mpn.endswith("PREMIUM") for r in cancels for mpn, _q, _o in r.asset.items)
    assert all(r.asset.status == "terminating" for r in cancels)
    for product in store.products.values():
        template = product.template(approve_template(product))
        assert template is not None and (template["scope"], template["type"]) == (
            "asset",
            "fulfillment",
        )


def test_serializer_matches_the_rendered_objects() -> None:
    store = create_app(MarketplaceSettings(generate=60, seed=4, clock=MockClock(START))).store
    request = next(r for r in store.requests.values() if r.status == "pending")
    request.assignee = {"id": "UR-1-2-3", "name": "Agent", "email": "a@b.c"}
    serializer = Serializer()
    for record in store.requests.values():
        assert json.loads(serializer.request(record)) == render_request(record)
        assert json.loads(serializer.request(record, ["asset", "activation_key"])) == {
            k: v for k, v in render_request(record).items() if k not in ("asset", "activation_key")
        }
    for asset in store.assets.values():
        assert json.loads(serializer.asset(asset)) == render_asset(asset)


# -- admin endpoints and the web page --------------------------------------------------------------


def test_admin_seed_clock_stats_and_ledger(start: Callable[..., Running]) -> None:
    mp = start(generate=5)
    created = mp.admin("POST", "/admin/seed", json={"generate": 7}).json()
    assert created["count"] == 7 and all(
        mp.store.requests[i].status == "pending" for i in created["created"]
    )
    stats = mp.admin("GET", "/admin/stats").json()
    assert stats["cancels_by_status"]["pending"] == 12 and stats["requests"] == len(
        mp.store.requests
    )
    assert mp.admin("POST", "/admin/seed", json={"generate": -1}).status_code == 400
    now = mp.admin("POST", "/admin/clock", json={"advance": 90}).json()["now"]
    assert now == (START + timedelta(seconds=90)).isoformat()
    assert (
        mp.admin("POST", "/admin/clock", json={"set": "2026-01-01T00:00:00Z"}).json()["now"]
        == "2026-01-01T00:00:00+00:00"
    )
    entries = mp.ledger()
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert mp.ledger(since=entries[-2]["seq"]) == entries[-1:]
    assert mp.admin("GET", "/admin/ledger", params={"since": "x"}).status_code == 400


def test_clock_endpoint_refuses_a_real_clock(start: Callable[..., Running]) -> None:
    from cancel_sandbox.marketplace.clock import utc_now

    mp = start(generate=1, clock=utc_now)
    assert mp.admin("POST", "/admin/clock", json={"advance": 5}).status_code == 409


def test_web_page_lists_and_cancels_like_the_connect_ui(start: Callable[..., Running]) -> None:
    mp = start(generate=20)
    active = next(a for a in reversed(mp.store.assets.values()) if a.status == "active")
    page = mp.admin("GET", "/")
    assert page.status_code == 200 and "Cancel subscription" in page.text and active.id in page.text
    only_failed = mp.admin("GET", "/", params={"request_status": "failed"}).text
    failed = [r.id for r in mp.store.requests.values() if r.status == "failed"]
    pending = [r.id for r in mp.store.requests.values() if r.status == "pending"]
    assert all(i in only_failed for i in failed) and not any(i in only_failed for i in pending)
    response = mp.admin(
        "POST",
        f"/ui/subscriptions/{active.id}/cancel",
        data={"cancellation_reason": "too_expensive"},
        allow_redirects=False,
    )
    assert response.status_code == 303 and "created=PR-" in response.headers["location"]
    request_id = response.headers["location"].split("created=")[1]
    doc = mp.get(f"/requests/{request_id}").json()
    assert doc["status"] == "pending" and doc["asset"]["status"] == "terminating"
    assert {p["id"]: p["value"] for p in doc["asset"]["params"]}[
        "cancellation_reason"
    ] == "too_expensive"
    assert mp.ledger(object_id=request_id)[0]["actor"] == "ui"
    again = mp.admin("POST", f"/ui/subscriptions/{active.id}/cancel", allow_redirects=False)
    assert again.status_code == 303 and "error=" in again.headers["location"]


# -- the command ----------------------------------------------------------------------------------


def test_a_bad_seed_file_stops_the_command_with_status_2(tmp_path: Path) -> None:
    import argparse

    from cancel_sandbox.marketplace import cli

    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    (tmp_path / "bad.yaml").write_text("subscriptions:\n  - {product: PRD-000-000-000}\n")
    assert cli.run(parser.parse_args(["--seed-file", str(tmp_path / "bad.yaml")])) == 2
