"""Whether an earlier holder of a request can still send: the engine's side of the send rights.

A request found mid-step (an intent state: the call may be in flight) is taken over when its
holder's lease ran out. For a vendor that deduplicates (an idempotency key, or natural
idempotency) the new holder may repeat the call at once, and does. For any other vendor (mode
``read``: a status read; ``none``: nothing) a lease that ran out proves nothing: the holder may be
frozen between its last fence check and its send, and send when it wakes -- after the new holder
read "active" and terminated, which makes a second termination. So before it records an intent or
resumes one, a worker takes the request's send right (:mod:`processor.journal.holders`), which its
earlier holder keeps for as long as it lives and holds the claim:

- right taken: the earlier holder is dead, or done with the request; go on as before;
- right held elsewhere: the request is *suspended* -- retried a short while later, nothing called,
  nothing parked -- for up to ``journal.holder_wait`` seconds; after that it is parked for a person
  ("previous holder alive"), who sees a request whose vendor call may still come, and never a
  second termination.
"""

from __future__ import annotations

from processor.adapters.base import Idempotency, VendorAdapter
from processor.engine.base import Mover
from processor.engine.results import Deferred
from processor.engine.rowdata import RowData
from processor.engine.transitions import Event
from processor.journal.base import Claim, Journal
from processor.journal.holders import SendRights, local_send_rights
from processor.model import CancelRequest

__all__ = ["Liveness", "SUSPENDED"]

SUSPENDED = "suspended: previous holder alive"


class Liveness:
    """The send rights of a journal's requests, and what a worker does when it cannot take one."""

    def __init__(
        self, mover: Mover, journal: Journal, lease_seconds: float, holder_wait: float
    ) -> None:
        self.mover = mover
        self.lease_seconds = lease_seconds
        self.holder_wait = holder_wait
        self.journal = journal

    def rights(self) -> SendRights:
        rights = getattr(self.journal, "senders", None)
        return rights if rights is not None else local_send_rights()

    def send_right(
        self, claim: Claim, request: CancelRequest, adapter: VendorAdapter
    ) -> Claim | Deferred | None:
        """Take the send right for ``claim`` before an intent is recorded or resumed. None: go on.
        Otherwise the request is suspended (:class:`Deferred`) or, after ``holder_wait``,
        parked (the parked claim is returned)."""
        if adapter.idempotency in (Idempotency.KEY, Idempotency.NATURAL):
            return None  # a repeated call is harmless: today's behaviour, no lock taken
        if self.rights().acquire(claim.request_id, claim.fence):
            return None
        now = self.mover.clock()
        # One suspension spans retries of the same step attempt (a new attempt starts afresh).
        data = RowData.of(claim.record)
        since = data.suspended_since(claim.record.attempts) or now
        waited = (now - since).total_seconds()
        limit = self.holder_wait
        if waited >= limit:
            return self.mover.move(
                claim,
                request,
                Event.PARK,
                reason=f"{SUSPENDED} for {waited:.0f}s: a process that held this request past its "
                f"lease still runs (frozen?) and may still send its {claim.state.value} call to "
                f"the vendor. Stop or restart that process, check the subscription at the vendor, "
                f"then retry or close",
            )
        wait = min(max(self.lease_seconds / 2, 0.5), limit - waited + 0.1)
        return self.mover.defer(
            claim,
            request,
            wait,
            f"{SUSPENDED} ({waited:.0f}s of {limit:.0f}s)",
            data=data.with_suspended(since, claim.record.attempts),
        )
