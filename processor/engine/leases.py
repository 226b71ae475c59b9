"""The heartbeat that keeps claims alive during long vendor calls.

One thread renews every held claim at a third of the lease time, so a slow vendor call (up to the
adapter's timeout) never lets the lease expire under a live worker. A worker that froze (SIGSTOP, a
GC pause, a hung VM) stops renewing with it, its lease runs out, another worker re-claims with a new
fence, and the frozen one gets :class:`LeaseLost` at its next journal write.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from processor.journal.base import Claim, Journal, JournalError, LeaseLost
from processor.observe import get_logger

__all__ = ["LeaseKeeper"]

log = get_logger(component="leases")


class LeaseKeeper:
    def __init__(self, journal: Journal, lease_seconds: float) -> None:
        self.journal = journal
        self.lease_seconds = lease_seconds
        self._held: dict[tuple[str, int], Claim] = {}
        self._lost: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def hold(self, claim: Claim) -> Iterator[None]:
        key = (claim.request_id, claim.fence)
        with self._lock:
            self._held[key] = claim
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(key, None)
                self._lost.discard(key)

    def lost(self, claim: Claim) -> bool:
        with self._lock:
            return (claim.request_id, claim.fence) in self._lost

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            with self._lock:
                held = list(self._held.items())
            for key, claim in held:
                try:
                    self.journal.renew(claim, self.lease_seconds)
                except LeaseLost:
                    with self._lock:
                        self._lost.add(key)
                except (
                    JournalError
                ) as exc:  # the journal is briefly unreachable: try again next beat
                    log.warning("lease_renew_failed", request_id=claim.request_id, error=str(exc))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
