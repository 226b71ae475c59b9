"""A vendor step -- terminate, suspend, purge -- from the adapter's door to the recorded result.

One concept, one module: the way to the vendor (:class:`VendorGate`), the three steps and how a
result is recorded (:class:`VendorStep`, :class:`VendorResults`), and the steps themselves, each as
intent -> call -> recorded result (:class:`VendorSteps`).

**The gate.** :class:`VendorGate` holds the loaded adapters, one circuit breaker per adapter, the
anomaly guard and the lease keeper (heartbeats while a call takes its time). Every adapter call goes
through :meth:`VendorGate.call`, which turns anything an adapter raises or answers out of contract
into :class:`Ambiguous` (the call may have acted) and times it.

**The discipline** (the crash-window table of ``docs/design.md``, generated from
:mod:`processor.engine.transitions`, applied to each step):

- the intent state (``terminating``, ``suspending``, ``purging``) is committed before the adapter is
  called, and the state the step started from is kept in the row's data (``step_from``), so an
  outcome that proves nothing happened (:class:`RetryLater`) goes back there rather than to the
  intent, which would later read as "may have acted";
- each step has its own idempotency key, ``<record key>:<step>``, the same on every retry;
- a row found in an intent state may already have acted: it is repeated only for a vendor that
  deduplicates (key or natural idempotency), or after a status read says it did not act; with
  neither it is parked for a person, never called blindly a second time.

**What a status read proves**, per step: ``terminated``/``purged`` prove a terminate,
``suspended`` a suspend, ``purged`` a purge; ``active`` (and ``suspended`` for a terminate,
``terminated`` for a purge) prove the step did not act yet.

**Results.** A terminate leads to ``terminated`` (approve next) and fixes the purge date from the
real moment of termination; a suspend leads to ``suspended`` with a timer at the end of the grace
period; a purge returns the approved row to ``approved`` with no timer. A refusal of a terminate or
suspend fails the request with the vendor's reason; a refused purge (the request is approved
already, it cannot be failed) is parked. An outcome that proves nothing happened
(:class:`RetryLater`) goes back to the state the step started from (``step_from``), unless an
earlier call of the step may have acted (``uncertain``): then the row stays in the intent state.

A subscription found ``active`` or ``suspended`` when its purge is due was restored by the billing
team within the retention window: the purge is skipped and recorded as such -- a restored account
is never purged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from processor.adapters.base import (
    Accepted,
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
    supports,
)
from processor.config.schema import Config, ProcessingConfig
from processor.config.sections import DEFAULT_APPLY_HORIZON
from processor.engine import crashpoints
from processor.engine.base import Mover
from processor.engine.circuit import Attempt, CircuitBreaker, CircuitOpen
from processor.engine.guard import AnomalyGuard, LatchFile, latch_path
from processor.engine.leases import LeaseKeeper
from processor.engine.liveness import Liveness
from processor.engine.results import Deferred, Stepped
from processor.engine.rowdata import RowData
from processor.engine.transitions import Event, returned_to
from processor.journal.base import Claim, LeaseLost, State
from processor.model import CancelRequest
from processor.observe import Metrics
from processor.policy.rules import Decision
from processor.policy.timing import iso

__all__ = [
    "VendorGate",
    "VendorStep",
    "VendorResults",
    "VendorSteps",
    "TERMINATE",
    "SUSPEND",
    "PURGE",
    "STEPS",
    "NO_SAFE_REPEAT",
    "customer_text",
]

_OUTCOMES = (
    Terminated,
    AlreadyGone,
    Refused,
    RetryLater,
    Ambiguous,
    Failed,
    SubscriptionStatus,
    Accepted,
)
# An accepted operation is polled this often, and parked after this long, unless the adapter's
# Accepted says otherwise (processor.engine.operations); both bounded.
POLL_EVERY, POLL_EVERY_BOUNDS = 10.0, (0.5, 3600.0)
GIVE_UP, GIVE_UP_MAX = 3600.0, 30 * 86_400.0
MAX_OPERATION_REF = 2048


class VendorGate:
    def __init__(
        self,
        config: Config,
        adapters: Mapping[str, VendorAdapter],
        metrics: Metrics,
        leases: LeaseKeeper | None,
    ) -> None:
        self.adapters = dict(adapters)
        self.metrics = metrics
        self.leases = leases
        circuit = config.processing.circuit
        self.breakers = {
            name: CircuitBreaker(
                name,
                circuit.failures,
                circuit.reset_after,
                on_change=lambda n, is_open: metrics.circuit_open.labels(adapter=n).set(
                    int(is_open)
                ),
            )
            for name in self.adapters
        }
        self.guard = AnomalyGuard(
            config.guard, self.breakers, metrics, LatchFile(latch_path(config))
        )
        self.lease_seconds = config.journal.lease_seconds
        self.horizons = {
            name: spec.apply_horizon for name, spec in config.adapters.items() if name in adapters
        }

    def horizon(self, adapter: VendorAdapter) -> float:
        """The adapter's apply horizon: how long a call it received may take to be applied."""
        return self.horizons.get(adapter.name, DEFAULT_APPLY_HORIZON)

    def trusted_from(self, adapter: VendorAdapter, claim: Claim) -> datetime | None:
        """From when a status read saying the step did not act can be believed: the last send
        (every send leaves within one lease of it, see :meth:`send_problem`) plus the apply
        horizon. None when no send was recorded (a row from before ``sent_at``): believed now,
        as before."""
        sent = RowData.of(claim.record).sent_at
        if sent is None:
            return None
        return sent + timedelta(seconds=self.lease_seconds + self.horizon(adapter))

    def send_problem(self, claim: Claim, intent: float) -> str | None:
        """Why a mutating call recorded at monotonic ``intent`` must not leave now: the lease was
        lost (another holder has the request), or a whole lease went by since the intent (a
        wait, a freeze): a send later than that could land after a taker, trusting a status
        read at ``sent_at`` + lease + horizon, acted itself."""
        if self.leases is not None and self.leases.lost(claim):
            return "the lease on the request was lost"
        late = time.monotonic() - intent
        if late >= self.lease_seconds:
            return (
                f"{late:.0f}s since its intent was recorded, more than the lease "
                f"({self.lease_seconds:g}s); it is sent again after a fresh intent"
            )
        return None

    @staticmethod
    def reads_first(adapter: VendorAdapter, step: VendorStep) -> bool:
        """Mode ``read`` (a status read, no deduplication): read before each terminate that starts
        afresh (not a repeat from ``terminating``, which reads anyway). Another processor's journal,
        or this one's restored from a backup, may have terminated the subscription already (also
        after a suspend); the read sees it, a call would terminate again."""
        return (
            step is TERMINATE
            and adapter.idempotency is Idempotency.NONE
            and has_status_read(adapter)
        )

    def adapter_name(self, claim: Claim, decision: Decision) -> str | None:
        """The adapter a request started with (kept in the journal), else the one decided now."""
        return RowData.of(claim.record).adapter or decision.adapter

    def adapter(self, claim: Claim, decision: Decision) -> VendorAdapter | None:
        return self.adapters.get(self.adapter_name(claim, decision) or "")

    @staticmethod
    def vendor_call(
        claim: Claim, request: CancelRequest, step: str, decision: Decision | None = None
    ) -> VendorCall:
        return VendorCall(
            request=request,
            subscription_id=request.subscription_id or claim.record.subscription_id or "",
            idempotency_key=RowData.of(claim.record).keyed(claim.record.idempotency_key, step),
            attempt=claim.record.attempts,
            reason_code=decision.reason_code if decision else None,
            reason_comment=decision.reason_comment if decision else None,
        )

    def call(
        self,
        adapter: VendorAdapter,
        operation: str,
        call: VendorCall,
        claim: Claim,
        intent: float | None = None,
    ) -> Outcome | SubscriptionStatus:
        """Call ``adapter``; ``intent`` is the monotonic moment taken just before the step's
        intent was recorded (a freeze between that write and this call counts against it)."""
        method = getattr(adapter, operation)
        started = time.perf_counter()
        result: Outcome | SubscriptionStatus
        if operation != "status":  # a mutation: checked here and, after its waits, by the adapter
            since = time.monotonic() if intent is None else intent
            call = replace(call, may_send=lambda: self.send_problem(claim, since))
            if (why := call.send_problem()) is not None:
                return RetryLater(f"{operation}: not sent: {why}")
        try:
            if self.leases is None:
                result = method(call)
            else:
                with self.leases.hold(claim):  # heartbeat while the vendor takes its time
                    result = method(call)
        except Exception as exc:  # noqa: BLE001 - a vendor's code may raise anything; it may have acted
            result = Ambiguous(f"adapter raised {type(exc).__name__}: {exc}", raised=True)
        if operation == "status" and isinstance(result, Accepted):
            result = Ambiguous("a status read answered an accepted operation", raised=True)
        if not isinstance(result, _OUTCOMES):
            result = Ambiguous(
                f"adapter returned {type(result).__name__}, not an outcome", raised=True
            )
        self.metrics.vendor_calls.labels(operation=operation, outcome=outcome_name(result)).observe(
            time.perf_counter() - started
        )
        return result

    def status(
        self, adapter: VendorAdapter, claim: Claim, request: CancelRequest, step: str
    ) -> Outcome | SubscriptionStatus:
        """A status read of the request's subscription (the idempotency key names ``step``)."""
        return self.call(adapter, "status", self.vendor_call(claim, request, step), claim)


# -- the three steps, and how a result is recorded ------------------------------------------------

S = SubscriptionStatus
NO_SAFE_REPEAT = (
    "the vendor call may have acted and the vendor offers neither idempotency nor a status read"
)


@dataclass(frozen=True, slots=True)
class VendorStep:
    name: str  # the adapter method, and the idempotency key's suffix
    intent: State
    event: Event  # the event that records its intent (or repeats it, in the intent state)
    done: str  # the journal's outcome name when the vendor confirms the step
    confirmed: frozenset[SubscriptionStatus]  # a status read that proves the step happened
    not_acted: frozenset[SubscriptionStatus]  # a status read that proves it did not
    completed: Event  # the event when the vendor's accepted operation of the step completed


TERMINATE = VendorStep(
    "terminate",
    State.TERMINATING,
    Event.TERMINATE,
    "terminated",
    frozenset({S.TERMINATED, S.PURGED}),
    frozenset({S.ACTIVE, S.SUSPENDED}),
    Event.DONE_TERMINATE,
)
SUSPEND = VendorStep(
    "suspend",
    State.SUSPENDING,
    Event.SUSPEND,
    "suspended",
    frozenset({S.SUSPENDED}),
    frozenset({S.ACTIVE}),
    Event.DONE_SUSPEND,
)
PURGE = VendorStep(
    "purge",
    State.PURGING,
    Event.PURGE,
    "purged",
    frozenset({S.PURGED}),
    frozenset({S.TERMINATED}),
    Event.DONE_PURGE,
)
STEPS = {step.intent: step for step in (TERMINATE, SUSPEND, PURGE)}


class VendorResults:
    """Records what a vendor step answered: the next state, a retry, or a park."""

    def __init__(self, mover: Mover, guard: AnomalyGuard, settings: ProcessingConfig) -> None:
        self.mover = mover
        self.guard = guard
        self.settings = settings

    def record(
        self,
        claim: Claim,
        request: CancelRequest,
        adapter: VendorAdapter,
        step: VendorStep,
        outcome: Any,
        uncertain: bool,
        attempt: Attempt,
    ) -> Stepped:
        """Record a vendor outcome. ``uncertain``: an earlier call of this step may have acted."""
        move, name = self.mover.move, outcome_name(outcome)
        # A burst of gone/refused latches the circuit. "Already gone" in answer to a repeat of a
        # call that may have acted is that call's own confirmation (natural idempotency, a vendor
        # that applied the first call late): a termination, not an anomaly.
        own = uncertain and isinstance(outcome, AlreadyGone)
        self.guard.record(adapter.name, step.done if own else name)
        if isinstance(outcome, Accepted):
            attempt.success()
            return self.accepted(claim, request, adapter, step, outcome)
        if isinstance(outcome, (Terminated, AlreadyGone)):
            attempt.success()
            if isinstance(outcome, AlreadyGone) and not own and step is TERMINATE and self.holds:
                return self.hold(claim, request, adapter.name, step, name, outcome.detail or name)
            done = step.done if isinstance(outcome, Terminated) else name
            claim = self.step_done(claim, request, step, done, outcome.detail or done)
            crashpoints.reached("after_result")
            return claim
        if isinstance(outcome, Refused):
            attempt.success()
            if step is PURGE:
                why = f"the vendor refused to purge the data: {outcome.reason}"
                return move(claim, request, Event.PARK, outcome=name, reason=why)
            reason = customer_text(outcome.reason)
            if self.holds:
                return self.hold(claim, request, adapter.name, step, name, reason)
            return move(claim, request, Event.REFUSE, outcome=name, reason=reason)
        data = RowData.of(claim.record)
        back = step.intent if uncertain else data.step_from
        if isinstance(outcome, RetryLater):
            attempt.failure()
            delay = outcome.after if outcome.after is not None else self.mover.backoff(1)
            why = outcome.detail or name
            return self.mover.defer(claim, request, delay, why, _back(claim, back), outcome=name)
        if isinstance(outcome, Ambiguous):
            if adapter.idempotency is Idempotency.NONE and not has_status_read(adapter):
                attempt.failure()
                return move(
                    claim,
                    request,
                    Event.PARK,
                    outcome=name,
                    last_error=outcome.detail,
                    reason=NO_SAFE_REPEAT,
                )
            if not outcome.raised:
                attempt.failure()
                why = outcome.detail or name
                return self.mover.defer(claim, request, self.mover.backoff(1), why, outcome=name)
            # The adapter's own code raised (or answered nonsense): repeatable in this mode, but a
            # bug retried forever is no better than a poison request. Counted below, and never
            # refused, because the call may have acted (uncertain).
            uncertain, back = True, step.intent
        # Failed (or an adapter that raised): a definite error that is not a refusal.
        attempt.success()  # the vendor answered, or it was never reached; this is not an outage
        detail = (
            outcome.detail
            if isinstance(outcome, Failed)
            else f"unexpected adapter answer {outcome!r}"
        )
        failures = data.failures + 1
        counted = data.with_failures(failures)
        if failures >= self.settings.max_attempts:
            # Refusing is for a request nothing has been done to yet: after a suspend, failing the
            # request would make the subscription active on Connect while the vendor has it
            # suspended; after approval (a purge) it is no longer possible at all.
            untouched = step is TERMINATE and back in (State.NEW, State.SCHEDULED)
            if self.settings.poison == "fail" and not uncertain and untouched:
                if self.holds:  # a refusal on Connect without a termination: held first
                    poison = self.settings.poison_reason
                    return self.hold(claim, request, adapter.name, step, "refused", poison)
                return move(
                    claim,
                    request,
                    Event.REFUSE,
                    outcome=name,
                    last_error=detail,
                    data=counted,
                    reason=self.settings.poison_reason,
                    detail=f"poison after {failures} errors",
                )
            return move(
                claim,
                request,
                Event.PARK,
                outcome=name,
                last_error=detail,
                data=counted,
                reason=f"gave up after {failures} vendor errors during {step.name}: {detail}",
            )
        wait = self.mover.backoff(failures)
        return self.mover.defer(
            claim, request, wait, detail, _back(claim, back), outcome=name, data=counted
        )

    @property
    def holds(self) -> bool:
        """Refusals and "already gone" wait ``guard.hold`` before Connect is told
        (:mod:`processor.engine.hold`)."""
        return self.guard.settings.enabled and self.guard.settings.hold > 0

    def hold(
        self,
        claim: Claim,
        request: CancelRequest,
        adapter: str,
        step: VendorStep,
        kind: str,
        reason: str,
    ) -> Claim:
        """Record the answer ``kind`` (refused, already gone) and hold it back from Connect until
        the hold ends: the row's timer. The hold step (:mod:`processor.engine.hold`) tells Connect
        then, unless the guard latched ``adapter`` meanwhile."""
        now = self.mover.clock()
        until = now + timedelta(seconds=self.guard.settings.hold)
        data = RowData.of(claim.record).with_held(
            kind=kind, adapter=adapter, step=step.name, reason=reason, at=now, until=until
        )
        held = self.mover.move(
            claim,
            request,
            Event.HOLD,
            outcome=kind,
            last_error=None,
            data=data,
            next_attempt_at=until,
            detail=f"{kind} held until {iso(until)}: {reason}",
        )
        self.mover.metrics.held.labels(adapter=adapter).inc()
        crashpoints.reached("after_hold")
        return held

    def step_done(
        self, claim: Claim, request: CancelRequest, step: VendorStep, name: str, detail: str
    ) -> Claim:
        now = self.mover.clock()
        # The vendor's accepted operation completed (processor.engine.operations): the same
        # result, by the event the table holds for awaiting_vendor.
        event = step.completed if claim.state is State.AWAITING_VENDOR else Event.DONE
        data = RowData.of(claim.record).step_finished()
        dates = data.dates
        if step is SUSPEND:
            assert dates is not None  # a suspend is only ever started with a plan
            return self.mover.move(
                claim,
                request,
                event,
                outcome=name,
                last_error=None,
                data=data,
                next_attempt_at=dates.terminate_at,
                detail=f"{detail}; terminate due {iso(dates.terminate_at)}",
            )
        if step is PURGE:
            return self.mover.move(
                claim,
                request,
                event,
                outcome=name,
                last_error=None,
                next_attempt_at=None,
                data=data.with_purged(now),
                detail=f"purged: {detail}",
            )
        if dates is not None:
            data = data.with_dates(dates.terminated(now, data.retention_days))
        data = data.with_terminated_under(claim.fence)
        return self.mover.move(
            claim,
            request,
            event,
            outcome=name,
            last_error=None,
            data=data,
            detail=detail,
            next_attempt_at=None,
        )

    def purge_skipped(
        self, claim: Claim, request: CancelRequest, status: SubscriptionStatus
    ) -> Claim:
        why = f"the subscription is {status.value} at the vendor (restored)"
        data = RowData.of(claim.record).step_finished().with_purge_note(f"skipped: {why}")
        return self.mover.move(
            claim,
            request,
            Event.DONE,
            next_attempt_at=None,
            data=data,
            detail=f"purge skipped: {why}",
        )

    def accepted(
        self,
        claim: Claim,
        request: CancelRequest,
        adapter: VendorAdapter,
        step: VendorStep,
        outcome: Accepted,
    ) -> Stepped:
        """The vendor accepted ``step`` as an operation: recorded in the move that leaves the
        intent state, before anything else, so that no restart or replica sends the step again;
        the timer loop polls it (:mod:`processor.engine.operations`)."""
        ref = outcome.operation
        if not isinstance(ref, str) or not ref.strip() or len(ref) > MAX_OPERATION_REF:
            problem = f"an unusable operation reference {ref!r:.80}"
        elif not ref.isprintable():
            problem = "an operation reference with control characters"
        elif not supports(adapter, "poll"):
            problem = f"operation {ref}, and adapter '{adapter.name}' has no poll()"
        else:
            problem = None
        if problem is not None:
            # Nothing could tell when (or whether) it is done: a person looks; never sent again.
            why = f"the vendor accepted the {step.name} as {problem}: check it at the vendor"
            return self.mover.move(claim, request, Event.PARK, outcome="accepted", reason=why)
        now = self.mover.clock()
        low, high = POLL_EVERY_BOUNDS
        every = min(max(outcome.after if outcome.after is not None else POLL_EVERY, low), high)
        give_up = min(max(outcome.give_up or GIVE_UP, every), GIVE_UP_MAX)
        data = (
            RowData.of(claim.record)
            .with_failures(0)
            .with_operation(
                ref=ref,
                step=step.name,
                adapter=adapter.name,
                accepted_at=now,
                give_up_at=now + timedelta(seconds=give_up),
                every=every,
            )
        )
        moved = self.mover.move(
            claim,
            request,
            Event.ACCEPT,
            outcome="accepted",
            last_error=None,
            data=data,
            next_attempt_at=now + timedelta(seconds=every),
            detail=f"{step.name} accepted by the vendor as operation {ref}: polled every "
            f"{every:g}s, parked after {give_up:g}s",
        )
        crashpoints.reached("after_accepted")
        return Deferred(moved)


def _back(claim: Claim, back: State) -> Event:
    """Stay in the intent (an earlier call may have acted), or go back where the step started."""
    return Event.RETRY if back is claim.state else returned_to(back)


def customer_text(reason: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in reason).strip()
    return cleaned[:500] or "The vendor refused the cancellation."


# -- the steps: intent -> call -> recorded result -------------------------------------------------


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
                if self.gate.reads_first(adapter, step):
                    looked = self._look_first(claim, request, adapter, recorded, attempt)
                    if looked is not None:
                        return looked
                # The request is approved before a purge: no poll will ever list it again, so a
                # crash inside this step must leave a timer for claim_due once the lease ran out.
                timer = {"next_attempt_at": self.mover.clock()} if step is PURGE else {}
                intent = time.monotonic()
                claim = self.mover.move(
                    claim,
                    request,
                    step.event,
                    attempts=claim.record.attempts + 1,
                    data=recorded.step_started(claim.state, self.mover.clock()),
                    detail=f"intent: {step.name} via {adapter.name}",
                    **timer,
                )
                crashpoints.reached("after_intent")
                return self._call_step(
                    claim, request, decision, adapter, step, False, attempt, intent
                )
        except CircuitOpen as shut:
            return self.mover.defer(claim, request, shut.wait, str(shut))

    def _look_first(
        self,
        claim: Claim,
        request: CancelRequest,
        adapter: VendorAdapter,
        recorded: RowData,
        attempt: Attempt,
    ) -> Stepped | None:
        """The read before a first terminate (:meth:`VendorGate.reads_first`); None: go ahead."""
        status = self.gate.status(adapter, claim, request, TERMINATE.name)
        if status in TERMINATE.not_acted:
            return None
        if not isinstance(status, SubscriptionStatus) or status is S.UNKNOWN:
            # No call without the read: it is what keeps a second journal from terminating again.
            why = (
                f"read before terminate: {getattr(status, 'detail', None) or outcome_name(status)}"
            )
            if isinstance(status, (RetryLater, Ambiguous)):
                attempt.failure()  # the vendor in trouble: a retry later, not counted
                wait = getattr(status, "after", None) or self.mover.backoff(1)
                return self.mover.defer(claim, request, wait, why)
            # A definite error (or an answer it cannot map): counted like the step's own errors,
            # and parked after max_attempts -- never refused, nothing proves the vendor refused.
            attempt.success()
            failures = RowData.of(claim.record).failures + 1
            counted = RowData.of(claim.record).with_failures(failures)
            if failures >= self.results.settings.max_attempts:
                why = f"gave up after {failures} failed status reads before terminate: {why}"
                return self.mover.move(claim, request, Event.PARK, reason=why, data=counted)
            wait = self.mover.backoff(failures)
            return self.mover.defer(claim, request, wait, why, data=counted)
        if status is S.NOT_FOUND:
            gone = AlreadyGone(f"status read before terminate: {status.value}")
        else:
            sign = f"the subscription was {status.value} at the vendor before this journal called"
            self.gate.guard.another_processor(
                adapter.name, sign, request.id, claim.record.created_at
            )
            gone = AlreadyGone(f"{sign} (status read before terminate)")
        claim = self.mover.move(
            claim,
            request,
            TERMINATE.event,
            data=recorded.step_opened(claim.state),
            detail=f"status read before terminate: {status.value}",
        )
        return self.results.record(claim, request, adapter, TERMINATE, gone, False, attempt)

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
            intent = time.monotonic()
            claim = self.mover.move(
                claim,
                request,
                step.event,
                attempts=claim.record.attempts + 1,
                detail=f"repeat {step.name} via {adapter.name} (vendor deduplicates)",
                data=RowData.of(claim.record).with_sent(self.mover.clock()),
            )
            return self._call_step(claim, request, decision, adapter, step, True, attempt, intent)
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
            trusted = self.gate.trusted_from(adapter, claim)
            if trusted is not None and self.mover.clock() < trusted:
                # Not yet proof: the last call may still be applied (a vendor behind a gateway
                # answers 504 and acts later). Read again once the horizon has passed.
                attempt.success()
                wait = (trusted - self.mover.clock()).total_seconds()
                why = (
                    f"status read: {status.value}, believed from {iso(trusted)} (the last "
                    f"{step.name} call may be applied until then: lease plus apply horizon)"
                )
                return self.mover.defer(claim, request, max(wait, 0.5), why)
            # The earlier call did not act, and can no longer: calling again cannot act twice.
            intent = time.monotonic()
            claim = self.mover.move(
                claim,
                request,
                step.event,
                attempts=claim.record.attempts + 1,
                detail=f"status read: {status.value}; {step.name} again",
                data=RowData.of(claim.record).with_sent(self.mover.clock()),
            )
            return self._call_step(claim, request, decision, adapter, step, False, attempt, intent)
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
        intent: float,
    ) -> Stepped:
        call = self.gate.vendor_call(
            claim, request, step.name, decision if step is not PURGE else None
        )
        outcome = self.gate.call(adapter, step.name, call, claim, intent)
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
