"""What the engine's entry points answer, and what a step answers when the request must wait.

``handle``, ``resume``, ``settle`` and ``handle_batch`` answer the journal :class:`State` a request
reached, or an :class:`Outcome` when no state was reached for it this time. Both are ``str`` enums
whose values are the names the journal, the metrics and the logs use.

A step answers the :class:`Claim` it reached, or :class:`Deferred` when it recorded a retry time
and the request waits: the loop stops for that request and reports the claim's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from processor.journal.base import Claim, State

__all__ = ["Outcome", "Reached", "Deferred", "Stepped", "name_of"]


class Outcome(StrEnum):
    """A request the engine did not move to a state this time, and why."""

    BUSY = "busy"  # another worker holds its lease
    # Not ours: another status, a policy that ignores it, a revocation we did not schedule.
    IGNORED = "ignored"
    LEASE_LOST = "lease_lost"  # the fence moved on while we worked: another worker owns it now
    MALFORMED = "malformed"  # a payload without an id: nothing to record it under
    UNKNOWN = "unknown"  # settle: no journal row for the id
    ERROR = "error"  # the caller's work raised (the daemon's); the journal keeps the request
    # The journal's disk refused a write (JournalFull): nothing changed; taken up again later.
    JOURNAL_FULL = "journal_full"


Reached = State | Outcome


@dataclass(frozen=True, slots=True)
class Deferred:
    """A step recorded when to try again (``claim.record.next_attempt_at``): stop for now."""

    claim: Claim

    @property
    def state(self) -> State:
        return self.claim.state


Stepped = Claim | Deferred


def name_of(result: Reached) -> str:
    """The plain name of a result, for counters and reports."""
    return str(result.value)
