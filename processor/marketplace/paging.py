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
- Memory: one page plus the tied ids. The page is fetched only when the previous one is consumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator

from connect.client.rql import R

from processor.marketplace.errors import MarketplaceError
from processor.marketplace.settings import rql_datetime
from processor.model import parse_datetime

__all__ = ["Page", "iter_keyset", "MAX_TIED"]

MAX_TIED = 250  # ~5.5 KB of ids in the URL


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int | None  # Content-Range total of the query that fetched it (None if absent)


def iter_keyset(fetch: Callable[[R], Page], base: R, page_size: int) -> Iterator[dict[str, Any]]:
    """Yield every row of ``base`` ordered by (created, id), one page in memory at a time.

    ``fetch(query)`` returns the first ``page_size`` rows of ``query`` (``offset=0``) ordered by
    ``created`` then ``id``.
    """
    cursor: datetime | None = None
    tied: list[str] = []  # ids yielded whose created == cursor, in yield order
    tied_set: set[str] = set()
    while True:
        query = base
        if cursor is not None:
            query = query & R().created.ge(rql_datetime(cursor))
            if tied:
                query = query & R().id.out(tied)
        page = fetch(query)
        fresh = 0
        for item in page.items:
            item_id = str(item.get("id") or "")
            created = parse_datetime(item.get("created"))
            if cursor is not None and (created is None or created < cursor or item_id in tied_set):
                continue  # the server ignored a keyset filter; never yield a row twice
            fresh += 1
            yield item
            if created is None:
                continue  # cannot be placed (first page only); the cursor stays
            if cursor is None or created > cursor:
                cursor, tied, tied_set = created, [item_id], {item_id}
            elif created == cursor:
                tied.append(item_id)
                tied_set.add(item_id)
        if _last_page(page, page_size):
            return
        if fresh == 0 or cursor is None:
            raise MarketplaceError(
                "listing pending requests made no progress: the server ignored the keyset filter "
                "or the requests lack a created timestamp"
            )
        if len(tied) > MAX_TIED:
            raise MarketplaceError(
                f"more than {MAX_TIED} pending requests share the created time {rql_datetime(cursor)}; "
                "this pass stops here and the next one resumes"
            )


def _last_page(page: Page, page_size: int) -> bool:
    if not page.items:
        return True
    if page.total is not None:
        # offset is always 0, so the total counts exactly the rows not yet seen.
        return len(page.items) >= page.total
    return len(page.items) < page_size
