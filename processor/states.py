"""A journal row's states and what each one is to the processes that read them.

Each state's traits live in one table, :data:`TRAITS`; every set of states the journal, the engine
and the daemon use is derived from it here, so adding a state is one row in this table plus its
moves and its step in :mod:`processor.engine.transitions` (the engine's half: which event leads
where, and which step runs in each state). This module sits in the base layer because the journal
needs the sets too (its ``unnoted`` query, ``record.final``) and may not import the engine.

======================  =============================================================
``new``                 known; no vendor call can have happened for the current step
``terminating``         intent written: a terminate call may have happened
``terminated``          the vendor confirmed; approve on Connect is next
``refusing``            the vendor (or a rule) refused; fail on Connect is next
``scheduled``           end-of-period: scheduled on Connect, waiting for the planned date
``suspending``          intent written: a suspend call may have happened
``suspended``           suspended at the vendor; terminate due at ``next_attempt_at``
``waiting_human``       routed to a person; the processor leaves it alone
``purging``             intent written: a purge call may have happened
``held``                the vendor refused or answered "already gone": Connect is told when the
                        hold ends (``next_attempt_at``), unless the guard latched the adapter
``approved``            approved on Connect (final, unless a purge timer is pending)
``failed``              failed (refused) on Connect (final)
``revoked``             the cancellation was withdrawn on Connect (final)
``closed``              the request left ``pending`` on Connect by someone else's hand (final)
``parked``              needs a human (ambiguous outcome without idempotency, poison, ...)
``awaiting_vendor``     the vendor accepted the step as an operation (its id in the row's data):
                        polled at ``next_attempt_at``, never sent again
======================  =============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "State",
    "Traits",
    "TRAITS",
    "FINAL_STATES",
    "RESTING_STATES",
    "NOTED_STATES",
    "TIMER_STATES",
    "INTENT_STATES",
    "STRANDED_STATES",
]


# Not StrEnum: str(State.NEW) stays "State.NEW" wherever a message formats a state.
class State(str, Enum):  # noqa: UP042
    NEW = "new"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    REFUSING = "refusing"
    SCHEDULED = "scheduled"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    WAITING_HUMAN = "waiting_human"
    PURGING = "purging"
    HELD = "held"
    APPROVED = "approved"
    FAILED = "failed"
    REVOKED = "revoked"
    CLOSED = "closed"
    PARKED = "parked"
    AWAITING_VENDOR = "awaiting_vendor"


@dataclass(frozen=True, slots=True)
class Traits:
    """What a state is to the processes that read the journal."""

    # The processor makes no further call on its own (``approved`` may still carry a purge timer).
    final: bool = False
    # The request loop stops here for now: final, or waiting for a date, Connect or a person. The
    # state reached is told to the request's conversation (a note), so these are also the noted.
    rests: bool = False
    # The daemon's timer loop claims the row when ``next_attempt_at`` falls due (``claim_due``):
    # its request may no longer be listed as pending, or a crash left it mid-step.
    timer: bool = False
    # Intent written: a vendor call may have happened (the crash window ``after_intent``).
    intent: bool = False


_FINAL = Traits(final=True, rests=True)
TRAITS: dict[State, Traits] = {
    State.NEW: Traits(),
    State.TERMINATING: Traits(intent=True),
    State.TERMINATED: Traits(),
    State.REFUSING: Traits(),
    State.SCHEDULED: Traits(rests=True, timer=True),
    State.SUSPENDING: Traits(timer=True, intent=True),
    State.SUSPENDED: Traits(rests=True, timer=True),
    State.WAITING_HUMAN: Traits(rests=True),
    State.PURGING: Traits(timer=True, intent=True),
    # Not resting: nothing is told to the customer while an outcome is held.
    State.HELD: Traits(timer=True),
    State.APPROVED: Traits(final=True, rests=True, timer=True),
    State.FAILED: _FINAL,
    State.REVOKED: _FINAL,
    State.CLOSED: _FINAL,
    State.PARKED: _FINAL,
    # Not an intent: the vendor's answer (accepted) is recorded, and a poll changes nothing.
    State.AWAITING_VENDOR: Traits(timer=True),
}

FINAL_STATES = frozenset(s for s, t in TRAITS.items() if t.final)
RESTING_STATES = frozenset(s for s, t in TRAITS.items() if t.rests)
# The stores' ``unnoted`` query and its partial index (migration 0002) spell the same list in SQL,
# so the index stays as small as the backlog of owed notes; a test keeps the three in step.
NOTED_STATES = RESTING_STATES
TIMER_STATES = tuple(s for s, t in TRAITS.items() if t.timer)
INTENT_STATES = frozenset(s for s, t in TRAITS.items() if t.intent)
# Open rows that neither rest nor wait for a timer: a row quiet in one of these for a lease was
# left behind by a process that died (the daemon's stranded sweep takes them up).
STRANDED_STATES = tuple(s for s, t in TRAITS.items() if not (t.rests or t.timer))
