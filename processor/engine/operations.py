"""An asynchronous vendor step: the operation the vendor accepted, polled until it ends.

Many vendor APIs answer a terminate (suspend, purge) with ``202 Accepted`` and an operation to
poll; the subscription ends minutes later, or the operation fails. The adapter says so with
:class:`~processor.adapters.base.Accepted`, and the engine then:

1. records the operation (its reference, the step, when it was accepted, when to give up: the
   row's ``operation``, :class:`~processor.engine.rowdata.Operation`) in the very move that
   leaves the intent state for ``awaiting_vendor`` (:meth:`VendorResults.accepted`), before
   anything else. From then on no claim of any process sends the step again for the request:
   ``awaiting_vendor`` has no way back into an intent state, and the reference comes from the
   journal on every poll, across restarts and replicas;
2. polls it when the row's timer falls due (the timer loop claims ``awaiting_vendor`` rows), with
   the adapter's optional ``poll(call, operation)`` -- a read, which changes nothing at the
   vendor, so a crash before a poll's answer is recorded (``after_poll``) only polls again;
3. records what the poll says: done -- the step's result, as a synchronous confirmation would
   (``terminated``, then approved; ``suspended``; ``approved`` with the purge recorded); failed --
   a definite vendor failure, the way of ``processing.poison`` (failed on Connect with the poison
   reason when nothing was done to the subscription yet, else parked); pending -- the next poll
   is timed. An operation still pending at its give-up time is parked with its reference in the
   reason, for a person to check at the vendor.

A poll that cannot be read is never a result: :class:`RetryLater` (the vendor busy, a transport
error) polls again after a back-off; :class:`Failed` (nonsense JSON, an unknown status value, the
operation not found, an adapter that raised) counts toward ``processing.max_attempts`` and then
parks -- never approves, never fails the request, because the operation may still complete.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from processor.adapters.base import (
    Done,
    Failed,
    OperationFailed,
    Pending,
    PollAnswer,
    RetryLater,
    VendorAdapter,
    outcome_name,
    supports,
)
from processor.config.schema import ProcessingConfig
from processor.engine import crashpoints
from processor.engine.base import Mover
from processor.engine.circuit import Attempt, CircuitOpen
from processor.engine.leases import LeaseKeeper
from processor.engine.results import Stepped
from processor.engine.rowdata import Operation, RowData
from processor.engine.transitions import Event
from processor.engine.vendor import PURGE, STEPS, SUSPEND, TERMINATE, VendorGate, VendorResults
from processor.journal.base import Claim, LeaseLost, State
from processor.model import CancelRequest
from processor.policy.rules import Decision
from processor.policy.timing import iso

__all__ = ["Operations", "POLL_ANSWERS"]

POLL_ANSWERS = (Done, Pending, OperationFailed, RetryLater, Failed)
_BY_NAME = {step.name: step for step in STEPS.values()}


class Operations:
    """The ``poll_operation`` step of ``awaiting_vendor`` rows."""

    def __init__(
        self,
        mover: Mover,
        gate: VendorGate,
        results: VendorResults,
        settings: ProcessingConfig,
        leases: LeaseKeeper | None,
    ) -> None:
        self.mover = mover
        self.gate = gate
        self.results = results
        self.settings = settings
        self.leases = leases

    def poll(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped | None:
        """Poll the row's accepted operation once and record what it says."""
        due = claim.record.next_attempt_at
        if due is not None and self.mover.clock() < due:
            return None  # claimed early (a clock step, a hand-edited row): nothing to do yet
        operation = RowData.of(claim.record).operation
        if operation is None:
            why = "awaiting the vendor, but the row holds no readable operation: check the vendor"
            return self.mover.move(claim, request, Event.PARK, reason=why)
        name = operation.adapter or self.gate.adapter_name(claim, decision) or ""
        adapter = self.gate.adapters.get(name)
        if adapter is None or not supports(adapter, "poll"):
            missing = "is not loaded" if adapter is None else "has no poll()"
            why = (
                f"the vendor's {operation.step} operation {operation.ref} cannot be polled: "
                f"adapter '{name}' {missing}"
            )
            return self.mover.move(claim, request, Event.PARK, reason=why)
        try:
            # A latched or open circuit stops polls too: a vendor in trouble is left alone.
            with self.gate.breakers[adapter.name].attempt() as attempt:
                answer = self._ask(adapter, claim, request, operation)
                if isinstance(answer, (Done, OperationFailed)):
                    crashpoints.reached("after_poll")
                if self.leases is not None and self.leases.lost(claim):
                    raise LeaseLost(claim.request_id, claim.fence)
                return self._record(claim, request, operation, answer, attempt)
        except CircuitOpen as shut:
            return self.mover.defer(claim, request, shut.wait, str(shut))

    def _ask(
        self, adapter: VendorAdapter, claim: Claim, request: CancelRequest, op: Operation
    ) -> PollAnswer:
        """The adapter's answer; whatever it raises or answers out of contract is a definite
        error (a poll changes nothing: nothing about the operation is learnt from it)."""
        # The step rides along (call.extra["step"]): an adapter may poll each step's
        # operations differently.
        call = replace(self.gate.vendor_call(claim, request, op.step), extra={"step": op.step})
        started = time.perf_counter()
        answer: Any
        try:
            poll = adapter.poll  # type: ignore[attr-defined]
            if self.leases is None:
                answer = poll(call, op.ref)
            else:
                with self.leases.hold(claim):
                    answer = poll(call, op.ref)
        except Exception as exc:  # noqa: BLE001 - a vendor's code may raise anything
            answer = Failed(f"poll raised {type(exc).__name__}: {exc}")
        if not isinstance(answer, POLL_ANSWERS):
            answer = Failed(f"poll returned {type(answer).__name__}, not a poll answer")
        labels = self.gate.metrics.vendor_calls.labels(
            operation="poll", outcome=outcome_name(answer)
        )
        labels.observe(time.perf_counter() - started)
        return answer  # type: ignore[no-any-return]

    def _record(
        self,
        claim: Claim,
        request: CancelRequest,
        op: Operation,
        answer: PollAnswer,
        attempt: Attempt,
    ) -> Stepped:
        step = _BY_NAME[op.step]
        data = RowData.of(claim.record).with_polls(op.polls + 1)
        now = self.mover.clock()
        name = outcome_name(answer)
        if isinstance(answer, Done):
            attempt.success()
            self.results.guard.resolve(op.adapter, "terminated")
            detail = answer.detail or "done"
            done = self.results.step_done(
                claim, request, step, step.done, f"operation {op.ref}: {detail}"
            )
            if step is TERMINATE:
                crashpoints.reached("after_result")
            return done
        if isinstance(answer, OperationFailed):
            attempt.success()
            # The anomaly guard counted the acceptance in its place; it turned out a refusal
            # (the step did not happen): a vendor failing every operation latches.
            self.results.guard.resolve(op.adapter, "refused")
            return self._failed(claim, request, op, answer, data)
        if isinstance(answer, Pending):
            attempt.success()
            if now >= op.give_up_at:
                return self._give_up(claim, request, op, answer.detail or "pending", now)
            wait = answer.after if answer.after is not None else op.every
            why = f"operation {op.ref} pending" + (f": {answer.detail}" if answer.detail else "")
            return self.mover.defer(claim, request, wait, why, outcome=name, data=data)
        if isinstance(answer, RetryLater):
            attempt.failure()  # the vendor in trouble: counted by the breaker, not the request
            if now >= op.give_up_at:
                return self._give_up(claim, request, op, answer.detail or name, now)
            wait = answer.after if answer.after is not None else self.mover.backoff(1)
            why = f"poll of operation {op.ref}: {answer.detail or name}"
            return self.mover.defer(claim, request, wait, why, outcome=name, data=data)
        attempt.success()  # a definite error: counted on the request, then parked
        failures = data.failures + 1
        why = f"poll of operation {op.ref}: {answer.detail}"
        if failures >= self.settings.max_attempts:
            reason = (
                f"gave up after {failures} failed polls of the vendor's {op.step} operation "
                f"{op.ref} (it may still complete: check it at the vendor): {answer.detail}"
            )
            return self.mover.move(
                claim,
                request,
                Event.PARK,
                outcome=name,
                last_error=why,
                reason=reason,
                data=data.with_failures(failures),
            )
        if now >= op.give_up_at:
            return self._give_up(claim, request, op, answer.detail, now)
        wait = self.mover.backoff(failures)
        counted = data.with_failures(failures)
        return self.mover.defer(claim, request, wait, why, outcome=name, data=counted)

    def _failed(
        self,
        claim: Claim,
        request: CancelRequest,
        op: Operation,
        answer: OperationFailed,
        data: RowData,
    ) -> Stepped:
        """The vendor says the operation failed: the step did not happen. Refused on Connect (the
        poison reason) only when nothing was done to the subscription yet and the poison policy
        says fail; after a suspend, or for a purge (approved already), a person decides."""
        detail = f"the vendor's {op.step} operation {op.ref} failed: {answer.detail}"
        step = _BY_NAME[op.step]
        untouched = step is SUSPEND or (
            step is TERMINATE and data.step_from in (State.NEW, State.SCHEDULED)
        )
        if self.settings.poison == "fail" and untouched and step is not PURGE:
            if self.results.holds:  # a refusal on Connect without a termination: held first
                reason = self.settings.poison_reason
                return self.results.hold(claim, request, op.adapter, step, "refused", reason)
            return self.mover.move(
                claim,
                request,
                Event.OPERATION_FAILED,
                outcome="operation_failed",
                last_error=detail,
                reason=self.settings.poison_reason,
                data=data,
            )
        return self.mover.move(
            claim,
            request,
            Event.PARK,
            outcome="operation_failed",
            last_error=detail,
            reason=f"{detail}; never sent again by the processor: a person decides",
            data=data,
        )

    def _give_up(
        self, claim: Claim, request: CancelRequest, op: Operation, last: str, now: datetime
    ) -> Stepped:
        waited = (now - op.accepted_at).total_seconds()
        reason = (
            f"gave up waiting for the vendor's {op.step} operation {op.ref}: accepted "
            f"{iso(op.accepted_at)}, still not done after {waited:.0f}s and {op.polls + 1} polls "
            f"(last: {last}). It may still complete: check it at the vendor, then retry or close"
        )
        return self.mover.move(
            claim,
            request,
            Event.PARK,
            outcome="operation_gave_up",
            reason=reason,
            data=RowData.of(claim.record).with_polls(op.polls + 1),
        )
