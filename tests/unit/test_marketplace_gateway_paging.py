"""The Connect gateway's keyset paging, against a tiny in-memory Connect that evaluates the
processor's own RQL with lib-rql (behind ``responses``)."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from connect.client.rql import R
from py_rql.constants import FilterTypes
from py_rql.filter_cls import FilterClass

import processor.marketplace as marketplace_pkg
from processor.marketplace import MarketplaceError, Selector
from processor.marketplace.paging import MAX_TIED
from processor.model import UNREADABLE

from ..gateway_support import (  # noqa: F401 - fixtures
    T0,
    fake_time_fixture,
    gateway_fixture,
    http_fixture,
    retries_fixture,
    url,
)

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


# -- a row no reader should accept does not hold the others up ------------------------------------


def poisoned(rows: list[dict[str, Any]], *positions: int, **bad: Any) -> list[dict[str, Any]]:
    """``rows`` with the rows at ``positions`` carrying ``bad`` (e.g. a NaN): the boundary refuses
    any page that holds one of them."""
    for n in positions:
        rows[n] = {**rows[n], **bad}
    return rows


def test_a_refused_row_is_isolated_by_smaller_pages_and_yielded_as_unreadable(
    http: Any, gateway: Any, retries: list[tuple[str, str]]
) -> None:
    rows = poisoned(backlog(250, same_second=30), 5, 140, quantity=float("nan"))
    server = FakeConnect(rows).install(http)
    seen = list(gateway(page_size=100).iter_pending(Selector()))
    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids)) == 250  # every row once, the two refused ones included
    unreadable = {r["id"]: r for r in seen if UNREADABLE in r}
    assert set(unreadable) == {rows[5]["id"], rows[140]["id"]}
    assert all("NaN" in r[UNREADABLE] for r in unreadable.values())
    assert retries == []  # a refused answer is not weather: no backoff, smaller pages at once
    limits = [int(p["limit"]) for p in server.pages]
    assert min(limits) == 1 and limits.count(100) >= 3  # back to full pages after each one
    assert len(server.pages) < 30, limits


def test_a_refused_row_whose_id_cannot_be_read_stops_the_pass_after_the_rows_before_it(
    http: Any, gateway: Any
) -> None:
    bad = {"quantity": float("nan"), "id": "../x", "created": T0 + timedelta(seconds=5.5)}
    rows = poisoned(backlog(60, same_second=0), 40, **bad)
    FakeConnect(rows).install(http)
    seen = []
    with pytest.raises(MarketplaceError, match="cannot be read"):
        for request in gateway(page_size=25).iter_pending(Selector()):
            seen.append(request["id"])
    before = {r["id"] for r in rows if r["created"] < bad["created"]}
    assert len(before) == 35 and sorted(seen) == sorted(before)
