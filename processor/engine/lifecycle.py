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
  real termination; :meth:`VendorSteps._purge_due` never purges before that date and skips the purge
  of an account the billing team restored.

Approval always follows the vendor's termination, never precedes it, so Connect never reports a
subscription terminated that the vendor still runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from processor.adapters.base import SubscriptionStatus, has_status_read
from processor.engine.connect_steps import ConnectSteps
from processor.engine.vendor_steps import SUSPEND, TERMINATE, VendorSteps
from processor.journal.base import Claim, State
from processor.marketplace import MarketplaceError, TransientError
from processor.model import CancelRequest, parse_datetime
from processor.policy.rules import Decision
from processor.policy.timing import Dates, effective_date

__all__ = ["Lifecycle", "Ready"]


@dataclass(frozen=True, slots=True)
class Ready:
    """A request that passed every check, with the plan to record on its first step."""

    data: dict[str, Any]
    dates: Dates


class Lifecycle(VendorSteps, ConnectSteps):
    def _prepare(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim | Ready:
        """Everything decided before a first vendor or schedule call: a claim moved elsewhere
        (refused, parked, routed), or :class:`Ready` with the plan."""
        named = f"policy '{decision.policy_name}'"
        if decision.action == "refuse":
            return self._move(
                claim, request, State.REFUSING, reason=decision.reason, detail=f"refused by {named}"
            )
        if decision.action == "park":
            return self._move(claim, request, State.PARKED, reason=decision.reason)
        if decision.action == "route":
            return self._route(claim, request, decision)
        if request.subscription_id is None:
            return self._bad_request(claim, request, "no vendor subscription id on the request")
        adapter = self._adapter(claim, decision)
        if adapter is None:
            return self._not_loaded(claim, request, decision)
        missing = self._missing_capability(adapter, decision)
        if missing:
            return self._move(claim, request, State.PARKED, reason=missing)
        planned = Dates.from_data(claim.record.data)
        if planned is not None:  # started before and sent back (a retry): the promised dates stand
            return Ready(dict(claim.record.data), planned)
        billing = request.billing_next_date
        if billing is None and decision.policy.timing == "end_of_period":
            billing = self._billing_date(claim, request)
        effective, source = effective_date(decision.policy, billing, self.clock())
        if effective is None:
            return self._move(
                claim,
                request,
                State.PARKED,
                reason=f"the subscription has no billing date and {named} says to park such requests",
            )
        dates = Dates.plan(decision.policy, effective)
        data = {
            **claim.record.data,
            "policy": decision.policy_name,
            "timing": decision.policy.timing,
            "adapter": decision.adapter,
            "template": decision.template,
            "retention_days": decision.policy.retention_days,
            "date_source": source,
            **dates.as_data(),
        }
        return Ready(data, dates)

    def _billing_date(self, claim: Claim, request: CancelRequest) -> datetime | None:
        """``billing.next_date`` from the subscription itself, when the request's copy lacks it."""
        try:
            asset = self.marketplace.get_asset(request.asset_id)
        except TransientError as exc:
            self._defer(claim, request, claim.state, exc.retry_after or self._backoff(1), str(exc))
        except MarketplaceError:
            return None  # no such subscription visible, or refused: the policy's fallback applies
        billing = asset.get("billing")
        return parse_datetime(billing.get("next_date")) if isinstance(billing, dict) else None

    def _start(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        ready = self._prepare(claim, request, decision)
        if isinstance(ready, Claim):
            return ready
        if ready.dates.effective_at > self.clock():
            claim, held = self._schedule(claim, request, ready.data)
            if held:
                return claim
        return self._effective(claim, request, decision, ready.data)

    def _effective(
        self, claim: Claim, request: CancelRequest, decision: Decision, data: dict[str, Any]
    ) -> Claim:
        """The effective date has come: suspend for the grace period, or terminate."""
        dates = Dates.from_data(data)
        step = SUSPEND if dates is not None and dates.graced else TERMINATE
        return self._begin_step(claim, request, decision, step, **data)

    def _on_scheduled(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        """A scheduled row and what Connect shows of its request now."""
        data = dict(claim.record.data)
        dates = Dates.from_data(data)
        if dates is None:
            return self._move(
                claim, request, State.PARKED, reason="scheduled, but the journal holds no dates"
            )
        if request.status == "revoking":
            return self._confirm(claim, request)
        if request.status == "scheduled":
            if (
                data.get("scheduled") is not True
            ):  # the schedule landed; the crash came before we recorded it
                return self._move(
                    claim,
                    request,
                    State.SCHEDULED,
                    data={**data, "scheduled": True},
                    next_attempt_at=None,
                    detail="Connect holds the request until its planned date",
                )
            return claim
        if request.status != "pending":
            return self._move(
                claim,
                request,
                State.CLOSED if request.status != "revoked" else State.REVOKED,
                detail=f"request is {request.status} on Connect; nothing was done at the vendor",
            )
        if data.get("scheduled") is True or dates.effective_at <= self.clock():
            # Connect returned the request to pending: its planned date has come.
            return self._effective(claim, request, decision, data)
        claim, held = self._schedule(claim, request, data)
        return claim if held else self._effective(claim, request, decision, data)

    def _grace_over(self, claim: Claim) -> bool:
        dates = Dates.from_data(claim.record.data)
        return dates is None or self.clock() >= dates.terminate_at

    def _after_grace(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        """A suspended row whose grace period is over: terminate, unless the cancellation was withdrawn."""
        if request.status not in ("pending", "approved"):
            return self._withdrawn(claim, request, decision)
        return self._begin_step(claim, request, decision, TERMINATE)

    def _withdrawn(self, claim: Claim, request: CancelRequest, decision: Decision) -> Claim:
        """The request left pending on Connect (failed: reactivated) while suspended at the vendor."""
        status_text = request.status or "closed"
        adapter = self._adapter(claim, decision)
        if adapter is not None and has_status_read(adapter):
            status = self._call(
                adapter, "status", self._vendor_call(claim, request, "status"), claim
            )
            if status is SubscriptionStatus.ACTIVE:
                return self._move(
                    claim,
                    request,
                    State.CLOSED,
                    detail=f"reactivated: the request is {status_text} "
                    "on Connect and the subscription is active at the vendor",
                )
        return self._move(
            claim,
            request,
            State.PARKED,
            reason=f"the cancellation was withdrawn on Connect ({status_text}) during the grace period, but the "
            f"subscription may still be suspended at the vendor: resume it there",
        )
