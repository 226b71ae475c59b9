"""Connect steps: approve, fail, schedule, confirm a revocation, route to a person.

Each is one gateway call between two journal moves, and safe to repeat: the gateway re-reads a
request after an ambiguous failure or a refusal (approve, fail, schedule and confirm are recognised
as done when the request already has the target status), and assigning the same person twice is
harmless. What each outcome means here:

- :class:`TransientError` (Connect unreachable, 5xx/429 beyond the retry budget) defers the request
  in the state it is in; nothing is lost and nothing is decided.
- :class:`NotPending` means someone else moved the request: the step records what Connect shows.
- :class:`ActionRefused` and other errors park the request with Connect's message, except where a
  refusal has a known meaning (a planned date Connect considers past means "effective now").

Scheduling writes its intent (``scheduled`` with the row's ``scheduled`` flag False) before calling
Connect, so a crash between the two leaves a row that the next sight of the still-pending request
schedules again; the flag True records that Connect holds the request until the
planned date. A scheduled row carries no journal timer: Connect itself returns the request to
``pending`` at the planned date and the poll picks it up, while a revocation in between has to be
able to claim the row at any moment.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from processor.config.schema import Config
from processor.engine import crashpoints
from processor.engine.base import Mover
from processor.engine.guard import AnomalyGuard
from processor.engine.results import Stepped
from processor.engine.rowdata import RowData
from processor.engine.transitions import Event
from processor.journal.base import Claim, State
from processor.marketplace import (
    ActionRefused,
    Marketplace,
    MarketplaceError,
    NotPending,
    TransientError,
)
from processor.model import CancelRequest
from processor.policy.rules import Decision
from processor.policy.timing import iso

__all__ = ["ConnectSteps", "CLOCK_SKEW"]

CLOCK_SKEW = timedelta(minutes=5)  # how far Connect's clock may run ahead of ours


class ConnectSteps:
    def __init__(
        self, mover: Mover, marketplace: Marketplace, config: Config, guard: AnomalyGuard
    ) -> None:
        self.mover = mover
        self.marketplace = marketplace
        self.config = config
        self.guard = guard  # told when Connect shows another processor at work

    def _later(self, claim: Claim, request: CancelRequest, exc: TransientError) -> Stepped:
        """Connect is in trouble: try again later, where the row is."""
        wait = exc.retry_after or self.mover.backoff(1)
        return self.mover.defer(claim, request, wait, str(exc))

    def approve(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        move = self.mover.move
        data = RowData.of(claim.record)
        template = data.template or decision.template
        dates = data.dates
        # Connect records the termination as of the date access ended (the billing period's end,
        # or the start of the grace period), not the moment the vendor finished.
        timed = dates is not None and (dates.graced or data.timing == "end_of_period")
        effective = dates.effective_at if timed and dates is not None else None
        purge_at = dates.purge_at if dates is not None and not data.purged_at else None
        # Terminated under this very claim: no approve of this journal's can have left before.
        first = data.terminated_under == claim.fence
        try:
            if template is None and self.config.defaults.lookup_template:
                template = self.marketplace.default_template(request.product_id)
            if template is None:
                why = "no approve template for the product"
                return move(claim, request, Event.PARK, reason=why)
            self._approve_call(request.id, str(template), effective, first)
        except TransientError as exc:
            return self._later(claim, request, exc)
        except NotPending as exc:
            if exc.status == "approved":
                if first:
                    self._approved_elsewhere(claim, request, data)
                return move(
                    claim,
                    request,
                    Event.APPROVE,
                    next_attempt_at=purge_at,
                    detail="already approved on Connect",
                )
            why = f"terminated at the vendor, but the request is {exc.status} on Connect"
            return move(claim, request, Event.PARK, reason=why)
        except (ActionRefused, MarketplaceError) as exc:
            why = f"approve refused by Connect: {exc}"
            return move(claim, request, Event.PARK, reason=why)
        crashpoints.reached("after_approve")
        purge = f"; purge due {iso(purge_at)}" if purge_at else ""
        return move(
            claim,
            request,
            Event.APPROVE,
            next_attempt_at=purge_at,
            detail=f"approved with {template}{purge}",
        )

    def _approve_call(
        self, request_id: str, template: str, effective: datetime | None, first: bool
    ) -> None:
        self.marketplace.approve(
            request_id, template, effective_date=effective, first_attempt=first
        )

    def _approved_elsewhere(self, claim: Claim, request: CancelRequest, data: RowData) -> None:
        """Approved on Connect between this journal's termination and its first approve --
        unless another worker of this journal took the request over meanwhile (this one frozen
        past its lease): its approve is this journal's own."""
        adapter = data.adapter
        now = self.mover.journal.get(request.id)
        if now is None or now.fence != claim.fence:
            return
        if adapter is not None:
            sign = "the request was approved on Connect by someone else as this journal ended it"
            self.guard.another_processor(adapter, sign, request.id, claim.record.created_at)

    def fail(self, claim: Claim, request: CancelRequest) -> Stepped:
        move = self.mover.move
        reason = claim.record.reason or self.config.processing.poison_reason
        try:
            self.marketplace.fail(request.id, reason)
        except TransientError as exc:
            return self._later(claim, request, exc)
        except NotPending as exc:
            if exc.status == "failed":
                return move(claim, request, Event.FAIL, detail="already failed on Connect")
            return move(claim, request, Event.CLOSE, detail=f"request is {exc.status} on Connect")
        except (ActionRefused, MarketplaceError) as exc:
            return move(claim, request, Event.PARK, reason=f"fail refused by Connect: {exc}")
        return move(claim, request, Event.FAIL, detail=f"failed: {reason}")

    def schedule(self, claim: Claim, request: CancelRequest, data: RowData) -> tuple[Stepped, bool]:
        """Hold the request on Connect until its effective date. The flag is False when Connect
        will not hold it (its clock says the date has passed): the caller cancels now."""
        move = self.mover.move
        dates = data.dates
        assert dates is not None  # the caller planned the dates
        if claim.state is not State.SCHEDULED or RowData.of(claim.record).scheduled is not False:
            claim = move(
                claim,
                request,
                Event.SCHEDULE,
                data=data.with_scheduled(False),
                next_attempt_at=None,
                detail=f"intent: schedule on Connect until {iso(dates.effective_at)}",
            )
        try:
            self.marketplace.schedule(request.id, dates.effective_at)
        except TransientError as exc:
            return self._later(claim, request, exc), True
        except NotPending as exc:
            if exc.status == "revoking":
                return self.confirm(claim, request), True
            if exc.status != "scheduled":
                why = f"request is {exc.status} on Connect"
                return move(claim, request, Event.CLOSE, detail=why), True
        except ActionRefused as exc:
            if dates.effective_at <= self.mover.clock() + CLOCK_SKEW:
                # Connect refuses a planned date it considers past; within a small skew of our own
                # clock that is what the refusal means, and the date has (about) arrived.
                return claim, False
            why = f"schedule refused by Connect: {exc}"
            return move(claim, request, Event.PARK, reason=why), True
        except MarketplaceError as exc:
            why = f"schedule refused by Connect: {exc}"
            return move(claim, request, Event.PARK, reason=why), True
        claim = move(
            claim,
            request,
            Event.SCHEDULE,
            data=RowData.of(claim.record).with_scheduled(True),
            next_attempt_at=None,
            detail=f"scheduled on Connect until {iso(dates.effective_at)}",
        )
        return claim, True

    def confirm(self, claim: Claim, request: CancelRequest) -> Stepped:
        """The customer withdrew a scheduled cancellation: confirm it; the vendor saw nothing."""
        try:
            self.marketplace.confirm(request.id)
        except TransientError as exc:
            return self._later(claim, request, exc)
        except NotPending as exc:
            if exc.status != "revoked":
                return claim  # no longer revoking (scheduled, or pending again): nothing to confirm
        except (ActionRefused, MarketplaceError) as exc:
            why = f"confirming the revocation was refused by Connect: {exc}"
            return self.mover.move(claim, request, Event.PARK, reason=why)
        return self.mover.move(
            claim,
            request,
            Event.REVOKE,
            detail="revocation confirmed on Connect; nothing terminated",
        )

    def route(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        """Give the request to a person; the note (the policy's, saying why) follows."""
        route = decision.policy.route_to
        assert route is not None  # the policy decided "route"
        who = route.email or route.user_id or ""
        try:
            if route.email is not None:
                self.marketplace.assign(request.id, email=route.email)
            else:
                self.marketplace.assign(request.id, user_id=route.user_id)
        except TransientError as exc:
            return self._later(claim, request, exc)
        except NotPending as exc:
            why = f"request is {exc.status} on Connect"
            return self.mover.move(claim, request, Event.CLOSE, detail=why)
        except (ActionRefused, MarketplaceError) as exc:
            why = f"assigning to {who} was refused by Connect: {exc}"
            return self.mover.move(claim, request, Event.PARK, reason=why)
        data = RowData.of(claim.record).with_routed(who, self.mover.clock(), decision.policy_name)
        return self.mover.move(
            claim,
            request,
            Event.ROUTE,
            data=data,
            reason=f"policy '{decision.policy_name}': handled by {who}",
            detail=f"assigned to {who}; the processor leaves it to them",
        )
