"""Whatever Connect sends in a page, the listing and the daemon go on.

Property-based: hypothesis builds pages of arbitrary JSON (strings, nulls, numbers, objects) and of
cancel requests with fields deleted or replaced by values of the wrong type, unparsable dates
included. The keyset paging either lists them or stops the pass with a :class:`MarketplaceError`
(never another exception); a daemon pass over them records every malformed request that has an
id as parked with its reason, counts it, and raises nothing.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connect.client.rql import R
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.daemon.core import Daemon
from processor.engine.core import Engine
from processor.journal import open_journal
from processor.journal.base import State
from processor.marketplace import MarketplaceError, Selector
from processor.marketplace.paging import Page, iter_keyset
from processor.model import MalformedRequest, parse_request
from processor.observe import Metrics

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload
from ..unit.test_engine import PRODUCT, make_config

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
DATES = st.sampled_from(
    [
        "2026-13-45",
        "yesterday",
        "",
        "0001-01-01T00:00:00+14:00",
        "2026-10-01T10:00:00Z",
        "9999-12-31T23:59:59-14:00",
        "2026-10-01",
    ]
)
PATHS = [
    ("id",),
    ("created",),
    ("type",),
    ("status",),
    ("asset",),
    ("asset", "id"),
    ("asset", "product"),
    ("asset", "product", "id"),
    ("asset", "params"),
    ("asset", "items"),
    ("asset", "connection"),
    ("asset", "tiers"),
    ("marketplace",),
    ("planned_date",),
    ("assignee",),
    ("asset", "billing"),
]
DELETE = object()


@st.composite
def requests_bent(draw: st.DrawFn) -> Any:
    """A cancel request of the configured product with a few fields deleted or given odd values."""
    payload = cancel_payload(draw(st.integers(0, 500)), product=PRODUCT)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        value = draw(st.just(DELETE) | JSON | DATES)
        node: Any = payload
        for key in path[:-1]:
            if not isinstance(node, dict) or not isinstance(node.get(key), dict):
                node = None
                break
            node = node[key]
        if isinstance(node, dict):
            if value is DELETE:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    return payload


ITEMS = st.one_of(
    requests_bent(),
    JSON,
    st.builds(lambda n: cancel_payload(n, product=PRODUCT), st.integers(0, 500)),
)
PAGES = st.lists(st.lists(ITEMS, max_size=6), min_size=1, max_size=4)


def scripted(pages: list[list[Any]]) -> Any:
    """A fetch that answers the scripted pages in turn, then empty pages (bounded by the script)."""
    answers = iter(pages)

    def fetch(_query: R, _limit: int) -> Page:
        items = next(answers, [])
        return Page(copy.deepcopy(items), None)

    return fetch


def listing(pages: list[list[Any]], page_size: int) -> Iterator[Any]:
    return iter_keyset(scripted(pages), R().status.eq("pending"), page_size)


@settings(max_examples=300, deadline=None)
@given(pages=PAGES, page_size=st.integers(1, 6))
def test_paging_lists_any_page_or_stops_the_pass_with_a_marketplace_error(
    pages: list[list[Any]], page_size: int
) -> None:
    listed: list[Any] = []
    try:
        for item in listing(pages, page_size):
            listed.append(item)
            assert len(listed) <= sum(len(p) for p in pages)  # never more rows than were sent
    except MarketplaceError:
        pass
    for item in listed:
        try:
            parse_request(item)
        except MalformedRequest as exc:
            assert exc.problem  # a reason to log, always


class _ListingMarketplace(FakeMarketplace):
    """The fake marketplace, listing through the real keyset paging over scripted pages."""

    def __init__(self, pages: list[list[Any]], page_size: int) -> None:
        super().__init__([])
        self.pages, self.page_size = pages, page_size
        # What approve and fail act on: every listed object with an id, as Connect would hold it.
        for item in (i for page in pages for i in page):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self.requests[item["id"]] = {**copy.deepcopy(item), "status": "pending"}

    def iter_pending(self, selector: Selector) -> Iterator[Any]:
        return listing(self.pages, self.page_size)

    def get_request(self, request_id: str) -> dict[str, Any]:
        raise MarketplaceError("not listed")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages=PAGES, page_size=st.integers(1, 6))
def test_a_daemon_pass_survives_any_page_and_records_each_malformed_request(
    pages: list[list[Any]], page_size: int
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        clock = Clock()
        journal = open_journal(f"sqlite:///{Path(scratch) / 'journal.db'}", clock=clock)
        journal.migrate()
        market = _ListingMarketplace(pages, page_size)
        metrics = Metrics()
        engine = Engine(
            config=make_config(concurrency=2, once_max_wait=0, notes=False),
            journal=journal,
            marketplace=market,
            adapters={"vendor": ScriptedAdapter()},  # type: ignore[arg-type]
            owner="worker-1",
            metrics=metrics,
            clock=clock,
        )
        try:
            summary = Daemon(engine, market, Selector(products=(PRODUCT,)), once=True).run()  # type: ignore[arg-type]
            assert summary.errors == 0, summary.results
            listed = []
            try:
                listed = list(listing(pages, page_size))
            except MarketplaceError:
                pass  # the daemon's pass stopped at the same place
            for item in listed:
                try:
                    parse_request(item)
                except MalformedRequest as exc:
                    if exc.request_id:
                        record = journal.get(exc.request_id)
                        assert record is not None and record.state is State.PARKED, (item, record)
                        assert exc.problem in (record.last_error or "")
        finally:
            journal.close()


def test_a_string_in_a_page_is_counted_once_and_the_requests_behind_it_are_processed(
    tmp_path: Path,
) -> None:
    """The case the issue found: a string element used to crash every pass (AttributeError)."""
    good = [cancel_payload(n, product=PRODUCT) for n in range(3)]
    pages = [
        [
            "not a request",
            good[0],
            None,
            {"id": "PR-9999-9999-9999-001", "created": "yesterday"},
            *good[1:],
        ]
    ]
    clock = Clock()
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}", clock=clock)
    journal.migrate()
    market = _ListingMarketplace(pages * 2, page_size=10)
    metrics = Metrics()
    engine = Engine(
        config=make_config(concurrency=2, once_max_wait=0, notes=False),
        journal=journal,
        marketplace=market,
        adapters={"vendor": ScriptedAdapter()},  # type: ignore[arg-type]
        owner="worker-1",
        metrics=metrics,
        clock=clock,
    )
    daemon = Daemon(engine, market, Selector(products=(PRODUCT,)))  # type: ignore[arg-type]
    daemon.run_pass()
    market.pages = pages * 2  # the next pass lists the same page again
    daemon.run_pass()
    try:
        assert [market.requests[p["id"]]["status"] for p in good] == ["approved"] * 3
        bad = journal.get("PR-9999-9999-9999-001")
        assert bad is not None and bad.state is State.PARKED
        assert "created is not an ISO 8601 date" in (bad.last_error or "")
        # two id-less rows and one with an id, each counted once although listed twice
        malformed = {"outcome": "malformed"}
        assert metrics.registry.get_sample_value("cancel_requests_total", malformed) == 3
        assert daemon.summary.errors == 0
    finally:
        journal.close()
