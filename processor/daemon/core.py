"""The loop: poll Connect, hand each pending cancel to a bounded worker pool, run due timers, repeat.

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
later (or a whole poll interval), and until then the request waits with its vendor step half done. One read of Connect each: still pending (or
revoking), the request goes to the pool like a listed one (the claim bumps the fence, so a frozen
holder that wakes up finds its lease lost); closed on Connect meanwhile, the row is settled.

Shutdown (SIGTERM/SIGINT, or :meth:`Daemon.stop`): nothing new is claimed, in-flight requests
finish their current step, and :meth:`Daemon.run` returns within ``shutdown_timeout``. Whatever
was cut short is safe: the journal resumes it on the next start.

``once=True`` drains: it repeats passes while requests it touched are unfinished and due within
``once_max_wait``, then returns. Requests that wait for a later date (scheduled on Connect,
suspended for a grace period) or for a person (routed by policy) are not failures: they are listed
in :attr:`RunSummary.waiting`, and :attr:`RunSummary.complete` is true when nothing else is left.
The next run (or the daemon) takes them up when their time comes.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from processor.engine.core import TIMER_STATES, Engine
from processor.journal.base import FINAL_STATES, Claim, JournalError, RequestRecord, State
from processor.marketplace import Marketplace, MarketplaceError, Selector, TransientError
from processor.marketplace.paging import fingerprint, placement
from processor.model import parse_datetime
from processor.observe import get_logger

__all__ = ["Daemon", "RunSummary"]


def _has_id(payload: Any) -> bool:
    return (
        isinstance(payload, Mapping)
        and isinstance(payload.get("id"), str)
        and bool(payload["id"].strip())
    )


log = get_logger(component="daemon")
_FINAL_NAMES = {s.value for s in FINAL_STATES}
_OPEN_STATES = (State.NEW, State.TERMINATING, State.TERMINATED, State.REFUSING)
_WAITING = {State.SCHEDULED.value, State.SUSPENDED.value, State.WAITING_HUMAN.value}
_MAX_BUFFERED = 2000  # batchable payloads held back during one listing (a few MB at most)
_VANISHED_CHECKED = 1000  # waiting rows compared with one pass's listing
_RENOTES_PER_PASS = (
    100  # owed notes posted per pass: one or two Connect calls each, in the loop's thread
)
_TAKEOVERS_PER_SWEEP = (
    100  # stranded claims handed on per sweep: a dead replica held at most 2 x concurrency
)
_HANDED_REMEMBERED = 10_000  # (request id, fence) pairs: a few hundred KB, then forgotten at once
_MALFORMED_REMEMBERED = 10_000  # fingerprints of id-less malformed rows (64 bytes each)
_RENOTE_WITHIN = timedelta(
    days=7
)  # an owed note older than this is no news to the customer any more


@dataclass
class RunSummary:
    results: Counter[str] = field(default_factory=Counter)
    unfinished: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(
        default_factory=dict
    )  # request id -> state: waits for a date or a person
    passes: int = 0
    seen: int = 0
    timers: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    interrupted: bool = False
    # Why the last pass could not list everything pending (Connect unreachable, TLS, auth), or None.
    listing_failed: str | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def complete(self) -> bool:
        """Everything reached a final state or waits by design (a date, a person named by policy);
        a parked request needs a person nobody planned for, so it is not complete."""
        return (
            not self.unfinished
            and not self.errors
            and not self.interrupted
            and not self.results["parked"]
            and self.listing_failed is None
        )


class Daemon:
    def __init__(
        self,
        engine: Engine,
        marketplace: Marketplace,
        selector: Selector,
        *,
        once: bool = False,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.marketplace = marketplace
        self.selector = selector
        self.once = once
        self.settings = engine.settings
        self.on_result = on_result
        self.summary = RunSummary()
        self._stop = threading.Event()
        self._stop_deadline: float | None = (
            None  # time.monotonic() by which run() returns, once stopping
        )
        stop_on = getattr(marketplace, "stop_on", None)
        if callable(stop_on):
            stop_on(self._stop)  # Connect retry waits end at once on shutdown
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self._slots = threading.BoundedSemaphore(self.settings.concurrency * 2)
        self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="worker")
        self._random = random.Random()
        self._batching = any(policy.batch for policy in engine.config.policies.values())
        self._groups: dict[str, list[Mapping[str, Any]]] = {}
        self._waiting_seen: set[str] = set()
        self._next_takeover = 0.0  # time.monotonic() of the next look for stranded claims
        # (request id, fence) of stranded claims already handed on: one the policy now ignores is
        # left as it is, as the listing leaves it, and is not read from Connect every sweep.
        self._handed: set[tuple[str, int]] = set()
        self._malformed_seen: set[str] = (
            set()
        )  # fingerprints of listed rows without an id, logged once

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
        try:
            while not self._stop.is_set():
                self._pass()
                if self.once:
                    wait = self._next_due_within(deadline)
                    if self.summary.listing_failed is not None:
                        # A backfill that could not see the backlog has not drained it: try again
                        # while the deadline allows, then report it unfinished, never done.
                        wait = self._listing_retry_within(deadline, wait)
                    if wait is None:
                        break
                    self._stop.wait(wait)
                else:
                    interval = self.settings.poll_interval
                    self._idle(interval * (1 + self._random.uniform(0, self.settings.poll_jitter)))
        finally:
            self.summary.interrupted = self._stop.is_set() and self.once
            self._drain(self.settings.shutdown_timeout)
            self._pool.shutdown(wait=False)
            self.summary.finished = time.monotonic()
        return self.summary

    def _idle(self, seconds: float) -> None:
        """Wait ``seconds`` before the next pass, still looking for stranded claims every half
        lease: a poll interval longer than the lease must not hold up a takeover."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            self._stop.wait(min(deadline, max(self._next_takeover, now)) - now)
            self._take_over()

    # -- one pass -------------------------------------------------------------------------------

    def _pass(self) -> None:
        seen = 0
        oldest: datetime | None = None
        listed_all = False
        self._waiting_seen = set()
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
                self._take_over()
            listed_all = not self._stop.is_set()
        except MarketplaceError as exc:
            # Connect is unreachable or refusing for now; the next pass tries again.
            log.warning("poll_failed", error=str(exc))
            self.summary.listing_failed = str(exc)
        else:
            self.summary.listing_failed = None
        self._flush_groups()
        self._take_over()
        self._drain(None if not self._stop.is_set() else self.settings.shutdown_timeout)
        if not self._stop.is_set():
            if self.engine.policy.schedules:
                self._revocations()
            self._timers()
            self._settle_stale()
            if listed_all:
                self._settle_vanished()
            self._renote()
        self.summary.passes += 1
        self.summary.seen += seen
        metrics = self.engine.metrics
        metrics.passes.inc()
        metrics.backlog.set(seen)
        metrics.oldest_pending.set((self.engine.clock() - oldest).total_seconds() if oldest else 0)

    def _offer(self, payload: Any) -> None:
        """Submit a listed request, or hold it back to go with its customer's other cancels."""
        if isinstance(placement(payload), str) and not _has_id(payload):
            self._anonymous_malformed(payload)
            return
        key = (
            self.engine.batch_key(payload)
            if self._batching and isinstance(payload, Mapping)
            else None
        )
        if key is None:
            self._submit(payload)
            return
        group = self._groups.setdefault(key, [])
        group.append(payload)
        if len(group) >= self.settings.batch_max:
            self._submit_group(self._groups.pop(key))
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
        self._record("", self.engine.handle(payload))

    def _flush_groups(self) -> None:
        groups, self._groups = list(self._groups.values()), {}
        for group in groups:
            if self._stop.is_set():
                return
            if len(group) == 1:
                self._submit(group[0])
            else:
                self._submit_group(group)

    def _revocations(self) -> None:
        try:
            for payload in self.marketplace.iter_cancels(self.selector, "revoking"):
                if self._stop.is_set():
                    break
                self._submit(payload)
        except MarketplaceError as exc:
            log.warning("revocations_not_listed", error=str(exc))
        self._drain(None)

    def _timers(self) -> None:
        """Run the journal's due timers, ``concurrency`` at a time, at most ``timers_per_pass``."""
        journal, engine = self.engine.journal, self.engine
        budget = self.settings.timers_per_pass
        while budget > 0 and not self._stop.is_set():
            try:
                due = journal.claim_due(
                    engine.owner,
                    engine.lease_seconds,
                    min(self.settings.concurrency, budget),
                    states=TIMER_STATES,
                )
            except JournalError as exc:
                log.warning("timers_not_claimed", error=str(exc))
                return
            if not due:
                return
            budget -= len(due)
            for claim in due:
                if self._selected(claim.record):
                    self._submit_timer(claim)
                else:
                    journal.release(claim)
            self._drain(None)

    def _take_over(self, limit: int = _TAKEOVERS_PER_SWEEP) -> int:
        """Hand on the claims a dead or frozen process left behind (see the module docstring),
        at most every half lease; how many went to the pool or were settled."""
        now = time.monotonic()
        if now < self._next_takeover or self._stop.is_set():
            return 0
        self._next_takeover = now + self.engine.lease_seconds / 2
        try:
            stranded = self.engine.journal.stranded(states=_OPEN_STATES, limit=limit)
        except JournalError as exc:
            log.warning("stranded_not_listed", error=str(exc))
            return 0
        handed = 0
        for record in stranded:
            request_id = record.request_id
            with self._lock:
                busy_here = (
                    request_id in self._inflight
                )  # our own worker, its renewal late: not stranded
            if (
                self._stop.is_set()
                or busy_here
                or (request_id, record.fence) in self._handed
                or not self._selected(record)
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
            if len(self._handed) >= _HANDED_REMEMBERED:
                self._handed.clear()  # forgetting costs one more read of Connect each, no more
            self._handed.add((request_id, record.fence))
            handed += 1
            if payload.get("status") in ("pending", "revoking"):
                self._submit(payload)
            else:
                self._settle([request_id])
        return handed

    def _settle_stale(self, limit: int = 200) -> None:
        """Rows left open by a crash after Connect acted (they no longer show in the poll)."""
        journal = self.engine.journal
        quiet_since = self.engine.clock() - timedelta(seconds=self.engine.lease_seconds)
        stale = [
            r.request_id
            for r in journal.records(states=_OPEN_STATES, updated_until=quiet_since, limit=limit)
        ]
        self._settle(stale)

    def _renote(self, limit: int = _RENOTES_PER_PASS) -> int:
        """Post notes that were owed (see the module docstring, step 5); how many were recorded."""
        if not self.settings.notes:
            return 0
        engine = self.engine
        now = engine.clock()
        try:
            owed = engine.journal.unnoted(
                updated_until=now - timedelta(seconds=engine.lease_seconds),
                updated_since=now - _RENOTE_WITHIN,
                limit=limit,
            )
        except JournalError as exc:
            log.warning("notes_not_listed", error=str(exc))
            return 0
        posted = 0
        for record in owed:
            if self._stop.is_set():
                break
            if not self._selected(record):
                continue
            try:
                posted += engine.renote(record)
            except TransientError as exc:
                # Connect is in trouble: every other note would wait out the same retries. Next pass.
                log.warning("notes_deferred", request_id=record.request_id, error=str(exc))
                break
            except JournalError as exc:
                log.warning("note_not_recorded", request_id=record.request_id, error=str(exc))
                break
        if posted:
            log.info("owed_notes_posted", count=posted)
        engine.metrics.notes_owed.set(len(owed) - posted)
        return posted

    def _settle_vanished(self) -> None:
        """Requests routed to a person that left the pending list: the person acted on Connect."""
        if self.selector.request_ids or self.selector.created_since or self.selector.created_until:
            return  # a narrowed listing proves nothing about what it did not select
        waiting = self.engine.journal.records(states=[State.WAITING_HUMAN], limit=_VANISHED_CHECKED)
        self._settle(
            [
                r.request_id
                for r in waiting
                if self._selected(r) and r.request_id not in self._waiting_seen
            ]
        )

    def _settle(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            if self._stop.is_set():
                return
            try:
                result = self.engine.settle(request_id)
            except MarketplaceError as exc:
                log.warning("settle_failed", request_id=request_id, error=str(exc))
                continue
            if result in _FINAL_NAMES:
                log.info("request_settled", request_id=request_id, state=result)
                self._record(request_id, result)

    def _selected(self, record: RequestRecord) -> bool:
        s = self.selector
        return not (
            (s.products and record.product_id not in s.products)
            or (s.marketplaces and record.marketplace_id not in s.marketplaces)
            or (s.environments and record.environment not in s.environments)
            or (s.request_ids and record.request_id not in s.request_ids)
        )

    # -- the pool -------------------------------------------------------------------------------

    def _reserve(self, request_ids: list[str]) -> list[str]:
        """Mark ids in flight and take a pool slot; the ids taken (none when stopping)."""
        with self._lock:
            taken = [rid for rid in request_ids if not (rid and rid in self._inflight)]
            self._inflight.update(taken)
        if not taken:
            return []
        while not self._slots.acquire(timeout=0.5):
            if self._stop.is_set():
                with self._lock:
                    self._inflight.difference_update(taken)
                return []
        return taken

    def _submit(self, payload: Any) -> None:
        request_id = str(payload.get("id")) if isinstance(payload, Mapping) else ""
        if self._reserve([request_id]):
            self._pool.submit(
                self._work, [request_id], lambda: {request_id: self.engine.handle(payload)}
            )

    def _submit_group(self, payloads: list[Mapping[str, Any]]) -> None:
        ids = self._reserve([str(p.get("id") or "") for p in payloads])
        chosen = [p for p in payloads if str(p.get("id") or "") in ids]
        if chosen:
            self._pool.submit(self._work, ids, lambda: self.engine.handle_batch(chosen))

    def _submit_timer(self, claim: Claim) -> None:
        if self._reserve([claim.request_id]):
            self.summary.timers += 1
            self._pool.submit(
                self._work,
                [claim.request_id],
                lambda: {claim.request_id: self.engine.resume(claim)},
            )
        else:
            self.engine.journal.release(claim)  # in flight here already, or stopping

    def _work(self, request_ids: list[str], job: Callable[[], dict[str, str]]) -> None:
        results: dict[str, str] = {}
        try:
            if not self._stop.is_set():  # queued but not started: claim nothing new during shutdown
                results = job()
        except Exception as exc:  # noqa: BLE001 - the loop must go on; the journal keeps the request
            results = {rid: "error" for rid in request_ids}
            log.exception(
                "request_error", request_ids=request_ids[:10], error=f"{type(exc).__name__}: {exc}"
            )
        finally:
            self._slots.release()
            with self._lock:
                self._inflight.difference_update(request_ids)
        for request_id, result in results.items():
            self._record(request_id, result)

    def _record(self, request_id: str, result: str) -> None:
        with self._lock:
            self.summary.results[result] += 1
            if result == "error":
                self.summary.errors += 1
            if result in _WAITING or result == "busy":
                self._waiting_seen.add(request_id)
            if request_id:
                if result in _FINAL_NAMES or result in ("ignored", "malformed"):
                    self.summary.unfinished.pop(request_id, None)
                    self.summary.waiting.pop(request_id, None)
                elif result in _WAITING:
                    self.summary.unfinished.pop(request_id, None)
                    self.summary.waiting[request_id] = result
                elif result != "busy" or request_id not in self.summary.unfinished:
                    self.summary.unfinished[request_id] = result
        if self.on_result:
            self.on_result(request_id, result)

    def _drain(self, timeout: float | None) -> None:
        """Wait for the work in flight; ``timeout`` only applies once stopping, and counts from the
        stop request (one shutdown budget in all, however many drains the shutdown passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._stop_deadline is not None and self._stop.is_set():
            deadline = self._stop_deadline
        while True:
            with self._lock:
                if not self._inflight:
                    return
            if deadline is not None and time.monotonic() > deadline:
                log.warning("shutdown_timeout", in_flight=len(self._inflight))
                return
            time.sleep(0.01)

    def _listing_retry_within(self, deadline: float, due: float | None) -> float | None:
        """--once after a failed listing: the next pass in a few seconds if the deadline allows."""
        wait = min(self.settings.retry_base, 5.0) if due is None else min(due, 5.0)
        return None if time.monotonic() + wait > deadline else wait

    def _next_due_within(self, deadline: float) -> float | None:
        """--once: seconds to wait before another pass can make progress, or None to stop."""
        now = self.engine.clock()
        soonest: float | None = None
        for request_id in list(self.summary.unfinished):
            record = self.engine.journal.get(request_id)
            if record is None or record.final:
                self.summary.unfinished.pop(request_id, None)
                continue
            self.summary.unfinished[request_id] = record.state.value
            if record.state.value in _WAITING:
                self.summary.unfinished.pop(request_id, None)
                self.summary.waiting[request_id] = record.state.value
                continue
            due = (
                0.0
                if record.next_attempt_at is None
                else (record.next_attempt_at - now).total_seconds()
            )
            soonest = due if soonest is None else min(soonest, due)
        for request_id in list(self.summary.waiting):
            record = self.engine.journal.get(request_id)
            if record is None or record.final:
                self.summary.waiting.pop(request_id, None)
                continue
            if record.state is State.SUSPENDED and record.next_attempt_at is not None:
                due = (record.next_attempt_at - now).total_seconds()
                soonest = due if soonest is None else min(soonest, due)
        if soonest is None or time.monotonic() + soonest > deadline:
            return None
        return max(soonest, 0.05)
