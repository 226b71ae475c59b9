"""A customer's cancels as one adapter call: ``terminate_batch(calls) -> [outcome, ...]``.

When a customer account cancels several subscriptions (or the whole account), the daemon groups the
pending cancels of one pass by customer and adapter (:meth:`BatchSteps.batch_key`) and hands each
group to :meth:`BatchSteps.handle_batch`. A request is batched only when its policy says
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
from processor.engine import crashpoints
from processor.engine.base import Deferred
from processor.engine.circuit import Attempt, CircuitOpen
from processor.engine.lifecycle import Lifecycle, Ready
from processor.engine.vendor_steps import TERMINATE
from processor.journal.base import Claim, LeaseLost, State
from processor.model import CancelRequest, MalformedRequest, parse_request
from processor.observe import get_logger
from processor.policy.rules import Decision

__all__ = ["BatchSteps"]

_OUTCOME_TYPES = Outcome.__args__


class BatchSteps(Lifecycle):
    # Provided by the engine: one request's whole processing, and the state-machine loop.
    handle: Callable[[Mapping[str, Any]], str]
    _drive: Callable[[Claim, CancelRequest, Decision], str]

    def batch_key(self, payload: Mapping[str, Any]) -> str | None:
        """The group a pending request may be terminated with, or None to handle it on its own."""
        try:
            request = parse_request(payload, subscription_param=self.settings.subscription_param)
        except MalformedRequest:
            return None
        if request.status != "pending" or not request.customer_id:
            return None
        decision = self.policy.decide(request)
        if decision.action != "terminate" or not decision.policy.batch:
            return None
        adapter = self.adapters.get(decision.adapter or "")
        if adapter is None or not supports(adapter, "terminate_batch"):
            return None
        return f"{decision.adapter}|{request.customer_id}"

    def handle_batch(self, payloads: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Process a group; the result of each request by id (the same names ``handle`` returns)."""
        results: dict[str, str] = {}
        ready: list[tuple[Claim, CancelRequest, Decision, Ready]] = []
        claims: list[Claim] = []
        try:
            for payload in payloads:
                request_id = str(payload.get("id") or "")
                if self.batch_key(payload) is None:
                    results[request_id] = self.handle(payload)
                    continue
                request = parse_request(
                    payload, subscription_param=self.settings.subscription_param
                )
                decision = self.policy.decide(request)
                claim = self._claim_for_batch(request, results)
                if claim is None:
                    continue
                claims.append(claim)
                if claim.state is not State.NEW:  # started earlier: the ordinary path resumes it
                    resume = functools.partial(self._resume_alone, request, decision)
                    results[request_id] = self._guarded(claim, resume)
                    continue
                prepared = self._guarded_prepare(claim, request, decision, results)
                if prepared is not None:
                    ready.append((claim, request, decision, prepared))
            if ready:
                results.update(self._terminate_group(ready))
        finally:
            for claim in claims:
                self.journal.release(claim)
        return results

    def _resume_alone(self, request: CancelRequest, decision: Decision, claim: Claim) -> str:
        return self._drive(claim, request, decision)

    def _claim_for_batch(self, request: CancelRequest, results: dict[str, str]) -> Claim | None:
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
            results[request.id] = record.state.value
            return None
        claim = self.journal.claim(request.id, self.owner, self.lease_seconds)
        if claim is None:
            results[request.id] = "busy"
        return claim

    def _guarded(self, claim: Claim, work: Callable[[Claim], str]) -> str:
        try:
            return work(claim)
        except Deferred as deferred:
            return deferred.claim.state.value
        except LeaseLost:
            self.metrics.lease_lost.inc()
            return "lease_lost"

    def _guarded_prepare(
        self, claim: Claim, request: CancelRequest, decision: Decision, results: dict[str, str]
    ) -> Ready | None:
        try:
            prepared = self._prepare(claim, request, decision)
            if isinstance(prepared, Ready) and (
                prepared.dates.graced or prepared.dates.effective_at > self.clock()
            ):
                prepared = self._start(
                    claim, request, decision
                )  # not due now after all: the single path
            if isinstance(prepared, Ready):
                return prepared
            results[request.id] = self._drive(prepared, request, decision)
        except Deferred as deferred:
            results[request.id] = deferred.claim.state.value
        except LeaseLost:
            self.metrics.lease_lost.inc()
            results[request.id] = "lease_lost"
        return None

    def _terminate_group(
        self, ready: list[tuple[Claim, CancelRequest, Decision, Ready]]
    ) -> dict[str, str]:
        results: dict[str, str] = {}
        _, _, first_decision, _ = ready[0]
        adapter = self.adapters[first_decision.adapter or ""]
        self.guard.sync()
        try:
            # One attempt for the group's one call; leaving without a verdict gives a probe back.
            with self.breakers[adapter.name].attempt() as attempt:
                return self._terminate_started(ready, adapter, attempt)
        except CircuitOpen as shut:
            for claim, request, _, _ in ready:
                try:
                    self._defer(claim, request, claim.state, shut.wait, str(shut))
                except Deferred as deferred:
                    results[request.id] = deferred.claim.state.value
                except LeaseLost:
                    results[request.id] = "lease_lost"
            return results

    def _terminate_started(
        self,
        ready: list[tuple[Claim, CancelRequest, Decision, Ready]],
        adapter: VendorAdapter,
        attempt: Attempt,
    ) -> dict[str, str]:
        results: dict[str, str] = {}
        batch_id = f"batch-{uuid.uuid4().hex[:12]}"
        started: list[tuple[Claim, CancelRequest, Decision]] = []
        for claim, request, decision, prepared in ready:
            try:
                if (held := self._send_right(claim, request, adapter)) is not None:
                    results[request.id] = (
                        held.state.value
                    )  # parked: an earlier holder may still send
                    continue
                claim = self._move(
                    claim,
                    request,
                    TERMINATE.intent,
                    attempts=claim.record.attempts + 1,
                    data={**prepared.data, "step_from": State.NEW.value, "batch": batch_id},
                    detail=f"intent: terminate via {adapter.name} in {batch_id} ({len(ready)} requests)",
                )
                started.append((claim, request, decision))
            except Deferred as deferred:  # suspended while an earlier holder may still send
                results[request.id] = deferred.claim.state.value
            except LeaseLost:
                results[request.id] = "lease_lost"
        if not started:
            return results
        crashpoints.reached("after_intent")
        calls = [
            self._vendor_call(claim, request, TERMINATE.name, decision)
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
            ) -> str:
                if self.leases is not None and self.leases.lost(c):
                    raise LeaseLost(c.request_id, c.fence)
                recorded = self._record_step(c, r, adapter, TERMINATE, o, False, attempt)
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
