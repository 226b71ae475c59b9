"""The keyset cursor against servers whose ``created`` precision differs from what they serve.

A small in-memory server evaluates the two keyset terms the listing sends (``ge(created, ..)`` and
``out(id, ..)``) the way a real one might: comparing and ordering at whole seconds while serving
fractions, or serving whole seconds while comparing fractions, or returning rows out of order. The
listing must yield every row the server has, each once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from connect.client.rql import R
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.marketplace.paging import Page, iter_keyset, whole_second
from processor.model import parse_datetime

T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
_GE = re.compile(r"ge\(created,([^)]+)\)")
_OUT = re.compile(r"out\(id,\(([^)]*)\)\)")


class PrecisionServer:
    """``rows`` (id, created); ``mode``: ``exact``, ``compare_seconds`` or ``serve_seconds``;
    ``misplace``: ids served one page late (a server whose order and filter disagree)."""

    def __init__(
        self,
        rows: list[tuple[str, datetime]],
        mode: str,
        page_size: int,
        misplace: frozenset[str] = frozenset(),
    ) -> None:
        self.rows, self.mode, self.page_size, self.misplace = rows, mode, page_size, misplace
        self.queries: list[str] = []
        self.held: list[tuple[str, datetime]] = []

    def _key(self, created: datetime) -> datetime:
        return whole_second(created) if self.mode == "compare_seconds" else created

    def fetch(self, query: R, limit: int) -> Page:
        text = str(query)
        self.queries.append(text)
        ge, out = _GE.search(text), _OUT.search(text)
        low = parse_datetime(ge.group(1)) if ge else None
        excluded = set(out.group(1).split(",")) if out else set()
        matches = [
            (rid, created)
            for rid, created in self.rows
            if rid not in excluded and (low is None or self._key(created) >= low)
        ]
        matches.sort(key=lambda row: (self._key(row[1]), row[0]))
        page = [row for row in matches if row[0] not in self.misplace][:limit]
        late = [row for row in self.held if row[0] not in excluded]
        self.held = [row for row in matches if row[0] in self.misplace]
        page = (late + page)[:limit]
        return Page([self._serve(rid, created) for rid, created in page], None)

    def _serve(self, rid: str, created: datetime) -> dict[str, Any]:
        shown = whole_second(created) if self.mode == "serve_seconds" else created
        return {"id": rid, "created": shown.isoformat()}


def _listed(server: PrecisionServer) -> list[str]:
    return [row["id"] for row in iter_keyset(server.fetch, R().status.eq("pending"), 2)]


def _same_second(count: int) -> list[tuple[str, datetime]]:
    # ids sort against their fractions: an order by (second, id) is not the served order
    return [
        (f"PR-{count - i:04d}", T0 + timedelta(microseconds=100_000 * i + 7)) for i in range(count)
    ]


@pytest.mark.parametrize("mode", ["exact", "compare_seconds", "serve_seconds"])
def test_five_cancels_within_one_second_are_each_listed_once(mode: str) -> None:
    rows = _same_second(5)
    server = PrecisionServer(rows, mode, page_size=2)
    listed = _listed(server)
    assert sorted(listed) == sorted(rid for rid, _ in rows)
    assert len(listed) == len(set(listed))
    # the cursor never carries a fraction: the server's own precision cannot hide a row
    assert all(".1" not in q and ".2" not in q for q in server.queries)


def test_ties_across_seconds_and_page_boundaries() -> None:
    rows = [
        (f"PR-{second}-{n}", T0 + timedelta(seconds=second, microseconds=n * 1000))
        for second in range(4)
        for n in range(3)
    ]
    server = PrecisionServer(rows, "compare_seconds", page_size=2)
    listed = _listed(server)
    assert sorted(listed) == sorted(rid for rid, _ in rows)
    assert len(listed) == len(rows)


def test_a_row_served_after_its_cursor_moved_on_is_yielded_not_dropped() -> None:
    # PR-EARLY is served one page late, after rows of a later second: it sorts before the cursor.
    rows = [("PR-EARLY", T0), *[(f"PR-{n}", T0 + timedelta(seconds=1 + n)) for n in range(5)]]
    server = PrecisionServer(rows, "exact", page_size=2, misplace=frozenset({"PR-EARLY"}))
    listed = _listed(server)
    assert sorted(listed) == sorted(rid for rid, _ in rows)
    assert listed.count("PR-EARLY") == 1


_MODES = st.sampled_from(["exact", "compare_seconds", "serve_seconds"])


@settings(max_examples=150, deadline=None)
@given(
    offsets=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 999_999)), min_size=0, max_size=40
    ),
    mode=_MODES,
    page_size=st.integers(1, 7),
)
def test_any_precision_and_any_ties_list_every_row_once(
    offsets: list[tuple[int, int]], mode: str, page_size: int
) -> None:
    rows = [
        (f"PR-{i:03d}", T0 + timedelta(seconds=s, microseconds=us))
        for i, (s, us) in enumerate(offsets)
    ]
    server = PrecisionServer(rows, mode, page_size=page_size)
    listed = [row["id"] for row in iter_keyset(server.fetch, R().status.eq("pending"), page_size)]
    assert sorted(listed) == sorted(rid for rid, _ in rows)
    assert len(listed) == len(set(listed))
    assert len(server.queries) <= len(rows) + 1  # every page made progress
