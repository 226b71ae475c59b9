"""What the ``http`` adapter sends: idempotency keys, URL and body templates, auth and secrets, and
what it makes of nonsense answers (with ``responses``, no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses

from processor.adapters import AdapterError, Ambiguous, Failed, Idempotency, RetryLater, Terminated
from processor.adapters.http import HttpAdapter

from ..http_adapter_support import (
    BASE,
    REQUEST,
    SECRET,
    TERMINATE,
    adapter,
    call,
    sent,
    vendor_fixture,  # noqa: F401 - the vendor fixture
)

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
            # This vendor's ids hold a space, which the default rule refuses.
            "subscription_id_pattern": "[A-Z]+:[0-9]+ [a-z]+",
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
