"""Where a journal row goes when Connect closed its request without the journal recording it.

The engine's ``settle`` reads the request's status on Connect and moves the row here; the vendor
is never called. Connect's status is the truth, except where the vendor may still hold the
subscription in a state Connect does not know (suspended, a terminate in flight): then a person
decides.
"""

from __future__ import annotations

from processor.journal.base import State

__all__ = ["settled_state"]


def settled_state(state: State, status: str) -> tuple[State, str | None]:
    """The state to settle a row in ``state`` at, and why a person is needed (parked) or None."""
    if status == "revoked":
        return State.REVOKED, None
    if status == "approved" and state is State.TERMINATED:
        return State.APPROVED, None
    if status == "failed" and state is State.REFUSING:
        return State.FAILED, None
    if state in (State.NEW, State.WAITING_HUMAN, State.SCHEDULED):
        return State.CLOSED, None  # nothing was done at the vendor; someone else closed it
    if state in (State.SUSPENDING, State.SUSPENDED):
        return State.PARKED, (
            f"the request was {status} on Connect while the subscription was suspended at the "
            f"vendor: resume it there"
        )
    if state is State.TERMINATING or status == "failed":
        return (
            State.PARKED,
            f"the request was {status} on Connect while the vendor step was {state.value}",
        )
    return State.CLOSED, None
