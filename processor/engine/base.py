"""The engine's bookkeeping, shared by every step: journal moves, deferrals, vendor calls, notes.

The engine is layered so that each module holds one kind of step (STYLE: small modules named after
what they hold):

- :mod:`processor.engine.base` -- this: construction, ``_move``, ``_defer``, ``_call``, ``_note``;
- :mod:`processor.engine.vendor_steps` -- terminate, suspend, purge: intent, call, result, resumption;
- :mod:`processor.engine.connect_steps` -- approve, fail, schedule, confirm, route to a person;
- :mod:`processor.engine.lifecycle` -- what a policy does with a request: dates, timing, grace, withdrawal;
- :mod:`processor.engine.batch` -- a customer's cancels as one adapter call;
- :mod:`processor.engine.core` -- the entry points (``handle``, ``resume``, ``settle``, ``plan``) and the
  state-machine loop.

Every step returns the :class:`Claim` it reached; a step that must wait raises :class:`Deferred`
after recording when to try again, which unwinds the loop for that request only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

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
from processor.config.policy import PolicyConfig
from processor.config.schema import Config
from processor.engine.circuit import CircuitBreaker
from processor.engine.guard import AnomalyGuard, LatchFile, latch_path
from processor.engine.leases import LeaseKeeper
from processor.engine.notes import note_text
from processor.journal.base import (
    FINAL_STATES,
    NOTED_STATES,
    Claim,
    Journal,
    LeaseLost,
    RequestRecord,
    State,
)
from processor.marketplace import Marketplace, MarketplaceError, TransientError
from processor.model import CancelRequest
from processor.observe import Metrics, get_logger
from processor.policy.rules import Decision, Policy

__all__ = ["EngineBase", "Deferred", "Clock", "utcnow", "stub_request"]

Clock = Callable[[], datetime]
_OUTCOMES = (Terminated, AlreadyGone, Refused, RetryLater, Ambiguous, Failed, SubscriptionStatus)
_OUTCOME_STATES = frozenset(
    {State.APPROVED, State.FAILED, State.PARKED, State.CLOSED, State.REVOKED}
)


class Deferred(Exception):
    """Unwinds a request's processing after a retry time was recorded."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim


def utcnow() -> datetime:
    return datetime.now(UTC)


def stub_request(request_id: str, record: RequestRecord, status: str = "") -> CancelRequest:
    """A request rebuilt from its journal row, for steps that need no fresh read from Connect."""
    return CancelRequest(
        id=request_id,
        type="cancel",
        status=status,
        asset_id=record.asset_id or "",
        product_id=record.product_id or "",
        environment=record.environment or "",
        marketplace_id=record.marketplace_id,
        customer_id=record.customer_id,
        subscription_id=record.subscription_id,
    )


class EngineBase:
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
                on_change=lambda n, is_open: self.metrics.circuit_open.labels(adapter=n).set(
                    int(is_open)
                ),
            )
            for name in self.adapters
        }
        self.guard = AnomalyGuard(
            config.guard, self.breakers, self.metrics, LatchFile(latch_path(config))
        )
        self._random = random.Random()

    # -- which adapter, which policy ------------------------------------------------------------

    def _adapter_name(self, claim: Claim, decision: Decision) -> str | None:
        """The adapter a request started with (kept in the journal), else the one decided now."""
        recorded = claim.record.data.get("adapter")
        return str(recorded) if recorded else decision.adapter

    def _adapter(self, claim: Claim, decision: Decision) -> VendorAdapter | None:
        return self.adapters.get(self._adapter_name(claim, decision) or "")

    def _policy_of(
        self, claim: Claim, decision: Decision
    ) -> tuple[str | None, PolicyConfig | None]:
        """The policy a request started under; the decision's when the request has not started."""
        name = claim.record.data.get("policy")
        if not name or name == decision.policy_name:
            return decision.policy_name, decision.policy
        try:
            return str(name), self.config.policy_named(str(name))
        except KeyError:  # removed from the configuration since: default texts
            return str(name), None

    # -- vendor calls ---------------------------------------------------------------------------

    def _vendor_call(
        self, claim: Claim, request: CancelRequest, step: str, decision: Decision | None = None
    ) -> VendorCall:
        return VendorCall(
            request=request,
            subscription_id=request.subscription_id or claim.record.subscription_id or "",
            idempotency_key=f"{claim.record.idempotency_key}:{step}",
            attempt=claim.record.attempts,
            reason_code=decision.reason_code if decision else None,
            reason_comment=decision.reason_comment if decision else None,
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
            result = Ambiguous(f"adapter raised {type(exc).__name__}: {exc}", raised=True)
        if not isinstance(result, _OUTCOMES):
            result = Ambiguous(
                f"adapter returned {type(result).__name__}, not an outcome", raised=True
            )
        self.metrics.vendor_calls.labels(operation=operation, outcome=outcome_name(result)).observe(
            time.perf_counter() - started
        )
        return result

    # -- journal --------------------------------------------------------------------------------

    def _move(
        self,
        claim: Claim,
        request: CancelRequest,
        state: State,
        *,
        detail: str | None = None,
        **fields: Any,
    ) -> Claim:
        if state in FINAL_STATES and "next_attempt_at" not in fields:
            # A final row keeps a timer only when a step sets one on purpose (a purge): a stale retry
            # time would make the timer loop pick the row up again and again.
            fields["next_attempt_at"] = None
        new = self.journal.transition(claim, state, detail=detail or fields.get("reason"), **fields)
        self.metrics.transitions.labels(state=state.value).inc()
        if state in _OUTCOME_STATES and state is not claim.state:
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
        self,
        claim: Claim,
        request: CancelRequest,
        state: State,
        seconds: float,
        why: str,
        **fields: Any,
    ) -> NoReturn:
        """Record when to try again and stop working on the request for now."""
        when = self.clock() + timedelta(seconds=max(seconds, 0.0))
        raise Deferred(
            self._move(
                claim,
                request,
                state,
                next_attempt_at=when,
                last_error=why,
                detail=f"retry after {seconds:.1f}s: {why}",
                **fields,
            )
        )

    def _backoff(self, n: int) -> float:
        base = min(self.settings.retry_max, self.settings.retry_base * 2 ** max(n - 1, 0))
        return base / 2 + self._random.uniform(0, base / 2)

    def _bad_request(self, claim: Claim, request: CancelRequest, problem: str) -> Claim:
        self.metrics.outcomes.labels(outcome="malformed").inc()
        if self.settings.malformed == "fail":
            return self._move(
                claim,
                request,
                State.REFUSING,
                reason=self.settings.malformed_reason,
                last_error=problem,
                detail=f"malformed: {problem}",
            )
        return self._move(
            claim, request, State.PARKED, reason=f"malformed request: {problem}", last_error=problem
        )

    # -- the conversation -----------------------------------------------------------------------

    def _note(self, claim: Claim, request: CancelRequest, decision: Decision | None = None) -> None:
        """Post the note of the state reached, once (the journal's ``noted`` remembers). A note that
        fails here stays owed in the journal; the daemon posts it later (:meth:`renote`)."""
        if not self.settings.notes or claim.record.noted == claim.state.value:
            return
        if claim.state not in NOTED_STATES:
            return
        name, policy = self._policy_of(claim, decision) if decision is not None else (None, None)
        try:
            self._post_note(claim.record, request.subscription_id, name, policy)
            self.journal.update(claim, noted=claim.state.value)
        except (MarketplaceError, LeaseLost) as exc:
            get_logger(**request.log_context()).warning("note_not_posted", error=str(exc))

    def renote(self, record: RequestRecord) -> bool:
        """Post a note the journal says is owed (``noted`` is not the row's state), then record it.

        The text is built as :meth:`_note` builds it, from the row and the policy the row names, and
        posted under the same once-key; the gateway also looks for the same text among the
        conversation's newest messages, so a note that reached Connect before a crash or a lost
        answer is not posted again. True when the note is recorded now. A transient Connect failure
        raises :class:`TransientError` (the caller stops for this pass); any other Connect refusal
        leaves the note owed and returns False.
        """
        if (
            not self.settings.notes
            or record.state not in NOTED_STATES
            or record.noted == record.state.value
        ):
            return False
        name, policy = self._recorded_policy(record)
        try:
            self._post_note(record, record.subscription_id, name, policy)
        except TransientError:
            raise
        except MarketplaceError as exc:
            get_logger(request_id=record.request_id).warning("note_not_posted", error=str(exc))
            return False
        return self.journal.mark_noted(record.request_id, record.state)

    def _post_note(
        self,
        record: RequestRecord,
        subscription: str | None,
        name: str | None,
        policy: PolicyConfig | None,
    ) -> None:
        text = note_text(record, subscription, name, policy)
        self.marketplace.post_note(
            record.request_id, text, once_key=f"{record.request_id}:{record.state.value}"
        )

    def _recorded_policy(self, record: RequestRecord) -> tuple[str | None, PolicyConfig | None]:
        """The policy a row names (started under, or routed by), without a fresh decision."""
        routed = record.data.get("routed")
        name = record.data.get("policy") or (
            routed.get("policy") if isinstance(routed, Mapping) else None
        )
        if not name:
            return None, None
        try:
            return str(name), self.config.policy_named(str(name))
        except KeyError:  # removed from the configuration since: default texts, as _policy_of does
            return str(name), None
