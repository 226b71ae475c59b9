"""What ``--dry-run`` shows per request: the policy that matched, and the steps and dates ahead.

:func:`build_plan` reads (the journal row, and the subscription when the request lacks its billing
date) and writes nothing. Steps already done, by the journal's account, are left out, so a request
half-way through its policy shows what remains: a suspended one shows its termination, approval and
purge dates. Dates come from the journal when the request has started (the promised plan), else
from the policy applied now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from processor.config.schema import ProcessingConfig
from processor.engine import transitions
from processor.engine.base import Clock
from processor.engine.rowdata import RowData
from processor.journal.base import Journal, RequestRecord, State
from processor.marketplace import Marketplace, MarketplaceError
from processor.model import CancelRequest, MalformedRequest, parse_datetime, parse_request
from processor.policy.rules import Decision, Policy
from processor.policy.timing import Dates, effective_date, human

__all__ = ["Plan", "PlannedStep", "Planner", "build_plan"]


@dataclass(frozen=True, slots=True)
class PlannedStep:
    what: str
    at: datetime | None = None  # None: as soon as it is processed
    word: str = "on"  # how the date attaches: "on" a day, or "until" one

    def __str__(self) -> str:
        return self.what if self.at is None else f"{self.what} {self.word} {human(self.at)}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``--dry-run`` prints for one request. ``action`` is the whole plan on one line."""

    request_id: str
    product_id: str | None
    subscription_id: str | None
    environment: str | None
    journal_state: str | None
    action: str
    policy: str | None = None
    steps: tuple[PlannedStep, ...] = ()


@dataclass(frozen=True, slots=True)
class Planner:
    """What a dry run reads (nothing it is given is written to): the settings, the journal, the
    policy, Connect (a billing date) and the clock."""

    settings: ProcessingConfig
    journal: Journal
    policy: Policy
    marketplace: Marketplace
    clock: Clock

    def plan(self, payload: Mapping[str, Any]) -> Plan:
        return build_plan(self, payload)


def build_plan(planner: Planner, payload: Mapping[str, Any]) -> Plan:
    request_id = (
        str(payload.get("id") or "<no id>") if isinstance(payload, Mapping) else "<not an object>"
    )
    try:
        request = parse_request(payload, subscription_param=planner.settings.subscription_param)
    except MalformedRequest as exc:
        return Plan(
            request_id, None, None, None, None, f"{planner.settings.malformed}: {exc.problem}"
        )
    record = planner.journal.get(request.id)
    released = (
        record is not None and record.state is State.NEW and RowData.of(record).routed is not None
    )
    decision = planner.policy.decide(request, released=released)
    state = record.state.value if record else None
    head = f"policy '{decision.policy_name}': " if decision.policy_name else ""

    def plan(action: str, steps: tuple[PlannedStep, ...] = ()) -> Plan:
        return Plan(
            request.id,
            request.product_id,
            request.subscription_id,
            request.environment,
            state,
            action,
            decision.policy_name,
            steps,
        )

    if (
        record is not None
        and record.final
        and not (record.state is State.APPROVED and record.next_attempt_at)
    ):
        return plan(f"nothing: already {record.state.value}")
    if record is not None and record.state is State.WAITING_HUMAN:
        return plan(f"{head}nothing: waiting for a person ({record.reason or 'routed'})")
    if record is not None and record.state is State.REFUSING:
        return plan(f"{head}fail on Connect: {record.reason}")
    if decision.action != "terminate":
        return plan(decision.describe(), _other_steps(decision))
    if request.subscription_id is None and (record is None or record.state is State.NEW):
        return plan(f"{planner.settings.malformed}: no subscription id")
    dates, source = _dates(planner, request, decision, record)
    if dates is None:
        return plan(f"{head}park: {source}")
    steps = _steps(planner, decision, dates, record)
    reason = f" (reason: {decision.reason_code})" if decision.reason_code else ""
    return plan(head + "; ".join(str(s) for s in steps) + reason, steps)


def _other_steps(decision: Decision) -> tuple[PlannedStep, ...]:
    if decision.action == "route" and decision.policy.route_to is not None:
        route = decision.policy.route_to
        return (
            PlannedStep(f"assign to {route.email or route.user_id}"),
            PlannedStep("post one note saying why"),
            PlannedStep("leave it pending for a person"),
        )
    if decision.action == "refuse":
        return (PlannedStep(f"fail on Connect: {decision.reason}"),)
    if decision.action == "park":
        return (PlannedStep(f"park for a person: {decision.reason}"),)
    return ()


def _dates(
    planner: Planner, request: CancelRequest, decision: Decision, record: RequestRecord | None
) -> tuple[Dates | None, str]:
    if record is not None:
        planned = RowData.of(record).dates
        if planned is not None:
            return planned, "journal"
    billing = request.billing_next_date
    if billing is None and decision.policy.timing == "end_of_period":
        try:
            found = planner.marketplace.get_asset(request.asset_id).get("billing")
            billing = parse_datetime(found.get("next_date")) if isinstance(found, dict) else None
        except MarketplaceError:
            billing = None
    effective, source = effective_date(decision.policy, billing, planner.clock())
    if effective is None:
        return None, f"{source} and the policy says to park such requests"
    return Dates.plan(decision.policy, effective), source


def _steps(
    planner: Planner, decision: Decision, dates: Dates, record: RequestRecord | None
) -> tuple[PlannedStep, ...]:
    recorded = RowData.of(record) if record is not None else RowData()
    adapter = recorded.adapter or decision.adapter
    template = recorded.template or decision.template or "the product's default template"
    now = planner.clock()

    def when(at: datetime) -> datetime | None:
        return at if at > now else None  # due already: "as soon as it is processed"

    timed = dates.graced or decision.policy.timing == "end_of_period"
    approve = f"approve with {template}" + (
        f" (effective {human(dates.effective_at)})" if timed else ""
    )
    planned: list[tuple[int, PlannedStep]] = []
    if dates.effective_at > now:
        planned.append((0, PlannedStep("schedule on Connect", dates.effective_at, "until")))
    if dates.graced:
        planned.append((1, PlannedStep(f"suspend via '{adapter}'", when(dates.effective_at))))
    planned.append((2, PlannedStep(f"terminate via '{adapter}'", when(dates.terminate_at))))
    planned.append((3, PlannedStep(approve, when(dates.terminate_at))))
    if dates.purge_at is not None:
        planned.append((4, PlannedStep(f"purge via '{adapter}'", dates.purge_at)))
    rank = transitions.rank(record.state) if record is not None else 0
    if (
        record is not None
        and record.state is State.SCHEDULED
        and RowData.of(record).scheduled is not True
    ):
        rank = 0  # the schedule call itself has not been confirmed
    return tuple(step for order, step in planned if order >= rank)
