"""The three vendor steps (terminate, suspend, purge) and how their results are recorded.

What a status read proves, per step: ``terminated``/``purged`` prove a terminate, ``suspended`` a
suspend, ``purged`` a purge; ``active`` (and ``suspended`` for a terminate, ``terminated`` for a
purge) prove the step did not act yet.

Results: a terminate leads to ``terminated`` (approve next) and fixes the purge date from the real
moment of termination; a suspend leads to ``suspended`` with a timer at the end of the grace period;
a purge returns the approved row to ``approved`` with no timer. A refusal of a terminate or suspend
fails the request with the vendor's reason; a refused purge (the request is approved already, it
cannot be failed) is parked. An outcome that proves nothing happened (:class:`RetryLater`) goes
back to the state the step started from (``step_from``), unless an earlier call of the step may
have acted (``uncertain``): then the row stays in the intent state.
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
)
from processor.config.schema import ProcessingConfig
from processor.engine import crashpoints
from processor.engine.base import Mover
from processor.engine.circuit import Attempt
from processor.engine.guard import AnomalyGuard
from processor.engine.results import Stepped
from processor.engine.rowdata import RowData
from processor.engine.transitions import Event, returned_to
from processor.journal.base import Claim, State
from processor.model import CancelRequest
from processor.policy.timing import iso

__all__ = [
    "VendorStep",
    "VendorResults",
    "TERMINATE",
    "SUSPEND",
    "PURGE",
    "STEPS",
    "NO_SAFE_REPEAT",
    "customer_text",
]

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


TERMINATE = VendorStep(
    "terminate",
    State.TERMINATING,
    Event.TERMINATE,
    "terminated",
    frozenset({S.TERMINATED, S.PURGED}),
    frozenset({S.ACTIVE, S.SUSPENDED}),
)
SUSPEND = VendorStep(
    "suspend",
    State.SUSPENDING,
    Event.SUSPEND,
    "suspended",
    frozenset({S.SUSPENDED}),
    frozenset({S.ACTIVE}),
)
PURGE = VendorStep(
    "purge", State.PURGING, Event.PURGE, "purged", frozenset({S.PURGED}), frozenset({S.TERMINATED})
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
        self.guard.record(adapter.name, name)  # a burst of gone/refused latches the circuit
        if isinstance(outcome, (Terminated, AlreadyGone)):
            attempt.success()
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

    def step_done(
        self, claim: Claim, request: CancelRequest, step: VendorStep, name: str, detail: str
    ) -> Claim:
        now = self.mover.clock()
        data = RowData.of(claim.record).step_finished()
        dates = data.dates
        if step is SUSPEND:
            assert dates is not None  # a suspend is only ever started with a plan
            return self.mover.move(
                claim,
                request,
                Event.DONE,
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
                Event.DONE,
                outcome=name,
                last_error=None,
                next_attempt_at=None,
                data=data.with_purged(now),
                detail=f"purged: {detail}",
            )
        if dates is not None:
            data = data.with_dates(dates.terminated(now, data.retention_days))
        return self.mover.move(
            claim,
            request,
            Event.DONE,
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


def _back(claim: Claim, back: State) -> Event:
    """Stay in the intent (an earlier call may have acted), or go back where the step started."""
    return Event.RETRY if back is claim.state else returned_to(back)


def customer_text(reason: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in reason).strip()
    return cleaned[:500] or "The vendor refused the cancellation."
