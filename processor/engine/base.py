"""The engine's bookkeeping, shared by every step: journal moves and deferrals (:class:`Mover`).

The engine is composed of step objects, each in its own module and each holding the collaborators
it uses (no step inherits from another):

- :mod:`processor.engine.base` -- this: :class:`Mover` (moves by event through the transition
  table, deferrals, back-off), the clock;
- :mod:`processor.engine.transitions` -- the table: ``(state, event) -> (target, step)``, settling;
- :mod:`processor.engine.vendor` -- terminate, suspend, purge: the way to the adapter
  (:class:`VendorGate`: calls, breakers), intent, call, recorded result, resumption;
- :mod:`processor.engine.connect_steps` -- approve, fail, schedule, confirm, route to a person;
- :mod:`processor.engine.lifecycle` -- what a policy does with a request: dates, grace, withdrawal;
- :mod:`processor.engine.batch` -- a customer's cancels as one adapter call;
- :mod:`processor.engine.notes` -- the conversation note of each state reached;
- :mod:`processor.engine.core` -- :class:`Engine`: composes them; the entry points and the loop.

Every step returns the :class:`Claim` it reached, or :class:`Deferred` after recording when to try
again (:mod:`processor.engine.results`); the loop stops for that request only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from processor.config.schema import ProcessingConfig
from processor.engine import transitions
from processor.engine.results import Deferred
from processor.engine.rowdata import RowData
from processor.engine.transitions import Event
from processor.journal.base import Claim, Journal, RequestRecord
from processor.model import CancelRequest
from processor.observe import Metrics, get_logger
from processor.states import FINAL_STATES

__all__ = ["Mover", "Clock", "utcnow", "stub_request", "take_up"]

Clock = Callable[[], datetime]


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


def take_up(
    journal: Journal, request: CancelRequest, owner: str, lease_seconds: float
) -> tuple[RequestRecord, Claim | None]:
    """The request's journal row, inserted in ``new`` when the request is seen the first time and
    then claimed in the same journal transaction; a row that existed comes back unclaimed."""
    return journal.ensure_and_claim(
        request.id,
        owner,
        lease_seconds,
        idempotency_key=f"cancel-{request.id}",
        subscription_id=request.subscription_id,
        asset_id=request.asset_id,
        product_id=request.product_id,
        marketplace_id=request.marketplace_id,
        environment=request.environment,
        customer_id=request.customer_id,
    )


class Mover:
    """Journal moves through the transition table, with their metrics and log lines."""

    def __init__(
        self, journal: Journal, settings: ProcessingConfig, metrics: Metrics, clock: Clock
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.random = random.Random()

    def move(
        self,
        claim: Claim,
        request: CancelRequest,
        event: Event,
        *,
        detail: str | None = None,
        data: RowData | None = None,
        **fields: Any,
    ) -> Claim:
        """Write the move ``event`` makes from the claim's state, as the table says; a pair the
        table does not hold raises :class:`~processor.engine.transitions.IllegalMove` first."""
        state = transitions.lookup(claim.state, event).target
        if data is not None:
            fields["data"] = data.json()
        if state in FINAL_STATES and "next_attempt_at" not in fields:
            # A final row keeps a timer only when a step sets one on purpose (a purge): a stale
            # retry time would make the timer loop pick the row up again and again.
            fields["next_attempt_at"] = None
        new = self.journal.transition(claim, state, detail=detail or fields.get("reason"), **fields)
        self.metrics.transitions.labels(state=state.value).inc()
        if state in FINAL_STATES and state is not claim.state:  # an outcome reached
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

    def defer(
        self,
        claim: Claim,
        request: CancelRequest,
        seconds: float,
        why: str,
        event: Event = Event.RETRY,
        **fields: Any,
    ) -> Deferred:
        """Record when to try again (staying, or going back by ``event``); the caller returns the
        answer and stops for now."""
        when = self.clock() + timedelta(seconds=max(seconds, 0.0))
        return Deferred(
            self.move(
                claim,
                request,
                event,
                next_attempt_at=when,
                last_error=why,
                detail=f"retry after {seconds:.1f}s: {why}",
                **fields,
            )
        )

    def backoff(self, n: int) -> float:
        base = min(self.settings.retry_max, self.settings.retry_base * 2 ** max(n - 1, 0))
        return float(base / 2 + self.random.uniform(0, base / 2))

    def bad_request(self, claim: Claim, request: CancelRequest, problem: str) -> Claim:
        self.metrics.outcomes.labels(outcome="malformed").inc()
        if self.settings.malformed == "fail":
            return self.move(
                claim,
                request,
                Event.REFUSE,
                reason=self.settings.malformed_reason,
                last_error=problem,
                detail=f"malformed: {problem}",
            )
        return self.move(
            claim, request, Event.PARK, reason=f"malformed request: {problem}", last_error=problem
        )
