"""One request through the state machine: claim, intent, vendor call, result, Connect action.

The rules that make a crash harmless (the crash-window table of ``docs/design.md``,
generated from :mod:`processor.engine.transitions`), for every vendor step
(terminate, suspend, purge; see :mod:`processor.engine.vendor`):

- the intent is committed before the vendor is called, the result after it; no journal
  transaction is open during any remote call;
- a request found in an intent state may already have acted: it is called again only when the
  vendor deduplicates (idempotency key, natural idempotency), or after a status read says it did
  not; with neither, it is parked for a human, never called blindly a second time;
- a request in ``terminated`` is approved without another vendor call; an approve that Connect
  refuses because the request is already approved is a success (the gateway re-reads);
- a lost lease (:class:`LeaseLost`) stops the worker before its next remote call.

Entry points: :meth:`Engine.handle` (a request payload from a poll, an id or an EaaS event; pending
requests, and ``revoking`` ones this processor scheduled), :meth:`Engine.resume` (a row whose timer
fell due, claimed by the daemon with ``claim_due``), :meth:`Engine.handle_batch` (a customer's
group, :mod:`processor.engine.batch`), :meth:`Engine.settle` (a row whose request Connect closed
behind our back) and :meth:`Engine.plan` (the dry run). What policies do over time --
scheduling, grace, retention, routing -- is explained in :mod:`processor.engine.lifecycle`.

Each entry point answers the :class:`State` reached or an :class:`Outcome` (``busy``, ``ignored``,
``lease_lost``, ``malformed``, ``unknown``): :mod:`processor.engine.results`.

Transient trouble (vendor 429/503, outages, Connect storms) only ever defers a request; a refusal
reaches the customer only when the vendor refused, a rule refused, or a poison request is
configured to be failed after ``max_attempts`` definite errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from processor.adapters.base import VendorAdapter
from processor.config.schema import Config
from processor.engine import crashpoints
from processor.engine.base import Clock, Mover, stub_request, take_up, utcnow
from processor.engine.batch import Batch, Started
from processor.engine.connect_steps import ConnectSteps
from processor.engine.hold import Hold
from processor.engine.leases import LeaseKeeper
from processor.engine.lifecycle import Lifecycle, Ready
from processor.engine.liveness import Liveness
from processor.engine.notes import Notes
from processor.engine.operations import Operations
from processor.engine.planning import Plan, PlannedStep, Planner
from processor.engine.results import Deferred, Outcome, Reached, Stepped
from processor.engine.rowdata import RowData
from processor.engine.transitions import STOPS, Event, settling
from processor.engine.vendor import VendorGate, VendorResults, VendorSteps
from processor.journal.base import Claim, Journal, JournalError, LeaseLost, RequestRecord, State
from processor.marketplace import Marketplace, MarketplaceError, NotFound
from processor.model import CancelRequest, MalformedRequest, parse_request
from processor.observe import Metrics, get_logger
from processor.policy.rules import Decision, Policy
from processor.states import RESTING_STATES

__all__ = [
    "Engine",
    "Intake",
    "Plan",
    "PlannedStep",
    "Clock",
    "utcnow",
    "Outcome",
    "Reached",
]

_MAX_STEPS = 12  # a request's longest path has seven steps; more means a bug, not a reason to spin
_OPEN_ON_CONNECT = ("pending", "scheduled", "inquiring", "draft", "tiers_setup", "revoking")

# A step: what runs in a state (transitions.STOPS names it); None: nothing to do there now.
Step = Callable[[Claim, CancelRequest, Decision], Stepped | None]


@dataclass(frozen=True, slots=True)
class Intake:
    """A payload read once (:meth:`Engine.read`): its request and, when it is pending, the
    policy's decision; or why it cannot be read."""

    payload: Any
    request: CancelRequest | None = None
    decision: Decision | None = None
    malformed: MalformedRequest | None = None

    @property
    def request_id(self) -> str:
        if self.request is not None:
            return self.request.id
        raw = self.payload.get("id") if isinstance(self.payload, Mapping) else None
        return str(raw or "")


class Engine:
    """The steps, composed: each holds the collaborators it uses; this holds the entry points."""

    def __init__(
        self,
        *,
        config: Config,
        journal: Journal,
        marketplace: Marketplace,
        adapters: Mapping[str, VendorAdapter],
        owner: str,
        metrics: Metrics | None = None,
        leases: LeaseKeeper | None = None,
        clock: Clock = utcnow,
        policy: Policy | None = None,
    ) -> None:
        self.config = config
        self.settings = config.processing
        self.journal = journal
        self.marketplace = marketplace
        self.owner = owner
        self.metrics = metrics or Metrics()
        self.leases = leases
        self.clock = clock
        self.policy = policy or Policy(config)
        self.lease_seconds = config.journal.lease_seconds
        self.mover = Mover(journal, self.settings, self.metrics, clock)
        self.gate = VendorGate(config, adapters, self.metrics, leases)
        self.adapters = self.gate.adapters
        self.breakers = self.gate.breakers
        self.guard = self.gate.guard
        self.notes = Notes(config, journal, marketplace)
        liveness = Liveness(self.mover, journal, self.lease_seconds, config.journal.holder_wait)
        self.results = VendorResults(self.mover, self.guard, self.settings)
        self.vendor = VendorSteps(self.mover, self.gate, liveness, self.results, leases)
        self.connect = ConnectSteps(self.mover, marketplace, config, self.guard)
        self.lifecycle = Lifecycle(self.mover, self.gate, self.vendor, self.connect, marketplace)
        self.batch = Batch(
            metrics=self.metrics,
            mover=self.mover,
            gate=self.gate,
            liveness=liveness,
            results=self.results,
            lifecycle=self.lifecycle,
            leases=leases,
        )
        self.planner = Planner(self.settings, journal, self.policy, marketplace, clock)
        self.operations = Operations(self.mover, self.gate, self.results, self.settings, leases)
        self.hold = Hold(self.mover, self.gate, self.results)
        # The steps the table's STOPS name, bound; a name without a step fails here, at start-up.
        self._by_name: dict[str, Step] = {
            "start": self.lifecycle.start,
            "on_scheduled": self.lifecycle.on_scheduled,
            "resume_intent": self.vendor.resume,
            "after_grace": self._after_grace,
            "approve": self.connect.approve,
            "fail": self._fail,
            "purge_due": self._purge_due,
            "poll_operation": self.operations.poll,
            "release_held": self.hold.step,
        }
        unbound = {s.step for s in STOPS.values() if s.step} - set(self._by_name)
        if unbound:
            raise RuntimeError(f"the transition table names steps without code: {unbound}")

    def recall_answers(self) -> None:
        """Count the answers the journal shows from the guard's rate window, so that a restart
        in the middle of a burst does not reset it (:mod:`processor.engine.hold`). Called by the
        runtime's wiring once, before the engine's first step; a latch it sets is real (the
        latch file), so a read-only engine (the dry run) never calls it."""
        guard = self.guard.settings
        if not (guard.enabled and guard.hold > 0):
            return
        now = self.clock()
        try:
            recalled = Hold.recall(self.journal, guard.rate_seconds, now)
        except JournalError as exc:  # the guard then counts from now on; the hold itself holds
            get_logger(component="guard").warning("guard_recall_failed", error=str(exc))
            return
        for answer in recalled:
            resumed = self.guard.resumed_at(answer.adapter)
            if resumed is not None and answer.at <= resumed:
                continue  # a person looked at these when resuming: the count starts after
            ago = (now - answer.at).total_seconds()
            self.guard.record(answer.adapter, answer.outcome, ago=ago)

    # -- entry points ------------------------------------------------------------------------

    def read(self, payload: Any) -> Intake:
        """A payload parsed once, with the policy's decision when it is pending: what ``handle``,
        ``handle_batch`` and ``batch_key`` take, so that grouping a request costs no second
        parse or decision."""
        if isinstance(payload, Intake):
            return payload
        try:
            request = parse_request(payload, subscription_param=self.settings.subscription_param)
        except MalformedRequest as exc:
            return Intake(payload, malformed=exc)
        decision = self.policy.decide(request) if request.status == "pending" else None
        return Intake(payload, request, decision)

    def handle(self, payload: Mapping[str, Any] | Intake) -> Reached:
        """Process one request payload (from a poll, an id, or an EaaS event), or an
        :class:`Intake` read from one.

        Returns the journal state reached, or an :class:`Outcome` (ignored, busy, lease lost,
        malformed). Never raises for a problem of the request itself; journal and programming
        errors propagate.
        """
        taken = self._take(self.read(payload))
        if not isinstance(taken, tuple):
            return taken
        claim, request, decision = taken
        crashpoints.reached("after_claim")
        return self._run(claim, request, decision)

    def handle_batch(self, payloads: Sequence[Mapping[str, Any] | Intake]) -> dict[str, Reached]:
        """A customer's group (:mod:`processor.engine.batch`), by request id: each request read,
        decided and claimed once, as ``handle`` does; the new ones that batch go in one adapter
        call, the others take the single path."""
        results: dict[str, Reached] = {}
        ready: list[Started] = []
        claims: list[Claim] = []
        try:
            for intake in map(self.read, payloads):
                if self.batch_key(intake) is None:
                    results[intake.request_id] = self.handle(intake)
                    continue
                taken = self._take(intake, rest=False)
                if not isinstance(taken, tuple):
                    results[intake.request_id] = taken
                    continue
                claim, request, decision = taken
                claims.append(claim)
                if claim.state is not State.NEW:  # started earlier: the single path resumes it
                    results[request.id] = self._guarded(claim, request, decision)
                    continue
                try:
                    prepared = self.batch.prepare(claim, request, decision)
                except LeaseLost:
                    self.metrics.lease_lost.inc()
                    results[request.id] = Outcome.LEASE_LOST
                    continue
                if isinstance(prepared, Ready):
                    ready.append((claim, request, decision, prepared))
                else:
                    results[request.id] = self._guarded(prepared, request, decision)
            if ready:
                decided = {request.id: (request, decision) for _, request, decision, _ in ready}
                for request_id, done in self.batch.terminate(ready).items():
                    request, decision = decided[request_id]
                    results[request_id] = self._guarded(done, request, decision)
        finally:
            for claim in claims:
                self.journal.release(claim)
        return results

    def batch_key(self, payload: Mapping[str, Any] | Intake) -> str | None:
        """The group a pending request may be terminated with, or None to handle it alone."""
        intake = self.read(payload)
        if intake.request is None or intake.decision is None:
            return None
        return self.batch.key(intake.request, intake.decision)

    def renote(self, record: RequestRecord) -> bool:
        """Post a note the journal says is owed (:meth:`Notes.renote`)."""
        return self.notes.renote(record)

    def resume(self, claim: Claim) -> Reached:
        """Drive a row the daemon claimed with ``claim_due`` (a timer fell due); releases the claim.

        Approved rows (purge) need nothing from Connect; the others are read fresh, because their
        request may have moved while the row waited (revoked, reactivated, approved by hand).
        """
        record = claim.record
        try:
            if claim.state in (State.APPROVED, State.PURGING) or self._purge_polled(record):
                request = stub_request(claim.request_id, record, status="approved")
            else:
                try:
                    payload = self.marketplace.get_request(claim.request_id)
                    request = parse_request(
                        payload, subscription_param=self.settings.subscription_param
                    )
                except NotFound:
                    why = "the request is no longer visible on Connect"
                    stub = stub_request(claim.request_id, record)
                    return self.mover.move(claim, stub, Event.PARK, reason=why).state
                except (MarketplaceError, MalformedRequest) as exc:
                    when = self.clock() + timedelta(seconds=self.mover.backoff(1))
                    self.journal.update(claim, next_attempt_at=when, last_error=f"timer: {exc}")
                    return claim.state
            decision = self.policy.decide(request, released=self._released(record))
            if decision.action == "ignore":
                why = f"a timer fell due, but {decision.reason}: a person decides"
                return self.mover.move(claim, request, Event.PARK, reason=why).state
            return self._run(claim, request, decision, keep_claim=True)
        except LeaseLost:
            self.metrics.lease_lost.inc()
            return Outcome.LEASE_LOST
        finally:
            self.journal.release(claim)

    def settle(self, request_id: str) -> Reached:
        """Close a journal row whose request left ``pending`` on Connect while the row did not
        follow: the process died after Connect acted and before the journal recorded it, a person
        acted on Connect by hand (a request routed to them, for one), or the customer's side
        withdrew it. Connect's status is the truth; the vendor is not called.
        """
        record = self.journal.get(request_id)
        if record is None:
            return Outcome.UNKNOWN
        if record.final:
            return record.state
        payload = self.marketplace.get_request(request_id)
        status = str(payload.get("status") or "")
        if status in _OPEN_ON_CONNECT:
            return record.state  # still open on Connect: the poll (or a timer) owns it
        claim = self.journal.claim(request_id, self.owner, self.lease_seconds)
        if claim is None:
            return Outcome.BUSY
        request = stub_request(request_id, record, status)
        data = RowData.of(record)
        if claim.state is State.NEW and status == "approved" and not data.routed:
            # Approved without this journal's termination, while it held the request as new.
            adapter = data.adapter or self.config.adapter_for(
                request.product_id, request.environment
            )
            if adapter:
                sign = "a request this journal had not started was approved on Connect"
                self.guard.another_processor(adapter, sign, request_id, record.created_at)
        try:
            event, why = settling(claim.state, status)
            return self.mover.move(
                claim,
                request,
                event,
                reason=why,
                detail=f"settled: request is {status} on Connect",
            ).state
        except LeaseLost:
            return Outcome.LEASE_LOST
        finally:
            self.journal.release(claim)

    def plan(self, payload: Mapping[str, Any]) -> Plan:
        """What ``handle`` would do, with the policy and the dates ahead, touching nothing."""
        return self.planner.plan(payload)

    # -- the state machine --------------------------------------------------------------------

    def _run(
        self, claim: Claim, request: CancelRequest, decision: Decision, *, keep_claim: bool = False
    ) -> Reached:
        """Drive a claimed row; the claim is released here unless the caller (``resume``) does."""
        owed: dict[str, str] = {}  # the note's record, written with the release
        try:
            if claim.state is State.NEW and self._released(claim.record):
                decision = self.policy.decide(request, released=True)
            if keep_claim:
                return self._drive(claim, request, decision)
            reached = self._steps(claim, request, decision)
            if isinstance(reached, Claim):
                owed = self.notes.post(reached, request, decision)
            return reached.state
        except LeaseLost:
            self.metrics.lease_lost.inc()
            get_logger(**request.log_context()).warning("lease_lost", fence=claim.fence)
            return Outcome.LEASE_LOST
        finally:
            if not keep_claim:
                self._release(claim, request, owed)

    def _release(self, claim: Claim, request: CancelRequest, owed: dict[str, str]) -> None:
        """Release the claim; a note just posted is recorded in the same transaction (nothing
        remote happens between the two). A moved fence records nothing, as an update would."""
        try:
            self.journal.release(claim, **owed)
        except LeaseLost as exc:
            self.notes.not_recorded(request, exc)

    def _take(
        self, intake: Intake, *, rest: bool = True
    ) -> Reached | tuple[Claim, CancelRequest, Decision]:
        """The claim on a read request, or what it reached without one (ignored, busy, a row
        that is final or, with ``rest``, resting; a revocation or a malformed payload, handled)."""
        if intake.malformed is not None:
            return self._malformed(intake.payload, intake.malformed)
        request, decision = intake.request, intake.decision
        assert request is not None  # read() parsed it
        if request.status == "revoking":
            return self._revocation(request)
        if request.status != "pending" or decision is None:
            return Outcome.IGNORED
        if decision.action == "ignore":
            get_logger(**request.log_context()).debug("request_ignored", reason=decision.reason)
            return Outcome.IGNORED
        record, claim = take_up(self.journal, request, self.owner, self.lease_seconds)
        if claim is None:  # the row existed: final, resting, or to be claimed now
            if record.final or (rest and self._resting(record)):
                return record.state
            claim = self.journal.claim(request.id, self.owner, self.lease_seconds)
            if claim is None:
                return Outcome.BUSY
        return claim, request, decision

    def _guarded(
        self, stepped: Stepped | Reached, request: CancelRequest, decision: Decision
    ) -> Reached:
        """Drive a batch member's claim on (its claim is released by ``handle_batch``)."""
        if isinstance(stepped, Deferred):
            return stepped.state
        if not isinstance(stepped, Claim):
            return stepped
        try:
            return self._drive(stepped, request, decision)
        except LeaseLost:
            self.metrics.lease_lost.inc()
            return Outcome.LEASE_LOST

    def _drive(self, claim: Claim, request: CancelRequest, decision: Decision) -> Reached:
        reached = self._steps(claim, request, decision)
        if isinstance(reached, Claim):
            self.notes.note(reached, request, decision)
        return reached.state

    def _steps(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        """The steps, until a resting state, a step that has nothing to do, or a deferral."""
        for _ in range(_MAX_STEPS):
            name = STOPS[claim.state].step  # the table says which step runs in this state
            stepped = self._by_name[name](claim, request, decision) if name else None
            if stepped is None:
                break
            if isinstance(stepped, Deferred):
                return stepped
            claim = stepped
            if claim.state in RESTING_STATES:
                break
        return claim

    def _after_grace(
        self, claim: Claim, request: CancelRequest, decision: Decision
    ) -> Stepped | None:
        if not self.lifecycle.grace_over(claim):
            return None  # the timer fired early (a clock step): nothing to do yet
        return self.lifecycle.after_grace(claim, request, decision)

    def _purge_due(
        self, claim: Claim, request: CancelRequest, decision: Decision
    ) -> Stepped | None:
        if claim.record.next_attempt_at is None:
            return None  # approved, no purge timer: final
        return self.vendor.purge_due(claim, request, decision)

    def _fail(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        return self.connect.fail(claim, request)

    def _resting(self, record: RequestRecord) -> bool:
        """A row the poll sees that needs no claim now: waiting for a person or for its timer."""
        if record.state is State.WAITING_HUMAN and record.noted == State.WAITING_HUMAN.value:
            return True
        timer = record.next_attempt_at
        waits = record.state in (State.SUSPENDED, State.HELD)
        return waits and timer is not None and self.clock() < timer

    @staticmethod
    def _purge_polled(record: RequestRecord) -> bool:
        """A purge the vendor accepted as an operation: its request is approved already."""
        operation = RowData.of(record).operation
        purge = operation is not None and operation.step == "purge"
        return record.state is State.AWAITING_VENDOR and purge

    @staticmethod
    def _released(record: RequestRecord) -> bool:
        """A person sent a routed request on (``cancel-processor proceed``): go ahead."""
        return record.state is State.NEW and RowData.of(record).routed is not None

    def _revocation(self, request: CancelRequest) -> Reached:
        """A ``revoking`` request: confirm it if this processor scheduled it, else ignore it."""
        record = self.journal.get(request.id)
        if record is None or record.state is not State.SCHEDULED:
            get_logger(**request.log_context()).debug(
                "revocation_not_ours", journal_state=record.state.value if record else None
            )
            return Outcome.IGNORED
        claim = self.journal.claim(request.id, self.owner, self.lease_seconds)
        if claim is None:
            return Outcome.BUSY
        return self._run(claim, request, self.policy.decide(request))

    def _malformed(self, payload: Any, exc: MalformedRequest) -> Reached:
        log = get_logger(request_id=exc.request_id)
        if not exc.request_id:
            log.error("request_malformed", problem=exc.problem)
            self.metrics.outcomes.labels(outcome="malformed").inc()
            return Outcome.MALFORMED
        asset = payload.get("asset") if isinstance(payload, Mapping) else None
        asset_id = asset.get("id") if isinstance(asset, Mapping) else None
        asset_id = (
            asset_id if isinstance(asset_id, str) else None
        )  # a malformed payload's: any type
        record = self.journal.ensure(
            exc.request_id, idempotency_key=f"cancel-{exc.request_id}", asset_id=asset_id
        )
        if record.final:
            return record.state
        claim = self.journal.claim(exc.request_id, self.owner, self.lease_seconds)
        if claim is None:
            return Outcome.BUSY
        try:
            request = CancelRequest(
                exc.request_id, "cancel", "pending", str(asset_id or ""), "", ""
            )
            moved = self.mover.bad_request(claim, request, exc.problem)
            if moved.state is State.REFUSING:
                failed = self.connect.fail(moved, request)
                if isinstance(failed, Deferred):
                    return failed.state
                moved = failed
            self.notes.note(moved, request)
            return moved.state
        except LeaseLost:
            return Outcome.LEASE_LOST
        finally:
            self.journal.release(claim)
