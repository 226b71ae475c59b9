"""Contract: every response the mock sends validates against Connect's own OpenAPI document.

The document is ../shared/reference/connect-requests.openapi.yml (Connect API 37.0) plus the
operations in ``tests/contract/additions.yml``, validated with openapi-core per operation: the
response body (and declared headers) of each call a cancel processor makes, successes and
refusals. Where the document disagrees with what Connect really sends (the public fixtures show
it), the disagreement is a named patch with its evidence in ``tests/contract/overlay.py``, applied
before validating; every patch must still be needed, so the list cannot rot into a blanket
loosening.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from cancel_sandbox.marketplace import MarketplaceSettings, MockClock, approve_template, create_app
from processor.ops.serving import ServerThread

from ..conftest import SHARED
from ..contract.overlay import KNOWN_OMISSIONS, load_document, patched

pytestmark = pytest.mark.contract

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FIXTURES = SHARED / "reference" / "fixtures"


@pytest.fixture(scope="module")
def document(shared_reference: Path) -> dict[str, Any]:
    return load_document(shared_reference)


def _spec(document: dict[str, Any], server_url: str, skip: str | None = None) -> OpenAPI:
    # The document itself is validated once (the first test); the variants differ by one patch.
    config = None if skip is None else Config(spec_validator_cls=None)
    return OpenAPI.from_dict(patched(document, server_url, skip), config=config)


def _errors(spec: OpenAPI, response: requests.Response) -> list[str]:
    found = []
    for error in spec.iter_response_errors(
        RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
    ):
        detail = error.__cause__
        schema_errors = getattr(detail, "schema_errors", None) or []
        found.append(
            f"{error}: " + "; ".join(f"{list(e.path)}: {e.message[:160]}" for e in schema_errors)
        )
    return found


@pytest.fixture(scope="module")
def exchanges() -> Iterator[tuple[str, list[requests.Response]]]:
    """One of each call a cancel processor makes, with the mock's real responses."""
    clock = MockClock(START)
    app = create_app(
        MarketplaceSettings(generate=40, seed=23, clock=clock, may_create_conversations=True)
    )
    with ServerThread(app) as server:
        http = requests.Session()
        http.headers["Authorization"] = app.config.api_key
        api = server.url + "/public/v1"
        store = app.store
        pending = sorted(
            (r for r in store.requests.values() if r.type == "cancel" and r.status == "pending"),
            key=lambda r: r.id,
        )
        active = next(a for a in store.assets.values() if a.status == "active")
        preview = next(a for a in store.assets.values() if a.connection["type"] == "preview")
        first, second, third, fourth, fifth = pending[:5]
        template = approve_template(first.asset.product)
        future = (START + timedelta(days=2)).isoformat()
        conversation = store.conversation_of[first.id]
        calls: list[tuple[str, str, Any]] = [
            (
                "GET",
                "/requests?and(eq(type,cancel),eq(status,pending))&ordering(created,id)&limit=20",
                None,
            ),
            ("GET", "/requests?select(-activation_key,-template)&status=approved&limit=20", None),
            ("GET", "/requests?eq(status,no-such)", None),
            ("GET", f"/requests/{first.id}", None),
            (
                "PUT",
                f"/requests/{first.id}",
                {
                    "asset": {"params": [{"id": "subscription_id", "value": "SUB-1"}]},
                    "note": "checked",
                },
            ),
            ("POST", f"/requests/{first.id}/assign", {"email": "agent@vendor.example"}),
            ("POST", f"/requests/{first.id}/approve", {"template_id": template}),
            ("POST", f"/requests/{first.id}/approve", {"template_id": template}),  # refused: 400
            ("GET", f"/requests/{first.id}", None),  # approved, assigned, with activation key
            ("POST", f"/requests/{second.id}/fail", {}),  # missed reason: 400
            ("POST", f"/requests/{second.id}/fail", {"reason": "Outstanding balance."}),
            ("POST", f"/requests/{third.id}/inquire", {}),
            ("POST", f"/requests/{third.id}/pend", None),
            ("POST", f"/requests/{fourth.id}/schedule", {"planned_date": future}),
            ("POST", f"/requests/{fourth.id}/revoke", {"reason": "Stay."}),
            ("POST", f"/requests/{fourth.id}/confirm", None),
            ("POST", f"/requests/{fifth.id}/unassign", None),
            ("GET", "/requests/PR-0000-0000-0000-001", None),  # 404
            ("POST", "/requests", {"type": "cancel", "asset": {"id": active.id}}),
            (
                "POST",
                "/requests",
                {"type": "cancel", "asset": {"id": active.id}},
            ),  # no longer active: 400
            ("GET", f"/assets/{first.asset.id}", None),
            ("GET", f"/assets/{second.asset.id}", None),
            ("GET", f"/assets/{preview.id}", None),
            ("GET", f"/assets/{first.asset.id}/requests", None),
            ("GET", f"/conversations?instance_id={first.id}", None),
            ("GET", f"/conversations/{conversation}", None),
            (
                "POST",
                f"/conversations/{conversation}/messages",
                {"text": "Terminated.", "type": "message"},
            ),
            ("GET", f"/conversations/{conversation}/messages", None),
            ("GET", f"/products/{first.asset.product.id}/templates", None),
            (
                "GET",
                f"/products/{first.asset.product.id}/templates?eq(scope,asset)&eq(type,fulfillment)",
                None,
            ),
            ("GET", f"/products/{first.asset.product.id}/templates/{template}", None),
            # The rest of the surface (additions.yml and the subset's renders, conversation create).
            # (GET /requests/{id}/render answers text/markdown, which openapi-core cannot check
            # against a string schema; the schemathesis test covers it.)
            (
                "GET",
                f"/products/{first.asset.product.id}/templates/{template}/render"
                f"?request_id={first.id}",
                None,
            ),
            ("POST", "/conversations", {"instance_id": first.asset.id, "topic": "Subscription"}),
            ("GET", "/subscriptions/assets?status=active&limit=3", None),
            ("GET", f"/subscriptions/assets/{active.id}", None),
            ("GET", "/subscriptions/requests", None),
            ("GET", "/marketplaces", None),
            ("GET", f"/marketplaces/{sorted(store.marketplaces)[0]}", None),
            ("GET", "/assets?limit=1000", None),
        ]
        # Real Connect payloads, imported and served back: the document must describe them too.
        for path in sorted(FIXTURES.glob("*.json")):
            if "template" not in path.name:
                imported = requests.post(
                    server.url + "/admin/requests", data=path.read_bytes(), timeout=10
                )
                calls += [("GET", f"/requests/{rid}", None) for rid in imported.json()["created"]]
        responses = [
            http.request(method, api + path, json=body, timeout=10) for method, path, body in calls
        ]
        yield server.url, responses


def test_every_response_validates_against_the_connect_document(
    document: dict[str, Any], exchanges: tuple[str, list[requests.Response]]
) -> None:
    server_url, responses = exchanges
    assert {r.status_code for r in responses} == {200, 201, 400, 404}
    spec = _spec(document, server_url)
    problems = {
        f"{r.request.method} {r.request.path_url} -> {r.status_code}": _errors(spec, r)
        for r in responses
    }
    assert {call: errors for call, errors in problems.items() if errors} == {}


@pytest.mark.parametrize("omission", [o.name for o in KNOWN_OMISSIONS if not o.fuzz_only])
def test_each_listed_omission_is_still_needed(
    document: dict[str, Any], exchanges: tuple[str, list[requests.Response]], omission: str
) -> None:
    server_url, responses = exchanges
    spec = _spec(document, server_url, skip=omission)
    assert any(_errors(spec, r) for r in responses), f"{omission!r} is no longer needed: remove it"
