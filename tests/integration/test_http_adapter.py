"""The ``http`` adapter: status-code and body mappings, Retry-After, idempotency keys, templates,
auth and secrets, nonsense answers and status reads (with ``responses``); transport failures against
real sockets on loopback; and each mode of the local mock vendor over real HTTP."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.vendor import VendorApp, VendorSettings, create_app
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from processor.adapters import (
    AdapterError,
    AlreadyGone,
    Ambiguous,
    Failed,
    Idempotency,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    VendorCall,
    has_status_read,
    load_adapter,
    supports,
)
from processor.adapters.http import HttpAdapter, retry_after_seconds
from processor.model import CancelRequest
from processor.ops.serving import ServerThread, free_port

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


@pytest.fixture
def vendor() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def sent(mock: responses.RequestsMock, index: int = -1) -> requests.PreparedRequest:
    return mock.calls[index].request


# -- status codes and bodies -------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"id": "SUB-1", "status": "terminated"}, Terminated("terminate: HTTP 200")),
        (200, {"id": "SUB-1", "status": "purged"}, Terminated("terminate: HTTP 200")),
        # No status code alone approves or refuses a vendor we have never seen.
        (404, {"error": "not_found"}, failed(404, "not_found", '{"error": "not_found"}')),
        (404, {"error": "no_route"}, failed(404, "no_route", '{"error": "no_route"}')),
        (410, {}, failed(410, "", "{}")),
        (
            409,
            {"error": "already_terminated"},
            failed(409, "already_terminated", '{"error": "already_terminated"}'),
        ),
        (
            422,
            {"error": "refused", "message": "No."},
            failed(422, "refused", '{"error": "refused", "message": "No."}'),
        ),
        (
            400,
            {"message": "Contract runs until May."},
            failed(400, "", '{"message": "Contract runs until May."}'),
        ),
        (403, {"message": "Missing scope."}, failed(403, "", '{"message": "Missing scope."}')),
        (401, {"error": "unauthorized"}, failed(401, "unauthorized", '{"error": "unauthorized"}')),
        (418, {}, failed(418, "", "{}")),
        (429, {}, RetryLater("terminate: HTTP 429")),
        (503, {}, RetryLater("terminate: HTTP 503")),
        (500, {}, Ambiguous("terminate: HTTP 500; the vendor may have acted")),
        (502, {}, Ambiguous("terminate: HTTP 502; the vendor may have acted")),
        (504, {}, Ambiguous("terminate: HTTP 504; the vendor may have acted")),
        (501, {}, Ambiguous("terminate: HTTP 501; the vendor may have acted")),
        (302, {}, failed(302, "", "{}")),
    ],
)
def test_the_default_map_gives_no_final_outcome_from_a_status_code(
    vendor: responses.RequestsMock, status: int, body: Any, expected: Any
) -> None:
    vendor.post(TERMINATE, status=status, json=body, headers={"Location": f"{BASE}/elsewhere"})
    assert adapter().terminate(call()) == expected
    assert len(vendor.calls) == 1  # no retries and no redirects inside the adapter


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"error": "not_found"}, AlreadyGone("terminate: HTTP 404 not_found")),
        (404, {"error": "no_route"}, failed(404, "no_route", '{"error": "no_route"}')),
        (404, "<html>Not Found</html>", failed(404, "", "<html>Not Found</html>")),
        (
            409,
            {"error": "already_terminated"},
            AlreadyGone("terminate: HTTP 409 already_terminated"),
        ),
        (
            409,
            {"error": "idempotency_key_in_use"},
            RetryLater("terminate: HTTP 409 idempotency_key_in_use"),
        ),
        (409, {"error": "conflict"}, failed(409, "conflict", '{"error": "conflict"}')),
        (
            422,
            {"error": "refused", "message": "Outstanding balance."},
            Refused("Outstanding balance."),
        ),
        (
            422,
            {"error": "idempotency_key_reuse"},
            failed(422, "idempotency_key_reuse", '{"error": "idempotency_key_reuse"}'),
        ),
        (
            403,
            {"message": "Managed by a reseller."},
            failed(403, "", '{"message": "Managed by a reseller."}'),
        ),
        (
            400,
            {"error": "validation", "message": "bad"},
            failed(400, "validation", '{"error": "validation", "message": "bad"}'),
        ),
    ],
)
def test_the_mock_vendor_map_needs_its_bodies_for_gone_and_refused(
    vendor: responses.RequestsMock, status: int, body: Any, expected: Any
) -> None:
    if isinstance(body, str):
        vendor.post(TERMINATE, status=status, body=body)
    else:
        vendor.post(TERMINATE, status=status, json=body)
    assert adapter(outcomes=MOCK_VENDOR_OUTCOMES).terminate(call()) == expected


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (
            {"404": "already_gone"},
            "option 'outcomes.404[0]': already_gone from a status code alone",
        ),
        ({"403": "refused"}, "option 'outcomes.403[0]': refused from a status code alone"),
        ({"4xx": ["refused"]}, "option 'outcomes.4xx[0]': refused from a status code alone"),
        ({"404": "success"}, "option 'outcomes.404[0]': success from a status code alone"),
        (
            {"404": [{"when": {"error": None}, "outcome": "already_gone"}]},
            "outcomes.404[0]': already_gone",
        ),
        (
            {"404": [{"when": {"error": []}, "outcome": "already_gone"}]},
            "outcomes.404[0]': already_gone",
        ),
        ({"404": [{"when": {}, "outcome": "already_gone"}]}, "outcomes.404[0]': already_gone"),
    ],
)
def test_a_final_outcome_without_a_body_condition_is_refused_at_start(
    outcomes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(AdapterError) as error:
        adapter(outcomes=outcomes)
    assert expected in str(error.value) and "add when:" in str(error.value)


def test_a_definite_error_names_the_url_template_never_the_secret(
    vendor: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VENDOR_TOKEN", SECRET)
    vendor.post(TERMINATE, status=403, body=f"token {SECRET} lacks scope\r\n" + "x" * 400)
    outcome = adapter(auth={"type": "bearer", "env": "VENDOR_TOKEN"}).terminate(call())
    assert isinstance(outcome, Failed) and SECRET not in outcome.detail
    assert outcome.detail.startswith(
        f"terminate: HTTP 403 from POST {BASE}/v1/subscriptions/{{subscription_id}}/terminate; "
        "body: token *** lacks scope"
    )
    assert outcome.detail.endswith("...") and len(outcome.detail) < 400


def test_a_replayed_answer_is_marked_in_the_detail(vendor: responses.RequestsMock) -> None:
    vendor.post(TERMINATE, json={"status": "terminated"}, headers={"Idempotent-Replayed": "true"})
    assert adapter().terminate(call()) == Terminated("terminate: HTTP 200 (replayed)")


def test_outcomes_are_configurable_per_code_per_range_and_by_body() -> None:
    options = {
        "outcomes": {
            404: "retry_later",
            "4xx": [{"when": {"type": "declined"}, "outcome": "refused"}, "failed"],
            "409": [
                {"when": {"error.code": ["gone", "closed"]}, "outcome": "already_gone"},
                "retry_later",
            ],
        }
    }
    with responses.RequestsMock() as vendor:
        vendor.post(TERMINATE, status=404, json={})
        vendor.post(TERMINATE, status=401, json={"type": "declined", "message": "No."})
        vendor.post(TERMINATE, status=409, json={"error": {"code": "closed"}})
        vendor.post(TERMINATE, status=409, json={"error": {"code": "busy"}})
        http = adapter(**options)
        assert [http.terminate(call()) for _ in range(4)] == [
            RetryLater("terminate: HTTP 404"),
            Refused("No."),
            AlreadyGone("terminate: HTTP 409"),
            RetryLater("terminate: HTTP 409"),
        ]


def test_the_refusal_reason_is_one_short_printable_line(vendor: responses.RequestsMock) -> None:
    vendor.post(
        TERMINATE, status=422, json={"message": "Balance due.\r\n\x1b[31mCall us\x00." + "x" * 900}
    )
    vendor.post(TERMINATE, status=422, json={"error": "refused"})
    vendor.post(TERMINATE, status=422, body="<html>nope</html>")
    http = adapter(
        outcomes={
            "422": [
                {"when": {"error": "refused"}, "outcome": "refused"},
                {
                    "when": {"message": "Balance due.\r\n\x1b[31mCall us\x00." + "x" * 900},
                    "outcome": "refused",
                },
                "failed",
            ]
        }
    )
    first = http.terminate(call())
    assert isinstance(first, Refused)
    assert first.reason.startswith("Balance due. [31mCall us .xxx") and len(first.reason) == 500
    assert first.reason.isprintable()
    assert http.terminate(call()) == Refused("The vendor declined to cancel this subscription.")
    assert isinstance(http.terminate(call()), Failed)  # no body that says "refused": not evidence


def test_the_refusal_reason_field_and_default_are_configurable(
    vendor: responses.RequestsMock,
) -> None:
    vendor.post(
        TERMINATE,
        status=422,
        json={"error": {"code": "declined", "detail": "Locked by legal hold."}},
    )
    vendor.post(TERMINATE, status=422, json={"error": {"code": "declined"}})
    http = adapter(
        refusal={"field": "error.detail", "default": "Please contact the vendor."},
        outcomes={"422": [{"when": {"error.code": "declined"}, "outcome": "refused"}, "failed"]},
    )
    assert http.terminate(call()) == Refused("Locked by legal hold.")
    assert http.terminate(call()) == Refused("Please contact the vendor.")


# -- Retry-After -------------------------------------------------------------------------------


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now=now) == 7.0
    assert retry_after_seconds(" 2.5 ", now=now) == 2.5
    assert retry_after_seconds("Sun, 01 Nov 2026 12:02:00 GMT", now=now) == 120.0
    assert retry_after_seconds("Sun, 01 Nov 2026 11:00:00 GMT", now=now) == 0.0  # already past
    assert retry_after_seconds("86400", cap=600, now=now) == 600.0
    assert retry_after_seconds("soon", now=now) is None
    assert retry_after_seconds("-5", now=now) is None
    assert retry_after_seconds(None) is None


def test_a_throttled_call_carries_the_vendor_retry_after(vendor: responses.RequestsMock) -> None:
    vendor.post(TERMINATE, status=429, headers={"Retry-After": "7"})
    vendor.post(TERMINATE, status=503, headers={"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"})
    vendor.post(TERMINATE, status=503, headers={"Retry-After": "Fri, 01 Jan 1999 00:00:00 GMT"})
    vendor.post(TERMINATE, status=429)
    http = adapter(max_retry_after=600)
    assert [http.terminate(call()) for _ in range(4)] == [
        RetryLater("terminate: HTTP 429", after=7.0),
        RetryLater("terminate: HTTP 503", after=600.0),  # capped
        RetryLater("terminate: HTTP 503", after=0.0),
        RetryLater("terminate: HTTP 429", after=None),
    ]


# -- idempotency, templates, bodies ------------------------------------------------------------


def test_key_mode_sends_the_same_key_and_body_on_every_retry(
    vendor: responses.RequestsMock,
) -> None:
    vendor.post(TERMINATE, status=503)
    vendor.post(TERMINATE, json={"status": "terminated"})
    http = adapter(idempotency="key")
    retry = call(reason_code="customer_request", reason_comment="Moving to annual plan")
    assert isinstance(http.terminate(retry), RetryLater)
    assert isinstance(http.terminate(retry), Terminated)
    first, second = sent(vendor, 0), sent(vendor, 1)
    assert (
        first.headers["Idempotency-Key"]
        == second.headers["Idempotency-Key"]
        == retry.idempotency_key
    )
    assert first.body == second.body
    assert json.loads(first.body) == {
        "request_id": REQUEST.id,
        "reason_code": "customer_request",
        "comment": "Moving to annual plan",
    }


@pytest.mark.parametrize("mode", ["natural", "none"])
def test_only_key_mode_sends_an_idempotency_key(vendor: responses.RequestsMock, mode: str) -> None:
    vendor.post(TERMINATE, json={"status": "terminated"})
    http = adapter(idempotency=mode)
    assert http.idempotency is Idempotency(mode)
    http.terminate(call())
    assert "Idempotency-Key" not in sent(vendor).headers


def test_the_idempotency_header_name_is_configurable_and_never_sent_on_a_read(
    vendor: responses.RequestsMock,
) -> None:
    vendor.post(TERMINATE, json={"status": "terminated"})
    vendor.get(f"{BASE}/v1/subscriptions/SUB-1", json={"status": "terminated"})
    http = adapter(idempotency="key", idempotency_header="X-Request-Key", status=True)
    http.terminate(call())
    http.status(call())
    assert sent(vendor, 0).headers["X-Request-Key"] == call().idempotency_key
    assert "X-Request-Key" not in sent(vendor, 1).headers


def test_empty_reasons_are_left_out_of_the_default_body(vendor: responses.RequestsMock) -> None:
    vendor.post(TERMINATE, json={"status": "terminated"})
    adapter().terminate(call())
    assert json.loads(sent(vendor).body) == {"request_id": REQUEST.id}


def test_templates_fill_and_quote_request_fields(vendor: responses.RequestsMock) -> None:
    url = f"{BASE}/api/v2/accounts/TA-0001/subs/ACME%3A42%20x/cancel?region=eu%2Fwest"
    vendor.add("DELETE", url, json={"state": "cancelled"})
    http = HttpAdapter(
        {
            "base_url": f"{BASE}/api/",
            "terminate": {
                "method": "delete",
                "path": "/v2/accounts/{customer_id}/subs/{subscription_id}/cancel"
                "?region={params.region}",
                "body": {
                    "ref": "{request_id}",
                    "meta": {
                        "asset": "{asset_id}",
                        "market": "{marketplace_id}",
                        "tags": ["connect", "{environment}"],
                        "dry_run": False,
                    },
                },
                "success_field": "state",
                "success_values": "cancelled",
            },
        }
    )
    assert http.terminate(call("ACME:42 x")) == Terminated("terminate: HTTP 200")
    assert json.loads(sent(vendor).body) == {
        "ref": REQUEST.id,
        "meta": {
            "asset": REQUEST.asset_id,
            "market": "MP-123",
            "tags": ["connect", "production"],
            "dry_run": False,
        },
    }


@pytest.mark.parametrize(
    ("subscription_id", "problem"),
    [
        ("SUB/1", "'SUB/1' holds a slash"),
        ("..", "'..' holds a dot segment"),
        ("SUB-1/../../admin", "holds a slash"),
        ("SUB\\1", "holds a slash"),
        ("SUB-1\r\nX-Injected: 1", "holds a control character"),
        (" ", "is empty"),
    ],
)
def test_an_id_that_would_change_the_url_is_never_sent(
    vendor: responses.RequestsMock, subscription_id: str, problem: str
) -> None:
    http = adapter()
    reason = http.check_call("terminate", call(subscription_id))
    assert reason is not None and problem in reason
    assert reason.endswith("for the URL /v1/subscriptions/{subscription_id}/terminate")
    outcome = http.terminate(call(subscription_id))
    assert isinstance(outcome, Failed) and outcome.detail.endswith("nothing was sent")
    assert len(vendor.calls) == 0
    assert http.check_call("terminate", call("SUB-1.2_x:y")) is None
    assert http.check_call("status", call("SUB/1")) is None  # not configured: nothing to check


def test_no_request_is_sent_without_a_subscription_id(vendor: responses.RequestsMock) -> None:
    outcome = adapter().terminate(call(subscription_id=""))
    assert outcome == Failed("terminate: no subscription_id for the URL; nothing was sent")
    assert len(vendor.calls) == 0


def test_a_null_body_sends_no_body(vendor: responses.RequestsMock) -> None:
    vendor.post(TERMINATE, json={"status": "terminated"})
    adapter(body=None).terminate(call())
    assert sent(vendor).body is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"terminate": {"path": "/v1/{subscription}/end"}},
            "option 'terminate.path': unknown field '{subscription}'",
        ),
        (
            {"body": {"note": "{customer_name}"}},
            "option 'body.note': unknown field '{customer_name}'",
        ),
        ({"terminate": {"path": "/v1/{subscription_id!r}"}}, "takes no format spec or conversion"),
        ({"terminate": {"path": "/v1/{subscription_id"}}, "option 'terminate.path': bad template"),
        (
            {"terminate": {"path": "v1/x"}},
            "option 'terminate.path': expected a path starting with '/'",
        ),
        (
            {"terminate": {"method": "FETCH"}},
            "option 'terminate.method': expected one of POST, PUT",
        ),
        (
            {"status": {"values": {"gone": "deleted"}}},
            "option 'status.values.gone': expected a subscription status",
        ),
    ],
)
def test_bad_templates_and_operations_fail_at_load_time(
    options: dict[str, Any], expected: str
) -> None:
    with pytest.raises(AdapterError) as error:
        adapter(**options)
    assert expected in str(error.value)


# -- auth and secrets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        ({"type": "bearer", "env": "VENDOR_TOKEN"}, "Authorization", f"Bearer {SECRET}"),
        ({"type": "header", "header": "X-Api-Key", "env": "VENDOR_TOKEN"}, "X-Api-Key", SECRET),
        (
            {"type": "basic", "username": "connect", "env": "VENDOR_TOKEN"},
            "Authorization",
            "Basic Y29ubmVjdDpzM2NyM3QtdG9rZW4tZG8tbm90LXByaW50",
        ),
    ],
)
def test_auth_reads_the_secret_from_the_environment(
    vendor: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    auth: dict[str, str],
    header: str,
    value: str,
) -> None:
    monkeypatch.setenv("VENDOR_TOKEN", SECRET)
    vendor.post(TERMINATE, json={"status": "terminated"})
    adapter(auth=auth).terminate(call())
    assert sent(vendor).headers[header] == value


def test_auth_reads_the_secret_from_a_file(vendor: responses.RequestsMock, tmp_path: Any) -> None:
    (tmp_path / "token").write_text(SECRET + "\n")
    vendor.post(TERMINATE, json={"status": "terminated"})
    adapter(auth={"type": "bearer", "file": str(tmp_path / "token")}).terminate(call())
    assert sent(vendor).headers["Authorization"] == f"Bearer {SECRET}"


def test_a_missing_secret_names_the_variable_or_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("VENDOR_TOKEN", raising=False)
    with pytest.raises(
        AdapterError, match="option 'auth.env': the environment variable VENDOR_TOKEN is not set"
    ):
        adapter(auth={"type": "bearer", "env": "VENDOR_TOKEN"})
    missing = tmp_path / "absent"
    with pytest.raises(
        AdapterError, match=f"option 'auth.file': the file {missing} cannot be read"
    ):
        adapter(auth={"type": "bearer", "file": str(missing)})
    with pytest.raises(AdapterError, match="exactly one of env"):
        adapter(auth={"type": "bearer"})


def test_the_secret_never_appears_in_repr_errors_or_outcomes(
    vendor: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VENDOR_TOKEN", SECRET)
    # A careless vendor that echoes the credentials it received.
    vendor.post(TERMINATE, status=500, json={"error": f"bad token {SECRET}"})
    vendor.post(TERMINATE, status=422, json={"message": f"Token {SECRET} may not cancel."})
    vendor.post(TERMINATE, body=requests.ConnectionError(f"reset while sending Bearer {SECRET}"))
    http = adapter(auth={"type": "bearer", "env": "VENDOR_TOKEN"})
    shown = [repr(http), str(vars(http))] + [repr(http.terminate(call())) for _ in range(3)]
    assert all(SECRET not in text for text in shown), shown
    assert "***" in shown[2] and "***" in shown[3]
    # A secret pasted into the options is an unknown key, and its value is not echoed.
    with pytest.raises(AdapterError) as error:
        adapter(auth={"type": "bearer", "env": "VENDOR_TOKEN", "token": SECRET})
    assert "option 'auth.token': unknown option" in str(error.value) and SECRET not in str(
        error.value
    )
    with pytest.raises(AdapterError) as error:
        adapter(base_url=f"https://connect:{SECRET}@vendor.test")
    assert "credentials in the URL are not allowed" in str(error.value) and SECRET not in str(
        error.value
    )


# -- nonsense answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "found"),
    [
        ({"body": "<html>OK</html>", "content_type": "text/html"}, "the body is not a JSON object"),
        ({"body": ""}, "the body is not a JSON object"),
        ({"json": ["terminated"]}, "the body is not a JSON object"),
        ({"json": {"status": "active"}}, "status is 'active'"),
        ({"json": {"result": "ok"}}, "status is None"),
    ],
)
def test_a_2xx_that_does_not_confirm_is_ambiguous_never_terminated(
    vendor: responses.RequestsMock,
    kwargs: dict[str, Any],
    found: str,
) -> None:
    vendor.post(TERMINATE, **kwargs)
    outcome = adapter().terminate(call())
    assert outcome == Ambiguous(
        f"terminate: HTTP 200 but {found}, not purged or terminated; the vendor may have acted"
    )


def test_without_a_success_check_any_2xx_is_success(vendor: responses.RequestsMock) -> None:
    vendor.post(TERMINATE, status=204)
    assert adapter(terminate={"success_field": None}).terminate(call()) == Terminated(
        "terminate: HTTP 204"
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
            "option 'auth.type': expected one of bearer, basic, header, none",
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


# -- transport, against real sockets -----------------------------------------------------------


class RawServer:
    """A loopback TCP server whose every connection is handled by ``behave(conn)``; counts them."""

    def __init__(self, behave: Callable[[socket.socket, threading.Event], None]) -> None:
        self.behave, self.stop, self.connections = behave, threading.Event(), 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(5)
                read_request(conn)
                self.behave(conn, self.stop)

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        data += conn.recv(4096) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += conn.recv(4096) or b"x" * length
    return data


def close_without_answer(conn: socket.socket, stop: threading.Event) -> None:
    pass  # leaving the with-block closes the connection


def never_answer(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(5)


def drop_mid_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n"
        b'{"status": "termi'
    )


def answer_503_retry_now(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n")


def answer_terminated(conn: socket.socket, stop: threading.Event) -> None:
    body = b'{"status": "terminated"}'
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_connection_refused_is_retry_later_because_nothing_was_sent() -> None:
    outcome = HttpAdapter({"base_url": f"http://127.0.0.1:{free_port()}"}).terminate(call())
    assert isinstance(outcome, RetryLater) and "nothing was sent" in outcome.detail


def test_a_name_that_does_not_resolve_is_retry_later() -> None:
    outcome = HttpAdapter({"base_url": "http://vendor.invalid"}).terminate(call())
    assert isinstance(outcome, RetryLater) and "nothing was sent" in outcome.detail


@pytest.mark.parametrize("behave", [close_without_answer, drop_mid_body, never_answer])
def test_a_request_that_left_without_a_whole_answer_is_ambiguous_and_not_retried(
    behave: Callable[[socket.socket, threading.Event], None],
) -> None:
    with RawServer(behave) as server:
        http = HttpAdapter({"base_url": server.url, "timeout": {"connect": 2, "read": 0.3}})
        outcome = http.terminate(call())
        http.close()
    assert isinstance(outcome, Ambiguous) and "the request was sent" in outcome.detail
    assert server.connections == 1  # urllib3's own retries are off


def test_idempotent_methods_are_not_retried_by_urllib3_either() -> None:
    # urllib3 would retry a GET or DELETE on a dropped connection, or on 503 with Retry-After.
    options = {"terminate": {"method": "DELETE"}, "status": True, "timeout": 2}
    with RawServer(close_without_answer) as server:
        http = HttpAdapter({"base_url": server.url, **options})
        assert isinstance(http.terminate(call()), Ambiguous)
        assert isinstance(http.status(call()), RetryLater)
        http.close()
    assert server.connections == 2
    with RawServer(answer_503_retry_now) as server:
        http = HttpAdapter({"base_url": server.url, **options})
        assert http.status(call()) == RetryLater("status: HTTP 503", after=0.0)
        http.close()
    assert server.connections == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (requests.exceptions.ConnectTimeout("connect timed out"), RetryLater),
        (
            requests.exceptions.SSLError(ssl.SSLCertVerificationError("certificate verify failed")),
            RetryLater,
        ),
        (requests.exceptions.SSLError("bad record mac"), Ambiguous),
        (requests.exceptions.ReadTimeout("read timed out"), Ambiguous),
        (requests.exceptions.ChunkedEncodingError("IncompleteRead"), Ambiguous),
        (requests.exceptions.InvalidHeader("bad header"), Failed),
    ],
)
def test_transport_errors_are_classified_by_whether_the_request_left(
    vendor: responses.RequestsMock,
    error: Exception,
    expected: type,
) -> None:
    vendor.post(TERMINATE, body=error)
    assert type(adapter().terminate(call())) is expected


def test_threads_share_one_adapter_and_close_releases_it() -> None:
    with RawServer(answer_terminated) as server:
        http = HttpAdapter({"base_url": server.url})
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(http.terminate(call())))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        http.close()
        results.append(
            http.terminate(call())
        )  # a closed adapter opens a fresh session if used again
        http.close()
    assert results == [Terminated("terminate: HTTP 200")] * 5


# -- the local mock vendor, one test per mode ----------------------------------------------------

MOCK_TOKEN = "mock-vendor-token-4711"
REFUSAL = "Subscription has an outstanding balance; contact billing."


@pytest.fixture
def mock_vendor(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[VendorApp, str]]:
    monkeypatch.setenv("MOCK_VENDOR_TOKEN", MOCK_TOKEN)
    app = create_app(VendorSettings(token=MOCK_TOKEN, mode=request.param))
    with ServerThread(app) as server:
        yield app, server.url
    app.close()


def mock_adapter(url: str, **options: Any) -> HttpAdapter:
    return HttpAdapter(
        {
            "base_url": url,
            "auth": {"type": "bearer", "env": "MOCK_VENDOR_TOKEN"},
            "outcomes": MOCK_VENDOR_OUTCOMES,
            **options,
        }
    )


def is_failed(outcome: Any, head: str) -> bool:
    """A definite error whose detail starts with ``head`` (then names the URL template and body)."""
    return isinstance(outcome, Failed) and outcome.detail.startswith(head + " from ")


def effects(app: VendorApp) -> tuple[int, int]:
    summary = app.state.ledger.summary()
    return summary["effective_terminations"], summary["duplicate_terminations"]


@pytest.mark.parametrize("mock_vendor", ["key"], indirect=True)
def test_mock_vendor_in_key_mode_replays_repeats_and_settles_a_dropped_answer(
    mock_vendor: tuple[VendorApp, str],
) -> None:
    app, url = mock_vendor
    http = mock_adapter(url, idempotency="key", suspend=True)
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200")
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200 (replayed)")
    assert http.terminate(call("SUB-107")) == Refused(REFUSAL)
    assert http.terminate(call("SUB-GONE-1")) == AlreadyGone("terminate: HTTP 404 not_found")
    # The terminate key on another step is another request: refused as reuse, not as a refusal.
    reuse = VendorCall(
        request=REQUEST, subscription_id="SUB-100", idempotency_key=call("SUB-100").idempotency_key
    )
    assert is_failed(http.suspend(reuse), "suspend: HTTP 422 idempotency_key_reuse")
    # The vendor acts, then the connection drops: ambiguous; the same key again settles it.
    app.faults.update(FaultSettings(drop_rate=1.0))
    assert isinstance(http.terminate(call("SUB-200")), Ambiguous)
    app.faults.update(FaultSettings())
    assert http.terminate(call("SUB-200")) == Terminated("terminate: HTTP 200 (replayed)")
    assert effects(app) == (2, 0)
    http.close()


@pytest.mark.parametrize("mock_vendor", ["natural"], indirect=True)
def test_mock_vendor_in_natural_mode_answers_repeats_with_already_gone(
    mock_vendor: tuple[VendorApp, str],
) -> None:
    app, url = mock_vendor
    http = mock_adapter(url, idempotency="natural", suspend=True, purge=True)
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200")
    assert http.terminate(call("SUB-100")) == AlreadyGone("terminate: HTTP 409 already_terminated")
    assert http.suspend(call("SUB-100", "suspend")) == AlreadyGone(
        "suspend: HTTP 409 already_terminated"
    )
    assert is_failed(http.purge(call("SUB-101", "purge")), "purge: HTTP 409 not_terminated")
    assert http.purge(call("SUB-100", "purge")) == Terminated("purge: HTTP 200")
    assert http.purge(call("SUB-100", "purge")) == AlreadyGone("purge: HTTP 409 already_purged")
    assert effects(app) == (1, 0)
    http.close()


@pytest.mark.parametrize("mock_vendor", ["read"], indirect=True)
def test_mock_vendor_in_read_mode_tells_the_truth_through_a_status_read(
    mock_vendor: tuple[VendorApp, str],
) -> None:
    app, url = mock_vendor
    http = mock_adapter(url, idempotency="none", status=True)
    assert http.status(call("SUB-100")) == SubscriptionStatus.ACTIVE
    app.faults.update(FaultSettings(drop_rate=1.0, methods="POST"))
    assert isinstance(http.terminate(call("SUB-100")), Ambiguous)
    app.faults.update(FaultSettings(throttle_rate=1.0, retry_after=2, methods="POST"))
    assert http.terminate(call("SUB-101")) == RetryLater("terminate: HTTP 429", after=2.0)
    app.faults.update(FaultSettings())
    assert (
        http.status(call("SUB-100")) == SubscriptionStatus.TERMINATED
    )  # the dropped call had acted
    assert http.status(call("SUB-101")) == SubscriptionStatus.ACTIVE  # the throttled one had not
    assert http.status(call("SUB-GONE-1")) == SubscriptionStatus.NOT_FOUND
    assert effects(app) == (1, 0)
    http.close()


@pytest.mark.parametrize("mock_vendor", ["none"], indirect=True)
def test_mock_vendor_in_none_mode_acts_twice_on_a_repeat(
    mock_vendor: tuple[VendorApp, str],
) -> None:
    app, url = mock_vendor
    http = mock_adapter(url, idempotency="none")
    assert not has_status_read(http)
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200")
    assert http.terminate(call("SUB-100")) == Terminated("terminate: HTTP 200")
    assert effects(app) == (2, 1)  # why the engine parks an ambiguous call to such a vendor
    misconfigured = mock_adapter(url, idempotency="none", status=True)
    assert is_failed(misconfigured.status(call("SUB-100")), "status: HTTP 405 not_supported")
    wrong_token = HttpAdapter({"base_url": url, "outcomes": MOCK_VENDOR_OUTCOMES})
    assert is_failed(wrong_token.terminate(call("SUB-300")), "terminate: HTTP 401 unauthorized")
    for adapter_ in (http, misconfigured, wrong_token):
        adapter_.close()
