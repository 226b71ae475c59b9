"""Keyset paging over pending requests: every request pending at the start of a pass, each once.

Offset paging over ``status=pending`` skips requests when the caller approves them during the
pass: the set shrinks under the window and the next offset jumps past requests never seen. Here
every page is asked with ``offset=0`` and starts at the second of the last request already seen::

    and(<base filters>, ge(created,<cursor second>), out(id,(<ids seen in that second>)))
    &ordering(created,id)&limit=<page>

so approvals (which only remove rows) can never move the window past an unseen request.

**The precision assumption.** Connect serves ``created`` with fractional seconds, and a server may
store, compare and order it at another precision than it serves (whole seconds in the database,
fractions in the JSON; or the reverse). The cursor therefore never carries a fraction: it is the
*whole second* (rounded down) of the last row of the page, in the server's order, and the ids
excluded with ``out(...)`` are every row seen in that second. What this assumes: the server
compares and orders ``created`` at whole seconds or finer, consistently with what it serves once
both are cut to the second (its order by ``created`` is the served order at second precision;
within a second any order). Under that assumption ``ge(created, <whole second>)`` returns every row
of that second and after, whatever the server's own precision; a server coarser than a second
(minutes) breaks it, and the final count (:mod:`processor.daemon.completeness`) then reports the
rows the listing could not see instead of a pass that claims to be complete.

Limits and failure modes:

- The order must be by ``created`` (then ``id``); the server must honour ``ge`` and ``out``.
- **A row the server returned is never dropped silently.** A row that sorts before the cursor
  (a server whose order or filter does not match the ``created`` it serves) is yielded if this pass
  has not yielded it yet; the cursor never moves backwards. The ids yielded in a pass are
  remembered (up to ``MAX_REMEMBERED``, the oldest forgotten first) so that a row is not yielded
  twice; past that bound a row the server returns again may be yielded again (harmless: the
  journal's claim makes a second offer a no-op), never dropped.
- A page that brings nothing new and does not move the cursor raises :class:`MarketplaceError`
  instead of looping (a server that ignores the filter).
- Several requests can share one second. Their ids travel in ``out(...)``; more than ``MAX_TIED``
  of them (requests created in the same second) would make the URL too long for common proxies,
  so the pass stops there with :class:`MarketplaceError` (the next pass starts afresh and finds the
  ones not yet handled).
- Requests created during the pass may be yielded too (harmless: they are pending); requests that
  return to pending with an old ``created`` (a scheduled request reaching its date) wait for the
  next pass.
- A row that cannot be placed (not an object, no id, a ``created`` that is no date) is yielded
  once per pass for the caller to record as malformed, never used as the cursor; one with an id is
  excluded from later pages with ``out(id, ...)``. More than ``MAX_UNPLACED`` of them end the pass.
- **A row the boundary refuses** (a NaN, a duplicate key, nesting past the cap) does not hold
  the others up. A refused page is not retried with backoff (:class:`PageRefused`: the same
  answer would be refused again); the next asks are for a quarter of the rows (100, 25, 6, 1),
  the limit staying small until the refused row is found; a one-row page refused twice (a body
  cut by the network is not the row's) is that row. It is yielded as ``{"id": <id read
  leniently from the refused answer>, UNREADABLE: <why>}`` (:data:`processor.model.UNREADABLE`),
  for the caller to record as malformed, and excluded from later pages like any malformed row
  with an id; then full pages resume. No readable id: the pass stops at it with
  :class:`MarketplaceError` saying so (nothing can step over a row without its id), and the
  final count reports what is left.
- Memory: one page, the ids of the cursor's second and at most ``MAX_REMEMBERED`` yielded ids.
  The page is fetched only when the previous one is consumed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connect.client.rql import R

from processor.marketplace.boundary import salvage_request_ids
from processor.marketplace.errors import MarketplaceError, PageRefused
from processor.marketplace.settings import rql_datetime
from processor.model import UNREADABLE, parse_datetime
from processor.urls import connect_id_problem

__all__ = [
    "Page",
    "iter_keyset",
    "placement",
    "fingerprint",
    "whole_second",
    "MAX_TIED",
    "MAX_UNPLACED",
    "MAX_REMEMBERED",
]

MAX_TIED = 250  # ~5.5 KB of ids in the URL
MAX_UNPLACED = (
    100  # malformed rows per pass; their ids join out(...) next to the tied ones (~2 KB more)
)
MAX_REMEMBERED = 50_000  # ids yielded in a pass, kept to yield none twice (a few MB at most)
_TOO_MANY_UNPLACED = (
    f"more than {MAX_UNPLACED} malformed pending requests in one listing; "
    "this pass stops here (each one is recorded as malformed)"
)


@dataclass(frozen=True)
class Page:
    items: list[Any]  # Connect's rows: JSON objects, or anything a broken server sent
    total: int | None  # Content-Range total of the query that fetched it (None if absent)


def placement(item: Any) -> tuple[str, datetime] | str:
    """``(id, created)`` of a row the keyset can place, else why it cannot (the row is
    malformed)."""
    if not isinstance(item, dict):
        return f"expected a JSON object, got {type(item).__name__}"
    item_id = item.get("id")
    if connect_id_problem("request", item_id) is not None:  # never into out(...) nor a URL
        return "no request id"
    created = parse_datetime(item.get("created"))
    if created is None:
        return "created is missing or not an ISO 8601 date"
    return str(item_id), created


def fingerprint(item: Any) -> str:
    """What identifies a row without a usable id within one pass: its id if it has one, else its
    text."""
    if isinstance(item, dict) and connect_id_problem("request", item.get("id")) is None:
        return str(item["id"])
    try:
        text = json.dumps(item, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(item)
    return "content:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def whole_second(moment: datetime) -> datetime:
    """``moment`` rounded down to its whole second (UTC): the cursor's precision."""
    return moment.astimezone(UTC).replace(microsecond=0)


def iter_keyset(fetch: Callable[[R, int], Page], base: R, page_size: int) -> Iterator[Any]:
    """Yield every row of ``base`` ordered by (created, id), one page in memory at a time.

    ``fetch(query, limit)`` returns the first ``limit`` rows of ``query`` (``offset=0``) ordered
    by ``created`` then ``id``, or raises :class:`PageRefused` for an answer the boundary refused;
    the refused row is then found with smaller pages (see :func:`_refused_row`). A row the keyset
    cannot place (not an object, no id, no date) is yielded once per pass too, for the caller to
    record as malformed; it never moves the cursor,
    and one with an id is excluded from the next pages by ``out(id, ...)`` so it cannot hold the
    listing up. A placed row is yielded unless this pass yielded it already: never dropped
    because it sorts before the cursor (see the module's precision assumption).
    """
    cursor: datetime | None = None  # a whole second
    tied: list[str] = []  # ids seen in the cursor's second, in the order seen
    tied_set: set[str] = set()
    yielded: dict[str, None] = {}  # ids yielded this pass (insertion order: oldest first)
    unplaced: list[str] = []  # ids of malformed rows already yielded: excluded from later pages
    unplaced_seen: set[str] = set()  # fingerprints of every malformed row already yielded
    limit = page_size  # smaller while a refused row is being found, then back up
    confirmed = False  # a one-row page was refused once already
    while True:
        query = base
        if cursor is not None:
            query = query & R().created.ge(rql_datetime(cursor))
        if tied or unplaced:
            query = query & R().id.out(tied + unplaced)
        try:
            page = fetch(query, limit)
        except PageRefused as refused:
            if limit > 1:
                limit = max(1, limit // 4)  # 100, 25, 6, 1: four answers to find one row
                continue
            if not confirmed:
                confirmed = True  # once more: a body cut short by the network is not the row's
                continue
            row = _refused_row(refused, unplaced_seen)
            unplaced_seen.add(row["id"])
            unplaced.append(row["id"])
            if len(unplaced_seen) > MAX_UNPLACED:
                raise MarketplaceError(_TOO_MANY_UNPLACED) from None
            limit, confirmed = page_size, False
            yield row
            continue
        confirmed = False  # (a smaller limit stays until the refused row is found: growing
        # it again would fetch that row again and again)
        fresh = 0
        last: datetime | None = None  # the second of the page's last placed row, server order
        seconds: dict[str, datetime] = {}  # id -> second, for the placed rows of this page
        for item in page.items:
            placed = placement(item)
            if isinstance(placed, str):
                key = fingerprint(item)
                if key in unplaced_seen:
                    continue
                if len(unplaced_seen) >= MAX_UNPLACED:
                    raise MarketplaceError(_TOO_MANY_UNPLACED)
                unplaced_seen.add(key)
                if not key.startswith("content:"):
                    unplaced.append(key)
                fresh += 1
                yield item
                continue
            item_id, created = placed
            if item_id in unplaced_seen:
                continue
            last = whole_second(created)
            seconds[item_id] = last
            if item_id in yielded or item_id in tied_set:
                continue  # the server ignored a keyset filter; never yield a row twice
            fresh += 1
            yielded[item_id] = None
            if len(yielded) > MAX_REMEMBERED:
                del yielded[next(iter(yielded))]
            yield item
        if _last_page(page, limit):
            return
        moved = False
        if last is not None and (cursor is None or last > cursor):
            cursor, tied, tied_set, moved = last, [], set(), True
        if cursor is not None:
            for item_id, second in seconds.items():
                if second == cursor and item_id not in tied_set:
                    tied.append(item_id)
                    tied_set.add(item_id)
                    moved = True
        if fresh == 0 and not moved:
            raise MarketplaceError(
                "listing pending requests made no progress: the server ignored the keyset filter "
                "or sent the same malformed rows again"
            )
        if len(tied) > MAX_TIED:
            when = rql_datetime(cursor)  # type: ignore[arg-type]
            raise MarketplaceError(
                f"more than {MAX_TIED} pending requests share the created time {when} "
                "(to the second); this pass stops here and the next one resumes"
            )


def _last_page(page: Page, limit: int) -> bool:
    if not page.items:
        return True
    if page.total is not None:
        # offset is always 0, so the total counts exactly the rows not yet seen.
        return len(page.items) >= page.total
    return len(page.items) < limit


def _refused_row(refused: PageRefused, seen: set[str]) -> dict[str, Any]:
    """What a one-row page the boundary refused twice is yielded as: its request id, read
    leniently from the refused answer, and why (the caller records it as malformed, and the
    next pages exclude it with ``out(id, ...)``). Without a readable id nothing can step over
    it: the pass stops there, saying so, and the final count reports what is left."""
    ids = [i for i in salvage_request_ids(refused.body) if connect_id_problem("request", i) is None]
    if len(ids) != 1 or ids[0] in seen:
        raise MarketplaceError(
            f"a pending request Connect sends cannot be read ({refused}) and no request id could "
            "be read from it; this pass stops at it, and the rows after it wait for the next pass"
        ) from None
    return {"id": ids[0], UNREADABLE: str(refused).split(": ", 1)[-1]}
