"""One request through the state machine: claim, intent, vendor call, result, Connect action.

The rules that make a crash harmless (DESIGN.md, crash-window table):

- the intent (``terminating``) is committed before the vendor is called, the result after it;
  no journal transaction is open during any remote call;
- a request found in ``terminating`` on claim may already have been terminated: it is called again
  only when the vendor deduplicates (idempotency key, natural idempotency), or after a status read
  says it was not; with neither, it is parked for a human, never called blindly a second time;
- a request in ``terminated`` is approved without another vendor call; an approve that Connect
  refuses because the request is already approved is a success (the gateway re-reads);
- a lost lease (:class:`LeaseLost`) stops the worker before its next remote call.

Transient trouble (vendor 429/503, outages, Connect storms) only ever defers a request; a refusal
reaches the customer only when the vendor refused, a rule refused, or a poison request is
configured to be failed after ``max_attempts`` definite errors.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, NoReturn

from processor import crashpoints
from processor.adapters.base import (
    AlreadyGone,
    Ambiguous,
    Failed,
    Idempotency,
    Outcome,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    VendorAdapter,
    VendorCall,
    has_status_read,
    outcome_name,
)
from processor.circuit import CircuitBreaker
from processor.config import Config
from processor.journal.base import Claim, Journal, LeaseLost, State
from processor.leases import LeaseKeeper
from processor.marketplace import ActionRefused, Marketplace, MarketplaceError, NotPending, TransientError
from processor.model import CancelRequest, MalformedRequest, parse_request
from processor.observe import Metrics, get_logger
from processor.policy import Decision, Policy

__all__ = ["Engine", "Plan"]

Clock = Callable[[], datetime]


class _Deferred(Exception):
    """Unwinds a request's processing after a retry time was recorded."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``--dry-run`` prints for one request."""

    request_id: str
    product_id: str | None
    subscription_id: str | None
    environment: str | None
    journal_state: str | None
    action: str


class Engine:
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
        self.adapters = dict(adapters)
        self.owner = owner
        self.metrics = metrics or Metrics()
        self.leases = leases
        self.clock = clock
        self.policy = policy or Policy(config)
        self.lease_seconds = config.journal.lease_seconds
        self.breakers = {
            name: CircuitBreaker(
                name,
                self.settings.circuit.failures,
                self.settings.circuit.reset_after,
                on_change=lambda n, is_open: self.metrics.circuit_open.labels(adapter=n).set(int(is_open)),
            )
            for name in self.adapters
        }
        self._random = random.Random()

    # -- entry points ------------------------------------------------------------------------

    def handle(self, payload: Mapping[str, Any]) -> str:
        """Process one request payload (from a poll, an id, or an EaaS event).

        Returns the journal state reached, or ``ignored`` / ``busy`` / ``lease_lost``. Never raises for
        a problem of the request itself; journal and programming errors propagate.
        """
        try:
            request = parse_request(payload, subscription_param=self.settings.subscription_param)
        except MalformedRequest as exc:
            return self._malformed(payload, exc)
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
        claim = self.journal.claim(request.id, self.owner, self.lease_seconds)
        if claim is None:
            return "busy"
        crashpoints.reached("after_claim")
        try:
            return self._drive(claim, request, decision)
        except LeaseLost:
            self.metrics.lease_lost.inc()
            get_logger(**request.log_context()).warning("lease_lost", fence=claim.fence)
            return "lease_lost"
        finally:
            self.journal.release(claim)

    def settle(self, request_id: str) -> str:
        """Close a journal row whose request left ``pending`` on Connect while the row did not
        follow: the process died after Connect acted and before the journal recorded it, or
        someone acted on Connect by hand. Connect's status is the truth; the vendor is not called.
        """
        record = self.journal.get(request_id)
        if record is None or record.final:
            return record.state.value if record else "unknown"
        payload = self.marketplace.get_request(request_id)
        status = str(payload.get("status") or "")
        if status in ("pending", "scheduled", "inquiring", "draft", "tiers_setup", "revoking"):
            return record.state.value  # still open on Connect: the poll (or a timer) owns it
        claim = self.journal.claim(request_id, self.owner, self.lease_seconds)
        if claim is None:
            return "busy"
        request = _stub_request(request_id, record)
        try:
            target, why = _settled_state(claim.state, status)
            return self._move(claim, request, target, reason=why if target is State.PARKED else None,
                              detail=f"settled: request is {status} on Connect").state.value
        except LeaseLost:
            return "lease_lost"
        finally:
            self.journal.release(claim)

    def plan(self, payload: Mapping[str, Any]) -> Plan:
        """What ``handle`` would do, touching nothing."""
        request_id = str(payload.get("id") or "<no id>") if isinstance(payload, Mapping) else "<not an object>"
        try:
            request = parse_request(payload, subscription_param=self.settings.subscription_param)
        except MalformedRequest as exc:
            return Plan(request_id, None, None, None, None, f"{self.settings.malformed}: {exc.problem}")
        record = self.journal.get(request.id)
        decision = self.policy.decide(request)
        action = decision.describe()
        if record is not None and record.final:
            action = f"nothing: already {record.state.value}"
        elif record is not None and record.state is State.TERMINATED:
            action = "approve only (the vendor already terminated it)"
        elif decision.action == "terminate" and request.subscription_id is None:
            action = f"{self.settings.malformed}: no subscription id"
        return Plan(
            request.id, request.product_id, request.subscription_id, request.environment,
            record.state.value if record else None, action,
        )

    # -- the state machine --------------------------------------------------------------------

    def _drive(self, claim: Claim, request: CancelRequest, decision: Decision) -> str:
        try:
            while True:
                state = claim.state
                if state is State.NEW:
                    claim = self._start(claim, request, decision)
                elif state is State.TERMINATING:
                    claim = self._resume_terminating(claim, request, decision)
                elif state is State.TERMINATED:
                    claim = self._approve(claim, request, decision)
                elif state is State.REFUSING:
                    claim = self._fail(claim, request)
                else:
                    return state.value
                if claim.state in (State.APPROVED, State.FAILED, State.PARKED, State.CLOSED):
                    self._note(claim, request)
                    return claim.state.value
        except _Deferred as deferred:
            return deferred.claim.state.value

    def _start(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        if decision.action == "refuse":
            return self._move(claim, request, State.REFUSING, reason=decision.reason, detail="refused by rule")
        if request.subscription_id is None:
            return self._bad_request(claim, request, "no vendor subscription id on the request")
        adapter = self._adapter(decision)
        if adapter is None:
            return self._move(claim, request, State.PARKED, reason=f"adapter '{decision.adapter}' is not loaded")
        wait = self.breakers[adapter.name].allow()
        if wait:
            return self._defer(claim, request, claim.state, wait, "vendor circuit open")
        claim = self._move(
            claim, request, State.TERMINATING,
            attempts=claim.record.attempts + 1, detail=f"intent: terminate via {adapter.name}",
        )
        crashpoints.reached("after_intent")
        return self._terminate(claim, request, adapter, uncertain=False)

    def _resume_terminating(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        """Found in ``terminating``: a terminate call may already have acted."""
        adapter = self._adapter(decision)
        if adapter is None:
            return self._move(claim, request, State.PARKED, reason=f"adapter '{decision.adapter}' is not loaded")
        wait = self.breakers[adapter.name].allow()
        if wait:
            return self._defer(claim, request, State.TERMINATING, wait, "vendor circuit open")
        if adapter.idempotency in (Idempotency.KEY, Idempotency.NATURAL):
            claim = self._move(claim, request, State.TERMINATING, attempts=claim.record.attempts + 1,
                               detail=f"repeat terminate via {adapter.name} (vendor deduplicates)")
            return self._terminate(claim, request, adapter, uncertain=True)
        if has_status_read(adapter):
            status = self._call(adapter, "status", self._vendor_call(claim, request, "terminate"), claim)
            if isinstance(status, SubscriptionStatus):
                if status in (SubscriptionStatus.TERMINATED, SubscriptionStatus.PURGED):
                    return self._record(claim, request, adapter, Terminated("confirmed by status read"), True)
                if status is SubscriptionStatus.NOT_FOUND:
                    return self._record(claim, request, adapter, AlreadyGone("not found by status read"), True)
                if status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.SUSPENDED):
                    # The earlier call did not act: calling again cannot terminate twice.
                    claim = self._move(claim, request, State.TERMINATING, attempts=claim.record.attempts + 1,
                                       detail=f"status read: {status.value}; terminate again")
                    return self._terminate(claim, request, adapter, uncertain=False)
                status = RetryLater(f"status read answered {status.value}")
            return self._record(claim, request, adapter, status, True)
        return self._move(
            claim, request, State.PARKED,
            reason="the vendor call may have acted and the vendor offers neither idempotency nor a status read",
        )

    def _terminate(self, claim: Claim, request: CancelRequest, adapter: VendorAdapter, uncertain: bool) -> Claim:
        outcome = self._call(adapter, "terminate", self._vendor_call(claim, request, "terminate"), claim)
        crashpoints.reached("after_vendor")
        if self.leases is not None and self.leases.lost(claim):
            raise LeaseLost(claim.request_id, claim.fence)
        return self._record(claim, request, adapter, outcome, uncertain)

    def _record(
        self, claim: Claim, request: CancelRequest, adapter: VendorAdapter, outcome: Any, uncertain: bool
    ) -> Claim:
        """Record a vendor outcome. ``uncertain``: an earlier call of this step may have acted."""
        name = outcome_name(outcome)
        breaker = self.breakers[adapter.name]
        if isinstance(outcome, (Terminated, AlreadyGone)):
            breaker.success()
            claim = self._move(claim, request, State.TERMINATED, outcome=name, last_error=None,
                               detail=outcome.detail or name)
            crashpoints.reached("after_result")
            return claim
        if isinstance(outcome, Refused):
            breaker.success()
            return self._move(claim, request, State.REFUSING, outcome=name, reason=_customer_text(outcome.reason))
        back = State.TERMINATING if uncertain else State.NEW
        if isinstance(outcome, RetryLater):
            breaker.failure()
            delay = outcome.after if outcome.after is not None else self._backoff(1)
            return self._defer(claim, request, back, delay, outcome.detail or name, outcome=name)
        if isinstance(outcome, Ambiguous):
            breaker.failure()
            if adapter.idempotency is Idempotency.NONE and not has_status_read(adapter):
                return self._move(
                    claim, request, State.PARKED, outcome=name, last_error=outcome.detail,
                    reason="the vendor call may have acted and the vendor offers neither idempotency nor a status read",
                )
            return self._defer(claim, request, State.TERMINATING, self._backoff(1), outcome.detail or name, outcome=name)
        # Failed: a definite error that is not a refusal.
        breaker.success()  # the vendor answered; this is not an outage
        detail = outcome.detail if isinstance(outcome, Failed) else f"unexpected adapter answer {outcome!r}"
        failures = int(claim.record.data.get("failures", 0)) + 1
        data = {**claim.record.data, "failures": failures}
        if failures >= self.settings.max_attempts:
            if self.settings.poison == "fail" and not uncertain:
                return self._move(claim, request, State.REFUSING, outcome=name, last_error=detail, data=data,
                                  reason=self.settings.poison_reason, detail=f"poison after {failures} errors")
            return self._move(claim, request, State.PARKED, outcome=name, last_error=detail, data=data,
                              reason=f"gave up after {failures} vendor errors: {detail}")
        return self._defer(claim, request, back, self._backoff(failures), detail, outcome=name, data=data)

    def _approve(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        template = decision.template
        try:
            if template is None and self.config.defaults.lookup_template:
                template = self.marketplace.default_template(request.product_id)
            if template is None:
                return self._move(claim, request, State.PARKED, reason="no approve template for the product")
            self.marketplace.approve(request.id, template)
        except TransientError as exc:
            return self._defer(claim, request, State.TERMINATED, exc.retry_after or self._backoff(1), str(exc))
        except NotPending as exc:
            if exc.status == "approved":
                return self._move(claim, request, State.APPROVED, detail="already approved on Connect")
            return self._move(
                claim, request, State.PARKED,
                reason=f"terminated at the vendor, but the request is {exc.status} on Connect",
            )
        except (ActionRefused, MarketplaceError) as exc:
            return self._move(claim, request, State.PARKED, reason=f"approve refused by Connect: {exc}")
        crashpoints.reached("after_approve")
        return self._move(claim, request, State.APPROVED, detail=f"approved with {template}")

    def _fail(self, claim: Claim, request: CancelRequest) -> Claim:
        reason = claim.record.reason or self.settings.poison_reason
        try:
            self.marketplace.fail(request.id, reason)
        except TransientError as exc:
            return self._defer(claim, request, State.REFUSING, exc.retry_after or self._backoff(1), str(exc))
        except NotPending as exc:
            if exc.status == "failed":
                return self._move(claim, request, State.FAILED, detail="already failed on Connect")
            return self._move(claim, request, State.CLOSED, detail=f"request is {exc.status} on Connect")
        except (ActionRefused, MarketplaceError) as exc:
            return self._move(claim, request, State.PARKED, reason=f"fail refused by Connect: {exc}")
        return self._move(claim, request, State.FAILED, detail=f"failed: {reason}")

    # -- helpers ------------------------------------------------------------------------------

    def _malformed(self, payload: Any, exc: MalformedRequest) -> str:
        log = get_logger(request_id=exc.request_id)
        if not exc.request_id:
            log.error("request_malformed", problem=exc.problem)
            self.metrics.outcomes.labels(outcome="malformed").inc()
            return "malformed"
        asset = payload.get("asset") if isinstance(payload, Mapping) else None
        asset_id = asset.get("id") if isinstance(asset, Mapping) else None
        record = self.journal.ensure(exc.request_id, idempotency_key=f"cancel-{exc.request_id}", asset_id=asset_id)
        if record.final:
            return record.state.value
        claim = self.journal.claim(exc.request_id, self.owner, self.lease_seconds)
        if claim is None:
            return "busy"
        try:
            request = CancelRequest(exc.request_id, "cancel", "pending", str(asset_id or ""), "", "")
            step = self._bad_request(claim, request, exc.problem)
            while step is not None and step.state is State.REFUSING:
                step = self._fail(step, request)
            if step is not None:
                self._note(step, request)
                return step.state.value
            return claim.state.value
        except LeaseLost:
            return "lease_lost"
        finally:
            self.journal.release(claim)

    def _bad_request(self, claim: Claim, request: CancelRequest, problem: str) -> Claim:
        self.metrics.outcomes.labels(outcome="malformed").inc()
        if self.settings.malformed == "fail":
            return self._move(claim, request, State.REFUSING, reason=self.settings.malformed_reason,
                              last_error=problem, detail=f"malformed: {problem}")
        return self._move(claim, request, State.PARKED, reason=f"malformed request: {problem}", last_error=problem)

    def _adapter(self, decision: Decision) -> VendorAdapter | None:
        return self.adapters.get(decision.adapter or "")

    def _vendor_call(self, claim: Claim, request: CancelRequest, step: str) -> VendorCall:
        return VendorCall(
            request=request,
            subscription_id=request.subscription_id or "",
            idempotency_key=f"{claim.record.idempotency_key}:{step}",
            attempt=claim.record.attempts,
        )

    def _call(
        self, adapter: VendorAdapter, operation: str, call: VendorCall, claim: Claim
    ) -> Outcome | SubscriptionStatus:
        method = getattr(adapter, operation)
        started = time.perf_counter()
        try:
            if self.leases is None:
                result = method(call)
            else:
                with self.leases.hold(claim):  # heartbeat while the vendor takes its time
                    result = method(call)
        except Exception as exc:  # noqa: BLE001 - a vendor's code may raise anything; it may have acted
            result = Ambiguous(f"adapter raised {type(exc).__name__}: {exc}")
        if not isinstance(result, (Terminated, AlreadyGone, Refused, RetryLater, Ambiguous, Failed, SubscriptionStatus)):
            result = Ambiguous(f"adapter returned {type(result).__name__}, not an outcome")
        self.metrics.vendor_calls.labels(operation=operation, outcome=outcome_name(result)).observe(
            time.perf_counter() - started
        )
        return result

    def _move(self, claim: Claim, request: CancelRequest, state: State, *, detail: str | None = None, **fields: Any) -> Claim:
        new = self.journal.transition(claim, state, detail=detail or fields.get("reason"), **fields)
        self.metrics.transitions.labels(state=state.value).inc()
        if state in (State.APPROVED, State.FAILED, State.PARKED, State.CLOSED):
            self.metrics.outcomes.labels(outcome=state.value).inc()
        get_logger(**request.log_context()).info(
            "state_changed",
            from_state=claim.state.value,
            to_state=state.value,
            attempt=new.record.attempts,
            outcome=new.record.outcome,
            detail=detail or fields.get("reason") or fields.get("last_error"),
        )
        return new

    def _defer(
        self, claim: Claim, request: CancelRequest, state: State, seconds: float, why: str, **fields: Any
    ) -> NoReturn:
        """Record when to try again and stop working on the request for now."""
        when = self.clock() + timedelta(seconds=max(seconds, 0.0))
        raise _Deferred(self._move(claim, request, state, next_attempt_at=when, last_error=why,
                                   detail=f"retry after {seconds:.1f}s: {why}", **fields))

    def _backoff(self, n: int) -> float:
        base = min(self.settings.retry_max, self.settings.retry_base * 2 ** max(n - 1, 0))
        return base / 2 + self._random.uniform(0, base / 2)

    def _note(self, claim: Claim, request: CancelRequest) -> None:
        if not self.settings.notes or claim.record.noted == claim.state.value:
            return
        text = _note_text(claim, request)
        try:
            self.marketplace.post_note(request.id, text)
            self.journal.update(claim, noted=claim.state.value)
        except (MarketplaceError, LeaseLost) as exc:
            get_logger(**request.log_context()).warning("note_not_posted", error=str(exc))


def _settled_state(state: State, status: str) -> tuple[State, str | None]:
    """Where a journal row goes when Connect closed its request without us recording it."""
    if status == "approved" and state is State.TERMINATED:
        return State.APPROVED, None
    if status == "failed" and state is State.REFUSING:
        return State.FAILED, None
    if status == "revoked":
        return State.REVOKED, None
    if state is State.NEW:
        return State.CLOSED, None  # nothing was done at the vendor; someone else closed it
    if state is State.TERMINATING or status == "failed":
        return State.PARKED, f"the request was {status} on Connect while the vendor step was {state.value}"
    return State.CLOSED, None


def _stub_request(request_id: str, record: Any) -> CancelRequest:
    return CancelRequest(
        id=request_id, type="cancel", status="", asset_id=record.asset_id or "",
        product_id=record.product_id or "", environment=record.environment or "",
        subscription_id=record.subscription_id,
    )


def _note_text(claim: Claim, request: CancelRequest) -> str:
    record = claim.record
    sub = request.subscription_id or record.subscription_id or "the subscription"
    if record.state is State.APPROVED:
        gone = " (it was already gone at the vendor)" if record.outcome == "already_gone" else ""
        return f"Cancellation processed: {sub} was terminated at the vendor{gone}. The request was approved."
    if record.state is State.FAILED:
        return f"Cancellation refused: {record.reason}"
    if record.state is State.PARKED:
        return f"Cancellation needs a person at the vendor: {record.reason}"
    return f"Cancellation closed: {record.state.value}."


def _customer_text(reason: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in reason).strip()
    return cleaned[:500] or "The vendor refused the cancellation."
