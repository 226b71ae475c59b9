"""Named crash points, for the crash tests that SIGKILL the daemon inside each crash window.

``CANCEL_PROCESSOR_CRASH_AT=after_intent`` kills the process with SIGKILL the first time the engine
passes that point; ``after_intent:3`` the third time. Unset (always, in production) it costs one
dictionary lookup. The names are the windows of the crash-window table in DESIGN.md:

- ``after_claim``: the lease is taken, no intent recorded
- ``after_intent``: intent recorded, vendor not yet called
- ``after_vendor``: the vendor answered, the answer not yet recorded (the ambiguous window)
- ``after_result``: the vendor result recorded, Connect not yet told
- ``after_approve``: Connect approved, not yet recorded
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["POINTS", "reached"]

POINTS = ("after_claim", "after_intent", "after_vendor", "after_result", "after_approve")

_spec = os.environ.get("CANCEL_PROCESSOR_CRASH_AT", "")
_name, _, _nth = _spec.partition(":")
_remaining = int(_nth or 1) if _name else 0
_lock = threading.Lock()


def reached(point: str) -> None:
    global _remaining
    if point != _name:
        return
    with _lock:
        _remaining -= 1
        if _remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)
