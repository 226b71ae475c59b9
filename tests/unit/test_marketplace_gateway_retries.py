"""The Connect gateway's settings and selectors, and its retries: 5xx backoff, the retry budget,
429 and Retry-After, client errors and 401 (HTTP faked with ``responses``, time with a fake)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from structlog.testing import capture_logs

from processor.marketplace import (
    ActionRefused,
    ConnectGateway,
    GatewaySettings,
    NotFound,
    Selector,
    TransientError,
    Unauthorized,
    parse_retry_after,
)

from ..gateway_support import (  # noqa: F401 - fixtures
    API_KEY,
    ENDPOINT,
    SECRET,
    T0,
    FakeTime,
    a_request,
    body,
    fake_time_fixture,
    gateway_fixture,
    http_fixture,
    retries_fixture,
    url,
)

# -- settings and selectors ---------------------------------------------------------------------


def test_the_client_sends_the_key_user_agent_tls_and_timeouts_as_configured(
    http: Any, gateway: Any
) -> None:
    assert SECRET not in repr(GatewaySettings(api_key=API_KEY))
    http.add("GET", url("requests/PR-1"), json=a_request())
    gateway(
        api_key=f"SU-123-456-789:{SECRET}", verify="ca-bundle.pem", timeout_read=42.0
    ).get_request("PR-1")
    sent = http.calls[0].request
    assert sent.headers["Authorization"] == API_KEY
    assert sent.headers["User-Agent"].startswith("connect-cancel-processor/")
    assert sent.req_kwargs["verify"] == "ca-bundle.pem" and sent.req_kwargs["timeout"] == (
        10.0,
        42.0,
    )


def test_selector_renders_rql() -> None:
    selector = Selector(
        products=("PRD-1", "PRD-2"),
        marketplaces=("MP-1",),
        environments=("test", "production"),
        request_ids=("PR-9",),
        created_since=T0,
        created_until=T0 + timedelta(days=1, hours=2),
    )
    assert str(selector.rql()) == (
        "and(in(asset.product.id,(PRD-1,PRD-2)),in(marketplace.id,(MP-1)),"
        "in(asset.connection.type,(test,production)),in(id,(PR-9)),"
        "ge(created,2026-10-01T10:00:00Z),lt(created,2026-10-02T12:00:00Z))"
    )
    assert str(Selector(products=["PRD-1"]).rql()) == "in(asset.product.id,(PRD-1))"
    assert str(Selector().rql()) == ""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"products": ("PRD-1),eq(status,approved",)},
        {"request_ids": ("PR 1",)},
        {"environments": ("staging",)},
        {"created_since": datetime(2026, 1, 1)},
    ],
)
def test_selector_refuses_values_that_would_change_the_query(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Selector(**kwargs)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = T0.timestamp()
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(format_datetime(T0 + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after(format_datetime(T0 - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# -- retries ------------------------------------------------------------------------------------


def test_server_errors_on_a_read_are_retried_with_full_jitter_backoff(
    http: Any, gateway: Any, fake_time: FakeTime, retries: list[tuple[str, str]]
) -> None:
    http.add(
        "GET", url("requests/PR-1"), status=503, json={"error_code": "SYS_001", "errors": ["down"]}
    )
    http.add("GET", url("requests/PR-1"), status=502, body="bad gateway")
    http.add("GET", url("requests/PR-1"), json=a_request())
    with capture_logs() as logs:
        assert gateway(backoff_base=0.5, backoff_max=30.0).get_request("PR-1")["id"] == "PR-1"
    assert len(http.calls) == 3
    assert retries == [("server_error", "get_request")] * 2
    # Full jitter: each wait is drawn from [0, base * 2**(attempt-1)].
    assert 0 <= fake_time.sleeps[0] <= 0.5 and 0 <= fake_time.sleeps[1] <= 1.0
    assert [e["event"] for e in logs if e["log_level"] == "debug"] == [
        "connect_retry",
        "connect_retry",
    ]


def test_retry_budget_exhaustion_raises_transient_error(
    http: Any, gateway: Any, fake_time: FakeTime
) -> None:
    http.add("GET", url("assets/AS-1"), body=requests.ConnectionError("connection reset"))
    with pytest.raises(TransientError) as caught:
        gateway(max_attempts=4).get_asset("AS-1")
    assert caught.value.cause == "connection" and caught.value.retry_after is None
    assert len(http.calls) == 4 and len(fake_time.sleeps) == 3


def test_429_waits_exactly_the_retry_after_seconds_or_a_little_more(
    http: Any, gateway: Any, fake_time: FakeTime, retries: list[tuple[str, str]]
) -> None:
    http.add("GET", url("requests/PR-1"), status=429, headers={"Retry-After": "7"})
    http.add("GET", url("requests/PR-1"), json=a_request())
    gateway().get_request("PR-1")
    assert len(fake_time.sleeps) == 1 and 7.0 <= fake_time.sleeps[0] <= 8.0
    assert retries == [("throttled", "get_request")]


def test_429_with_an_http_date_waits_until_that_date(
    http: Any, gateway: Any, fake_time: FakeTime
) -> None:
    when = datetime.fromtimestamp(fake_time.wall, UTC) + timedelta(seconds=120)
    http.add(
        "GET",
        url("requests/PR-1"),
        status=429,
        headers={"Retry-After": format_datetime(when, usegmt=True)},
    )
    http.add("GET", url("requests/PR-1"), json=a_request())
    gateway().get_request("PR-1")
    assert sum(fake_time.sleeps) >= 120.0
    assert fake_time.wall >= when.timestamp()  # the second call went out after the named date


def test_a_retry_after_beyond_the_maximum_gives_up_now_and_holds_every_caller(
    http: Any, gateway: Any, fake_time: FakeTime
) -> None:
    http.add("GET", url("requests/PR-1"), status=429, headers={"Retry-After": "3600"})
    market = gateway(retry_after_max=300)
    with pytest.raises(TransientError) as caught:
        market.get_request("PR-1")
    assert caught.value.retry_after == 3600 and caught.value.cause == "throttled"
    with pytest.raises(TransientError):  # another call, before the hour is over: not even sent
        market.get_asset("AS-1")
    assert len(http.calls) == 1 and fake_time.sleeps == []


def test_after_a_429_no_call_from_any_operation_goes_out_before_retry_after(
    http: Any, gateway: Any, fake_time: FakeTime
) -> None:
    http.add("GET", url("requests/PR-1"), status=429, headers={"Retry-After": "5"})
    http.add("GET", url("assets/AS-1"), json={"id": "AS-1"})
    market = gateway(max_attempts=1)
    with pytest.raises(TransientError):
        market.get_request("PR-1")
    started = fake_time.now
    market.get_asset("AS-1")
    assert fake_time.now - started >= 5.0


@pytest.mark.parametrize(
    "status,error", [(400, ActionRefused), (403, ActionRefused), (404, NotFound)]
)
def test_client_errors_are_not_retried(http: Any, gateway: Any, status: int, error: type) -> None:
    http.add(
        "GET",
        url("requests/PR-1"),
        status=status,
        json={"error_code": "VAL_001", "errors": ["id: bad"]},
    )
    with pytest.raises(error):
        gateway().get_request("PR-1")
    assert len(http.calls) == 1


def test_401_is_unauthorized_and_the_key_appears_nowhere(http: Any, gateway: Any) -> None:
    http.add(
        "GET",
        url("requests/PR-1"),
        status=401,
        json={"error_code": "AUTH_001", "errors": [f"API request is unauthorized: {API_KEY}"]},
    )
    http.add(
        "POST",
        url("requests/PR-2/approve"),
        status=400,
        json={"error_code": "X", "errors": [f"echo {SECRET}"]},
    )
    http.add("GET", url("requests/PR-2"), json=a_request("PR-2"))
    market = gateway()
    with capture_logs() as logs:
        with pytest.raises(Unauthorized) as unauthorized:
            market.get_request("PR-1")
        with pytest.raises(ActionRefused) as refused:
            market.approve("PR-2", "TL-1")
    texts = [
        str(unauthorized.value),
        repr(unauthorized.value),
        str(refused.value),
        repr(market),
        repr(logs),
    ]
    assert "401" in texts[0]
    assert all(SECRET not in text for text in texts)


def test_a_failing_metrics_hook_does_not_break_the_call(http: Any, fake_time: FakeTime) -> None:
    def broken(cause: str, operation: str) -> None:
        raise RuntimeError("metrics down")

    http.add("GET", url("requests/PR-1"), status=500)
    http.add("GET", url("requests/PR-1"), json=a_request())
    market = ConnectGateway(
        GatewaySettings(endpoint=ENDPOINT, api_key=API_KEY),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        on_retry=broken,
    )
    assert market.get_request("PR-1")["status"] == "pending"
