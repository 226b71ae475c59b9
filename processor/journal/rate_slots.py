"""A vendor rate limit shared by every process on one PostgreSQL journal: one slot per call.

An adapter limited to ``calls`` calls per window owns ``calls`` rows of the table ``rate_slots``
(migration 0003), each holding when the call that last used it was taken. :meth:`RateSlots.take`
is one statement (``take_rate_slot`` in ``sql/postgres.sql``): it takes the least recently used
slot when that use is a whole window old, by the database clock, so replicas whose clocks disagree
still agree; else it answers how long until the oldest slot frees. ``calls`` slots never let more
than ``calls`` calls start within one window, whichever replicas take them. Why this design rather
than a share per replica, and what it costs, is told in :mod:`processor.adapters.rate`, which
waits; this module only takes.

Written once over a store's connector, as :mod:`processor.journal.schema` is; a dialect that has
no ``take_rate_slot`` query (SQLite: one host) offers no shared limit
(:func:`shared_rate_slots` answers None), and each adapter keeps its own.

Failure modes: an unreachable database raises :class:`~processor.journal.base.JournalError` (the
caller decides what a call does without a slot); a schema without the table
:class:`~processor.journal.base.SchemaError` (run the migrations).
"""

from __future__ import annotations

import math

from processor.journal.base import Journal
from processor.journal.connector import Connector
from processor.journal.store import StoreJournal

__all__ = ["MIN_WAIT", "RateSlots", "shared_rate_slots"]

# The shortest wait answered: a slot another process is taking at this very moment shows as free
# already; asking again at once would spin.
MIN_WAIT = 0.005


class RateSlots:
    """The shared slots of every adapter on one store."""

    def __init__(self, connector: Connector) -> None:
        self._c = connector
        self._q = connector.queries

    def take(self, adapter: str, calls: int, window: float) -> float:
        """Take one of ``adapter``'s ``calls`` slots whose last use is ``window`` seconds old:
        0.0 when taken, else the seconds to wait before asking again (from :data:`MIN_WAIT` to
        ``window``). Slots are added on first use, and when ``calls`` grows."""
        if not adapter or not isinstance(adapter, str):
            raise ValueError(f"adapter must be a non-empty name, got {adapter!r}")
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise ValueError(f"calls must be a whole number from 1, got {calls!r}")
        if not 0 < window < math.inf:
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        params = {"adapter": adapter, "calls": calls, "window": float(window)}
        for _ in range(2):
            with self._c.atomic() as tx:
                row = tx.one(self._q["take_rate_slot"], params)
            assert row is not None  # an aggregate always answers one row
            if row["slot"] is not None:
                return 0.0
            if row["slots"] >= calls:
                return min(max(float(row["wait"]), MIN_WAIT), window)
            with self._c.atomic() as tx:  # first use (or more calls than before): add the slots
                tx.run(self._q["add_rate_slots"], params)
        return MIN_WAIT  # every slot just added was taken by other processes first


def shared_rate_slots(journal: Journal) -> RateSlots | None:
    """The slots shared through ``journal``, or None when its store has none (SQLite, a fake)."""
    if not isinstance(journal, StoreJournal) or "take_rate_slot" not in journal.connector.queries:
        return None
    return RateSlots(journal.connector)
