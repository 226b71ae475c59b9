"""A vendor adapter's own rate limit: ``rate: {calls: N, per: seconds, slack: 0.1}``, through
pyrate-limiter.

Before each call to the vendor the calling thread takes a slot: at most ``calls`` calls leave in
any ``per`` + ``slack`` seconds (a moving window, on the monotonic clock; ``slack`` defaults to
:data:`SLACK`). A thread that finds none waits for one, as long as it takes; waiting is not an
error, and it is counted (the metrics ``cancel_vendor_rate_waits_total`` and
``cancel_vendor_rate_wait_seconds_total``, by adapter). The slack absorbs jitter: a vendor counts
arrivals, and two calls sent just over ``per`` apart can arrive just under it (measured on
loopback, 8 threads on 2 cores, with 50 ms of slack: arrivals N calls apart came 1.011 to 1.034 s
apart, so jitter took up to 39 ms; raise it for a distant vendor or a busy host).

Limits: the limit is this process's. Several replicas each apply it on their own, so together
they may send up to replicas x ``calls``: give each replica its share (``calls`` divided by the
replicas) until the limit is shared through the journal. Waiting threads are not ordered; with
more workers than ``calls`` some wait longer than others.

Why pyrate-limiter (3.x): millisecond windows on a monotonic clock, and a bucket that says how long
until the next slot frees, so a waiting thread sleeps exactly that long. ``limits`` counts whole
seconds on the wall clock and only answers yes or no. The 3.x line because the test tools
(schemathesis) require it; its 4.x API differs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyrate_limiter import Limiter, MonotonicClock, Rate, RateItem
from pyrate_limiter.buckets.in_memory_bucket import InMemoryBucket

from processor.observe import note_rate_wait

__all__ = ["SLACK", "RateLimit", "RateSettings", "rate_settings"]

SLACK = 0.1  # seconds added to each window by default (see the module docstring)


@dataclass(frozen=True, slots=True)
class RateSettings:
    calls: int
    per: float  # seconds
    slack: float = SLACK  # seconds


def rate_settings(raw: Any) -> RateSettings | None:
    """The ``rate`` option; None when absent. Raises AdapterError naming the key."""
    # Imported when called: the http adapter's settings import this module to read the option,
    # so an import at the top would leave whichever of the two loads first half-built.
    from processor.adapters.http.settings import Options, bad

    if raw is None:
        return None
    o = Options(raw, "rate.")
    calls = o.get("calls")
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
        raise bad("rate.calls", "a whole number of calls, at least 1", calls)
    per = o.seconds("per", 1.0)
    slack = o.get("slack", SLACK)
    if isinstance(slack, bool) or not isinstance(slack, (int, float)) or not 0 <= slack < 60:
        raise bad("rate.slack", "seconds from 0 to 60", slack)
    o.done()
    return RateSettings(calls, per, float(slack))


class RateLimit:
    """One adapter's limit, shared by every calling thread."""

    def __init__(self, settings: RateSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        window_ms = round((settings.per + settings.slack) * 1000)
        self._bucket = InMemoryBucket([Rate(settings.calls, window_ms)])
        # No delay inside the library: it would sleep holding its lock and log an error when a
        # slot it waited for was taken by another thread. This class waits instead.
        self._clock = MonotonicClock()  # type: ignore[no-untyped-call]
        self._limiter = Limiter(self._bucket, clock=self._clock, raise_when_fail=False)
        self._sleep = sleep
        self._lock = threading.Lock()

    def acquire(self, adapter: str) -> float:
        """Take a slot, waiting as long as needed; the seconds waited (0.0 when none)."""
        started = time.monotonic()
        waited = False
        while True:
            with self._lock:
                if self._limiter.try_acquire(adapter):
                    break
                item = RateItem(adapter, self._clock.now())  # type: ignore[no-untyped-call]
                wait_ms = self._bucket.waiting(item)
                assert isinstance(wait_ms, int)  # an in-memory bucket answers at once
                pause = max(wait_ms, 1) / 1000
            waited = True
            self._sleep(pause)
        seconds = time.monotonic() - started if waited else 0.0
        if waited:
            note_rate_wait(adapter, seconds)
        return seconds

    def close(self) -> None:
        """Stop the library's background leak of this bucket (its thread ends with the last)."""
        self._limiter.dispose(self._bucket)
