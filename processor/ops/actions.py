"""What an operator may do to a request by hand: retry it, or park it. Shared by the CLI and the
page.

Both go through :meth:`Journal.force`, which bumps the fence: a worker still holding a claim on the
request loses it at its next journal write and makes no further remote call.

``retry`` moves a request back to ``new`` (a fresh step: attempts reset, no timer). That is safe
from ``parked`` and ``waiting_human``, which no worker moves on its own. From a state in which the
vendor may have acted (``terminating``, ``suspending``, ``purging``) or did act (``terminated``,
``refusing``, ``suspended``), in which a timer is the point (``scheduled``), or from ``new`` (a
worker may be writing its intent right now, and the check is not atomic with the write), ``new``
could repeat a vendor call or skip a wait: it is refused unless ``force=True``, and the message says
why. Even forced, a retry from an intent state is refused until the last call can no longer be
applied (:func:`resend_from`: sent, plus the lease, plus the adapter's apply horizon): before
that, what the vendor shows proves nothing. Final states other than ``parked`` are refused
outright: Connect has already been told, and there is nothing left to retry.

A request routed to a person by its policy (``waiting_human``) is not retried: sending it to the
vendor is the person's decision, taken with its own verb, ``proceed`` (:func:`proceed_request`):
``waiting_human`` -> ``new``, after which the engine goes ahead without routing it again. ``retry``
of such a request is refused with a message naming ``proceed``.

``park`` moves any non-final request to ``parked`` with the operator's reason; final requests are
refused. Parking a request that is already parked changes nothing. A request the journal has not
seen yet is inserted ``parked`` (:meth:`Journal.park_unseen`): when the daemon lists it, it finds
the row parked and never claims it, so the vendor is never called for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from processor.config.sections import DEFAULT_APPLY_HORIZON
from processor.engine.rowdata import RowData
from processor.journal.base import FINAL_STATES, Journal, RequestRecord, State

__all__ = [
    "ActionRefused",
    "Done",
    "PROCEED",
    "RETRYABLE",
    "park_request",
    "proceed_request",
    "resend_from",
    "retry_request",
]

# Back to ``new`` without any risk of a second vendor call or a skipped timer.
RETRYABLE = frozenset({State.PARKED})
# The verb that sends a request routed to a person on to the vendor (named in retry's refusal).
PROCEED = "cancel-processor proceed"
_INTENTS = frozenset({State.TERMINATING, State.SUSPENDING, State.PURGING})
_ACTED = {
    State.NEW: "a worker may be starting its vendor call right now",
    State.TERMINATING: "a terminate call may have reached the vendor",
    State.SUSPENDING: "a suspend call may have reached the vendor",
    State.PURGING: "a purge call may have reached the vendor",
    State.TERMINATED: "the vendor has already terminated the subscription (approve on Connect is "
    "next)",
    State.REFUSING: "the vendor has already refused (fail on Connect is next)",
    State.SUSPENDED: "the subscription is suspended and its terminate is timed",
    State.SCHEDULED: "the request is scheduled on Connect for its planned date",
    State.AWAITING_VENDOR: "the vendor accepted an operation that may still complete (polled by "
    "the processor)",
    State.HELD: "the vendor's refusal or 'already gone' is held back from Connect; to call the "
    "vendor again: cancel-processor resume ADAPTER --retry-held",
}


class ActionRefused(Exception):
    """The action does not apply to the request as it stands; ``str()`` says why, for a person."""


@dataclass(frozen=True, slots=True)
class Done:
    request_id: str
    before: State
    after: RequestRecord
    changed: bool = True
    # park of a request the journal had no row for: inserted parked (``before`` is then parked)
    inserted: bool = False


def _current(journal: Journal, request_id: str) -> RequestRecord:
    record = journal.get(request_id)
    if record is None:
        raise ActionRefused(f"{request_id}: no such request in the journal")
    return record


def resend_from(
    record: RequestRecord, lease_seconds: float, horizons: Mapping[str, float]
) -> datetime | None:
    """For a request in an intent state, the moment from which its last vendor call can no
    longer be applied: when it was sent, plus the lease (every send leaves within one lease of
    its recorded intent), plus its adapter's apply horizon. None for other states, or a row
    without a recorded send."""
    data = RowData.of(record)
    operation = data.operation
    if record.state is State.AWAITING_VENDOR and operation is not None:
        return operation.give_up_at  # the accepted operation may complete until then
    if record.state not in _INTENTS:
        return None
    if data.sent_at is None:
        return None
    horizon = horizons.get(data.adapter or "", DEFAULT_APPLY_HORIZON)
    return data.sent_at + timedelta(seconds=lease_seconds + horizon)


def retry_request(
    journal: Journal,
    request_id: str,
    *,
    actor: str,
    note: str | None = None,
    force: bool = False,
    not_before: datetime | None = None,
    now: datetime | None = None,
) -> Done:
    """Move ``request_id`` back to ``new``; see the module docstring for what is refused.
    ``not_before`` (:func:`resend_from`): a forced retry earlier than that is refused too."""
    record = _current(journal, request_id)
    state = record.state
    moment = now or datetime.now(UTC)
    if force and not_before is not None and moment < not_before:
        raise ActionRefused(
            f"{request_id} is {state.value}: its last vendor call may still be applied until "
            f"{not_before.isoformat(timespec='seconds')} (sent, plus the lease, plus the "
            f"adapter's apply_horizon); a call sent again before then could act twice. Check the "
            f"vendor after that time, then retry --force"
        )
    if state in FINAL_STATES and state is not State.PARKED:
        raise ActionRefused(
            f"{request_id} is {state.value}, a final state: Connect has been told; nothing to retry"
        )
    if state is State.WAITING_HUMAN:  # even with --force: a decision, not a retry
        raise ActionRefused(
            f"{request_id} is waiting_human: its policy routed it to a person, and retry does "
            f"not send it to the vendor. To send it: {PROCEED} {request_id}"
        )
    if state not in RETRYABLE and not force:
        raise ActionRefused(
            f"{request_id} is {state.value}: {_ACTED.get(state, 'a step is under way')}; back to "
            f"new could repeat a vendor call or skip a wait. Check the vendor, then retry with "
            f"--force (or park it first)"
        )
    detail = note or f"retry by {actor} (was {state.value})"
    return Done(
        request_id, state, _force(journal, request_id, State.NEW, detail=detail, actor=actor)
    )


def proceed_request(
    journal: Journal, request_id: str, *, actor: str, note: str | None = None
) -> Done:
    """A person's go-ahead for a request routed to them: ``waiting_human`` -> ``new``; the engine
    then sends it to the vendor under its policy, without routing it again. Any other state is
    refused (``retry`` is the verb for parked requests)."""
    record = _current(journal, request_id)
    if record.state is not State.WAITING_HUMAN:
        verb = "retry" if record.state is State.PARKED else "nothing to proceed with"
        raise ActionRefused(
            f"{request_id} is {record.state.value}: proceed sends on only a request waiting for "
            f"a person (waiting_human); {verb}"
        )
    detail = note or f"sent to the vendor by {actor} (was waiting_human)"
    return Done(
        request_id, record.state, _force(journal, request_id, State.NEW, detail=detail, actor=actor)
    )


def park_request(journal: Journal, request_id: str, *, reason: str, actor: str) -> Done:
    """Move ``request_id`` to ``parked`` with ``reason`` (shown as why it is parked); a request the
    journal has not seen is inserted parked (:attr:`Done.inserted`)."""
    if not reason.strip():
        raise ActionRefused("a reason is required to park a request")
    if journal.get(request_id) is None:
        inserted = journal.park_unseen(
            request_id, idempotency_key=f"cancel-{request_id}", detail=reason.strip(), actor=actor
        )
        if inserted is not None:
            return Done(request_id, State.PARKED, inserted, inserted=True)
        # the daemon inserted it in between: park its row as any other
    record = _current(journal, request_id)
    if record.state is State.PARKED:
        return Done(request_id, record.state, record, changed=False)
    if record.final:
        raise ActionRefused(
            f"{request_id} is {record.state.value}, a final state: there is nothing to park"
        )
    parked = _force(journal, request_id, State.PARKED, detail=reason.strip(), actor=actor)
    return Done(request_id, record.state, parked)


def _force(
    journal: Journal, request_id: str, state: State, *, detail: str, actor: str
) -> RequestRecord:
    try:
        return journal.force(request_id, state, detail=detail, actor=actor)
    except KeyError:  # removed between our read and the write (no store deletes rows today)
        raise ActionRefused(f"{request_id}: no such request in the journal") from None
