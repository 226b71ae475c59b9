"""Named crash points, for the crash tests that SIGKILL the daemon inside each crash window.

``CANCEL_PROCESSOR_CRASH_AT=after_intent`` kills the process with SIGKILL the first time the engine
passes that point; ``after_intent:3`` the third time. ``CANCEL_PROCESSOR_PAUSE_AT`` takes the same
form and freezes the process with SIGSTOP instead: it keeps its sockets, its PostgreSQL sessions and
its file locks, exactly like a process stopped by a debugger, a hung VM or a long GC pause, and
goes on where it stopped when it gets SIGCONT (the frozen-holder tests). Unset (always, in
production) each costs one comparison. The names are the windows of the crash-window table in
``docs/design.md``:

- ``after_claim``: the lease is taken, no intent recorded
- ``after_intent``: intent recorded, vendor not yet called
- ``after_vendor``: the vendor answered, the answer not yet recorded (the ambiguous window)
- ``after_result``: the vendor result recorded, Connect not yet told
- ``after_approve``: Connect approved, not yet recorded
- ``after_accepted``: the vendor accepted the step as an operation, recorded, not polled yet
- ``after_poll``: a poll of that operation answered done or failed, not yet recorded
- ``after_hold``: a refusal or "already gone" held in the journal, Connect not yet told
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["POINTS", "ASYNC_POINTS", "reached"]

POINTS = (
    "after_claim",
    "after_intent",
    "after_vendor",
    "after_result",
    "after_approve",
    "after_hold",
    "after_accepted",
    "after_poll",
)

# Reached only with a vendor that answers a step asynchronously (202 and an operation).
ASYNC_POINTS = ("after_accepted", "after_poll")


class _Point:
    """One armed point: the signal to send ourselves the ``nth`` time ``name`` is reached."""

    def __init__(self, spec: str, signum: int) -> None:
        name, _, nth = spec.partition(":")
        self.name = name
        self.remaining = int(nth or 1) if name else 0
        self.signum = signum

    def passed(self, point: str) -> bool:
        """Count a pass of ``point``; True when this pass is the armed one."""
        if point != self.name:
            return False
        self.remaining -= 1
        return self.remaining == 0


_armed = [
    _Point(os.environ.get("CANCEL_PROCESSOR_CRASH_AT", ""), signal.SIGKILL),
    _Point(os.environ.get("CANCEL_PROCESSOR_PAUSE_AT", ""), signal.SIGSTOP),
]
_armed = [point for point in _armed if point.name]
_lock = threading.Lock()


def reached(point: str) -> None:
    if not _armed:
        return
    with _lock:
        fire = [armed.signum for armed in _armed if armed.passed(point)]
    for signum in fire:
        # Sent to this thread, not to the process: a process-directed signal may be taken by
        # another thread, and this one then runs on for a few milliseconds -- long enough, under
        # load, to send the very call the crash point is meant to come before. A thread-directed
        # SIGSTOP or SIGKILL still stops or ends the whole process, and this thread first. SIGSTOP
        # returns only once someone sends SIGCONT.
        signal.pthread_kill(threading.get_ident(), signum)
