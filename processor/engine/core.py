"""One request through the state machine: claim, intent, vendor call, result, Connect action.

The rules that make a crash harmless (DESIGN.md, crash-window table), for every vendor step
(terminate, suspend, purge; see :mod:`processor.engine.vendor_steps`):

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
group, :mod:`processor.engine.batch`), :meth:`Engine.settle` (a row whose request Connect closed behind
our back) and :meth:`Engine.plan` (the dry run). What policies do over time -- scheduling, grace,
retention, routing -- is explained in :mod:`processor.engine.lifecycle`.

Transient trouble (vendor 429/503, outages, Connect storms) only ever defers a request; a refusal
reaches the customer only when the vendor refused, a rule refused, or a poison request is
configured to be failed after ``max_attempts`` definite errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from processor.engine import crashpoints
from processor.engine.base import Clock, Deferred, stub_request, utcnow
from processor.engine.batch import BatchSteps
from processor.engine.planning import Plan, PlannedStep, build_plan
from processor.journal.base import FINAL_STATES, Claim, LeaseLost, RequestRecord, State
from processor.marketplace import MarketplaceError, NotFound
from processor.model import CancelRequest, MalformedRequest, parse_request
from processor.observe import get_logger
from processor.policy.rules import Decision

__all__ = ["Engine", "Plan", "PlannedStep", "Clock", "utcnow", "RESTING", "TIMER_STATES"]

# Where the loop stops for this time: final, or waiting for a date, Connect, or a person.
RESTING = FINAL_STATES | {State.SCHEDULED, State.SUSPENDED, State.WAITING_HUMAN}
# Rows the daemon's timer loop claims when due (claim_due): their request may no longer be listed
# as pending (approved ones waiting to be purged), or a crash left them mid-step.
TIMER_STATES = (State.SUSPENDED, State.SUSPENDING, State.PURGING, State.APPROVED, State.SCHEDULED)
_MAX_STEPS = 12  # a request's longest path has seven steps; more means a bug, not a reason to spin
_OPEN_ON_CONNECT = ("pending", "scheduled", "inquiring", "draft", "tiers_setup", "revoking")

Step = Callable[[Claim, CancelRequest, Decision], Claim]


class Engine(BatchSteps):
    # -- entry points ------------------------------------------------------------------------

    def handle(self, payload: Mapping[str, Any]) -> str:
        """Process one request payload (from a poll, an id, or an EaaS event).

        Returns the journal state reached, or ``ignored`` / ``busy`` / ``lease_lost`` /
        ``malformed``. Never raises for a problem of the request itself; journal and programming
        errors propagate.
        """
        try:
            request = parse_request(payload, subscription_param=self.settings.subscription_param)
        except MalformedRequest as exc:
            return self._malformed(payload, exc)
        if request.status == "revoking":
            return self._revocation(request)
        if request.status != "pending":
            return "ignored"
        decision = self.policy.decide(request)
        if decision.action == "ignore":
            get_logger(**request.log_context()).debug("request_ignored", reason=decision.reason)
            return "ignored"
        record = self.journal.ensure(
            request.id,
            idempotency_key=f"cancel-{request.id}",
            subscription_id=request.subscription_id,
            asset_id=request.asset_id,
            product_id=request.product_id,
            marketplace_id=request.marketplace_id,
            environment=request.environment,
            customer_id=request.customer_id,
        )
        if record.final:
            return record.state.value
        resting = self._resting(record)
        if resting is not None:
            return resting
        claim = self.journal.claim(request.id, self.owner, self.lease_seconds)
        if claim is None:
            return "busy"
        crashpoints.reached("after_claim")
        return self._run(claim, request, decision)

    def resume(self, claim: Claim) -> str:
        """Drive a row the daemon claimed with ``claim_due`` (a timer fell due); releases the claim.

        Approved rows (purge) need nothing from Connect; the others are read fresh, because their
        request may have moved while the row waited (revoked, reactivated, approved by hand).
        """
        record = claim.record
        try:
            if claim.state in (State.APPROVED, State.PURGING):
                request = stub_request(claim.request_id, record, status="approved")
            else:
                try:
                    payload = self.marketplace.get_request(claim.request_id)
                    request = parse_request(
                        payload, subscription_param=self.settings.subscription_param
                    )
                except NotFound:
                    return self._move(
                        claim,
                        stub_request(claim.request_id, record),
                        State.PARKED,
                        reason="the request is no longer visible on Connect",
                    ).state.value
                except (MarketplaceError, MalformedRequest) as exc:
                    when = self.clock() + timedelta(seconds=self._backoff(1))
                    self.journal.update(claim, next_attempt_at=when, last_error=f"timer: {exc}")
                    return claim.state.value
            decision = self.policy.decide(request, released=self._released(record))
            if decision.action == "ignore":
                return self._move(
                    claim,
                    request,
                    State.PARKED,
                    reason=f"a timer fell due, but {decision.reason}: a person decides",
                ).state.value
            return self._run(claim, request, decision, keep_claim=True)
        except LeaseLost:
            self.metrics.lease_lost.inc()
            return "lease_lost"
        finally:
            self.journal.release(claim)

    def settle(self, request_id: str) -> str:
        """Close a journal row whose request left ``pending`` on Connect while the row did not
        follow: the process died after Connect acted and before the journal recorded it, a person
        acted on Connect by hand (a request routed to them, for one), or the customer's side
        withdrew it. Connect's status is the truth; the vendor is not called.
        """
        record = self.journal.get(request_id)
        if record is None or record.final:
            return record.state.value if record else "unknown"
        payload = self.marketplace.get_request(request_id)
        status = str(payload.get("status") or "")
        if status in _OPEN_ON_CONNECT:
            return record.state.value  # still open on Connect: the poll (or a timer) owns it
        claim = self.journal.claim(request_id, self.owner, self.lease_seconds)
        if claim is None:
            return "busy"
        request = stub_request(request_id, record, status)
        try:
            target, why = _settled_state(claim.state, status)
            return self._move(
                claim,
                request,
                target,
                reason=why if target is State.PARKED else None,
                detail=f"settled: request is {status} on Connect",
            ).state.value
        except LeaseLost:
            return "lease_lost"
        finally:
            self.journal.release(claim)

    def plan(self, payload: Mapping[str, Any]) -> Plan:
        """What ``handle`` would do, with the policy and the dates ahead, touching nothing."""
        return build_plan(self, payload)

    # -- the state machine --------------------------------------------------------------------

    def _run(
        self, claim: Claim, request: CancelRequest, decision: Decision, *, keep_claim: bool = False
    ) -> str:
        """Drive a claimed row; the claim is released here unless the caller (``resume``) does."""
        try:
            if claim.state is State.NEW and self._released(claim.record):
                decision = self.policy.decide(request, released=True)
            return self._drive(claim, request, decision)
        except LeaseLost:
            self.metrics.lease_lost.inc()
            get_logger(**request.log_context()).warning("lease_lost", fence=claim.fence)
            return "lease_lost"
        finally:
            if not keep_claim:
                self.journal.release(claim)

    def _drive(self, claim: Claim, request: CancelRequest, decision: Decision) -> str:
        try:
            for _ in range(_MAX_STEPS):
                step = self._step_for(claim)
                if step is None:
                    break
                claim = step(claim, request, decision)
                if claim.state in RESTING:
                    break
            self._note(claim, request, decision)
            return claim.state.value
        except Deferred as deferred:
            return deferred.claim.state.value

    def _step_for(self, claim: Claim) -> Step | None:
        state = claim.state
        if state is State.NEW:
            return self._start
        if state is State.SCHEDULED:
            return self._on_scheduled
        if state in (State.TERMINATING, State.SUSPENDING, State.PURGING):
            return self._resume_step
        if state is State.SUSPENDED:
            return self._after_grace if self._grace_over(claim) else None
        if state is State.TERMINATED:
            return self._approve
        if state is State.REFUSING:
            return self._fail
        if state is State.APPROVED and claim.record.next_attempt_at is not None:
            return self._purge_due
        return None

    def _resting(self, record: RequestRecord) -> str | None:
        """A row the poll sees but that needs no claim now: waiting for a person or for its timer."""
        if record.state is State.WAITING_HUMAN and record.noted == State.WAITING_HUMAN.value:
            return record.state.value
        timer = record.next_attempt_at
        if record.state is State.SUSPENDED and timer is not None and self.clock() < timer:
            return record.state.value
        return None

    @staticmethod
    def _released(record: RequestRecord) -> bool:
        """A person sent a routed request back to ``new`` (``cancel-processor retry``): go ahead."""
        return record.state is State.NEW and bool(record.data.get("routed"))

    def _revocation(self, request: CancelRequest) -> str:
        """A ``revoking`` request: confirm it if this processor scheduled it, else leave it alone."""
        record = self.journal.get(request.id)
        if record is None or record.state is not State.SCHEDULED:
            get_logger(**request.log_context()).debug(
                "revocation_not_ours", journal_state=record.state.value if record else None
            )
            return "ignored"
        claim = self.journal.claim(request.id, self.owner, self.lease_seconds)
        if claim is None:
            return "busy"
        return self._run(claim, request, self.policy.decide(request))

    def _malformed(self, payload: Any, exc: MalformedRequest) -> str:
        log = get_logger(request_id=exc.request_id)
        if not exc.request_id:
            log.error("request_malformed", problem=exc.problem)
            self.metrics.outcomes.labels(outcome="malformed").inc()
            return "malformed"
        asset = payload.get("asset") if isinstance(payload, Mapping) else None
        asset_id = asset.get("id") if isinstance(asset, Mapping) else None
        asset_id = (
            asset_id if isinstance(asset_id, str) else None
        )  # a malformed payload's, of any type
        record = self.journal.ensure(
            exc.request_id, idempotency_key=f"cancel-{exc.request_id}", asset_id=asset_id
        )
        if record.final:
            return record.state.value
        claim = self.journal.claim(exc.request_id, self.owner, self.lease_seconds)
        if claim is None:
            return "busy"
        try:
            request = CancelRequest(
                exc.request_id, "cancel", "pending", str(asset_id or ""), "", ""
            )
            step = self._bad_request(claim, request, exc.problem)
            if step.state is State.REFUSING:
                try:
                    step = self._fail(step, request)
                except Deferred as deferred:
                    return deferred.claim.state.value
            self._note(step, request)
            return step.state.value
        except LeaseLost:
            return "lease_lost"
        finally:
            self.journal.release(claim)


def _settled_state(state: State, status: str) -> tuple[State, str | None]:
    """Where a journal row goes when Connect closed its request without us recording it."""
    if status == "revoked":
        return State.REVOKED, None
    if status == "approved" and state is State.TERMINATED:
        return State.APPROVED, None
    if status == "failed" and state is State.REFUSING:
        return State.FAILED, None
    if state in (State.NEW, State.WAITING_HUMAN, State.SCHEDULED):
        return State.CLOSED, None  # nothing was done at the vendor; someone else closed it
    if state in (State.SUSPENDING, State.SUSPENDED):
        return State.PARKED, (
            f"the request was {status} on Connect while the subscription was suspended at the "
            f"vendor: resume or terminate it there"
        )
    if state is State.TERMINATING or status == "failed":
        return (
            State.PARKED,
            f"the request was {status} on Connect while the vendor step was {state.value}",
        )
    return State.CLOSED, None
