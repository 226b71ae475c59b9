"""Shared by the ``http`` adapter's tests: a cancel request, a vendor call for it, an adapter on a
base URL that ``responses`` intercepts, and the expected detail of a definite error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

from processor.adapters import Failed, VendorCall
from processor.adapters.http import HttpAdapter
from processor.model import CancelRequest

BASE = "https://vendor.test"
TERMINATE = f"{BASE}/v1/subscriptions/SUB-1/terminate"
SECRET = "s3cr3t-token-do-not-print"
REQUEST = CancelRequest(
    id="PR-1234-5678-9012-001",
    type="cancel",
    status="pending",
    asset_id="AS-1234-5678-9012",
    product_id="PRD-123-456-789",
    environment="production",
    marketplace_id="MP-123",
    customer_id="TA-0001",
    external_id="EXT-1",
    subscription_id="SUB-1",
    params={"subscription_id": "SUB-1", "region": "eu/west"},
)


def call(subscription_id: str = "SUB-1", step: str = "terminate", **fields: Any) -> VendorCall:
    key = f"{REQUEST.id}:{subscription_id}:{step}"  # the engine's keys differ per request and step
    return VendorCall(
        request=REQUEST, subscription_id=subscription_id, idempotency_key=key, **fields
    )


def adapter(**options: Any) -> HttpAdapter:
    return HttpAdapter({"base_url": BASE, **options})


@pytest.fixture(name="vendor")
def vendor_fixture() -> Iterator[responses.RequestsMock]:
    """``responses`` intercepting every call (imported by the modules that use it)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def sent(mock: responses.RequestsMock, index: int = -1) -> requests.PreparedRequest:
    return mock.calls[index].request


def failed(
    code: int,
    error: str,
    body: str,
    op: str = "terminate",
    method: str = "POST",
    path: str = "/v1/subscriptions/{subscription_id}/terminate",
) -> Failed:
    """A definite error's detail: the call, its URL template, the status and the body."""
    head = f"{op}: HTTP {code}" + (f" {error}" if error else "")
    return Failed(f"{head} from {method} {BASE}{path}; body: {body}")
