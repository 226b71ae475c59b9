"""Vendor steps: terminate, suspend and purge, each as intent -> call -> recorded result.

The three steps share one discipline (DESIGN.md's crash-window table, applied to each):

- the intent state (``terminating``, ``suspending``, ``purging``) is committed before the adapter is
  called, and the state the step started from is kept in the record's ``data["step_from"]``, so an
  outcome that proves nothing happened (:class:`RetryLater`) goes back there rather than to the
  intent, which would later read as "may have acted";
- each step has its own idempotency key, ``<record key>:<step>``, the same on every retry;
- a row found in an intent state may already have acted: it is repeated only for a vendor that
  deduplicates (key or natural idempotency), or after a status read says it did not act; with
  neither it is parked for a person, never called blindly a second time.

What a status read proves, per step: ``terminated``/``purged`` prove a terminate, ``suspended`` a
suspend, ``purged`` a purge; ``active`` (and ``suspended`` for a terminate, ``terminated`` for a
purge) prove the step did not act yet. A subscription found ``active`` or ``suspended`` when its
purge is due was restored by the billing team within the retention window: the purge is skipped and
recorded as such -- a restored account is never purged.

Results: a terminate leads to ``terminated`` (approve next) and fixes the purge date from the real
moment of termination; a suspend leads to ``suspended`` with a timer at the end of the grace period;
a purge returns the approved row to ``approved`` with no timer. A refusal of a terminate or suspend
fails the request with the vendor's reason; a refused purge (the request is approved already, it
cannot be failed) is parked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processor.adapters.base import (
    AlreadyGone,
    Ambiguous,
    Failed,
    Idempotency,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    VendorAdapter,
    has_status_read,
    outcome_name,
    supports,
)
from processor.engine import crashpoints
from processor.engine.circuit import Attempt, CircuitOpen
from processor.engine.liveness import Liveness
from processor.journal.base import Claim, LeaseLost, State
from processor.model import CancelRequest
from processor.policy.rules import Decision
from processor.policy.timing import Dates, iso

__all__ = ["VendorStep", "VendorSteps", "TERMINATE", "SUSPEND", "PURGE"]

S = SubscriptionStatus
_NO_SAFE_REPEAT = (
    "the vendor call may have acted and the vendor offers neither idempotency nor a status read"
)


@dataclass(frozen=True, slots=True)
class VendorStep:
    name: str  # the adapter method, and the idempotency key's suffix
    intent: State
    done: str  # the journal's outcome name when the vendor confirms the step
    confirmed: frozenset[SubscriptionStatus]  # a status read that proves the step happened
    not_acted: frozenset[SubscriptionStatus]  # a status read that proves it did not


TERMINATE = VendorStep(
    "terminate",
    State.TERMINATING,
    "terminated",
    frozenset({S.TERMINATED, S.PURGED}),
    frozenset({S.ACTIVE, S.SUSPENDED}),
)
SUSPEND = VendorStep(
    "suspend", State.SUSPENDING, "suspended", frozenset({S.SUSPENDED}), frozenset({S.ACTIVE})
)
PURGE = VendorStep(
    "purge", State.PURGING, "purged", frozenset({S.PURGED}), frozenset({S.TERMINATED})
)
STEPS = {step.intent: step for step in (TERMINATE, SUSPEND, PURGE)}


class VendorSteps(Liveness):
    def _missing_capability(self, adapter: VendorAdapter, decision: Decision) -> str | None:
        """Why the policy cannot run with this adapter, checked before anything is done."""
        policy, named = decision.policy, f"policy '{decision.policy_name}'"
        if policy.grace_days and not supports(adapter, "suspend"):
            return f"{named} suspends for a grace period, but adapter '{adapter.name}' has no suspend()"
        if policy.purges and not supports(adapter, "purge"):
            return f"{named} purges after retention, but adapter '{adapter.name}' has no purge()"
        return None

    def _not_loaded(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        return self._move(
            claim,
            request,
            State.PARKED,
            reason=f"adapter '{self._adapter_name(claim, decision)}' is not loaded",
        )

    def _begin_step(
        self,
        claim: Claim,
        request: CancelRequest,
        decision: Decision,
        step: VendorStep,
        **data: Any,
    ) -> Claim:
        """Record the intent of ``step`` (with ``data`` merged into the record), then call the vendor."""
        adapter = self._adapter(claim, decision)
        if adapter is None:
            return self._not_loaded(claim, request, decision)
        problem = self._unsafe_call(adapter, step, claim, request, decision)
        if problem is not None:
            return problem
        self.guard.sync()  # a latch set or lifted by another process (cancel-processor resume)
        try:
            with self.breakers[adapter.name].attempt() as attempt:
                if (held := self._send_right(claim, request, adapter)) is not None:
                    return held  # an earlier holder may still send: parked after holder_wait (processor.engine.liveness)
                fields: dict[str, Any] = {}
                if step is PURGE:
                    # The request is approved: no poll will ever list it again, so a crash inside
                    # this step must leave a timer for claim_due to find once the lease has run out.
                    fields["next_attempt_at"] = self.clock()
                claim = self._move(
                    claim,
                    request,
                    step.intent,
                    attempts=claim.record.attempts + 1,
                    data={**claim.record.data, **data, "step_from": claim.state.value},
                    detail=f"intent: {step.name} via {adapter.name}",
                    **fields,
                )
                crashpoints.reached("after_intent")
                return self._call_step(claim, request, decision, adapter, step, False, attempt)
        except CircuitOpen as shut:
            self._defer(claim, request, claim.state, shut.wait, str(shut))

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
        problem = check(step.name, self._vendor_call(claim, request, step.name, decision))
        if not problem:
            return None
        if (
            step is PURGE
        ):  # approved already: it cannot be failed, whatever processing.malformed says
            return self._move(
                claim,
                request,
                State.PARKED,
                reason=f"malformed request: {problem}",
                last_error=problem,
            )
        return self._bad_request(claim, request, str(problem))

    def _resume_step(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        """Found in an intent state: the call may already have acted."""
        step = STEPS[claim.state]
        adapter = self._adapter(claim, decision)
        if adapter is None:
            return self._not_loaded(claim, request, decision)
        self.guard.sync()
        try:
            # Every way out of this block -- a park without a call, a deferral, a lost lease --
            # gives a half-open probe back (the leak: allow() taken here, then parked).
            with self.breakers[adapter.name].attempt() as attempt:
                return self._resume_in(claim, request, decision, adapter, step, attempt)
        except CircuitOpen as shut:
            self._defer(claim, request, step.intent, shut.wait, str(shut))

    def _resume_in(
        self,
        claim: Claim,
        request: CancelRequest,
        decision: Decision,
        adapter: VendorAdapter,
        step: VendorStep,
        attempt: Attempt,
    ) -> Claim:
        if (held := self._send_right(claim, request, adapter)) is not None:
            return held  # an earlier holder may still send: parked after holder_wait (processor.engine.liveness)
        if adapter.idempotency in (Idempotency.KEY, Idempotency.NATURAL):
            claim = self._move(
                claim,
                request,
                step.intent,
                attempts=claim.record.attempts + 1,
                detail=f"repeat {step.name} via {adapter.name} (vendor deduplicates)",
            )
            return self._call_step(claim, request, decision, adapter, step, True, attempt)
        if not has_status_read(adapter):
            return self._move(claim, request, State.PARKED, reason=_NO_SAFE_REPEAT)
        status = self._call(adapter, "status", self._vendor_call(claim, request, step.name), claim)
        if not isinstance(status, SubscriptionStatus):
            return self._record_step(claim, request, adapter, step, status, True, attempt)
        if status in step.confirmed:
            confirmed = Terminated(f"confirmed by status read ({status.value})")
            return self._record_step(claim, request, adapter, step, confirmed, True, attempt)
        if status is S.NOT_FOUND or (step is SUSPEND and status in TERMINATE.confirmed):
            gone = AlreadyGone(f"status read: {status.value}")
            return self._record_step(claim, request, adapter, step, gone, True, attempt)
        if step is PURGE and status in (S.ACTIVE, S.SUSPENDED):
            attempt.success()
            return self._purge_skipped(claim, request, status)
        if status in step.not_acted:
            # The earlier call did not act: calling again cannot act twice.
            claim = self._move(
                claim,
                request,
                step.intent,
                attempts=claim.record.attempts + 1,
                detail=f"status read: {status.value}; {step.name} again",
            )
            return self._call_step(claim, request, decision, adapter, step, False, attempt)
        unclear = RetryLater(f"status read answered {status.value}")
        return self._record_step(claim, request, adapter, step, unclear, True, attempt)

    def _call_step(
        self,
        claim: Claim,
        request: CancelRequest,
        decision: Decision,
        adapter: VendorAdapter,
        step: VendorStep,
        uncertain: bool,
        attempt: Attempt,
    ) -> Claim:
        call = self._vendor_call(claim, request, step.name, decision if step is not PURGE else None)
        outcome = self._call(adapter, step.name, call, claim)
        crashpoints.reached("after_vendor")
        if self.leases is not None and self.leases.lost(claim):
            raise LeaseLost(claim.request_id, claim.fence)
        if isinstance(outcome, Failed) and has_status_read(adapter):
            outcome = self._confirmed(claim, request, adapter, step, outcome)
        return self._record_step(claim, request, adapter, step, outcome, uncertain, attempt)

    def _confirmed(
        self,
        claim: Claim,
        request: CancelRequest,
        adapter: VendorAdapter,
        step: VendorStep,
        failed: Failed,
    ) -> Any:
        """A definite error is no evidence either way; a status read can be (a vendor that answers a
        bare 404 for a subscription it already ended). Anything else keeps the error."""
        status = self._call(adapter, "status", self._vendor_call(claim, request, step.name), claim)
        if status in step.confirmed:
            return Terminated(f"confirmed by status read ({status.value}) after {failed.detail}")
        if status is S.NOT_FOUND or (step is SUSPEND and status in TERMINATE.confirmed):
            return AlreadyGone(f"status read: {status.value}, after {failed.detail}")
        return failed

    def _record_step(
        self,
        claim: Claim,
        request: CancelRequest,
        adapter: VendorAdapter,
        step: VendorStep,
        outcome: Any,
        uncertain: bool,
        attempt: Attempt,
    ) -> Claim:
        """Record a vendor outcome. ``uncertain``: an earlier call of this step may have acted."""
        name = outcome_name(outcome)
        breaker = attempt
        self.guard.record(adapter.name, name)  # a burst of gone/refused latches the circuit
        if isinstance(outcome, (Terminated, AlreadyGone)):
            breaker.success()
            done = step.done if isinstance(outcome, Terminated) else name
            claim = self._step_done(claim, request, step, done, outcome.detail or done)
            crashpoints.reached("after_result")
            return claim
        if isinstance(outcome, Refused):
            breaker.success()
            if step is PURGE:
                return self._move(
                    claim,
                    request,
                    State.PARKED,
                    outcome=name,
                    reason=f"the vendor refused to purge the data: {outcome.reason}",
                )
            reason = customer_text(outcome.reason)
            return self._move(claim, request, State.REFUSING, outcome=name, reason=reason)
        back = (
            step.intent
            if uncertain
            else State(claim.record.data.get("step_from") or State.NEW.value)
        )
        if isinstance(outcome, RetryLater):
            breaker.failure()
            delay = outcome.after if outcome.after is not None else self._backoff(1)
            self._defer(claim, request, back, delay, outcome.detail or name, outcome=name)
        if isinstance(outcome, Ambiguous):
            if adapter.idempotency is Idempotency.NONE and not has_status_read(adapter):
                breaker.failure()
                return self._move(
                    claim,
                    request,
                    State.PARKED,
                    outcome=name,
                    last_error=outcome.detail,
                    reason=_NO_SAFE_REPEAT,
                )
            if not outcome.raised:
                breaker.failure()
                self._defer(
                    claim,
                    request,
                    step.intent,
                    self._backoff(1),
                    outcome.detail or name,
                    outcome=name,
                )
            # The adapter's own code raised (or answered nonsense): repeatable in this mode, but a
            # bug retried forever is no better than a poison request. Counted below, and never
            # refused, because the call may have acted (uncertain).
            uncertain, back = True, step.intent
        # Failed (or an adapter that raised): a definite error that is not a refusal.
        breaker.success()  # the vendor answered, or it was never reached; this is not an outage
        detail = (
            outcome.detail
            if isinstance(outcome, Failed)
            else f"unexpected adapter answer {outcome!r}"
        )
        failures = int(claim.record.data.get("failures", 0)) + 1
        data = {**claim.record.data, "failures": failures}
        if failures >= self.settings.max_attempts:
            # Refusing is for a request nothing has been done to yet: after a suspend, failing the
            # request would make the subscription active on Connect while the vendor has it
            # suspended; after approval (a purge) it is no longer possible at all.
            untouched = step is TERMINATE and back in (State.NEW, State.SCHEDULED)
            if self.settings.poison == "fail" and not uncertain and untouched:
                return self._move(
                    claim,
                    request,
                    State.REFUSING,
                    outcome=name,
                    last_error=detail,
                    data=data,
                    reason=self.settings.poison_reason,
                    detail=f"poison after {failures} errors",
                )
            return self._move(
                claim,
                request,
                State.PARKED,
                outcome=name,
                last_error=detail,
                data=data,
                reason=f"gave up after {failures} vendor errors during {step.name}: {detail}",
            )
        self._defer(claim, request, back, self._backoff(failures), detail, outcome=name, data=data)

    def _step_done(
        self, claim: Claim, request: CancelRequest, step: VendorStep, name: str, detail: str
    ) -> Claim:
        now = self.clock()
        data = {k: v for k, v in claim.record.data.items() if k not in ("step_from", "failures")}
        dates = Dates.from_data(data)
        if step is SUSPEND:
            assert dates is not None  # a suspend is only ever started with a plan
            return self._move(
                claim,
                request,
                State.SUSPENDED,
                outcome=name,
                last_error=None,
                data=data,
                next_attempt_at=dates.terminate_at,
                detail=f"{detail}; terminate due {iso(dates.terminate_at)}",
            )
        if step is PURGE:
            return self._move(
                claim,
                request,
                State.APPROVED,
                outcome=name,
                last_error=None,
                next_attempt_at=None,
                data={**data, "purged_at": iso(now)},
                detail=f"purged: {detail}",
            )
        retention = data.get("retention_days")
        if dates is not None:
            data.update(
                dates.terminated(now, retention if isinstance(retention, int) else None).as_data()
            )
        return self._move(
            claim,
            request,
            State.TERMINATED,
            outcome=name,
            last_error=None,
            data=data,
            detail=detail,
            next_attempt_at=None,
        )

    def _purge_due(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        """An approved row whose retention timer fired: purge, never before ``purge_at``."""
        dates = Dates.from_data(claim.record.data)
        if dates is None or dates.purge_at is None or claim.record.data.get("purged_at"):
            return self.journal.update(claim, next_attempt_at=None)  # nothing (left) to purge
        if self.clock() < dates.purge_at:
            # A timer that fired early (a clock step, a hand-edited row): re-arm, never purge early.
            return self.journal.update(claim, next_attempt_at=dates.purge_at)
        adapter = self._adapter(claim, decision)
        if adapter is not None and has_status_read(adapter):
            # Within the retention window the billing team may have restored the account: look
            # first, and do not purge on a guess when the vendor cannot say.
            status = self._call(
                adapter, "status", self._vendor_call(claim, request, PURGE.name), claim
            )
            if not isinstance(status, SubscriptionStatus) or status is S.UNKNOWN:
                why = getattr(status, "detail", None) or f"status {outcome_name(status)}"
                self._defer(
                    claim,
                    request,
                    claim.state,
                    self._backoff(1),
                    f"status read before purge: {why}",
                )
            if status in (S.ACTIVE, S.SUSPENDED):
                return self._purge_skipped(claim, request, status)
            if status in (S.PURGED, S.NOT_FOUND):
                return self._step_done(
                    claim, request, PURGE, "already_gone", f"status read: {status.value}"
                )
        return self._begin_step(claim, request, decision, PURGE)

    def _purge_skipped(
        self, claim: Claim, request: CancelRequest, status: SubscriptionStatus
    ) -> Claim:
        why = f"the subscription is {status.value} at the vendor (restored)"
        data = {k: v for k, v in claim.record.data.items() if k not in ("step_from", "failures")}
        return self._move(
            claim,
            request,
            State.APPROVED,
            next_attempt_at=None,
            data={**data, "purge": f"skipped: {why}"},
            detail=f"purge skipped: {why}",
        )


def customer_text(reason: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in reason).strip()
    return cleaned[:500] or "The vendor refused the cancellation."
