"""A customer's cancels as one adapter call: ``terminate_batch(calls) -> [outcome, ...]``.

When a customer account cancels several subscriptions (or the whole account), the daemon groups the
pending cancels of one pass by customer and adapter (:meth:`Batch.key`) and hands each
group to :meth:`Batch.handle`. A request is batched only when its policy says
``batch: true``, it is due now (``immediate``, no grace), it is new in the journal, and its adapter
offers ``terminate_batch``; everything else in a group is handled on its own, as ``handle`` would.

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from processor.adapters.base import (
    Ambiguous,
    Outcome,
    VendorAdapter,
    VendorCall,
    outcome_name,
    supports,
)
from processor.config.schema import ProcessingConfig
from processor.engine import crashpoints
from processor.engine.base import Mover, take_up
from processor.engine.circuit import Attempt, CircuitOpen
from processor.engine.leases import LeaseKeeper
from processor.engine.lifecycle import Lifecycle, Ready
from processor.engine.liveness import Liveness
from processor.engine.results import Deferred, Reached
from processor.engine.results import Outcome as Result
from processor.engine.vendor_calls import VendorGate
from processor.engine.vendor_results import TERMINATE, VendorResults
from processor.journal.base import Claim, Journal, LeaseLost, State
from processor.model import CancelRequest, MalformedRequest, parse_request
from processor.observe import Metrics, get_logger
from processor.policy.rules import Decision, Policy

__all__ = ["Batch"]

_OUTCOME_TYPES = Outcome.__args__
# One request's whole processing (``Engine.handle``), and the state-machine loop (``Engine.drive``).
Handle = Callable[[Mapping[str, Any]], Reached]
Drive = Callable[[Claim, CancelRequest, Decision], Reached]
_Started = tuple[Claim, CancelRequest, Decision, Ready]


class Batch:
    def __init__(
        self,
        *,
        settings: ProcessingConfig,
        policy: Policy,
        journal: Journal,
        claimant: tuple[str, float],
        metrics: Metrics,
        mover: Mover,
        gate: VendorGate,
        liveness: Liveness,
        results: VendorResults,
        lifecycle: Lifecycle,
        leases: LeaseKeeper | None,
        handle: Handle,
        drive: Drive,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.journal = journal
        self.owner, self.lease_seconds = claimant
        self.metrics = metrics
        self.mover = mover
        self.gate = gate
        self.liveness = liveness
        self.results = results
        self.lifecycle = lifecycle
        self.leases = leases
        self._handle = handle
        self._drive = drive

    def key(self, payload: Mapping[str, Any]) -> str | None:
        """The group a pending request may be terminated with, or None to handle it on its own."""
        try:
            request = parse_request(payload, subscription_param=self.settings.subscription_param)
        except MalformedRequest:
            return None
        return self._key(request, self.policy.decide(request))

    def _key(self, request: CancelRequest, decision: Decision) -> str | None:
        if request.status != "pending" or not request.customer_id:
            return None
        if decision.action != "terminate" or not decision.policy.batch:
            return None
        adapter = self.gate.adapters.get(decision.adapter or "")
        if adapter is None or not supports(adapter, "terminate_batch"):
            return None
        return f"{decision.adapter}|{request.customer_id}"

    def handle(self, payloads: Sequence[Mapping[str, Any]]) -> dict[str, Reached]:
        """Process a group; the result of each request by id (what ``handle`` answers)."""
        results: dict[str, Reached] = {}
        ready: list[_Started] = []
        claims: list[Claim] = []
        try:
            for payload in payloads:
                request_id = str(payload.get("id") or "")
                try:
                    request = parse_request(
                        payload, subscription_param=self.settings.subscription_param
                    )
                except MalformedRequest:
                    results[request_id] = self._handle(payload)
                    continue
                decision = self.policy.decide(request)
                if self._key(request, decision) is None:
                    results[request_id] = self._handle(payload)
                    continue
                claim = self._claim(request, results)
                if claim is None:
                    continue
                claims.append(claim)
                if claim.state is not State.NEW:  # started earlier: the ordinary path resumes it
                    resume = functools.partial(self._resume_alone, request, decision)
                    results[request_id] = self._guarded(claim, resume)
                    continue
                prepared = self._prepare(claim, request, decision, results)
                if prepared is not None:
                    ready.append((claim, request, decision, prepared))
            if ready:
                results.update(self._terminate_group(ready))
        finally:
            for claim in claims:
                self.journal.release(claim)
        return results

    def _resume_alone(self, request: CancelRequest, decision: Decision, claim: Claim) -> Reached:
        return self._drive(claim, request, decision)

    def _claim(self, request: CancelRequest, results: dict[str, Reached]) -> Claim | None:
        record, claim = take_up(self.journal, request, self.owner, self.lease_seconds)
        if claim is not None:
            return claim
        if record.final:
            results[request.id] = record.state
            return None
        claim = self.journal.claim(request.id, self.owner, self.lease_seconds)
        if claim is None:
            results[request.id] = Result.BUSY
        return claim

    def _guarded(self, claim: Claim, work: Callable[[Claim], Reached]) -> Reached:
        try:
            return work(claim)
        except LeaseLost:
            self.metrics.lease_lost.inc()
            return Result.LEASE_LOST

    def _prepare(
        self,
        claim: Claim,
        request: CancelRequest,
        decision: Decision,
        results: dict[str, Reached],
    ) -> Ready | None:
        try:
            prepared = self.lifecycle.prepare(claim, request, decision)
            if isinstance(prepared, Ready) and (
                prepared.dates.graced or prepared.dates.effective_at > self.mover.clock()
            ):
                # Not due now after all: the single path.
                prepared = self.lifecycle.start(claim, request, decision)
            if isinstance(prepared, Ready):
                return prepared
            if isinstance(prepared, Deferred):
                results[request.id] = prepared.state
            else:
                results[request.id] = self._drive(prepared, request, decision)
        except LeaseLost:
            self.metrics.lease_lost.inc()
            results[request.id] = Result.LEASE_LOST
        return None

    def _terminate_group(self, ready: list[_Started]) -> dict[str, Reached]:
        results: dict[str, Reached] = {}
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
                    deferred = self.mover.defer(claim, request, shut.wait, str(shut))
                    results[request.id] = deferred.state
                except LeaseLost:
                    results[request.id] = Result.LEASE_LOST
            return results

    def _terminate_started(
        self, ready: list[_Started], adapter: VendorAdapter, attempt: Attempt
    ) -> dict[str, Reached]:
        results: dict[str, Reached] = {}
        batch_id = f"batch-{uuid.uuid4().hex[:12]}"
        started: list[tuple[Claim, CancelRequest, Decision]] = []
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
                    data=prepared.data.step_started(State.NEW, batch=batch_id),
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
            self.gate.vendor_call(claim, request, TERMINATE.name, decision)
            for claim, request, decision in started
        ]
        outcomes = self._call_batch(adapter, calls, [claim for claim, _, _ in started])
        crashpoints.reached("after_vendor")
        get_logger(component="batch").info(
            "batch_terminated",
            batch=batch_id,
            requests=len(started),
            outcomes=[outcome_name(o) for o in outcomes],
        )
        for (claim, request, decision), outcome in zip(started, outcomes, strict=True):

            def finish(
                c: Claim, r: CancelRequest = request, d: Decision = decision, o: Any = outcome
            ) -> Reached:
                if self.leases is not None and self.leases.lost(c):
                    raise LeaseLost(c.request_id, c.fence)
                recorded = self.results.record(c, r, adapter, TERMINATE, o, False, attempt)
                if isinstance(recorded, Deferred):
                    return recorded.state
                return self._drive(recorded, r, d)

            results[request.id] = self._guarded(claim, finish)
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
