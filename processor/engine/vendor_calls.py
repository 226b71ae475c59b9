"""The way to the vendor: which adapter a request uses, its calls, and the breakers on them.

:class:`VendorGate` holds the loaded adapters, one circuit breaker per adapter, the anomaly guard
and the lease keeper (heartbeats while a call takes its time). Every adapter call goes through
:meth:`VendorGate.call`, which turns anything an adapter raises or answers out of contract into
:class:`Ambiguous` (the call may have acted) and times it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from processor.adapters.base import (
    AlreadyGone,
    Ambiguous,
    Failed,
    Outcome,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    VendorAdapter,
    VendorCall,
    outcome_name,
)
from processor.config.schema import Config
from processor.engine.circuit import CircuitBreaker
from processor.engine.guard import AnomalyGuard, LatchFile, latch_path
from processor.engine.leases import LeaseKeeper
from processor.engine.rowdata import RowData
from processor.journal.base import Claim
from processor.model import CancelRequest
from processor.observe import Metrics
from processor.policy.rules import Decision

__all__ = ["VendorGate"]

_OUTCOMES = (Terminated, AlreadyGone, Refused, RetryLater, Ambiguous, Failed, SubscriptionStatus)


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
            idempotency_key=f"{claim.record.idempotency_key}:{step}",
            attempt=claim.record.attempts,
            reason_code=decision.reason_code if decision else None,
            reason_comment=decision.reason_comment if decision else None,
        )

    def call(
        self, adapter: VendorAdapter, operation: str, call: VendorCall, claim: Claim
    ) -> Outcome | SubscriptionStatus:
        method = getattr(adapter, operation)
        started = time.perf_counter()
        result: Outcome | SubscriptionStatus
        try:
            if self.leases is None:
                result = method(call)
            else:
                with self.leases.hold(claim):  # heartbeat while the vendor takes its time
                    result = method(call)
        except Exception as exc:  # noqa: BLE001 - a vendor's code may raise anything; it may have acted
            result = Ambiguous(f"adapter raised {type(exc).__name__}: {exc}", raised=True)
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
