"""What the request's conversation is told, once per state change.

A note states what happened and what happens next, with the dates the journal holds (see
:mod:`processor.policy.timing`): when access ends, until when the service can be reactivated, when
the data is deleted. A policy's ``confirmation`` replaces the text of the approval note; its
placeholders were checked at start-up (:data:`~processor.config.policy.CONFIRMATION_FIELDS`), and a
value that is unknown reads as "unknown" rather than breaking the message.

Notes are customer-visible: they carry reasons meant for the customer and dates, never vendor
error details (those stay in the journal's ``last_error``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from processor.config.policy import PolicyConfig
from processor.config.schema import Config
from processor.engine.rowdata import RowData
from processor.journal.base import NOTED_STATES, Claim, Journal, LeaseLost, RequestRecord, State
from processor.marketplace import Marketplace, MarketplaceError, TransientError
from processor.model import CancelRequest
from processor.observe import get_logger
from processor.policy.rules import Decision
from processor.policy.timing import Dates, human

__all__ = ["Notes", "note_text", "confirmation_fields"]

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def confirmation_fields(
    record: RequestRecord, subscription: str, policy_name: str | None
) -> dict[str, str]:
    dates = RowData.of(record).dates
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
        f"Its data is kept until {human(dates.purge_at)}; "
        "until then the billing team can restore the "
        f"account, then the data is deleted for good."
    )


def note_text(
    record: RequestRecord,
    subscription: str | None,
    policy_name: str | None,
    policy: PolicyConfig | None,
) -> str:
    sub = subscription or record.subscription_id or "the subscription"
    dates = RowData.of(record).dates
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
            f"{_data_clause(dates)} "
            f"The cancellation can be withdrawn until {human(dates.effective_at)}."
        )
    if state is State.SUSPENDED and dates is not None:
        return (
            f"Subscription {sub} is suspended as of {human(dates.effective_at)}: "
            "access is off and its data is kept. "
            f"It can be reactivated until {human(dates.reactivate_until)}; after that it is "
            f"terminated. {_data_clause(dates)}"
        )
    if state is State.WAITING_HUMAN:
        route = policy.route_to if policy is not None else None
        return route.note if route is not None else "This cancellation is handled by a person."
    if state is State.APPROVED:
        if policy is not None and policy.confirmation:
            return _fill(policy.confirmation, confirmation_fields(record, sub, policy_name))
        gone = " (it was already gone at the vendor)" if record.outcome == "already_gone" else ""
        timed = dates is not None and (dates.graced or RowData.of(record).timing == "end_of_period")
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
        return (
            "Cancellation withdrawn: the revocation was confirmed and nothing was terminated; "
            f"{sub} stays active."
        )
    if state is State.FAILED:
        return f"Cancellation refused: {record.reason}"
    if state is State.PARKED:
        return f"Cancellation needs a person at the vendor: {record.reason}"
    return f"Cancellation closed: {state.value}."


class Notes:
    """Posts the note of each state reached, once (the journal's ``noted`` remembers)."""

    def __init__(self, config: Config, journal: Journal, marketplace: Marketplace) -> None:
        self.config = config
        self.enabled = config.processing.notes
        self.journal = journal
        self.marketplace = marketplace

    def policy_of(self, claim: Claim, decision: Decision) -> tuple[str | None, PolicyConfig | None]:
        """The policy a request started under; the decision's when the request has not started."""
        name = RowData.of(claim.record).policy
        if not name or name == decision.policy_name:
            return decision.policy_name, decision.policy
        return self._named(name)

    def _named(self, name: str) -> tuple[str | None, PolicyConfig | None]:
        try:
            return name, self.config.policy_named(name)
        except KeyError:  # removed from the configuration since: default texts
            return name, None

    def note(self, claim: Claim, request: CancelRequest, decision: Decision | None = None) -> None:
        """Post the note of the state reached, once, and record it. A note that fails here stays
        owed in the journal; the daemon posts it later (:meth:`renote`)."""
        owed = self.post(claim, request, decision)
        if owed:
            try:
                self.journal.update(claim, **owed)
            except LeaseLost as exc:
                self.not_recorded(request, exc)

    def post(
        self, claim: Claim, request: CancelRequest, decision: Decision | None = None
    ) -> dict[str, str]:
        """Post the note of the state reached, once; the fields that record it (``noted``), for
        the caller to write under the claim (empty: nothing posted). The caller writes them with
        its next journal write and nothing remote in between (:meth:`note`, or the engine's
        release)."""
        if not self.enabled or claim.record.noted == claim.state.value:
            return {}
        if claim.state not in NOTED_STATES:
            return {}
        name, policy = self.policy_of(claim, decision) if decision is not None else (None, None)
        try:
            # Fence 1 is the row's first claim ever: every claim, takeover and operator force
            # raises it, so no earlier worker can have posted this note, and the gateway may skip
            # its search of the conversation (one Connect read of four per request). A crash after
            # the post leaves the note owed under a higher fence, where the search runs again.
            first = claim.fence == 1
            self._post(claim.record, request.subscription_id, name, policy, first_attempt=first)
        except MarketplaceError as exc:
            self.not_recorded(request, exc)
            return {}
        return {"noted": claim.state.value}

    @staticmethod
    def not_recorded(request: CancelRequest, exc: Exception) -> None:
        get_logger(**request.log_context()).warning("note_not_posted", error=str(exc))

    def renote(self, record: RequestRecord) -> bool:
        """Post a note the journal says is owed (``noted`` is not the row's state), then record it.

        The text is built as :meth:`note` builds it, from the row and the policy the row names, and
        posted under the same once-key; the gateway also looks for the same text among the
        conversation's newest messages, so a note that reached Connect before a crash or a lost
        answer is not posted again. True when the note is recorded now. A transient Connect failure
        raises :class:`TransientError` (the caller stops for this pass); any other Connect refusal
        leaves the note owed and returns False.
        """
        if (
            not self.enabled
            or record.state not in NOTED_STATES
            or record.noted == record.state.value
        ):
            return False
        name, policy = self._recorded_policy(record)
        try:
            self._post(record, record.subscription_id, name, policy)
        except TransientError:
            raise
        except MarketplaceError as exc:
            get_logger(request_id=record.request_id).warning("note_not_posted", error=str(exc))
            return False
        return self.journal.mark_noted(record.request_id, record.state)

    def _post(
        self,
        record: RequestRecord,
        subscription: str | None,
        name: str | None,
        policy: PolicyConfig | None,
        *,
        first_attempt: bool = False,
    ) -> None:
        text = note_text(record, subscription, name, policy)
        self.marketplace.post_note(
            record.request_id,
            text,
            once_key=f"{record.request_id}:{record.state.value}",
            first_attempt=first_attempt,
        )

    def _recorded_policy(self, record: RequestRecord) -> tuple[str | None, PolicyConfig | None]:
        """The policy a row names (started under, or routed by), without a fresh decision."""
        data = RowData.of(record)
        routed = data.routed
        name = data.policy or (routed.policy if routed is not None else None)
        return self._named(name) if name else (None, None)
