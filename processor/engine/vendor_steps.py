"""Vendor steps: terminate, suspend and purge, each as intent -> call -> recorded result.

The three steps share one discipline (the crash-window table of ``docs/design.md``, generated from
:mod:`processor.engine.transitions`, applied to each):

- the intent state (``terminating``, ``suspending``, ``purging``) is committed before the adapter is
  called, and the state the step started from is kept in the row's data (``step_from``), so an
  outcome that proves nothing happened (:class:`RetryLater`) goes back there rather than to the
  intent, which would later read as "may have acted";
- each step has its own idempotency key, ``<record key>:<step>``, the same on every retry;
- a row found in an intent state may already have acted: it is repeated only for a vendor that
  deduplicates (key or natural idempotency), or after a status read says it did not act; with
  neither it is parked for a person, never called blindly a second time.

A subscription found ``active`` or ``suspended`` when its purge is due was restored by the billing
team within the retention window: the purge is skipped and recorded as such -- a restored account
is never purged. How results are recorded: :mod:`processor.engine.vendor_results`.
"""

from __future__ import annotations

from processor.adapters.base import (
    AlreadyGone,
    Failed,
    Idempotency,
    Outcome,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    VendorAdapter,
    has_status_read,
    outcome_name,
    supports,
)
from processor.engine import crashpoints
from processor.engine.base import Mover
from processor.engine.circuit import Attempt, CircuitOpen
from processor.engine.leases import LeaseKeeper
from processor.engine.liveness import Liveness
from processor.engine.results import Stepped
from processor.engine.rowdata import RowData
from processor.engine.transitions import Event
from processor.engine.vendor_calls import VendorGate
from processor.engine.vendor_results import (
    NO_SAFE_REPEAT,
    PURGE,
    STEPS,
    SUSPEND,
    TERMINATE,
    VendorResults,
    VendorStep,
)
from processor.journal.base import Claim, LeaseLost
from processor.model import CancelRequest
from processor.policy.rules import Decision

__all__ = ["VendorStep", "VendorSteps", "TERMINATE", "SUSPEND", "PURGE"]

S = SubscriptionStatus


class VendorSteps:
    def __init__(
        self,
        mover: Mover,
        gate: VendorGate,
        liveness: Liveness,
        results: VendorResults,
        leases: LeaseKeeper | None,
    ) -> None:
        self.mover = mover
        self.gate = gate
        self.liveness = liveness
        self.results = results
        self.leases = leases

    @staticmethod
    def missing_capability(adapter: VendorAdapter, decision: Decision) -> str | None:
        """Why the policy cannot run with this adapter, checked before anything is done."""
        policy, named = decision.policy, f"policy '{decision.policy_name}'"
        if policy.grace_days and not supports(adapter, "suspend"):
            return (
                f"{named} suspends for a grace period, but adapter '{adapter.name}' has no "
                "suspend()"
            )
        if policy.purges and not supports(adapter, "purge"):
            return f"{named} purges after retention, but adapter '{adapter.name}' has no purge()"
        return None

    def not_loaded(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        why = f"adapter '{self.gate.adapter_name(claim, decision)}' is not loaded"
        return self.mover.move(claim, request, Event.PARK, reason=why)

    def begin(
        self,
        claim: Claim,
        request: CancelRequest,
        decision: Decision,
        step: VendorStep,
        data: RowData | None = None,
    ) -> Stepped:
        """Record the intent of ``step`` (``data`` merged into the row's), then call the vendor."""
        recorded = RowData.of(claim.record)
        if data is not None:
            recorded = recorded.merged(data.raw)
        adapter = self.gate.adapter(claim, decision)
        if adapter is None:
            return self.not_loaded(claim, request, decision)
        problem = self._unsafe_call(adapter, step, claim, request, decision)
        if problem is not None:
            return problem
        self.gate.guard.sync()  # a latch set or lifted by another process (cancel-processor resume)
        try:
            with self.gate.breakers[adapter.name].attempt() as attempt:
                if (held := self.liveness.send_right(claim, request, adapter)) is not None:
                    return held  # an earlier holder may still send (processor.engine.liveness)
                # The request is approved before a purge: no poll will ever list it again, so a
                # crash inside this step must leave a timer for claim_due once the lease ran out.
                timer = {"next_attempt_at": self.mover.clock()} if step is PURGE else {}
                claim = self.mover.move(
                    claim,
                    request,
                    step.event,
                    attempts=claim.record.attempts + 1,
                    data=recorded.step_started(claim.state),
                    detail=f"intent: {step.name} via {adapter.name}",
                    **timer,
                )
                crashpoints.reached("after_intent")
                return self._call_step(claim, request, decision, adapter, step, False, attempt)
        except CircuitOpen as shut:
            return self.mover.defer(claim, request, shut.wait, str(shut))

    def _unsafe_call(
        self,
        adapter: VendorAdapter,
        step: VendorStep,
        claim: Claim,
        request: CancelRequest,
        decision: Decision,
    ) -> Claim | None:
        """Park a request whose ids would change the vendor URL (``/``, ``..``), before any call."""
        check = getattr(adapter, "check_call", None)
        if not callable(check):
            return None
        problem = check(step.name, self.gate.vendor_call(claim, request, step.name, decision))
        if not problem:
            return None
        if (
            step is PURGE
        ):  # approved already: it cannot be failed, whatever processing.malformed says
            why = f"malformed request: {problem}"
            return self.mover.move(claim, request, Event.PARK, reason=why, last_error=problem)
        return self.mover.bad_request(claim, request, str(problem))

    def resume(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        """Found in an intent state: the call may already have acted."""
        step = STEPS[claim.state]
        adapter = self.gate.adapter(claim, decision)
        if adapter is None:
            return self.not_loaded(claim, request, decision)
        self.gate.guard.sync()
        try:
            # Every way out of this block -- a park without a call, a deferral, a lost lease --
            # gives a half-open probe back (the leak: allow() taken here, then parked).
            with self.gate.breakers[adapter.name].attempt() as attempt:
                return self._resume_in(claim, request, decision, adapter, step, attempt)
        except CircuitOpen as shut:
            return self.mover.defer(claim, request, shut.wait, str(shut))

    def _resume_in(
        self,
        claim: Claim,
        request: CancelRequest,
        decision: Decision,
        adapter: VendorAdapter,
        step: VendorStep,
        attempt: Attempt,
    ) -> Stepped:
        record = self.results.record
        if (held := self.liveness.send_right(claim, request, adapter)) is not None:
            return held  # an earlier holder may still send (processor.engine.liveness)
        if adapter.idempotency in (Idempotency.KEY, Idempotency.NATURAL):
            claim = self.mover.move(
                claim,
                request,
                step.event,
                attempts=claim.record.attempts + 1,
                detail=f"repeat {step.name} via {adapter.name} (vendor deduplicates)",
            )
            return self._call_step(claim, request, decision, adapter, step, True, attempt)
        if not has_status_read(adapter):
            return self.mover.move(claim, request, Event.PARK, reason=NO_SAFE_REPEAT)
        status = self.gate.status(adapter, claim, request, step.name)
        if not isinstance(status, SubscriptionStatus):
            return record(claim, request, adapter, step, status, True, attempt)
        if status in step.confirmed:
            confirmed = Terminated(f"confirmed by status read ({status.value})")
            return record(claim, request, adapter, step, confirmed, True, attempt)
        if status is S.NOT_FOUND or (step is SUSPEND and status in TERMINATE.confirmed):
            gone = AlreadyGone(f"status read: {status.value}")
            return record(claim, request, adapter, step, gone, True, attempt)
        if step is PURGE and status in (S.ACTIVE, S.SUSPENDED):
            attempt.success()
            return self.results.purge_skipped(claim, request, status)
        if status in step.not_acted:
            # The earlier call did not act: calling again cannot act twice.
            claim = self.mover.move(
                claim,
                request,
                step.event,
                attempts=claim.record.attempts + 1,
                detail=f"status read: {status.value}; {step.name} again",
            )
            return self._call_step(claim, request, decision, adapter, step, False, attempt)
        unclear = RetryLater(f"status read answered {status.value}")
        return record(claim, request, adapter, step, unclear, True, attempt)

    def _call_step(
        self,
        claim: Claim,
        request: CancelRequest,
        decision: Decision,
        adapter: VendorAdapter,
        step: VendorStep,
        uncertain: bool,
        attempt: Attempt,
    ) -> Stepped:
        call = self.gate.vendor_call(
            claim, request, step.name, decision if step is not PURGE else None
        )
        outcome = self.gate.call(adapter, step.name, call, claim)
        crashpoints.reached("after_vendor")
        if self.leases is not None and self.leases.lost(claim):
            raise LeaseLost(claim.request_id, claim.fence)
        if isinstance(outcome, Failed) and has_status_read(adapter):
            outcome = self._confirmed(claim, request, adapter, step, outcome)
        return self.results.record(claim, request, adapter, step, outcome, uncertain, attempt)

    def _confirmed(
        self,
        claim: Claim,
        request: CancelRequest,
        adapter: VendorAdapter,
        step: VendorStep,
        failed: Failed,
    ) -> Outcome:
        """A definite error is no evidence either way; a status read can be (a vendor that answers a
        bare 404 for a subscription it already ended). Anything else keeps the error."""
        status = self.gate.status(adapter, claim, request, step.name)
        if status in step.confirmed:
            return Terminated(f"confirmed by status read ({status.value}) after {failed.detail}")
        if status is S.NOT_FOUND or (step is SUSPEND and status in TERMINATE.confirmed):
            return AlreadyGone(f"status read: {status.value}, after {failed.detail}")
        return failed

    def purge_due(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        """An approved row whose retention timer fired: purge, never before ``purge_at``."""
        data = RowData.of(claim.record)
        dates = data.dates
        if dates is None or dates.purge_at is None or data.purged_at:
            return self.mover.journal.update(claim, next_attempt_at=None)  # nothing (left) to purge
        if self.mover.clock() < dates.purge_at:
            # A timer that fired early (a clock step, a hand-edited row): re-arm, never purge early.
            return self.mover.journal.update(claim, next_attempt_at=dates.purge_at)
        adapter = self.gate.adapter(claim, decision)
        if adapter is not None and has_status_read(adapter):
            # Within the retention window the billing team may have restored the account: look
            # first, and do not purge on a guess when the vendor cannot say.
            status = self.gate.status(adapter, claim, request, PURGE.name)
            if not isinstance(status, SubscriptionStatus) or status is S.UNKNOWN:
                why = getattr(status, "detail", None) or f"status {outcome_name(status)}"
                wait = self.mover.backoff(1)
                why = f"status read before purge: {why}"
                return self.mover.defer(claim, request, wait, why)
            if status in (S.ACTIVE, S.SUSPENDED):
                return self.results.purge_skipped(claim, request, status)
            if status in (S.PURGED, S.NOT_FOUND):
                why = f"status read: {status.value}"
                return self.results.step_done(claim, request, PURGE, "already_gone", why)
        return self.begin(claim, request, decision, PURGE)
