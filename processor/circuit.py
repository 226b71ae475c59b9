"""A circuit breaker per vendor adapter.

During a vendor outage every request would otherwise burn an attempt (and a lease, and a log line)
against a vendor that cannot answer. After ``failures`` consecutive transient failures the circuit
opens: workers leave requests untouched until ``reset_after`` seconds have passed, then one probe call
is let through (half-open). Its success closes the circuit; its failure opens it again.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["CircuitBreaker"]


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

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> float:
        """0 when a call may go ahead; otherwise the seconds until the next probe is allowed."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            wait = self._opened_at + self.reset_after - self._clock()
            if wait > 0 or self._probing:
                return max(wait, 1.0)
            self._probing = True  # half-open: exactly one caller probes
            return 0.0

    def success(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._consecutive = 0
            self._opened_at = None
            self._probing = False
        if was_open and self._on_change:
            self._on_change(self.name, False)

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            opening = self._opened_at is None and self._consecutive >= self.threshold
            if opening or self._probing:
                self._opened_at = self._clock()
                self._probing = False
        if opening and self._on_change:
            self._on_change(self.name, True)
