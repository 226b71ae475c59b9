"""A customer's cancels as one adapter call: ``terminate_batch(calls) -> [outcome, ...]``.

When a customer account cancels several subscriptions (or the whole account), the daemon groups the
pending cancels of one pass by customer and adapter (:meth:`Batch.key`) and hands each
group to ``Engine.handle_batch``: batching is a mode of the engine's one path for a request (one
parse, one decision, one claim per request), which hands this module only the group's one call. A
request is batched only when its policy says ``batch: true``, it is due now (``immediate``, no
grace), it is new in the journal, and its adapter offers ``terminate_batch`` and deduplicates or
has no status read (in mode ``read`` each first terminate is read first); everything else in a
group is handled on its own, as ``handle`` would.

Crash safety is per request, as for single calls: every request's intent (``terminating``) is
committed before the batch call, each call in the batch carries that request's own idempotency key
(``<key>:terminate``, the same key a single terminate would use), and each outcome is recorded on
its own request. A batch cut short by a crash therefore resumes request by request through the
ordinary ``terminating`` path. Partial failures are per request: one refusal fails that request on
Connect, one transient error defers that request, the others are approved.

An adapter that answers with a different number of outcomes than it was given calls, or raises, made
every call in the batch ambiguous: each request then goes the way an ambiguous single call goes.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from dataclasses import replace
from typing import Any

from processor.adapters.base import (
    Ambiguous,
    Idempotency,
    Outcome,
    RetryLater,
    VendorAdapter,
    VendorCall,
    has_status_read,
    outcome_name,
    supports,
)
from processor.engine import crashpoints
from processor.engine.base import Mover
from processor.engine.circuit import Attempt, CircuitOpen
from processor.engine.leases import LeaseKeeper
from processor.engine.lifecycle import Lifecycle, Ready
from processor.engine.liveness import Liveness
from processor.engine.results import Outcome as Result
from processor.engine.results import Reached, Stepped
from processor.engine.vendor import TERMINATE, VendorGate, VendorResults
from processor.journal.base import Claim, LeaseLost, State
from processor.model import CancelRequest
from processor.observe import Metrics, get_logger
from processor.policy.rules import Decision

__all__ = ["Batch", "Started"]

_OUTCOME_TYPES = Outcome.__args__
# A claimed new request that passed every check, ready to go in the group's call.
Started = tuple[Claim, CancelRequest, Decision, Ready]


class Batch:
    """The group's one ``terminate_batch`` call: intents, the call, each outcome recorded."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        mover: Mover,
        gate: VendorGate,
        liveness: Liveness,
        results: VendorResults,
        lifecycle: Lifecycle,
        leases: LeaseKeeper | None,
    ) -> None:
        self.metrics = metrics
        self.mover = mover
        self.gate = gate
        self.liveness = liveness
        self.results = results
        self.lifecycle = lifecycle
        self.leases = leases

    def key(self, request: CancelRequest, decision: Decision) -> str | None:
        """The group a pending request may be terminated with, or None to handle it on its own."""
        if request.status != "pending" or not request.customer_id:
            return None
        if decision.action != "terminate" or not decision.policy.batch:
            return None
        adapter = self.gate.adapters.get(decision.adapter or "")
        if adapter is None or not supports(adapter, "terminate_batch"):
            return None
        if adapter.idempotency is Idempotency.NONE and has_status_read(adapter):
            return None  # mode read: each first terminate is read first (VendorGate.reads_first)
        return f"{decision.adapter}|{request.customer_id}"

    def prepare(self, claim: Claim, request: CancelRequest, decision: Decision) -> Ready | Stepped:
        """A claimed new request: :class:`Ready` to go in the group's call, or the step it took
        on its own (not due now after all: the single path), for the engine to drive on."""
        prepared = self.lifecycle.prepare(claim, request, decision)
        if isinstance(prepared, Ready) and (
            prepared.dates.graced or prepared.dates.effective_at > self.mover.clock()
        ):
            return self.lifecycle.start(claim, request, decision)
        return prepared

    def terminate(self, ready: list[Started]) -> dict[str, Stepped | Reached]:
        """The group's call; by request id, the step each recorded outcome reached (the engine
        drives on from it) or what it reached already (a wait for an earlier holder, a lost
        lease, a deferral)."""
        results: dict[str, Stepped | Reached] = {}
        _, _, first_decision, _ = ready[0]
        adapter = self.gate.adapters[first_decision.adapter or ""]
        self.gate.guard.sync()
        try:
            # One attempt for the group's one call; leaving without a verdict gives a probe back.
            with self.gate.breakers[adapter.name].attempt() as attempt:
                return self._terminate_started(ready, adapter, attempt)
        except CircuitOpen as shut:
            for claim, request, _, _ in ready:
                try:
                    results[request.id] = self.mover.defer(claim, request, shut.wait, str(shut))
                except LeaseLost:
                    results[request.id] = Result.LEASE_LOST
            return results

    def _terminate_started(
        self, ready: list[Started], adapter: VendorAdapter, attempt: Attempt
    ) -> dict[str, Stepped | Reached]:
        results: dict[str, Stepped | Reached] = {}
        batch_id = f"batch-{uuid.uuid4().hex[:12]}"
        started: list[tuple[Claim, CancelRequest, Decision]] = []
        intent = time.monotonic()  # before the first intent: a send must leave within a lease
        for claim, request, decision, prepared in ready:
            try:
                held = self.liveness.send_right(claim, request, adapter)
                if held is not None:  # suspended or parked: an earlier holder may still send
                    results[request.id] = held.state
                    continue
                claim = self.mover.move(
                    claim,
                    request,
                    TERMINATE.event,
                    attempts=claim.record.attempts + 1,
                    data=prepared.data.step_started(State.NEW, self.mover.clock(), batch=batch_id),
                    detail=f"intent: terminate via {adapter.name} in {batch_id} "
                    f"({len(ready)} requests)",
                )
                started.append((claim, request, decision))
            except LeaseLost:
                results[request.id] = Result.LEASE_LOST
        if not started:
            return results
        crashpoints.reached("after_intent")
        calls = [
            replace(
                self.gate.vendor_call(claim, request, TERMINATE.name, decision),
                may_send=functools.partial(self.gate.send_problem, claim, intent),
            )
            for claim, request, decision in started
        ]
        # One call for the group: it leaves only if every request in it may still be sent.
        problems = [why for call in calls if (why := call.send_problem()) is not None]
        if problems:
            outcomes: list[Any] = [RetryLater(f"terminate_batch: not sent: {problems[0]}")] * len(
                calls
            )
        else:
            outcomes = self._call_batch(adapter, calls, [claim for claim, _, _ in started])
        crashpoints.reached("after_vendor")
        get_logger(component="batch").info(
            "batch_terminated",
            batch=batch_id,
            requests=len(started),
            outcomes=[outcome_name(o) for o in outcomes],
        )
        for (claim, request, _), outcome in zip(started, outcomes, strict=True):
            try:
                if self.leases is not None and self.leases.lost(claim):
                    raise LeaseLost(claim.request_id, claim.fence)
                results[request.id] = self.results.record(
                    claim, request, adapter, TERMINATE, outcome, False, attempt
                )
            except LeaseLost:
                self.metrics.lease_lost.inc()
                results[request.id] = Result.LEASE_LOST
        return results

    def _call_batch(
        self, adapter: VendorAdapter, calls: list[VendorCall], claims: list[Claim]
    ) -> list[Any]:
        started = time.perf_counter()
        try:
            with contextlib.ExitStack() as stack:
                if self.leases is not None:
                    for claim in claims:
                        stack.enter_context(self.leases.hold(claim))
                answered = list(adapter.terminate_batch(calls))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a vendor's code may raise anything; it may have acted
            answered = [Ambiguous(f"terminate_batch raised {type(exc).__name__}: {exc}")] * len(
                calls
            )
        if len(answered) != len(calls):
            mismatch = f"terminate_batch answered {len(answered)} outcomes for {len(calls)} calls"
            answered = [Ambiguous(mismatch)] * len(calls)
        outcomes = [
            o
            if isinstance(o, _OUTCOME_TYPES)
            else Ambiguous(f"terminate_batch returned {type(o).__name__}")
            for o in answered
        ]
        elapsed = time.perf_counter() - started
        for outcome in outcomes:
            labels = self.metrics.vendor_calls.labels(
                operation="terminate_batch", outcome=outcome_name(outcome)
            )
            labels.observe(elapsed)
        return outcomes
