"""The hold window: a refusal or an "already gone" waits in the journal before Connect is told.

Both close the request on Connect without a termination at the vendor, and both are final for the
customer: a refused cancellation cannot be taken back, an approval without a termination leaves a
subscription billed at the vendor and gone on Connect. A vendor gone wrong (a misread outcome map,
a router that answers every path "not found", a bug that refuses everything) produces exactly
these, for every request. The anomaly guard (:mod:`processor.engine.guard`) notices such a burst,
but only after it happened; so ``VendorResults.hold`` (:mod:`processor.engine.vendor`) records
the answer at once (state ``held``, the answer and its end in the row's ``held``, the end
as the row's timer) and Connect hears of it only when ``guard.hold`` is over. By then the guard
has seen the burst (ten in a row, or the rate over its window with a minimum sample) and latched
the adapter, and the held answers stay held until a person chooses:

- ``cancel-processor resume ADAPTER --release-held``: they were right after all; Connect is told;
- ``cancel-processor resume ADAPTER --retry-held``: the vendor is called again for each (the
  step starts afresh: a refusal or "already gone" says the call did not act, so no termination is
  repeated);

``resume`` marks every held row of the adapter with the choice and makes it due at once (the
journal carries the choice: every replica follows it), then lifts the latch.

Why ten minutes by default: long enough for the guard to gather its minimum sample at any rate of
cancels worth a storm (ten answers in ten minutes), short enough that a genuine refusal reaches
the customer within the same working session, well inside the days Connect gives a vendor to
answer. A hold of 0 turns the window off (the guard then only limits the damage).

The hold is durable: the state, the answer and its end are in the journal; a restart keeps them
and the timer loop takes them up (the crash window ``after_hold``). The guard's memory of recent
answers is not: a daemon that starts counts the rows held now as recent answers
(:meth:`Hold.recall`), so a restart in the middle of a burst does not reset the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from processor.engine.base import Mover
from processor.engine.results import Stepped
from processor.engine.rowdata import RowData
from processor.engine.transitions import Event, returned_to, settling
from processor.engine.vendor import TERMINATE, VendorGate, VendorResults
from processor.journal.base import Claim, Journal, State
from processor.model import CancelRequest
from processor.observe import get_logger
from processor.policy.rules import Decision
from processor.policy.timing import iso

__all__ = ["Hold", "LATCHED_RECHECK", "Recalled"]

# Seconds between looks at a held row whose adapter is latched. ``resume`` makes the rows it
# marks due at once (Journal.force with ``due``), so this only bounds how long a latch lifted by
# other means keeps them.
LATCHED_RECHECK = 300.0


@dataclass(frozen=True, slots=True)
class Recalled:
    adapter: str
    outcome: str
    at: datetime


_ANSWERS = frozenset({"terminated", "refused", "already_gone"})
_RECALLED = 5_000  # rows read back per kind at start: a bound, far above any guard window


class Hold:
    """The step that runs in ``held`` (the module docstring)."""

    def __init__(self, mover: Mover, gate: VendorGate, results: VendorResults) -> None:
        self.mover = mover
        self.gate = gate
        self.results = results

    def step(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped | None:
        """Tell Connect, call the vendor again, stay held, or nothing yet (None)."""
        data = RowData.of(claim.record)
        held = data.held
        if request.status and request.status != "pending":
            # Closed on Connect behind the journal's back (read fresh when the timer fell due):
            # the table's settling row, as the daemon's settle would (a person looks).
            event, why = settling(claim.state, request.status)
            detail = f"settled: request is {request.status} on Connect"
            return self.mover.move(claim, request, event, reason=why, detail=detail)
        if held is None:
            why = "held, but the held answer cannot be read from the journal: a person decides"
            return self.mover.move(claim, request, Event.PARK, reason=why)
        choice = held.choice
        if choice is None:
            self.gate.guard.sync()
            breaker = self.gate.breakers.get(held.adapter)
            if breaker is not None and breaker.latched is not None:
                why = f"held while the adapter is latched ({breaker.latched})"
                return self.mover.defer(claim, request, LATCHED_RECHECK, why)
            if self.mover.clock() < held.until:
                return None  # the hold runs on; the row's timer is its end
            choice = "release"
        log = get_logger(**request.log_context())
        if choice == "retry":
            log.info("held_retried", adapter=held.adapter, held=held.kind)
            back = returned_to(data.step_from)
            detail = f"retry-held: the vendor is called again (it answered {held.kind})"
            return self.mover.move(
                claim, request, back, data=data.retried_after_held(), detail=detail
            )
        log.info("held_released", adapter=held.adapter, held=held.kind, since=iso(held.at))
        if held.kind == "refused":
            return self.mover.move(
                claim,
                request,
                Event.REFUSE,
                reason=held.reason,
                data=data.step_finished(),
                detail=f"hold over: refused ({held.reason})",
            )
        # Only a terminate's "already gone" is held (a suspend's leads to a terminate later).
        detail = f"hold over: {held.reason}"
        return self.results.step_done(claim, request, TERMINATE, held.kind, detail)

    @staticmethod
    def recall(
        journal: Journal, window: float, now: datetime | None = None, limit: int = _RECALLED
    ) -> list[Recalled]:
        """The final vendor answers of the last ``window`` seconds the journal shows, oldest
        first: the rows held now (their answer and when it came) and the rows whose last
        outcome, recorded within the window, was a termination, a refusal or "already gone"
        (when their row last changed). What a starting daemon's guard counts as recent (the
        module docstring); rows without an adapter recorded are left out."""
        moment = now or datetime.now(UTC)
        since = moment - timedelta(seconds=window)
        found: list[Recalled] = []
        for record in journal.records(states=[State.HELD], limit=limit):
            held = RowData.of(record).held
            if held is not None and since <= held.at <= moment:
                found.append(Recalled(held.adapter, held.kind, held.at))
        after = (State.TERMINATED, State.APPROVED, State.REFUSING, State.FAILED)
        for record in journal.records(states=after, updated_since=since, limit=limit):
            adapter = RowData.of(record).adapter
            if adapter and record.outcome in _ANSWERS and record.updated_at is not None:
                found.append(Recalled(adapter, str(record.outcome), record.updated_at))
        return sorted(found, key=lambda r: r.at)
