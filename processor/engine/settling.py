"""Where a journal row goes when Connect closed its request without the journal recording it.

The engine's ``settle`` reads the request's status on Connect and moves the row here; the vendor
is never called. Connect's status is the truth, except where the vendor may still hold the
subscription in a state Connect does not know (suspended, a terminate in flight): then a person
decides.
"""

from __future__ import annotations

from processor.engine.transitions import Event, lookup, settle_event
from processor.journal.base import State

__all__ = ["settling"]


def settling(state: State, status: str) -> tuple[Event, str | None]:
    """The event settling a row in ``state`` makes (the table says where it leads), and why a
    person is needed when it leads to ``parked``, or None."""
    event = settle_event(status)
    if lookup(state, event).target is not State.PARKED:
        return event, None
    if state in (State.SUSPENDING, State.SUSPENDED):
        return event, (
            f"the request was {status} on Connect while the subscription was suspended at the "
            f"vendor: resume it there"
        )
    return event, f"the request was {status} on Connect while the vendor step was {state.value}"
