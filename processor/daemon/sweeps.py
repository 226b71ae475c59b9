"""The daemon's journal sweeps: due timers, stranded claims, rows to settle, owed notes.

What each is for is told in :mod:`processor.daemon.core` (a pass, steps 3 to 5, and the takeover
every half lease). Each sweep reads the journal, hands work to the pool
(:mod:`processor.daemon.pool`) or settles rows itself, and stops early when the daemon is stopping.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from processor.daemon.pool import WorkerPool
from processor.daemon.summary import Tally
from processor.engine.core import Engine
from processor.journal.base import JournalError, JournalFull, RequestRecord, State
from processor.marketplace import Marketplace, MarketplaceError, Selector, TransientError
from processor.observe import get_logger
from processor.states import FINAL_STATES, STRANDED_STATES, TIMER_STATES

__all__ = ["Sweeps"]

log = get_logger(component="daemon")
_VANISHED_CHECKED = 1000  # waiting rows compared with one pass's listing
_RENOTES_PER_PASS = 100  # owed notes posted per pass: one or two Connect calls each, in the loop
_TAKEOVERS_PER_SWEEP = (
    100  # stranded claims handed on per sweep: a dead replica held 2 x concurrency
)
_HANDED_REMEMBERED = 10_000  # (request id, fence) pairs: a few hundred KB, then forgotten at once
_RENOTE_WITHIN = timedelta(
    days=7
)  # an owed note older than this is no news to the customer any more


class Sweeps:
    def __init__(
        self,
        engine: Engine,
        marketplace: Marketplace,
        selector: Selector,
        stop: threading.Event,
        pool: WorkerPool,
        tally: Tally,
    ) -> None:
        self.engine = engine
        self.marketplace = marketplace
        self.selector = selector
        self.stop = stop
        self.pool = pool
        self.tally = tally
        self.next_takeover = 0.0  # time.monotonic() of the next look for stranded claims
        # (request id, fence) of stranded claims already handed on: one the policy now ignores is
        # left as it is, as the listing leaves it, and is not read from Connect every sweep.
        self.handed: set[tuple[str, int]] = set()

    def selected(self, record: RequestRecord) -> bool:
        s = self.selector
        return not (
            (s.products and record.product_id not in s.products)
            or (s.marketplaces and record.marketplace_id not in s.marketplaces)
            or (s.environments and record.environment not in s.environments)
            or (s.request_ids and record.request_id not in s.request_ids)
        )

    def timers(self) -> None:
        """Run the journal's due timers, ``concurrency`` at a time, at most ``timers_per_pass``."""
        engine, journal = self.engine, self.engine.journal
        settings = engine.settings
        budget = settings.timers_per_pass
        while budget > 0 and not self.stop.is_set():
            try:
                due = journal.claim_due(
                    engine.owner,
                    engine.lease_seconds,
                    min(settings.concurrency, budget),
                    states=TIMER_STATES,
                )
            except JournalFull:
                raise  # weather: the pass says it once (Daemon.run_pass)
            except JournalError as exc:
                log.warning("timers_not_claimed", error=str(exc))
                return
            if not due:
                return
            budget -= len(due)
            for claim in due:
                if self.selected(claim.record):
                    self.pool.submit_timer(claim)
                else:
                    journal.release(claim)
            self.pool.drain(None)

    def take_over(self, limit: int = _TAKEOVERS_PER_SWEEP) -> int:
        """Hand on the claims a dead or frozen process left behind, at most every half lease;
        how many went to the pool or were settled."""
        now = time.monotonic()
        if now < self.next_takeover or self.stop.is_set():
            return 0
        self.next_takeover = now + self.engine.lease_seconds / 2
        try:
            stranded = self.engine.journal.stranded(states=STRANDED_STATES, limit=limit)
        except JournalFull as exc:  # weather: the pass says it once (Daemon.run_pass)
            self.pool.note_full(str(exc))
            return 0
        except JournalError as exc:
            log.warning("stranded_not_listed", error=str(exc))
            return 0
        handed = 0
        for record in stranded:
            request_id = record.request_id
            busy_here = self.pool.busy(request_id)  # our own worker, its renewal late: not stranded
            if (
                self.stop.is_set()
                or busy_here
                or (request_id, record.fence) in self.handed
                or not self.selected(record)
            ):
                continue
            try:
                payload = self.marketplace.get_request(request_id)
            except TransientError as exc:
                log.warning("stranded_not_read", request_id=request_id, error=str(exc))
                break  # Connect is in trouble: the next sweep, or the listing, comes back to them
            except MarketplaceError as exc:
                log.warning("stranded_not_read", request_id=request_id, error=str(exc))
                continue
            log.info(
                "stranded_claim_taken_over",
                request_id=request_id,
                state=record.state.value,
                holder=record.lease_owner,
                status=payload.get("status"),
            )
            self.engine.metrics.stranded.inc()
            if len(self.handed) >= _HANDED_REMEMBERED:
                self.handed.clear()  # forgetting costs one more read of Connect each, no more
            self.handed.add((request_id, record.fence))
            handed += 1
            if payload.get("status") in ("pending", "revoking"):
                self.pool.submit(payload)
            else:
                self.settle([request_id])
        return handed

    def settle_stale(self, limit: int = 200) -> None:
        """Rows left open by a crash after Connect acted (they no longer show in the poll)."""
        quiet_since = self.engine.clock() - timedelta(seconds=self.engine.lease_seconds)
        stale = self.engine.journal.records(
            states=STRANDED_STATES, updated_until=quiet_since, limit=limit
        )
        self.settle([r.request_id for r in stale])

    def renote(self, limit: int = _RENOTES_PER_PASS) -> int:
        """Post notes that were owed (the daemon's pass, step 5); how many were recorded."""
        engine = self.engine
        if not engine.settings.notes:
            return 0
        now = engine.clock()
        try:
            owed = engine.journal.unnoted(
                updated_until=now - timedelta(seconds=engine.lease_seconds),
                updated_since=now - _RENOTE_WITHIN,
                limit=limit,
            )
        except JournalFull:
            raise  # weather: the pass says it once (Daemon.run_pass)
        except JournalError as exc:
            log.warning("notes_not_listed", error=str(exc))
            return 0
        posted = 0
        for record in owed:
            if self.stop.is_set():
                break
            if not self.selected(record):
                continue
            try:
                posted += engine.renote(record)
            except TransientError as exc:
                # Connect is in trouble: every other note waits the same retries: next pass.
                log.warning("notes_deferred", request_id=record.request_id, error=str(exc))
                break
            except JournalFull:
                raise  # weather: the pass says it once (Daemon.run_pass)
            except JournalError as exc:
                log.warning("note_not_recorded", request_id=record.request_id, error=str(exc))
                break
        if posted:
            log.info("owed_notes_posted", count=posted)
        engine.metrics.notes_owed.set(len(owed) - posted)
        return posted

    def settle_vanished(self) -> None:
        """Requests routed to a person that left the pending list: the person acted on Connect."""
        s = self.selector
        if s.request_ids or s.created_since or s.created_until:
            return  # a narrowed listing proves nothing about what it did not select
        waiting = self.engine.journal.records(states=[State.WAITING_HUMAN], limit=_VANISHED_CHECKED)
        seen = self.tally.waiting_seen
        self.settle(
            [r.request_id for r in waiting if self.selected(r) and r.request_id not in seen]
        )

    def settle(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            if self.stop.is_set():
                return
            try:
                result = self.engine.settle(request_id)
            except MarketplaceError as exc:
                log.warning("settle_failed", request_id=request_id, error=str(exc))
                continue
            if result in FINAL_STATES:
                log.info("request_settled", request_id=request_id, state=result.value)
                self.tally.record(request_id, result)
