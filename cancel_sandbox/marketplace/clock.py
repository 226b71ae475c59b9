"""Clocks for the marketplace: the real one, and one that tests and demos can move.

:class:`MockClock` either follows real time shifted by an offset (``MockClock()``: what the CLI
uses, so ``POST /admin/clock`` can jump a running demo forward) or stands still at a given moment
until moved (``MockClock(start)``: what tests use, so nothing depends on how fast they run).
Both are thread-safe; both return aware UTC datetimes.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["utc_now", "MockClock"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class MockClock:
    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("MockClock needs an aware datetime")
        self._lock = threading.Lock()
        self._frozen = start.astimezone(UTC) if start is not None else None
        self._offset = timedelta(0)

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def __call__(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return utc_now() + self._offset

    def advance(self, seconds: float) -> datetime:
        """Move forward (or back, with a negative value) by ``seconds``."""
        with self._lock:
            if self._frozen is not None:
                self._frozen += timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)
        return self()

    def set(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise ValueError("MockClock.set needs an aware datetime")
        with self._lock:
            if self._frozen is not None:
                self._frozen = moment.astimezone(UTC)
            else:
                self._offset = moment - utc_now()
        return self()
