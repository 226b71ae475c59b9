"""The ``http`` adapter's answers to status codes and bodies: the default map, the mock vendor's
map, configured outcomes, refusal reasons and Retry-After (with ``responses``, no server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import responses

from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from processor.adapters import (
    AdapterError,
    AlreadyGone,
    Ambiguous,
    Failed,
    Refused,
    RetryLater,
    Terminated,
)
from processor.adapters.http import retry_after_seconds

from ..http_adapter_support import (
    BASE,
    SECRET,
    TERMINATE,
    adapter,
    call,
    failed,
    vendor_fixture,  # noqa: F401 - the vendor fixture
)

# -- status codes and bodies -------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,  # a parser's recursion: RecursionError before the JSON rules
        '{"error": "not_found", "error": "already_terminated"}',  # which one would a reader take?
        '{"error": "not_found", "n": NaN}',
        '{"error": "not_found", "n": ' + "9" * 5000 + "}",
    ],
)
@pytest.mark.parametrize("status", [200, 404, 409])
def test_a_vendor_answer_outside_the_json_rules_counts_as_no_json_never_as_a_crash(
    vendor: responses.RequestsMock, status: int, body: str
) -> None:
    """A vendor's body is read by the rules Connect's answers meet (processor.json_text): one
    that breaks them is no JSON at all, so the status code decides alone, as for an HTML page."""
    vendor.post(TERMINATE, status=status, body=body)
    hostile = adapter(outcomes=MOCK_VENDOR_OUTCOMES).terminate(call())
    vendor.replace(responses.POST, TERMINATE, status=status, body="<html>not json</html>")
    plain = adapter(outcomes=MOCK_VENDOR_OUTCOMES).terminate(call())
    assert type(hostile) is type(plain) and not isinstance(hostile, (Terminated, AlreadyGone))


def test_a_lone_surrogate_in_a_vendor_reason_arrives_as_a_replacement_character(
    vendor: responses.RequestsMock,
) -> None:
    body = '{"error": "refused", "message": "No \\ud800 way."}'
    vendor.post(TERMINATE, status=422, body=body, content_type="application/json")
    outcome = adapter(outcomes=MOCK_VENDOR_OUTCOMES).terminate(call())
    assert isinstance(outcome, Refused) and "No \ufffd way." in outcome.reason
