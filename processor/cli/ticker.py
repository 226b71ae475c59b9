"""Progress lines while ``--once`` or ``--dry-run`` waits on a slow Connect.

Without them a run against a Connect that answers slowly (or retries with backoff) is silent for
minutes and looks hung. Every ``every`` seconds, while a Connect call has been under way for more
than ``after`` seconds, one line goes to stderr: which call, for how long, which attempt, why it
retried, and how to stop. Nothing is printed while Connect answers promptly.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Ticker", "EVERY"]

EVERY = 10.0  # seconds between two lines: the promise is "at least one line per 10 s"


class Ticker:
    """Watches ``waiting()`` (a :meth:`Marketplace.waiting`) in a daemon thread; see the module
    docstring."""

    def __init__(
        self,
        waiting: Callable[[], list[Any]],
        endpoint: str,
        *,
        every: float = EVERY,
        after: float = 3.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_attempts: int | None = None,
    ) -> None:
        self._waiting = waiting
        self._endpoint = endpoint
        self._every = every
        self._after = after
        self._stream = stream
        self._clock = clock
        self._max_attempts = max_attempts
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-ticker", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()

    def __enter__(self) -> Ticker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def line(self) -> str | None:
        """The line to print now, or None when nothing has waited long enough."""
        now = self._clock()
        slow = [w for w in self._waiting() if now - w.since >= self._after]
        if not slow:
            return None
        oldest = slow[0]
        attempt = f", attempt {oldest.attempt}" + (
            f" of {self._max_attempts}" if self._max_attempts else ""
        )
        cause = f", last try: {oldest.cause}" if oldest.cause else ""
        more = f" ({len(slow) - 1} more call(s) waiting)" if len(slow) > 1 else ""
        return (
            f"cancel-processor: waiting for Connect at {self._endpoint}: {oldest.operation} for "
            f"{now - oldest.since:.0f} s{attempt}{cause}{more}; Ctrl-C stops"
        )

    def _run(self) -> None:
        while not self._done.wait(self._every):
            text = self.line()
            if text is None:
                continue
            try:
                print(text, file=self._stream or sys.stderr, flush=True)
            except (OSError, ValueError):  # stderr closed: nobody reads the lines any more
                return
