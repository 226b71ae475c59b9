"""The ops server's status page over real HTTP against a real SQLite journal file: counts, lists,
filters, a request's timeline, the Retry button; and what the listing selects (on PostgreSQL
too)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from processor.journal import open_journal
from processor.journal.base import Journal, State
from processor.ops.listing import Filters, newest, streamed, why_waiting

from ..ops_support import (  # noqa: F401 - fixtures
    Clock,
    clock_fixture,
    journal_fixture,
    listed,
    mixed_fixture,
    put,
    section,
    serve_fixture,
)

# -- the status page ------------------------------------------------------------------------------


def test_the_page_counts_by_state_and_lists_the_newest_requests_first(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    response = serve().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    tiles = dict(re.findall(r'data-state="(\w+)"><b>(\d+)</b>', html))
    assert {state: int(n) for state, n in tiles.items() if n != "0"} == {
        "approved": 2,
        "failed": 1,
        "parked": 2,
        "terminating": 1,
        "waiting_human": 1,
        "new": 1,
    }
    recent = section(html, "recent")
    assert listed(recent) == [f"PR-000{n}" for n in range(8, 0, -1)]
    assert "vendor answered 503" in recent and "contract still running" in recent


def test_the_page_lists_parked_requests_with_a_retry_button_and_those_waiting_for_a_person(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    html = serve().get("/").text
    parked, waiting = section(html, "parked"), section(html, "waiting")
    assert listed(parked) == ["PR-0006", "PR-0003"]
    assert "no approve template for the product" in parked
    assert re.findall(r'data-retry="([^"]+)"', parked) == ["PR-0006", "PR-0003"]
    assert listed(waiting) == ["PR-0005"]
    assert "account manager decides" in waiting
    assert "data-retry" not in waiting and "data-retry" not in section(html, "recent")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "approved"}, ["PR-0008", "PR-0001"]),
        ({"product": "PRD-A"}, ["PR-0006", "PR-0005", "PR-0002", "PR-0001"]),
        ({"q": "sub-0004"}, ["PR-0004"]),  # a subscription id, case-insensitive
        ({"q": "pr-000", "state": "parked", "product": "PRD-B"}, ["PR-0003"]),
        ({"q": "PR-9999"}, []),
    ],
)
def test_the_page_filters_by_state_product_and_id(
    serve: Callable[..., httpx.Client], mixed: Journal, query: dict[str, str], expected: list[str]
) -> None:
    html = serve().get("/", params=query).text
    assert listed(section(html, "recent")) == expected
    for value in query.values():  # the form shows what was asked for
        assert value in html


def test_an_unknown_state_filter_is_a_400_naming_the_states(
    serve: Callable[..., httpx.Client],
) -> None:
    response = serve().get("/", params={"state": "lost"})
    assert response.status_code == 400
    assert "unknown state" in response.text and "waiting_human" in response.text


def test_a_request_page_shows_its_record_and_timeline_in_order(
    serve: Callable[..., httpx.Client], journal: Journal
) -> None:
    put(journal, "PR-0042", State.NEW)
    claim = journal.claim("PR-0042", "worker-1", 60)
    assert claim is not None
    claim = journal.transition(
        claim, State.TERMINATING, attempts=1, detail="intent: terminate via vendor"
    )
    claim = journal.transition(
        claim,
        State.PARKED,
        detail="the vendor call may have acted",
        reason="the vendor call may have acted",
        last_error="read timeout",
    )
    client = serve()
    response = client.get("/requests/PR-0042")
    assert response.status_code == 200
    html = response.text
    rows = re.findall(r'<tr><td class="t">[^<]*</td><td>(.*?)</td><td>(.*?)</td>', html)
    steps = [(re.sub("<[^>]+>", "", a), re.sub("<[^>]+>", "", b)) for a, b in rows]
    assert steps == [("new", "terminating"), ("terminating", "parked")]
    assert "intent: terminate via vendor" in html and "read timeout" in html
    assert 'data-retry="PR-0042"' in html  # parked: the button is there
    assert client.get("/requests/PR-404").status_code == 404


def test_retry_moves_a_parked_request_to_new_and_redirects_back(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    client = serve()
    response = client.post(
        "/requests/PR-0003/retry",
        data={"next": "/?product=PRD-B"},
        headers={"origin": str(client.base_url).rstrip("/")},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/?product=PRD-B&retried=PR-0003"
    record = mixed.get("PR-0003")
    assert record is not None and record.state is State.NEW
    last = mixed.transitions("PR-0003")[-1]
    assert (last.from_state, last.to_state, last.owner) == (State.PARKED, State.NEW, "status-page")

    page = client.get(response.headers["location"]).text
    assert "PR-0003 was sent back to new" in page
    assert "PR-0003" not in listed(section(page, "parked"))


def test_retry_refuses_final_requests_and_redirects_only_within_the_site(
    serve: Callable[..., httpx.Client], mixed: Journal
) -> None:
    client = serve()
    refused = client.post("/requests/PR-0001/retry")
    assert refused.status_code == 409 and "final state" in refused.text
    moved = client.post("/requests/PR-0006/retry", data={"next": "//evil.example/steal"})
    assert moved.headers["location"] == "/?retried=PR-0006"


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"referer": "http://evil.example/page"},
        {"sec-fetch-site": "cross-site"},
    ],
)
def test_retry_refuses_posts_from_another_site(
    serve: Callable[..., httpx.Client], mixed: Journal, headers: dict[str, str]
) -> None:
    response = serve().post("/requests/PR-0003/retry", headers=headers)
    assert response.status_code == 403
    assert mixed.get("PR-0003").state is State.PARKED  # type: ignore[union-attr]


def test_retry_is_post_only(serve: Callable[..., httpx.Client], mixed: Journal) -> None:
    assert serve().get("/requests/PR-0003/retry").status_code == 405
    assert mixed.get("PR-0003").state is State.PARKED  # type: ignore[union-attr]


# -- what the page selects -------------------------------------------------------------------------


def test_newest_is_exact_across_windows_and_bounded_by_max_scan(
    journal: Journal, clock: Clock
) -> None:
    start = clock.now
    ages = {
        "PR-A": timedelta(days=40),
        "PR-B": timedelta(days=3),
        "PR-C": timedelta(minutes=30),
        "PR-D": timedelta(hours=5),
        "PR-E": timedelta(days=10),
    }
    for request_id, before in ages.items():
        clock.now = start - before
        put(journal, request_id, State.APPROVED)
    clock.now = start

    def ids(**options: Any) -> list[str]:
        return [r.request_id for r in newest(journal, now=lambda: start, **options).records]

    assert ids(limit=1) == ["PR-C"]
    assert ids(limit=3) == ["PR-C", "PR-D", "PR-B"]
    assert ids(limit=10) == ["PR-C", "PR-D", "PR-B", "PR-E", "PR-A"]
    assert ids(limit=2, filters=Filters(text="pr-a")) == ["PR-A"]
    truncated = newest(journal, limit=10, max_scan=2, now=lambda: start)
    assert truncated.truncated and truncated.scanned == 2


def test_why_waiting_prefers_the_latest_move_into_parked(journal: Journal) -> None:
    put(journal, "PR-1", State.PARKED, detail="engine: ambiguous", reason="engine: ambiguous")
    journal.force("PR-1", State.NEW, detail="retry", actor="ops")
    journal.force("PR-1", State.PARKED, detail="vendor ticket 4711 open", actor="cli:alice")
    record = journal.get("PR-1")
    assert record is not None and why_waiting(journal, record) == "vendor ticket 4711 open"


@pytest.mark.postgres
def test_listing_on_postgresql_gives_back_the_connection_it_stopped_reading_from(
    postgres_url: str,
) -> None:
    """A PostgreSQL iterator holds a pooled connection until closed: with a pool of one, a loop
    that stopped early and kept its iterator would leave the next query waiting for the pool's
    timeout."""
    import uuid

    import psycopg
    from psycopg import sql

    schema = f"ops_test_{uuid.uuid4().hex[:10]}"
    journal = open_journal(postgres_url, schema=schema, pool_size=1, min_size=1, connect_timeout=3)
    try:
        journal.migrate()
        for n in range(5):
            put(journal, f"PR-{n}", State.PARKED, reason="poison")
        records = journal.records()
        with streamed(records) as rows:
            assert next(rows).request_id == "PR-0"
        assert journal.counts()[State.PARKED] == 5  # `records` is still referenced here
        assert newest(journal, limit=10, max_scan=2).truncated
        parked = newest(journal, Filters(state=State.PARKED), limit=2).records
        assert [r.request_id for r in parked] == ["PR-4", "PR-3"]
    finally:
        journal.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")  # bounded, even behind a leaked transaction
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_the_page_names_a_latched_adapter_and_lists_the_answers_it_holds(
    serve: Callable[..., httpx.Client], journal: Journal
) -> None:
    """A latch and the answers the hold window keeps from Connect are what an operator must act
    on: both are on the page, the latch as an alert naming the reason and the resume command."""
    put(journal, "PR-0100", State.HELD, detail="refused held until 12:10: outstanding balance")
    reason = "10 refused answers in a row; resume with: cancel-processor resume vendor"
    latches = {"vendor": {"reason": reason, "since": "2026-12-05T12:00:00+00:00"}}
    html = serve(latches=lambda: latches).get("/").text
    assert f"adapter vendor makes no vendor call since 2026-12-05T12:00:00+00:00: {reason}" in html
    held = section(html, "held")
    assert listed(held) == ["PR-0100"] and "outstanding balance" in held
    assert "data-retry" not in held  # the choice is resume --release-held/--retry-held

    def unreadable() -> dict[str, dict[str, str]]:
        raise OSError("latch file cannot be read: Permission denied")

    html = serve(latches=unreadable).get("/").text
    assert "latches unknown: latch file cannot be read" in html  # never taken for "not latched"
