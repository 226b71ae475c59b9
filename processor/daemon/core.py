"""The loop: poll Connect, hand each pending cancel to a bounded worker pool, run timers, repeat.

A pass, in order:

1. lists every request pending at its start (keyset paging in the gateway, so approvals made during
   the pass never shift the window) and submits each to the pool; a request already in flight in
   this process is not submitted twice, and the journal's lease keeps other processes off it.
   Requests whose policy batches them are grouped by customer and adapter and submitted as one
   work item (:meth:`Engine.handle_batch`) when the group is full or the listing ends;
2. when a policy schedules on Connect, lists ``revoking`` cancels and confirms those this processor
   scheduled (:meth:`Engine.handle` recognises them);
3. runs the journal's due timers (``claim_due``): grace periods that ended, purges whose retention
   ran out, steps a crash interrupted on requests no poll lists any more (:meth:`Engine.resume`),
   at most ``timers_per_pass``; a narrowed run (``--product``, ``--request-id``...) runs only the
   timers of rows it selects (by product, marketplace, environment, id);
4. settles rows Connect closed behind the journal's back: rows left open by a crash, and requests
   routed to a person who then approved or failed them on Connect;
5. when notes are on, posts the notes the journal says are owed (``unnoted``): a state was reached
   but its note failed (Connect outage, lost lease) or the process died before it was recorded.
   Only rows quiet for a lease (a live worker posts its own), changed within ``_RENOTE_WITHIN``
   (turning notes on, or upgrading a journal, does not write to long-closed requests), at most
   ``_RENOTES_PER_PASS``; a transient Connect failure ends this for the pass.

Every half lease, during a pass (between listed requests, and after the listing) and between
passes: takes over the claims a dead or frozen process left behind (``stranded``: its lease ran
out unreleased). The listing would reach them too, but on a large backlog that is a whole pass
later (or a whole poll interval), and until then the request waits with its vendor step half done.
One read of Connect each: still pending (or
revoking), the request goes to the pool like a listed one (the claim bumps the fence, so a frozen
holder that wakes up finds its lease lost); closed on Connect meanwhile, the row is settled.

Shutdown (SIGTERM/SIGINT, or :meth:`Daemon.stop`): nothing new is claimed, in-flight requests
finish their current step, and :meth:`Daemon.run` returns within ``shutdown_timeout``. Whatever
was cut short is safe: the journal resumes it on the next start.

``once=True`` drains: it repeats passes while requests it touched are unfinished and due within
``once_max_wait``; then Connect counts what is still pending for the selector, and while that
holds requests the journal does not account for as waiting, it lists again (at most
:data:`~processor.daemon.completeness.RELISTS` times) before it returns. The daemon runs the same
count after every pass and reports a gap (:mod:`processor.daemon.completeness`). Requests that
wait for a later date (scheduled on Connect, suspended for a grace period) or for a person
(routed by policy) are not failures: they are listed in :attr:`RunSummary.waiting`, and
:attr:`RunSummary.complete` is true when nothing else is left.
The next run (or the daemon) takes them up when their time comes.

The parts: :mod:`processor.daemon.pool` (the workers), :mod:`processor.daemon.sweeps` (steps 3 to
5 and the takeover), :mod:`processor.daemon.summary` (what a run did).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from processor.daemon.completeness import DAEMON_MARGIN, RELISTS, measure
from processor.daemon.pool import WorkerPool
from processor.daemon.summary import RunSummary, Tally
from processor.daemon.sweeps import Sweeps
from processor.engine.circuit import LATCHED_RECHECK
from processor.engine.core import Engine, Intake
from processor.engine.results import Reached
from processor.journal.base import JournalFull
from processor.marketplace import Marketplace, MarketplaceError, Selector
from processor.marketplace.paging import fingerprint, placement
from processor.model import parse_datetime
from processor.observe import get_logger

__all__ = ["Daemon", "RunSummary"]

log = get_logger(component="daemon")
_MAX_BUFFERED = 2000  # batchable payloads held back during one listing (a few MB at most)
_MALFORMED_REMEMBERED = 10_000  # fingerprints of id-less malformed rows (64 bytes each)


def _has_id(payload: Any) -> bool:
    return (
        isinstance(payload, Mapping)
        and isinstance(payload.get("id"), str)
        and bool(payload["id"].strip())
    )


class Daemon:
    def __init__(
        self,
        engine: Engine,
        marketplace: Marketplace,
        selector: Selector,
        *,
        once: bool = False,
        on_result: Callable[[str, Reached], None] | None = None,
    ) -> None:
        self.engine = engine
        self.marketplace = marketplace
        self.selector = selector
        self.once = once
        self.settings = engine.settings
        self.summary = RunSummary(per_request=once)  # a daemon keeps no per-request tally
        self.tally = Tally(self.summary, on_result)
        self._stop = threading.Event()
        self._stop_deadline: float | None = None  # time.monotonic() by which run() returns
        stop_on = getattr(marketplace, "stop_on", None)
        if callable(stop_on):
            stop_on(self._stop)  # Connect retry waits end at once on shutdown
        self.pool = WorkerPool(engine, self.tally, self._stop, lambda: self._stop_deadline)
        self.sweeps = Sweeps(engine, marketplace, selector, self._stop, self.pool, self.tally)
        self._random = random.Random()
        self._batching = any(policy.batch for policy in engine.config.policies.values())
        self._groups: dict[str, list[Intake]] = {}
        self._malformed_seen: set[str] = set()  # fingerprints of listed rows without an id
        self._relists = 0  # --once: passes run again because Connect counted a gap
        self._started_at: datetime | None = None  # when run() began, by the engine's clock

    # -- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop_deadline = time.monotonic() + self.settings.shutdown_timeout
            log.info("shutdown_requested", within_seconds=self.settings.shutdown_timeout)
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> RunSummary:
        deadline = time.monotonic() + self.settings.once_max_wait
        self._started_at = self.engine.clock()  # --once counts what was created before this
        try:
            while not self._stop.is_set():
                self.run_pass()
                if self.once:
                    wait = self.tally.next_due_within(self.engine, deadline)
                    if self.summary.listing_failed is not None:
                        # A backfill that could not see the backlog has not drained it: try again
                        # while the deadline allows, then report it unfinished, never done.
                        wait = self._listing_retry_within(deadline, wait)
                    if self.summary.journal_full is not None:
                        # The disk is full: no timer could be written. Look again in a few
                        # seconds while the deadline allows, then report it unfinished.
                        wait = self._listing_retry_within(deadline, None)
                    if any(b.latched for b in self.engine.breakers.values()):
                        break  # a person must look first: run --once names the latch and exits 1
                    if wait is None:
                        if self._settled():
                            break
                        continue  # Connect still counts unaccounted requests: list again
                    self._stop.wait(wait)
                else:
                    interval = self.settings.poll_interval
                    self._idle(interval * (1 + self._random.uniform(0, self.settings.poll_jitter)))
        finally:
            self.summary.interrupted = self._stop.is_set() and self.once
            self.pool.drain(self.settings.shutdown_timeout)
            self.pool.shutdown()
            self.summary.finished = time.monotonic()
        return self.summary

    def _settled(self) -> bool:
        """--once, when nothing is left to wait for: True to stop. Stops at once when the run is
        unfinished anyway; else Connect's count decides, and a gap buys another pass while
        :data:`RELISTS` allows."""
        summary = self.summary
        summary.unaccounted, summary.unaccounted_names, summary.count_failed = 0, (), None
        if not summary.complete or self._stop.is_set():
            return True
        try:
            gap = measure(
                self.marketplace,
                self.engine.journal,
                self.selector,
                open_rows=False,
                created_before=self._started_at,
            )
        except MarketplaceError as exc:
            summary.count_failed = str(exc)
            log.warning("final_count_failed", error=str(exc))
            return self._out_of_relists()
        summary.unaccounted, summary.unaccounted_names = gap.count, gap.names
        if not gap.count:
            return True
        log.warning(
            "pass_incomplete",
            left=gap.count,
            request_ids=list(gap.names),
            relisting=self._relists < RELISTS,
        )
        return self._out_of_relists()

    def _out_of_relists(self) -> bool:
        """True when --once has listed again :data:`RELISTS` times; else counts one more."""
        if self._relists >= RELISTS:
            return True
        self._relists += 1
        return False

    def _report_gap(self, pass_started: datetime) -> None:
        """The daemon, after a pass that listed everything: Connect's count against the journal's
        known requests; a gap is one warning line and ``cancel_pending_unaccounted``."""
        try:
            gap = measure(
                self.marketplace,
                self.engine.journal,
                self.selector,
                open_rows=True,
                created_before=pass_started - DAEMON_MARGIN,
            )
        except MarketplaceError as exc:
            log.warning("final_count_failed", error=str(exc))
            return
        self.engine.metrics.unaccounted.set(gap.count)
        if gap.count:
            log.warning("pass_incomplete", left=gap.count, request_ids=list(gap.names))

    def maintain(self) -> tuple[int, int]:
        """A pass without the listing, for EaaS's scheduled task: timers, takeovers, settling,
        owed notes, in the pass's order. Returns (stranded claims taken over, notes posted)."""
        try:
            self.sweeps.timers()
            taken_over = self.sweeps.take_over()
            self.pool.drain(None)
            self.sweeps.settle_stale()
            notes = self.sweeps.renote()
        finally:
            self.pool.drain(self.settings.shutdown_timeout)
            self.pool.shutdown()
        return taken_over, notes

    def _idle(self, seconds: float) -> None:
        """Wait ``seconds`` before the next pass, still looking for stranded claims every half
        lease: a poll interval longer than the lease must not hold up a takeover."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            # At most a second at a time: a `resume` run beside the daemon ends the wait, so the
            # requests a latch held back go on within a second or two, not a poll interval later.
            self._stop.wait(min(deadline, max(self.sweeps.next_takeover, now), now + 1.0) - now)
            if self.engine.guard.sync():
                # Resumed: every request the latch deferred is due a recheck later; then a pass.
                self._stop.wait(LATCHED_RECHECK)
                return
            self.sweeps.take_over()

    # -- one pass -------------------------------------------------------------------------------

    def run_pass(self) -> None:
        """One pass (the module docstring's steps 1 to 5); :meth:`run` repeats it."""
        seen = 0
        oldest: datetime | None = None
        listed_all = False
        pass_started = self.engine.clock()
        self.tally.waiting_seen = set()
        try:
            for payload in self.marketplace.iter_pending(self.selector):
                if self._stop.is_set():
                    break
                seen += 1
                created = (
                    parse_datetime(payload.get("created")) if isinstance(payload, Mapping) else None
                )
                if created and (oldest is None or created < oldest):
                    oldest = created
                self._offer(payload)
                self.sweeps.take_over()
            listed_all = not self._stop.is_set()
        except MarketplaceError as exc:
            # Connect is unreachable or refusing for now; the next pass tries again.
            log.warning("poll_failed", error=str(exc))
            self.summary.listing_failed = str(exc)
        else:
            self.summary.listing_failed = None
        self._flush_groups()
        self.sweeps.take_over()
        self.pool.drain(None if not self._stop.is_set() else self.settings.shutdown_timeout)
        if not self._stop.is_set():
            try:
                if self.engine.policy.schedules:
                    self._revocations()
                self.sweeps.timers()
                self.sweeps.settle_stale()
                if listed_all:
                    self.sweeps.settle_vanished()
                self.sweeps.renote()
            except JournalFull as exc:  # the rest of the sweeps would meet the same disk
                self.pool.note_full(str(exc))
        full = self._journal_weather()
        if listed_all and not self.once and not full and not self._stop.is_set():
            self._report_gap(pass_started)  # a full disk explains the gap: said once already
        self.summary.passes += 1
        self.summary.seen += seen
        metrics = self.engine.metrics
        metrics.passes.inc()
        metrics.backlog.set(seen)
        metrics.oldest_pending.set((self.engine.clock() - oldest).total_seconds() if oldest else 0)

    def _journal_weather(self) -> bool:
        """A full journal disk is weather: one line per pass, the daemon goes on, and every
        request is taken up again once writes succeed (nothing was recorded, nothing lost).
        True when this pass met it."""
        full, error = self.pool.take_full()
        self.summary.journal_full = error or None
        self.engine.metrics.journal_full.set(int(bool(error)))
        if error:
            log.warning("journal_full", requests_waiting=full, error=error)
        return bool(error)

    def _offer(self, payload: Any) -> None:
        """Submit a listed request, or hold it back to go with its customer's other cancels."""
        if isinstance(placement(payload), str) and not _has_id(payload):
            self._anonymous_malformed(payload)
            return
        if not (self._batching and isinstance(payload, Mapping)):
            self.pool.submit(payload)
            return
        intake = self.engine.read(payload)  # read once: grouped or not, it is not parsed again
        key = self.engine.batch_key(intake)
        if key is None:
            self.pool.submit(intake)
            return
        group = self._groups.setdefault(key, [])
        group.append(intake)
        if len(group) >= self.settings.batch_max:
            self.pool.submit_group(self._groups.pop(key))
        elif sum(len(g) for g in self._groups.values()) >= _MAX_BUFFERED:
            self._flush_groups()

    def _anonymous_malformed(self, payload: Any) -> None:
        """A listed row without an id: nothing to record it under in the journal, so the engine
        logs it and counts it (``outcomes{outcome="malformed"}``) the first time this process sees
        it; Connect lists it again every pass and it is not logged again."""
        key = fingerprint(payload)
        if key in self._malformed_seen:
            return
        if len(self._malformed_seen) >= _MALFORMED_REMEMBERED:
            self._malformed_seen.clear()  # forgetting costs one more log line each, no more
        self._malformed_seen.add(key)
        self.tally.record("", self.engine.handle(payload))

    def _flush_groups(self) -> None:
        groups, self._groups = list(self._groups.values()), {}
        for group in groups:
            if self._stop.is_set():
                return
            if len(group) == 1:
                self.pool.submit(group[0])
            else:
                self.pool.submit_group(group)

    def _revocations(self) -> None:
        try:
            for payload in self.marketplace.iter_cancels(self.selector, "revoking"):
                if self._stop.is_set():
                    break
                self.pool.submit(payload)
        except MarketplaceError as exc:
            log.warning("revocations_not_listed", error=str(exc))
        self.pool.drain(None)

    def _listing_retry_within(self, deadline: float, due: float | None) -> float | None:
        """--once after a failed listing: the next pass in a few seconds if the deadline allows."""
        wait = min(self.settings.retry_base, 5.0) if due is None else min(due, 5.0)
        return None if time.monotonic() + wait > deadline else wait
