"""A pass proves its own completeness: Connect's own count of what is still pending, set against
what the journal holds.

The keyset listing is one way to see the backlog; a count Connect answers for the same selector
(``Content-Range`` of a one-page read, with the ids the journal accounts for excluded) is another
that does not depend on the cursor, on how the server orders ``created`` or on the precision it
compares it at. At the end of a pass:

- ``run --once`` (:meth:`~processor.daemon.core.Daemon.run`): the pending requests matching the
  selector and created before the run started (by this host's clock: a backfill on a live system
  is not held up by the cancels customers make while it runs; the next run takes those), less
  those the journal holds as waiting by design (:data:`BY_DESIGN`: routed to a
  person, scheduled, suspended, parked, held), must be none. Otherwise it lists again, at most
  :data:`RELISTS` times, and then reports what is left by name, unfinished (exit 1): a backfill
  never exits 0 while something it selected is still pending and nobody knows why.
- the daemon, after every pass: the same count over the requests created before the pass began
  (less :data:`DAEMON_MARGIN`), with the requests the journal holds open (in flight or deferred:
  they are known, and the next pass takes them) also accounted for. What is
  left is a gap in the listing: one warning line (``pass_incomplete``, with the count and up to ten
  ids) and the gauge ``cancel_pending_unaccounted``. The next pass lists them again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from processor.journal.base import Journal
from processor.marketplace import Marketplace, Selector
from processor.states import FINAL_STATES, State

__all__ = ["BY_DESIGN", "OPEN", "RELISTS", "DAEMON_MARGIN", "Gap", "measure"]

# Waiting by design: the processor leaves these pending on Connect on purpose (or Connect moved
# them out of pending itself: scheduled), so a final count may still hold them.
BY_DESIGN: tuple[State, ...] = (
    State.WAITING_HUMAN,
    State.SCHEDULED,
    State.SUSPENDED,
    State.PARKED,
    State.HELD,  # a refusal or "already gone" held back from Connect (guard.hold)
)
# Open: known to the journal and not final (in flight, deferred, waiting for a timer).
OPEN: tuple[State, ...] = tuple(s for s in State if s not in FINAL_STATES)
RELISTS = 3  # --once: passes run again while Connect counts more than the journal accounts for
# The daemon counts the requests created before its pass began, less this much: requests that
# arrive during a pass are the next pass's, and Connect's clock may run ahead of this host's.
DAEMON_MARGIN = timedelta(seconds=60)
_LISTABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class Gap:
    """Pending requests Connect counted that the journal does not account for."""

    count: int
    names: tuple[str, ...] = ()

    def describe(self) -> str:
        shown = ", ".join(self.names)
        more = self.count - len(self.names)
        tail = f" and {more} more" if more > 0 and shown else ""
        return (
            f"{self.count} pending request(s) matching the selection that the journal does not "
            f"hold as waiting: {shown or '(ids not read)'}{tail}"
        )


def measure(
    marketplace: Marketplace,
    journal: Journal,
    selector: Selector,
    *,
    open_rows: bool,
    created_before: datetime | None = None,
) -> Gap:
    """Connect's count of the selector's pending requests the journal does not account for:
    :data:`BY_DESIGN` rows, and with ``open_rows`` the :data:`OPEN` ones too; only those created
    before ``created_before`` (cut to the second) when given. May raise
    :class:`~processor.marketplace.MarketplaceError` (Connect could not answer)."""
    if created_before is not None:
        bound = created_before.astimezone(UTC).replace(microsecond=0)
        if selector.created_until is None or bound < selector.created_until:
            selector = replace(selector, created_until=bound)
    states = sorted(set(BY_DESIGN) | (set(OPEN) if open_rows else set()), key=lambda s: s.value)
    # Only ids that can travel in an RQL list: a journal row written before ids were checked at
    # the boundary must not make the count unreadable (such a request, if pending, is then
    # counted as unaccounted: reported, never hidden).
    accounted = (
        record.request_id
        for record in journal.records(states=states)
        if _LISTABLE_ID.fullmatch(record.request_id)
    )
    count, names = marketplace.count_unaccounted(selector, accounted)
    return Gap(count, tuple(names))
