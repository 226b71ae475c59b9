"""What a policy does with a request over time: plan the dates, wait, suspend, terminate, purge.

How a cancellation maps onto Connect (the choices, and why):

- ``immediate``: terminate at the vendor, approve. With ``grace_days`` the vendor suspends first and
  terminates when the grace period ends; the request stays ``pending`` on Connect meanwhile.
- ``end_of_period``: Connect's own ``schedule`` action holds the request until the effective date
  (``billing.next_date``); the customer's side can ``revoke`` it until then, and a revocation is
  confirmed (``confirm``) with nothing done at the vendor. At the planned date Connect returns the
  request to ``pending`` and the poll picks it up: suspend (with grace) or terminate (without).
- During grace the request stays ``pending`` and the subscription ``terminating``. That is what
  keeps reactivation possible: a person at the vendor who reactivates a customer fails the request
  (Connect sets the subscription back to ``active``), which approving early would make impossible.
  When the grace period ends, a request still pending (or approved by hand meanwhile) is terminated
  at the vendor and approved with ``effective_date`` = the date access ended, so Connect's billing
  sees the cancellation as of the end of the period, not the end of the grace. A request withdrawn
  during grace is not terminated: with a status read that shows the subscription active again the
  row is closed; otherwise it is parked, because the vendor still has it suspended.
- Retention: the approved row keeps a purge timer (``next_attempt_at``) ``retention_days`` after the
  real termination; :meth:`VendorSteps.purge_due` never purges before that date and skips the purge
  of an account the billing team restored.

Approval always follows the vendor's termination, never precedes it, so Connect never reports a
subscription terminated that the vendor still runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from processor.adapters.base import SubscriptionStatus, has_status_read
from processor.engine.base import Mover
from processor.engine.connect_steps import ConnectSteps
from processor.engine.results import Deferred, Stepped
from processor.engine.rowdata import RowData
from processor.engine.transitions import Event
from processor.engine.vendor import SUSPEND, TERMINATE, VendorGate, VendorSteps
from processor.journal.base import Claim
from processor.marketplace import Marketplace, MarketplaceError, TransientError
from processor.model import CancelRequest, parse_datetime
from processor.policy.rules import Decision
from processor.policy.timing import Dates, effective_date

__all__ = ["Lifecycle", "Ready"]


@dataclass(frozen=True, slots=True)
class Ready:
    """A request that passed every check, with the plan to record on its first step."""

    data: RowData
    dates: Dates


class Lifecycle:
    def __init__(
        self,
        mover: Mover,
        gate: VendorGate,
        vendor: VendorSteps,
        connect: ConnectSteps,
        marketplace: Marketplace,
    ) -> None:
        self.mover = mover
        self.gate = gate
        self.vendor = vendor
        self.connect = connect
        self.marketplace = marketplace

    def prepare(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped | Ready:
        """Everything decided before a first vendor or schedule call: a claim moved elsewhere
        (refused, parked, routed), a deferral, or :class:`Ready` with the plan."""
        move = self.mover.move
        named = f"policy '{decision.policy_name}'"
        if decision.action == "refuse":
            why = f"refused by {named}"
            return move(claim, request, Event.REFUSE, reason=decision.reason, detail=why)
        if decision.action == "park":
            return move(claim, request, Event.PARK, reason=decision.reason)
        if decision.action == "route":
            return self.connect.route(claim, request, decision)
        if request.subscription_id is None:
            return self.mover.bad_request(
                claim, request, "no vendor subscription id on the request"
            )
        adapter = self.gate.adapter(claim, decision)
        if adapter is None:
            return self.vendor.not_loaded(claim, request, decision)
        missing = self.vendor.missing_capability(adapter, decision)
        if missing:
            return move(claim, request, Event.PARK, reason=missing)
        recorded = RowData.of(claim.record)
        planned = recorded.dates
        if planned is not None:  # started before and sent back (a retry): the promised dates stand
            return Ready(recorded, planned)
        billing = request.billing_next_date
        if billing is None and decision.policy.timing == "end_of_period":
            found = self._billing_date(claim, request)
            if isinstance(found, Deferred):
                return found
            billing = found
        effective, source = effective_date(decision.policy, billing, self.mover.clock())
        if effective is None:
            return move(
                claim,
                request,
                Event.PARK,
                reason=f"the subscription has no billing date and {named} says to park such "
                "requests",
            )
        dates = Dates.plan(decision.policy, effective)
        data = recorded.planned(
            policy=decision.policy_name,
            timing=decision.policy.timing,
            adapter=decision.adapter,
            template=decision.template,
            retention_days=decision.policy.retention_days,
            date_source=source,
            dates=dates,
        )
        return Ready(data, dates)

    def _billing_date(self, claim: Claim, request: CancelRequest) -> datetime | None | Deferred:
        """``billing.next_date`` from the subscription itself, when the request's copy lacks it."""
        try:
            asset = self.marketplace.get_asset(request.asset_id)
        except TransientError as exc:
            wait = exc.retry_after or self.mover.backoff(1)
            return self.mover.defer(claim, request, wait, str(exc))
        except MarketplaceError:
            return None  # no such subscription visible, or refused: the policy's fallback applies
        billing = asset.get("billing")
        return parse_datetime(billing.get("next_date")) if isinstance(billing, dict) else None

    def start(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        ready = self.prepare(claim, request, decision)
        if not isinstance(ready, Ready):
            return ready
        if ready.dates.effective_at > self.mover.clock():
            scheduled, held = self.connect.schedule(claim, request, ready.data)
            if held:
                return scheduled
            claim = scheduled if isinstance(scheduled, Claim) else scheduled.claim
        return self.effective(claim, request, decision, ready.data)

    def effective(
        self, claim: Claim, request: CancelRequest, decision: Decision, data: RowData
    ) -> Stepped:
        """The effective date has come: suspend for the grace period, or terminate."""
        dates = data.dates
        step = SUSPEND if dates is not None and dates.graced else TERMINATE
        return self.vendor.begin(claim, request, decision, step, data)

    def on_scheduled(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        """A scheduled row and what Connect shows of its request now."""
        move = self.mover.move
        data = RowData.of(claim.record)
        dates = data.dates
        if dates is None:
            why = "scheduled, but the journal holds no dates"
            return move(claim, request, Event.PARK, reason=why)
        if request.status == "revoking":
            return self.connect.confirm(claim, request)
        if request.status == "scheduled":
            if (
                data.scheduled is not True
            ):  # the schedule landed; the crash came before we recorded it
                return move(
                    claim,
                    request,
                    Event.SCHEDULE,
                    data=data.with_scheduled(True),
                    next_attempt_at=None,
                    detail="Connect holds the request until its planned date",
                )
            return claim
        if request.status != "pending":
            return move(
                claim,
                request,
                Event.CLOSE if request.status != "revoked" else Event.REVOKE,
                detail=f"request is {request.status} on Connect; nothing was done at the vendor",
            )
        if data.scheduled is True or dates.effective_at <= self.mover.clock():
            # Connect returned the request to pending: its planned date has come.
            return self.effective(claim, request, decision, data)
        scheduled, held = self.connect.schedule(claim, request, data)
        if held:
            return scheduled
        claim = scheduled if isinstance(scheduled, Claim) else scheduled.claim
        return self.effective(claim, request, decision, data)

    def grace_over(self, claim: Claim) -> bool:
        dates = RowData.of(claim.record).dates
        return dates is None or self.mover.clock() >= dates.terminate_at

    def after_grace(self, claim: Claim, request: CancelRequest, decision: Decision) -> Stepped:
        """A suspended row whose grace is over: terminate, unless the cancel was withdrawn."""
        if request.status not in ("pending", "approved"):
            return self._withdrawn(claim, request, decision)
        return self.vendor.begin(claim, request, decision, TERMINATE)

    def _withdrawn(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        """The request left pending on Connect (failed: reactivated) while suspended there."""
        status_text = request.status or "closed"
        adapter = self.gate.adapter(claim, decision)
        if adapter is not None and has_status_read(adapter):
            status = self.gate.status(adapter, claim, request, "status")
            if status is SubscriptionStatus.ACTIVE:
                return self.mover.move(
                    claim,
                    request,
                    Event.CLOSE,
                    detail=f"reactivated: the request is {status_text} "
                    "on Connect and the subscription is active at the vendor",
                )
        return self.mover.move(
            claim,
            request,
            Event.PARK,
            reason=f"the cancellation was withdrawn on Connect ({status_text}) during the grace "
            "period, but the subscription may still be suspended at the vendor: resume it there",
        )
