"""Choosing which journal records an operator sees: filters, newest first, and why a request is
parked.

The journal reads records in request-id order (keyset paging), not by time. :func:`newest` finds the
``limit`` most recently updated matches by scanning widening windows of ``updated_at`` (the last
hour, day, week, 30 days, then everything) and stops at the first window that holds ``limit``
matches: every record outside a window is older than every record inside it, so the answer is exact.
A busy journal answers from the first window; a quiet one, or a filter that matches little, costs a
scan of the whole table (streamed in pages, holding at most ``limit`` records). ``max_scan`` bounds
that scan; :attr:`Listing.truncated` says when it was reached.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from processor.journal.base import Journal, RequestRecord, State

__all__ = ["Filters", "Listing", "newest", "streamed", "why_waiting", "WINDOWS"]

WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=30), None)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TEXT_MAX = 200  # a search string longer than any identifier is a mistake or an attack


@dataclass(frozen=True, slots=True)
class Filters:
    """What the operator asked to see. Empty strings count as "not given"."""

    state: State | None = None
    product: str | None = None  # exact product id
    text: str | None = None  # case-insensitive substring of the request id or the subscription id

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Filters:
        """From query parameters ``state``, ``product`` and ``q``; raises ValueError for an unknown
        state."""
        state = (params.get("state") or "").strip()
        if state and state not in State._value2member_map_:
            raise ValueError(
                f"unknown state {state[:40]!r}; expected one of {', '.join(s.value for s in State)}"
            )
        product = (params.get("product") or "").strip()[:_TEXT_MAX]
        text = (params.get("q") or "").strip()[:_TEXT_MAX]
        return cls(State(state) if state else None, product or None, text or None)

    def query(self) -> dict[str, str]:
        """The filters as query parameters (to build links that keep them)."""
        params = {
            "state": self.state.value if self.state else None,
            "product": self.product,
            "q": self.text,
        }
        return {k: v for k, v in params.items() if v}

    def matches(self, record: RequestRecord) -> bool:
        if self.state is not None and record.state is not self.state:
            return False
        if self.product is not None and record.product_id != self.product:
            return False
        if self.text is not None:
            needle = self.text.lower()
            haystack = (record.request_id or "", record.subscription_id or "")
            return any(needle in value.lower() for value in haystack)
        return True


@dataclass(frozen=True, slots=True)
class Listing:
    records: list[RequestRecord]
    scanned: int
    truncated: bool  # max_scan was reached: older matches may be missing


@contextmanager
def streamed(records: Iterator[RequestRecord]) -> Iterator[Iterator[RequestRecord]]:
    """``records`` closed on the way out, even when the loop stops early: a PostgreSQL store's
    iterator holds a pooled connection (and a server-side cursor) until it is exhausted or
    closed."""
    try:
        yield records
    finally:
        close = getattr(records, "close", None)
        if callable(close):
            close()


def _updated(record: RequestRecord) -> tuple[datetime, str]:
    return (record.updated_at or _EPOCH, record.request_id)


def newest(
    journal: Journal,
    filters: Filters = Filters(),
    *,
    limit: int = 100,
    max_scan: int = 200_000,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Listing:
    """The ``limit`` most recently updated records matching ``filters``, newest first."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    states = [filters.state] if filters.state is not None else None
    scanned = 0
    start = now()
    for window in WINDOWS:
        since = None if window is None else start - window
        # A bounded min-heap on (updated_at, request_id): its root is the oldest record kept, and
        # request ids are unique, so two entries never compare their records.
        kept: list[tuple[tuple[datetime, str], RequestRecord]] = []
        with streamed(journal.records(states=states, updated_since=since)) as records:
            for record in records:
                scanned += 1
                if filters.matches(record):
                    entry = (_updated(record), record)
                    if len(kept) < limit:
                        heapq.heappush(kept, entry)
                    else:
                        heapq.heappushpop(kept, entry)
                if scanned >= max_scan:
                    return Listing(_newest_first(kept), scanned, truncated=True)
        if len(kept) >= limit or window is None:
            return Listing(_newest_first(kept), scanned, truncated=False)
    raise AssertionError("unreachable: the last window is unbounded")


def _newest_first(kept: list[tuple[tuple[datetime, str], RequestRecord]]) -> list[RequestRecord]:
    return [record for _, record in sorted(kept, key=lambda entry: entry[0], reverse=True)]


def why_waiting(journal: Journal, record: RequestRecord) -> str:
    """Why ``record`` waits for a person: the detail of its latest move into its current state (the
    engine's reason or the operator's ``park --reason``), else the record's own reason."""
    for transition in reversed(journal.transitions(record.request_id)):
        if transition.to_state is record.state and transition.from_state is not record.state:
            if transition.detail:
                return transition.detail
            break
    return record.reason or record.last_error or ""
