"""The ``http`` adapter's optional operations (suspend, purge, status reads) and the validation of
its options (with ``responses``, no server)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses

from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from processor.adapters import (
    AdapterError,
    AlreadyGone,
    Ambiguous,
    Failed,
    Idempotency,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    has_status_read,
    load_adapter,
    supports,
)
from processor.adapters.http import HttpAdapter

from ..http_adapter_support import (
    BASE,
    adapter,
    call,
    failed,
    vendor_fixture,  # noqa: F401 - the vendor fixture
)

# -- optional operations -----------------------------------------------------------------------


def test_optional_operations_exist_only_when_configured() -> None:
    bare = adapter()
    assert (
        not has_status_read(bare) and not supports(bare, "suspend") and not supports(bare, "purge")
    )
    assert not hasattr(bare, "status")
    full = adapter(
        status=True, suspend=True, purge={"path": "/v1/subscriptions/{subscription_id}/erase"}
    )
    assert has_status_read(full) and supports(full, "suspend") and supports(full, "purge")
    assert "operations=['purge', 'status', 'suspend', 'terminate']" in repr(full)


def test_suspend_and_purge_use_their_own_paths_and_success_values(
    vendor: responses.RequestsMock,
) -> None:
    vendor.post(f"{BASE}/v1/subscriptions/SUB-1/suspend", json={"status": "suspended"})
    vendor.post(
        f"{BASE}/v1/subscriptions/SUB-1/suspend", status=409, json={"error": "already_terminated"}
    )
    vendor.post(
        f"{BASE}/v1/subscriptions/SUB-1/purge", status=409, json={"error": "not_terminated"}
    )
    vendor.post(f"{BASE}/v1/subscriptions/SUB-1/purge", json={"status": "terminated"})
    http = adapter(suspend=True, purge=True, outcomes=MOCK_VENDOR_OUTCOMES)
    assert http.suspend(call()) == Terminated("suspend: HTTP 200")
    assert http.suspend(call()) == AlreadyGone("suspend: HTTP 409 already_terminated")
    assert http.purge(call()) == failed(
        409,
        "not_terminated",
        '{"error": "not_terminated"}',
        "purge",
        path="/v1/subscriptions/{subscription_id}/purge",
    )
    assert isinstance(http.purge(call()), Ambiguous)  # "terminated" does not confirm a purge


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"id": "SUB-1", "status": "terminated"}, SubscriptionStatus.TERMINATED),
        (200, {"status": "Active"}, SubscriptionStatus.ACTIVE),
        (200, {"status": "cancelled"}, SubscriptionStatus.TERMINATED),  # configured below
        (200, {"status": "pending_review"}, SubscriptionStatus.UNKNOWN),
        (200, {"id": "SUB-1"}, Failed("status: HTTP 200 but the body has no status")),
        (404, {"error": "not_found"}, SubscriptionStatus.NOT_FOUND),  # the configured body
        (
            404,
            {"error": "no_route"},
            failed(
                404,
                "no_route",
                '{"error": "no_route"}',
                "status",
                "GET",
                "/v1/subscriptions/{subscription_id}",
            ),
        ),
        (503, {}, RetryLater("status: HTTP 503")),
        (500, {}, RetryLater("status: HTTP 500")),  # a read changes nothing: just ask again
        (
            401,
            {"error": "unauthorized"},
            failed(
                401,
                "unauthorized",
                '{"error": "unauthorized"}',
                "status",
                "GET",
                "/v1/subscriptions/{subscription_id}",
            ),
        ),
    ],
)
def test_status_reads_map_the_vendor_status(
    vendor: responses.RequestsMock,
    status: int,
    body: Any,
    expected: Any,
) -> None:
    vendor.get(f"{BASE}/v1/subscriptions/SUB-1", status=status, json=body)
    http = adapter(status={"values": {"cancelled": "terminated"}}, outcomes=MOCK_VENDOR_OUTCOMES)
    assert http.status(call()) == expected


def test_a_status_read_that_times_out_is_retry_later_not_ambiguous(
    vendor: responses.RequestsMock,
) -> None:
    vendor.get(
        f"{BASE}/v1/subscriptions/SUB-1", body=requests.exceptions.ReadTimeout("read timed out")
    )
    outcome = adapter(status=True).status(call())
    assert isinstance(outcome, RetryLater) and "ReadTimeout" in outcome.detail


# -- option validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"base_url": None}, "option 'base_url': required"),
        ({"colour": "blue"}, "option 'colour': unknown option; expected one of auth, base_url,"),
        ({"timeout": {"connect": 5, "write": 3}}, "option 'timeout.write': unknown option"),
        (
            {"timeout": {"read": -1}},
            "option 'timeout.read': expected a positive number of seconds, got -1",
        ),
        (
            {"idempotency": "maybe"},
            "option 'idempotency': expected one of key, natural, none, got 'maybe'",
        ),
        ({"verify": False}, "option 'verify': TLS verification cannot be turned off"),
        (
            {"verify": "/no/such/ca.pem"},
            "option 'verify': expected true or the path of an existing CA bundle",
        ),
        (
            {"base_url": "https://vendor.test/?x=1"},
            "option 'base_url': expected a http or https URL",
        ),
        (
            {"auth": {"type": "oauth"}},
            "option 'auth.type': expected one of bearer, basic, header, oauth2, none",
        ),
        ({"headers": {"Authorization": "x"}}, "option 'headers.Authorization': set by the adapter"),
        ({"headers": {"X-Note": "a\r\nb"}}, "option 'headers.X-Note': expected a one-line string"),
        ({"outcomes": {"4x4": "failed"}}, "option 'outcomes.4x4': expected a status code like 404"),
        (
            {"outcomes": {"418": "teapot"}},
            "option 'outcomes.418[0].outcome': expected one of success,",
        ),
        (
            {"outcomes": {"409": [{"if": {}, "outcome": "failed"}]}},
            "option 'outcomes.409[0].if': unknown",
        ),
        ({"terminate": False}, "option 'terminate': expected a mapping"),
        ({"status": {"field": ""}}, "option 'status.field': expected a non-empty string"),
        ({"refusal": {"field": "message", "lang": "en"}}, "option 'refusal.lang': unknown option"),
    ],
)
def test_bad_options_name_the_key_and_what_was_expected(
    options: dict[str, Any], expected: str
) -> None:
    with pytest.raises(AdapterError) as error:
        adapter(**options)
    assert expected in str(error.value)


def test_the_registry_loads_it_under_the_configured_name() -> None:
    http = load_adapter("http", {"base_url": BASE, "idempotency": "natural"}, name="acme")
    assert (
        isinstance(http, HttpAdapter)
        and http.name == "acme"
        and http.idempotency is Idempotency.NATURAL
    )
