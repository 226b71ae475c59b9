"""The Connect gateway: retries, 429, ambiguous outcomes, typed errors, keyset paging, notes.

HTTP is faked at the requests level with ``responses`` (and connect-openapi-client's own
ConnectClientMocker once); time is a fake whose ``sleep`` records and advances the clock, so no
test waits. The keyset-paging tests run against a tiny in-memory Connect that evaluates the
processor's own RQL with lib-rql.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import requests
import responses
from connect.client.rql import R
from connect.client.testing import ConnectClientMocker
from py_rql.constants import FilterTypes
from py_rql.filter_cls import FilterClass
from structlog.testing import capture_logs

import processor.marketplace as marketplace_pkg
from processor.marketplace import (
    ActionRefused,
    GatewaySettings,
    Marketplace,
    MarketplaceError,
    NotFound,
    NotPending,
    Selector,
    TransientError,
    Unauthorized,
    parse_retry_after,
)
from processor.marketplace.paging import MAX_TIED

ENDPOINT = "https://connect.example/public/v1"
SECRET = "Zx9-very-secret-part-0123456789"
API_KEY = f"ApiKey SU-123-456-789:{SECRET}"
T0 = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)


class FakeTime:
    """Monotonic and wall clocks that only move when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = T0.timestamp()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.wall += seconds

    def clock(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return self.wall


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def http() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def retries() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def gateway(fake_time: FakeTime, retries: list[tuple[str, str]]) -> Any:
    def build(**overrides: Any) -> Marketplace:
        settings = GatewaySettings(
            endpoint=ENDPOINT, api_key=overrides.pop("api_key", API_KEY), **overrides
        )
        return Marketplace(
            settings,
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            wall_clock=fake_time.wall_clock,
            on_retry=lambda cause, operation: retries.append((cause, operation)),
        )

    return build


def url(path: str) -> str:
    return f"{ENDPOINT}/{path}"


def a_request(request_id: str = "PR-1", status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "type": "cancel",
        "status": status,
        "created": T0.isoformat(),
        **extra,
    }


def methods(http: Any) -> list[str]:
    return [
        f"{c.request.method} {urlsplit(c.request.url).path.rsplit('/v1/', 1)[1]}"
        for c in http.calls
    ]


def body(call: Any) -> Any:
    return json.loads(call.request.body) if call.request.body else None


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
    market = Marketplace(
        GatewaySettings(endpoint=ENDPOINT, api_key=API_KEY),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        on_retry=broken,
    )
    assert market.get_request("PR-1")["status"] == "pending"


# -- actions and ambiguous outcomes -------------------------------------------------------------


def test_approve_after_a_5xx_rereads_the_request_before_posting_again(
    http: Any, gateway: Any
) -> None:
    http.add("POST", url("requests/PR-1/approve"), status=503)
    http.add("GET", url("requests/PR-1"), json=a_request())
    http.add("POST", url("requests/PR-1/approve"), json=a_request(status="approved"))
    assert gateway().approve("PR-1", "TL-1")["status"] == "approved"
    assert methods(http) == [
        "POST requests/PR-1/approve",
        "GET requests/PR-1",
        "POST requests/PR-1/approve",
    ]
    assert body(http.calls[2]) == {"template_id": "TL-1"}


def test_approve_whose_response_was_lost_but_which_landed_is_a_success_without_a_second_post(
    http: Any, gateway: Any
) -> None:
    http.add(
        "POST", url("requests/PR-1/approve"), body=requests.ConnectionError("connection dropped")
    )
    http.add("GET", url("requests/PR-1"), json=a_request(status="approved"))
    with capture_logs() as logs:
        assert gateway().approve("PR-1", "TL-1")["status"] == "approved"
    assert methods(http) == ["POST requests/PR-1/approve", "GET requests/PR-1"]
    assert {"event": "connect_call_landed", "operation": "approve", "log_level": "info"} in logs


def test_an_action_whose_request_moved_on_meanwhile_is_not_pending(http: Any, gateway: Any) -> None:
    http.add("POST", url("requests/PR-1/fail"), body=requests.ReadTimeout("read timed out"))
    http.add("GET", url("requests/PR-1"), json=a_request(status="approved"))
    with pytest.raises(NotPending) as caught:
        gateway().fail("PR-1", "Subscription is locked")
    assert caught.value.status == "approved"
    assert len(http.calls) == 2


def test_approve_refused_because_it_already_went_through_is_idempotent(
    http: Any, gateway: Any
) -> None:
    http.add(
        "POST",
        url("requests/PR-1/approve"),
        status=400,
        json={"error_code": "REQ_003", "errors": ["Request must be in pending status."]},
    )
    http.add("GET", url("requests/PR-1"), json=a_request(status="approved"))
    assert gateway().approve("PR-1", "TL-1")["status"] == "approved"
    assert len(http.calls) == 2


def test_a_definite_refusal_is_action_refused_or_not_pending(http: Any, gateway: Any) -> None:
    http.add(
        "POST",
        url("requests/PR-1/approve"),
        status=400,
        json={"error_code": "VAL_001", "errors": ["bad template"]},
    )
    http.add("GET", url("requests/PR-1"), json=a_request())
    http.add(
        "POST",
        url("requests/PR-2/fail"),
        status=400,
        json={"error_code": "REQ_003", "errors": ["not pending"]},
    )
    http.add("GET", url("requests/PR-2"), json=a_request("PR-2", status="failed"))
    http.add(
        "POST",
        url("requests/PR-3/approve"),
        status=400,
        json={"error_code": "REQ_003", "errors": ["no"]},
    )
    http.add("GET", url("requests/PR-3"), json=a_request("PR-3", status="inquiring"))
    market = gateway()
    with pytest.raises(ActionRefused) as refused:
        market.approve("PR-1", "TL-404")
    assert (refused.value.status_code, refused.value.error_code, refused.value.errors) == (
        400,
        "VAL_001",
        ("bad template",),
    )
    assert market.fail("PR-2", "reason")["status"] == "failed"  # our own earlier fail had landed
    with pytest.raises(NotPending) as moved:
        market.approve("PR-3", "TL-1")
    assert moved.value.status == "inquiring"


def test_fail_without_a_reason_is_refused_locally(http: Any, gateway: Any) -> None:
    market = gateway()
    for reason in ("", "   "):
        with pytest.raises(ValueError):
            market.fail("PR-1", reason)
    with pytest.raises(ValueError):
        market.approve("PR-1", "")
    assert len(http.calls) == 0


def test_schedule_confirm_assign_and_update_params_send_what_connect_expects(
    http: Any, gateway: Any
) -> None:
    http.add("POST", url("requests/PR-1/schedule"), json=a_request(status="scheduled"))
    http.add("POST", url("requests/PR-2/confirm"), json=a_request("PR-2", status="revoked"))
    http.add("POST", url("requests/PR-3/assign"), status=500)
    http.add(
        "POST",
        url("requests/PR-3/assign"),
        json=a_request("PR-3", assignee={"email": "ops@vendor.example"}),
    )
    http.add("PUT", url("requests/PR-4"), json=a_request("PR-4"))
    market = gateway()
    planned = T0 + timedelta(days=30)
    assert market.schedule("PR-1", planned)["status"] == "scheduled"
    assert market.confirm("PR-2")["status"] == "revoked"
    assert (
        market.assign("PR-3", email="ops@vendor.example")["assignee"]["email"]
        == "ops@vendor.example"
    )
    market.update_params("PR-4", {"subscription_id": "SUB-1"}, note="terminated at the vendor")
    assert body(http.calls[0]) == {"planned_date": planned.isoformat()}
    assert http.calls[1].request.body is None
    assert body(http.calls[3]) == {
        "email": "ops@vendor.example"
    }  # assign is safe to repeat: no re-read
    assert body(http.calls[4]) == {
        "asset": {"params": [{"id": "subscription_id", "value": "SUB-1"}]},
        "note": "terminated at the vendor",
    }
    with pytest.raises(ValueError):
        market.schedule("PR-1", datetime(2026, 11, 1))
    with pytest.raises(ValueError):
        market.assign("PR-3")


# -- notes and templates ------------------------------------------------------------------------


def test_notes_find_the_conversation_once_and_are_cut_to_2000_characters(
    http: Any, gateway: Any
) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1", "instance_id": "PR-1"}])
    http.add("POST", url("conversations/CO-1/messages"), status=201, json={"id": "ME-1"})
    market = gateway()
    assert market.post_note("PR-1", "x" * 2500) is True
    assert market.post_note("PR-1", "second") is True
    assert methods(http) == [
        "GET conversations",
        "POST conversations/CO-1/messages",
        "POST conversations/CO-1/messages",
    ]
    assert (
        dict(parse_qsl(urlsplit(http.calls[0].request.url).query, keep_blank_values=True)).get(
            "limit"
        )
        == "1"
    )
    assert "eq(instance_id,PR-1)" in unquote(http.calls[0].request.url)
    assert body(http.calls[1]) == {"text": "x" * 2000, "type": "message"}


def test_a_note_whose_post_was_lost_is_not_posted_twice(http: Any, gateway: Any) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1"}])
    http.add("POST", url("conversations/CO-1/messages"), status=504)
    http.add(
        "GET",
        url("conversations/CO-1/messages"),
        json=[{"id": "ME-9", "text": "Cancelled at the vendor."}],
    )
    assert gateway().post_note("PR-1", "Cancelled at the vendor.") is True
    assert [m for m in methods(http) if m.startswith("POST")] == [
        "POST conversations/CO-1/messages"
    ]


def test_a_note_with_a_once_key_is_posted_at_most_once(http: Any, gateway: Any) -> None:
    http.add("GET", url("conversations"), json=[{"id": "CO-1"}])
    http.add("GET", url("conversations/CO-1/messages"), json=[])
    http.add("POST", url("conversations/CO-1/messages"), status=201, json={"id": "ME-1"})
    http.add("GET", url("conversations"), json=[{"id": "CO-2"}])
    http.add(
        "GET",
        url("conversations/CO-2/messages"),
        json=[{"id": "ME-2", "text": "Waiting for the vendor."}],
    )
    market = gateway()
    assert market.post_note("PR-1", "Waiting for the vendor.", once_key="PR-1:waiting") is True
    assert market.post_note("PR-1", "Waiting for the vendor.", once_key="PR-1:waiting") is False
    # A note posted before a restart is found in the conversation itself.
    assert market.post_note("PR-2", "Waiting for the vendor.", once_key="PR-2:waiting") is False
    assert [m for m in methods(http) if m.startswith("POST")] == [
        "POST conversations/CO-1/messages"
    ]


def test_a_request_without_a_conversation_is_not_found(http: Any, gateway: Any) -> None:
    http.add("GET", url("conversations"), json=[])
    with pytest.raises(NotFound):
        gateway().post_note("PR-1", "hello")


def test_default_template_prefers_the_flagged_default_and_is_cached(fake_time: FakeTime) -> None:
    templates = [
        {"id": "TL-1", "name": "Activation", "scope": "asset", "type": "fulfillment"},
        {
            "id": "TL-2",
            "name": "Cancellation",
            "scope": "asset",
            "type": "fulfillment",
            "default": True,
        },
    ]
    with ConnectClientMocker(ENDPOINT) as mocker:
        mocker.products["PRD-1"].templates.filter(scope="asset", type="fulfillment").limit(100)[
            0:100
        ].mock(return_value=templates)
        mocker.products["PRD-2"].templates.filter(scope="asset", type="fulfillment").limit(100)[
            0:100
        ].mock(return_value=[])
        market = Marketplace(
            GatewaySettings(endpoint=ENDPOINT, api_key=API_KEY), sleep=fake_time.sleep
        )
        assert market.default_template("PRD-1") == "TL-2"
        assert market.default_template("PRD-1") == "TL-2"  # cached: the mock answers only once
        assert market.default_template("PRD-2") is None


# -- keyset paging ------------------------------------------------------------------------------


class _RequestFilters(FilterClass):
    FILTERS = [
        {"filter": "id"},
        {"filter": "type"},
        {"filter": "status"},
        {"filter": "created", "type": FilterTypes.DATETIME},
        {"filter": "asset.product.id"},
        {"filter": "asset.connection.type"},
        {"filter": "marketplace.id"},
    ]


class FakeConnect:
    """Just enough of Connect's /requests for paging: the RQL filter (via lib-rql), ordering,
    limit/offset, Content-Range; and approve. The caller's own query decides what is listed."""

    def __init__(
        self, rows: list[dict[str, Any]], *, max_page: int = 1000, ignore_query: bool = False
    ) -> None:
        self.rows = {row["id"]: row for row in rows}
        self.filters = _RequestFilters()
        self.max_page = max_page
        self.ignore_query = ignore_query
        self.pages: list[dict[str, str]] = []  # limit/offset of every listing call

    def install(self, http: Any) -> FakeConnect:
        http.add_callback("GET", re.compile(re.escape(url("requests")) + r"\?.*"), self._list)
        http.add_callback(
            "POST", re.compile(re.escape(url("requests/")) + r"[^/]+/approve"), self._approve
        )
        return self

    def pending(self) -> set[str]:
        return {row["id"] for row in self.rows.values() if row["status"] == "pending"}

    def _list(self, request: Any) -> tuple[int, dict[str, str], str]:
        terms = unquote(urlsplit(request.url).query).split("&")
        params = dict(t.split("=", 1) for t in terms if "=" in t and "(" not in t)
        self.pages.append(params)
        rows: list[dict[str, Any]] = list(self.rows.values())
        ordering: list[str] = []
        for term in terms:
            if term.startswith("ordering("):
                ordering = term[len("ordering(") : -1].split(",")
            elif "(" in term and not term.startswith("select(") and not self.ignore_query:
                rows = list(self.filters.filter(term, rows))
        for field in reversed(ordering):
            rows.sort(key=lambda row: row[field.lstrip("-")], reverse=field.startswith("-"))
        offset, limit = (
            int(params.get("offset", 0)),
            min(int(params.get("limit", 100)), self.max_page),
        )
        page = rows[offset : offset + limit]
        headers = {
            "Content-Range": f"items {offset}-{offset + max(len(page), 1) - 1}/{len(rows)}",
            "Content-Type": "application/json",
        }
        return (
            200,
            headers,
            json.dumps([{**row, "created": row["created"].isoformat()} for row in page]),
        )

    def _approve(self, request: Any) -> tuple[int, dict[str, str], str]:
        row = self.rows[urlsplit(request.url).path.split("/")[-2]]
        if row["status"] != "pending":
            return (
                400,
                {"Content-Type": "application/json"},
                '{"error_code":"REQ_003","errors":["not pending"]}',
            )
        row["status"] = "approved"
        return (
            200,
            {"Content-Type": "application/json"},
            json.dumps({**row, "created": row["created"].isoformat()}),
        )


def backlog(
    count: int, *, same_second: int = 150, group: int = 7, product: str = "PRD-1"
) -> list[dict[str, Any]]:
    """``count`` pending cancels: the first ``same_second`` share one created second (more than a
    page), the rest come in groups of ``group`` per second; ids are not in created order."""
    rows = []
    for n in range(count):
        second = 0 if n < same_second else 1 + (n - same_second) // group
        rows.append(
            {
                "id": f"PR-{(n * 7919) % 100000:05d}-{n:04d}",
                "type": "cancel",
                "status": "pending",
                "created": T0 + timedelta(seconds=second),
                "asset": {"product": {"id": product}, "connection": {"type": "production"}},
                "marketplace": {"id": "MP-1"},
            }
        )
    return rows


def test_iter_pending_yields_every_request_once_while_each_is_approved_before_the_next(
    http: Any, gateway: Any
) -> None:
    server = FakeConnect(backlog(1000)).install(http)
    market = gateway(page_size=100)
    seen: list[str] = []
    for request in market.iter_pending(Selector(products=("PRD-1",))):
        seen.append(request["id"])
        market.approve(request["id"], "TL-1")
    assert len(seen) == 1000 and set(seen) == set(server.rows)
    assert server.pending() == set()
    assert all(page == {"limit": "100", "offset": "0"} for page in server.pages)
    assert len(server.pages) == 10


def test_iter_pending_while_a_worker_pool_approves_concurrently(http: Any, gateway: Any) -> None:
    """The daemon's shape: one thread lists, worker threads share the same gateway and approve."""
    server = FakeConnect(backlog(600, same_second=120, group=3)).install(http)
    market = gateway(page_size=50)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(market.approve, r["id"], "TL-1") for r in market.iter_pending(Selector())
        ]
        approved = [future.result()["id"] for future in futures]
    assert len(approved) == len(set(approved)) == 600
    assert server.pending() == set()


def test_offset_paging_over_the_same_server_skips_requests(http: Any, gateway: Any) -> None:
    """The trap the keyset paging avoids, reproduced on the same fake: the client's own offset
    paging, approving as it goes, sees only about half of the backlog."""
    server = FakeConnect(backlog(1000)).install(http)
    market = gateway(page_size=100)
    pending = market.client.requests.filter(
        R().type.eq("cancel") & R().status.eq("pending")
    ).order_by("created")
    seen = [request["id"] for request in pending if market.approve(request["id"], "TL-1")]
    assert len(seen) < 600 and len(server.pending()) > 400


def test_iter_pending_holds_one_page_and_fetches_the_next_only_when_needed(
    http: Any, gateway: Any
) -> None:
    server = FakeConnect(backlog(250, same_second=0)).install(http)
    market = gateway(page_size=100)
    assert market.client.resourceset_append is False
    pending = market.iter_pending(Selector())
    assert server.pages == []  # nothing fetched before the first item is asked for
    first = [next(pending) for _ in range(100)]
    assert len(server.pages) == 1
    next(pending)
    assert len(server.pages) == 2
    assert len(first) + 1 + sum(1 for _ in pending) == 250
    assert len(server.pages) == 3  # the last page was short: no fourth call


def test_iter_pending_filters_by_the_selector(http: Any, gateway: Any) -> None:
    rows = backlog(30, same_second=0) + backlog(20, same_second=0, product="PRD-2")
    for n, row in enumerate(rows[30:]):
        row["id"] = f"PR-9-{n:04d}"
    FakeConnect(rows).install(http)
    market = gateway(page_size=7)
    assert {r["id"] for r in market.iter_pending(Selector(products=("PRD-2",)))} == {
        r["id"] for r in rows[30:]
    }
    assert market.count_pending(Selector(products=("PRD-2",))) == 20
    assert dict(parse_qsl(urlsplit(http.calls[-1].request.url).query)) == {
        "limit": "0",
        "offset": "0",
    }


def test_iter_pending_survives_a_server_that_caps_the_page_size(http: Any, gateway: Any) -> None:
    server = FakeConnect(backlog(300, same_second=40), max_page=30).install(http)
    assert len({r["id"] for r in gateway(page_size=100).iter_pending(Selector())}) == 300
    assert all(page["offset"] == "0" for page in server.pages)


def test_iter_pending_retries_a_failed_page(
    http: Any, gateway: Any, retries: list[tuple[str, str]]
) -> None:
    http.add("GET", re.compile(re.escape(url("requests")) + r"\?.*"), status=503)
    FakeConnect(backlog(120, same_second=0)).install(http)
    assert len(list(gateway(page_size=100).iter_pending(Selector()))) == 120
    assert retries == [("server_error", "list_pending")]


def test_iter_pending_stops_instead_of_looping_when_the_server_ignores_the_keyset(
    http: Any, gateway: Any
) -> None:
    FakeConnect(backlog(300, same_second=0), ignore_query=True).install(http)
    seen = []
    with pytest.raises(MarketplaceError, match="no progress"):
        for request in gateway(page_size=100).iter_pending(Selector()):
            seen.append(request["id"])
    assert len(seen) == len(set(seen)) == 100


def test_iter_pending_stops_when_too_many_requests_share_one_second(
    http: Any, gateway: Any
) -> None:
    FakeConnect(backlog(MAX_TIED + 150, same_second=MAX_TIED + 150)).install(http)
    seen = []
    with pytest.raises(MarketplaceError, match="share the created time"):
        for request in gateway(page_size=100).iter_pending(Selector()):
            seen.append(request["id"])
    assert len(seen) == len(set(seen)) > MAX_TIED


def test_the_package_exports_what_it_lists() -> None:
    assert all(hasattr(marketplace_pkg, name) for name in marketplace_pkg.__all__)


# -- against the local mock marketplace (a real HTTP server) ------------------------------------


def test_iter_pending_and_approve_against_the_mock_marketplace_with_faults(
    fake_time: FakeTime,
) -> None:
    """Through uvicorn and the fault middleware: 5xx, 429 and apply-then-drop on every route.
    Every pending cancel is listed once and approved exactly once, as the ledger shows."""
    from cancel_sandbox.faults import FaultSettings
    from cancel_sandbox.marketplace import MarketplaceSettings, create_app
    from processor.ops.serving import ServerThread

    faults = FaultSettings(
        error_rate=0.08, throttle_rate=0.04, retry_after=2, drop_rate=0.08, seed=11
    )
    app = create_app(MarketplaceSettings(generate=240, seed=5, faults=faults))
    with ServerThread(app) as server:
        market = Marketplace(
            GatewaySettings(
                endpoint=f"{server.url}/public/v1",
                api_key=app.config.api_key,
                page_size=50,
                max_attempts=12,
            ),
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            wall_clock=fake_time.wall_clock,
        )
        try:
            expected = market.count_pending(Selector())
            seen = []
            for request in market.iter_pending(Selector()):
                seen.append(request["id"])
                template = market.default_template(request["asset"]["product"]["id"])
                assert market.approve(request["id"], template or "")["status"] == "approved"
            app.update(FaultSettings())
            left = market.count_pending(Selector())
        finally:
            market.close()
    approvals = [
        e
        for e in app.store.ledger.since(0, limit=100_000)
        if e.event == "status" and e.after == "approved"
    ]
    assert expected == 240 and len(seen) == len(set(seen)) == expected and left == 0
    assert sorted(e.id for e in approvals) == sorted(seen)  # one approval each, none repeated
    assert app.stats.errors and app.stats.throttles and app.stats.drops  # the faults did happen
