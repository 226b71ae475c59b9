"""Contract: every real Connect request payload in ../shared/reference/fixtures parses.

The fixtures are verbatim copies of public test data (objects or arrays of requests, plus a
product template that is not a request). Each request must yield its id, subscription id,
product id and environment, the fields without which the engine could not even record an outcome;
the expected values are read from the payload itself, so the test checks the parser, not a copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processor.model import ENVIRONMENTS, EXTERNAL_ID, parse_request

pytestmark = pytest.mark.contract

# Fixture files that hold no request; each is named here so that a new kind of file is noticed.
NOT_REQUESTS = {
    "cloudblue__connect-processor-template-for-python__examples__connect_extension_processor_example"
    "__tests__ff_template.json": "a product template (TL-...)",
}


def _fixture_files(reference: Path) -> list[Path]:
    files = sorted((reference / "fixtures").glob("*.json"))
    if not files:
        pytest.fail("../shared/reference/fixtures holds no JSON files")
    return files


def _requests(path: Path) -> Iterator[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    yield from data if isinstance(data, list) else [data]


def test_every_fixture_file_is_either_requests_or_named_as_not_one(shared_reference: Path) -> None:
    for path in _fixture_files(shared_reference):
        payloads = list(_requests(path))
        looks_like_requests = all(str(p.get("id", "")).startswith("PR-") for p in payloads)
        assert looks_like_requests != (path.name in NOT_REQUESTS), path.name


def test_every_request_fixture_parses_with_its_identity(shared_reference: Path) -> None:
    parsed = 0
    for path in _fixture_files(shared_reference):
        if path.name in NOT_REQUESTS:
            continue
        for payload in _requests(path):
            request = parse_request(payload)
            asset = payload["asset"]
            assert request.id == payload["id"], path.name
            assert request.asset_id == asset["id"], path.name
            assert request.product_id == asset["product"]["id"], path.name
            assert request.environment == asset["connection"]["type"], path.name
            assert request.environment in ENVIRONMENTS, path.name
            assert request.type == payload["type"] and request.status == payload["status"], (
                path.name
            )
            assert request.created is not None and request.created.tzinfo is not None, path.name
            assert [item.id for item in request.items] == [
                item["id"] for item in asset.get("items", [])
            ], path.name
            assert all(isinstance(item.quantity, str) for item in request.items), path.name
            parsed += 1
    assert parsed >= 6  # the five request files hold six requests


def test_the_one_public_cancel_fixture_keeps_its_quirks(shared_reference: Path) -> None:
    """2019 shape: no asset.status, no asset.marketplace (the request's is used), preview ids."""
    path = (
        shared_reference
        / "fixtures"
        / "cloudblue__processor-acronis-customer-centric__tests__requests__request.cancel.http.json"
    )
    payload = json.loads(path.read_text(encoding="utf-8"))
    request = parse_request(payload)
    assert request.is_cancel and request.status == "tiers_setup"
    assert request.asset_status is None
    assert request.marketplace_id == "MP-00000"
    assert request.environment == "preview"
    # No subscription_id parameter: the id is found only where the vendor says it keeps it.
    assert request.subscription_id is None
    by_external_id = parse_request(payload, subscription_param=EXTERNAL_ID)
    assert by_external_id.subscription_id == "430"


def test_assignee_as_object_and_as_empty_string(shared_reference: Path) -> None:
    fixtures = shared_reference / "fixtures"
    php_sdk_request = (
        "cloudblue__connect-php-sdk__tests__Unit__ModelsTests__apiOutput__fulfillment_request.json"
    )
    approved = parse_request(json.loads((fixtures / php_sdk_request).read_text(encoding="utf-8")))
    assert approved.assignee == "mserrat@odin.com"
    pending = parse_request(
        json.loads(
            (
                fixtures / "othercodes__connect-processors-toolkit__tests__api__request_asset.json"
            ).read_text(encoding="utf-8")
        )
    )
    assert pending.assignee is None


def test_unlimited_quantities_stay_strings(shared_reference: Path) -> None:
    path = (
        shared_reference
        / "fixtures"
        / "cloudblue__connect-extension-mulesoft__src__test__resources____files__requests.json"
    )
    for payload in _requests(path):
        assert [item.quantity for item in parse_request(payload).items] == ["unlimited"]
