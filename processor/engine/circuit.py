"""A circuit breaker per vendor adapter.

During a vendor outage every request would otherwise burn an attempt (and a lease, and a log line)
against a vendor that cannot answer. After ``failures`` consecutive transient failures the circuit
opens: workers leave requests untouched until ``reset_after`` seconds have passed, then one probe
call is let through (half-open). Its success closes the circuit; its failure opens it again.

The only way in is ``with breaker.attempt() as attempt:``, which raises :class:`CircuitOpen` when no
call may go ahead. Inside, ``attempt.success()`` or ``attempt.failure()`` gives the verdict. Leaving
the block without one -- an exception, a deferral, a request parked before its call, a lost lease --
gives the probe slot back, so a half-open circuit is never stuck refusing every call until a restart
(the bug of an ``allow()`` whose caller forgot to answer).

A circuit can also be *latched* open by the anomaly guard (:mod:`processor.engine.guard`): no probe,
no timer; only :meth:`CircuitBreaker.unlatch` (``cancel-processor resume ADAPTER``) closes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Attempt", "CircuitBreaker", "CircuitOpen", "LATCHED_RECHECK"]

# Seconds a request held back by a latch waits before it is looked at again. Short, because a
# latch lasts until a person resumes it and the requests should go on at once then; cheap, because
# a latched attempt makes no call (one journal write per request per pass, as any deferral).
LATCHED_RECHECK = 1.0


class CircuitOpen(Exception):
    """No vendor call now; try again in ``wait`` seconds (a latched circuit: ``why`` says so)."""

    def __init__(self, name: str, wait: float, why: str) -> None:
        super().__init__(f"vendor circuit {name} {why}")
        self.name, self.wait, self.why = name, wait, why


class Attempt:
    """One call through the breaker; the verdict is given at most once."""

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker, self.probe, self.decided = breaker, probe, False

    def success(self) -> None:
        """The vendor answered (even with a refusal or a definite error): not an outage."""
        if not self.decided:
            self.decided = True
            self._breaker._success()

    def failure(self) -> None:
        """The vendor did not answer usefully (timeout, 5xx, 429): counts toward opening."""
        if not self.decided:
            self.decided = True
            self._breaker._failure(self.probe)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failures: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.name = name
        self.threshold = failures
        self.reset_after = reset_after
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self.latched: str | None = None  # why the anomaly guard holds it open, until unlatched

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None or self.latched is not None

    @property
    def probing(self) -> bool:
        """True while a half-open probe is out (for tests and the status page)."""
        return self._probing

    @contextmanager
    def attempt(self) -> Iterator[Attempt]:
        """A vendor call, if one may go ahead now; raises :class:`CircuitOpen` otherwise."""
        with self._lock:
            if self.latched is not None:
                # Checked again soon: a resume must reach the waiting requests within seconds.
                raise CircuitOpen(self.name, LATCHED_RECHECK, f"latched: {self.latched}")
            probe = False
            if self._opened_at is not None:
                wait = self._opened_at + self.reset_after - self._clock()
                if wait > 0 or self._probing:
                    raise CircuitOpen(self.name, max(wait, 1.0), "open")
                self._probing = probe = True  # half-open: exactly one caller probes
        attempt = Attempt(self, probe)
        try:
            yield attempt
        finally:
            if probe and not attempt.decided:
                with self._lock:
                    self._probing = False  # no verdict: the next caller may probe at once

    def success(self) -> None:
        """A verdict outside an attempt (a status read the breaker did not gate): closes it."""
        self._success()

    def failure(self) -> None:
        """A transient failure outside an attempt: counts toward opening; never takes a probe."""
        self._failure(probe=False)

    def latch(self, why: str) -> bool:
        """Hold the circuit open until :meth:`unlatch`; True when this call latched it."""
        with self._lock:
            if self.latched is not None:
                return False
            self.latched = why
        if self._on_change:
            self._on_change(self.name, True)
        return True

    def unlatch(self) -> bool:
        """Release a latch (an operator resumed the adapter); True when it was latched."""
        with self._lock:
            was, self.latched = self.latched, None
            still_open = self._opened_at is not None
        if was is not None and not still_open and self._on_change:
            self._on_change(self.name, False)
        return was is not None

    def _success(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._consecutive = 0
            self._opened_at = None
            self._probing = False
            latched = self.latched is not None
        if was_open and not latched and self._on_change:
            self._on_change(self.name, False)

    def _failure(self, probe: bool) -> None:
        with self._lock:
            self._consecutive += 1
            opening = self._opened_at is None and self._consecutive >= self.threshold
            if opening or probe:
                self._opened_at = self._clock()
            if probe:
                self._probing = False
        if opening and self._on_change:
            self._on_change(self.name, True)
