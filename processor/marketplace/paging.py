"""Keyset paging over pending requests: every request pending at the start of a pass, each once.

Offset paging over ``status=pending`` skips requests when the caller approves them during the
pass: the set shrinks under the window and the next offset jumps past requests never seen. Here
every page is asked with ``offset=0`` and starts after the last request already yielded::

    and(<base filters>, ge(created,<cursor>), out(id,(<ids yielded with created == cursor>)))
    &ordering(created,id)&limit=<page>

so approvals (which only remove rows) can never move the window past an unseen request.

Limits and failure modes:

- The order must be by ``created`` (then ``id``); the server must honour ``ge`` and ``out``.
  A page that brings nothing new while claiming more raises :class:`MarketplaceError` instead of
  looping, and a row already yielded is never yielded again even if a server ignores a filter.
- Connect's ``created`` has one-second resolution, so several requests can share the cursor. Their
  ids travel in ``out(...)``; more than ``MAX_TIED`` of them (requests created in the same second)
  would make the URL too long for common proxies, so the pass stops there with
  :class:`MarketplaceError` (the next pass starts afresh and finds the ones not yet handled).
- Requests created during the pass may be yielded too (harmless: they are pending); requests that
  return to pending with an old ``created`` (a scheduled request reaching its date) wait for the
  next pass.
- A row that cannot be placed (not an object, no id, a ``created`` that is no date) is yielded
  once per pass for the caller to record as malformed, never used as the cursor; one with an id is
  excluded from later pages with ``out(id, ...)``. More than ``MAX_UNPLACED`` of them end the pass.
- Memory: one page plus the tied ids. The page is fetched only when the previous one is consumed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connect.client.rql import R

from processor.marketplace.errors import MarketplaceError
from processor.marketplace.settings import rql_datetime
from processor.model import parse_datetime
from processor.urls import connect_id_problem

__all__ = ["Page", "iter_keyset", "placement", "fingerprint", "MAX_TIED", "MAX_UNPLACED"]

MAX_TIED = 250  # ~5.5 KB of ids in the URL
MAX_UNPLACED = (
    100  # malformed rows per pass; their ids join out(...) next to the tied ones (~2 KB more)
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


def iter_keyset(fetch: Callable[[R], Page], base: R, page_size: int) -> Iterator[Any]:
    """Yield every row of ``base`` ordered by (created, id), one page in memory at a time.

    ``fetch(query)`` returns the first ``page_size`` rows of ``query`` (``offset=0``) ordered by
    ``created`` then ``id``. A row the keyset cannot place (not an object, no id, no date) is
    yielded once per pass too, for the caller to record as malformed; it never moves the cursor,
    and one with an id is excluded from the next pages by ``out(id, ...)`` so it cannot hold the
    listing up.
    """
    cursor: datetime | None = None
    tied: list[str] = []  # ids yielded whose created == cursor, in yield order
    tied_set: set[str] = set()
    unplaced: list[str] = []  # ids of malformed rows already yielded: excluded from later pages
    unplaced_seen: set[str] = set()  # fingerprints of every malformed row already yielded
    while True:
        query = base
        if cursor is not None:
            query = query & R().created.ge(rql_datetime(cursor))
        if tied or unplaced:
            query = query & R().id.out(tied + unplaced)
        page = fetch(query)
        fresh = 0
        for item in page.items:
            placed = placement(item)
            if isinstance(placed, str):
                key = fingerprint(item)
                if key in unplaced_seen:
                    continue
                if len(unplaced_seen) >= MAX_UNPLACED:
                    raise MarketplaceError(
                        f"more than {MAX_UNPLACED} malformed pending requests in one listing; "
                        "this pass stops here (each one is recorded as malformed)"
                    )
                unplaced_seen.add(key)
                if not key.startswith("content:"):
                    unplaced.append(key)
                fresh += 1
                yield item
                continue
            item_id, created = placed
            if cursor is not None and (created < cursor or item_id in tied_set):
                continue  # the server ignored a keyset filter; never yield a row twice
            if item_id in unplaced_seen:
                continue
            fresh += 1
            yield item
            if cursor is None or created > cursor:
                cursor, tied, tied_set = created, [item_id], {item_id}
            elif created == cursor:
                tied.append(item_id)
                tied_set.add(item_id)
        if _last_page(page, page_size):
            return
        if fresh == 0:
            raise MarketplaceError(
                "listing pending requests made no progress: the server ignored the keyset filter "
                "or sent the same malformed rows again"
            )
        if len(tied) > MAX_TIED:
            when = rql_datetime(cursor)  # type: ignore[arg-type]
            raise MarketplaceError(
                f"more than {MAX_TIED} pending requests share the created time {when}; "
                "this pass stops here and the next one resumes"
            )


def _last_page(page: Page, page_size: int) -> bool:
    if not page.items:
        return True
    if page.total is not None:
        # offset is always 0, so the total counts exactly the rows not yet seen.
        return len(page.items) >= page.total
    return len(page.items) < page_size
