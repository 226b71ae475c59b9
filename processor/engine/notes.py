"""What the request's conversation is told, once per state change.

A note states what happened and what happens next, with the dates the journal holds (see
:mod:`processor.policy.timing`): when access ends, until when the service can be reactivated, when the data
is deleted. A policy's ``confirmation`` replaces the text of the approval note; its placeholders
were checked at start-up (:data:`~processor.config.policy.CONFIRMATION_FIELDS`), and a value that is
unknown reads as "unknown" rather than breaking the message.

Notes are customer-visible: they carry reasons meant for the customer and dates, never vendor
error details (those stay in the journal's ``last_error``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from processor.config.policy import PolicyConfig
from processor.journal.base import RequestRecord, State
from processor.policy.timing import Dates, human

__all__ = ["note_text", "confirmation_fields"]

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def confirmation_fields(
    record: RequestRecord, subscription: str, policy_name: str | None
) -> dict[str, str]:
    dates = Dates.from_data(record.data)
    return {
        "request_id": record.request_id,
        "subscription": subscription,
        "policy": policy_name or "default",
        "effective_date": human(dates.effective_at) if dates else "now",
        "reactivate_until": human(dates.reactivate_until)
        if dates and dates.reactivate_until
        else "not applicable",
        "delete_on": human(dates.delete_on()) if dates else "now",
    }


def _fill(template: str, fields: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: fields.get(m.group(1), "unknown"), template)


def _data_clause(dates: Dates | None) -> str:
    if dates is None or dates.purge_at is None:
        when = f" on {human(dates.terminate_at)}" if dates is not None and dates.graced else ""
        return f"Its data is removed with the termination{when}."
    return (
        f"Its data is kept until {human(dates.purge_at)}; until then the billing team can restore the "
        f"account, then the data is deleted for good."
    )


def note_text(
    record: RequestRecord,
    subscription: str | None,
    policy_name: str | None,
    policy: PolicyConfig | None,
) -> str:
    sub = subscription or record.subscription_id or "the subscription"
    dates = Dates.from_data(record.data)
    state = record.state
    if state is State.SCHEDULED and dates is not None:
        grace = (
            f" It is then suspended (access off, data kept) and can be reactivated until "
            f"{human(dates.reactivate_until)}."
            if dates.graced
            else ""
        )
        return (
            f"Cancellation scheduled: {sub} stays active until {human(dates.effective_at)}.{grace} "
            f"{_data_clause(dates)} The cancellation can be withdrawn until {human(dates.effective_at)}."
        )
    if state is State.SUSPENDED and dates is not None:
        return (
            f"Subscription {sub} is suspended as of {human(dates.effective_at)}: access is off and its data "
            f"is kept. It can be reactivated until {human(dates.reactivate_until)}; after that it is "
            f"terminated. {_data_clause(dates)}"
        )
    if state is State.WAITING_HUMAN:
        route = policy.route_to if policy is not None else None
        return route.note if route is not None else "This cancellation is handled by a person."
    if state is State.APPROVED:
        if policy is not None and policy.confirmation:
            return _fill(policy.confirmation, confirmation_fields(record, sub, policy_name))
        gone = " (it was already gone at the vendor)" if record.outcome == "already_gone" else ""
        timed = dates is not None and (dates.graced or record.data.get("timing") == "end_of_period")
        effective = (
            f", effective {human(dates.effective_at)}" if timed and dates is not None else ""
        )
        clause = (
            f" {_data_clause(dates)}"
            if dates is not None and (dates.purge_at or dates.graced)
            else ""
        )
        return (
            f"Cancellation processed: {sub} was terminated at the vendor{gone}{effective}. "
            f"The request was approved.{clause}"
        )
    if state is State.REVOKED:
        return f"Cancellation withdrawn: the revocation was confirmed and nothing was terminated; {sub} stays active."
    if state is State.FAILED:
        return f"Cancellation refused: {record.reason}"
    if state is State.PARKED:
        return f"Cancellation needs a person at the vendor: {record.reason}"
    return f"Cancellation closed: {state.value}."
