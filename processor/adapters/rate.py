"""A vendor adapter's rate limit: ``rate: {calls: N, per: seconds, slack: 0.1, shared: true}``,
shared by every replica on a PostgreSQL journal, this process's own otherwise.

Before each call to the vendor the calling thread takes a slot: at most ``calls`` calls leave in
any ``per`` + ``slack`` seconds (a moving window; ``slack`` defaults to :data:`SLACK`). A thread
that finds none waits for one, as long as it takes; waiting is not an error, and it is shown: the
metrics ``cancel_vendor_rate_waits_total``, ``cancel_vendor_rate_wait_seconds_total``,
``cancel_vendor_rate_waiting`` (calls waiting now) and
``cancel_vendor_rate_waiting_since_timestamp_seconds`` (when the longest current wait began), by
adapter, and the status page's "Vendor rate limits" table. The slack absorbs jitter: a vendor
counts arrivals, and two calls sent just over ``per`` apart can arrive just under it (measured on
loopback, 8 threads on 2 cores, with 50 ms of slack: arrivals N calls apart came 1.011 to 1.034 s
apart, so jitter took up to 39 ms; raise it for a distant vendor or a busy host).

Shared (a PostgreSQL journal, the default there): the slots are rows of the journal's database
(:mod:`processor.journal.rate_slots`), ``calls`` per adapter, each holding when it was last taken
by the database clock; a thread takes the least recently used one if that was a window ago, in one
statement, or learns how long until one frees and sleeps that long. The daemon's wiring
(:func:`processor.daemon.runtime.share_rate_limits`) hands :meth:`RateLimit.share` the journal's
:data:`SlotTaker`: adapters and the journal never import each other. Three replicas configured
with the vendor's limit thus stay under it together (measured: see the README's rate section).

Why slots in the database rather than each replica's share (``calls`` / live replicas): a share
needs the live replicas counted, which the journal does not do (leases and send rights are per
request), and is wrong whenever that count is: a new replica sends its share before the others
shrink theirs (429s), a dead one's share is lost until they notice, and an idle replica's share
is wasted -- a backlog that lands on one replica runs at a third of the limit. Slots are right at
every instant whoever is alive, a lone busy replica uses the whole limit, and a crash leaves
nothing to clean up (a slot is a timestamp). Why a ring of ``calls`` rows rather than a log of
calls or an advisory lock: the ring never grows and needs no deleting, and its statement locks one
row with ``SKIP LOCKED``, so takers on several replicas never queue on each other, where an
advisory lock would make every take of the adapter wait its turn. The cost is one statement per
vendor call (measured on a local server: p50 0.5 ms, p99 1.7 ms; ``bench/rate_slots.py``), noise
beside a vendor's tens or hundreds of milliseconds, and one more for each time a waiting thread
wakes to find its slot taken by another.

When the journal cannot give a slot (the database unreachable): the call waits for this process's
own slots instead (``calls`` per window, as on SQLite), and so do the calls of the next
:data:`SHARED_RETRY` seconds before the journal is asked again; logged once when it starts and once
when it ends, and counted (``cancel_vendor_rate_shared_errors_total``). Its intent is already in the
journal; holding it until the database is back would leave it in flight with nothing to gain.

Limits: on SQLite (one host) the limit is this process's, as before: several processes on one
journal file, or replicas on several hosts with one journal each, together may send up to their
number x ``calls``; ``shared: true`` with a SQLite journal is refused at start (``shared: false``
keeps a PostgreSQL replica to its own limit too, for a vendor that limits each client address).
Replicas share by the adapter's name and must configure the same limit: one with fewer ``calls``
uses the first slots only (together they never exceed the largest ``calls``), one with another
``per`` judges the same slots by its own window. During a database outage the replicas fall back
to their own limits, so together up to replicas x ``calls``. Waiting threads are not ordered,
within a process or across replicas: with more callers than ``calls`` some wait longer than
others. A slot is stamped when taken, before the call leaves: a call held up longer than
``slack`` between the two (its process frozen, its host starved) arrives in a later window than
its slot's, one call over the limit for each such delay. A take reads all of the adapter's
``calls`` slots: 0.4 ms at 10, 1 ms at 1,000, 5 ms at 10,000 (a vendor allowing more per window
is better described by a shorter ``per``). PostgreSQL needs migration 0003 (``cancel-processor
journal migrate``).

Why pyrate-limiter (3.x) for this process's own slots: millisecond windows on a monotonic clock,
and a bucket that says how long until the next slot frees, so a waiting thread sleeps exactly that
long. ``limits`` counts whole seconds on the wall clock and only answers yes or no. The 3.x line
because the test tools (schemathesis) require it; its 4.x API differs.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyrate_limiter import Limiter, MonotonicClock, Rate, RateItem
from pyrate_limiter.buckets.in_memory_bucket import InMemoryBucket

from processor.observe import (
    get_logger,
    note_rate_shared,
    note_rate_shared_error,
    note_rate_wait,
    note_rate_waiting,
)

__all__ = ["SLACK", "SHARED_RETRY", "SlotTaker", "RateLimit", "RateSettings", "rate_settings"]

SLACK = 0.1  # seconds added to each window by default (see the module docstring)
# After the shared slots failed, this process's own are used for this long before the journal is
# asked again: an unreachable database answers only after its connect timeout, which every call
# would otherwise wait out.
SHARED_RETRY = 5.0

# (adapter, calls, window seconds) -> 0.0 when a shared slot was taken, else the seconds to wait
# before asking again; may raise (the database unreachable): the call then uses the local slots.
SlotTaker = Callable[[str, int, float], float]

log = get_logger(component="rate")


@dataclass(frozen=True, slots=True)
class RateSettings:
    calls: int
    per: float  # seconds
    slack: float = SLACK  # seconds
    shared: bool | None = None  # None: shared where the journal can (PostgreSQL)

    @property
    def window(self) -> float:
        return self.per + self.slack


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
    shared = o.get("shared", None)
    if shared is not None and not isinstance(shared, bool):
        raise bad("rate.shared", "true or false", shared)
    o.done()
    return RateSettings(calls, per, float(slack), shared)


class RateLimit:
    """One adapter's limit, shared by every calling thread (and, once :meth:`share` is called,
    by every replica)."""

    def __init__(self, settings: RateSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        # This process's own slots, made on first use: a shared limit that never falls back
        # starts no bucket, and so none of the library's leak threads.
        self._local: tuple[Limiter, InMemoryBucket] | None = None
        self._clock = MonotonicClock()  # type: ignore[no-untyped-call]
        self._sleep = sleep
        self._lock = threading.Lock()
        self._take: SlotTaker | None = None
        self._failing = False  # the shared slots failed last time: logged once, until they work
        self._retry_shared = 0.0  # monotonic time before which this process's slots are used
        self._waits: dict[int, float] = {}  # waiting calls: their Unix start times
        self._ids = itertools.count()

    @property
    def shared(self) -> bool:
        return self._take is not None

    def share(self, adapter: str, take: SlotTaker | None) -> None:
        """Take slots through ``take`` from now on (the journal's, shared by the replicas); None:
        this process's own again."""
        self._take = take
        note_rate_shared(adapter, take is not None)

    def acquire(self, adapter: str) -> float:
        """Take a slot, waiting as long as needed; the seconds waited (0.0 when none)."""
        pause = self._try(adapter)
        if pause <= 0:
            return 0.0
        started = time.monotonic()
        wait = next(self._ids)
        self._waiting(adapter, wait, time.time())
        try:
            while pause > 0:
                self._sleep(pause)
                pause = self._try(adapter)
        finally:
            self._waiting(adapter, wait, None)
        seconds = time.monotonic() - started
        note_rate_wait(adapter, seconds)
        return seconds

    def _waiting(self, adapter: str, wait: int, since: float | None) -> None:
        with self._lock:
            if since is None:
                del self._waits[wait]
            else:
                self._waits[wait] = since
            note_rate_waiting(adapter, len(self._waits), min(self._waits.values(), default=0.0))

    def _try(self, adapter: str) -> float:
        """0.0 when a slot was taken, else the seconds to sleep before trying again."""
        take = self._take
        if take is not None and time.monotonic() >= self._retry_shared:
            try:
                pause = take(adapter, self.settings.calls, self.settings.window)
            except Exception as exc:  # noqa: BLE001 - any failure: this process's slots instead
                note_rate_shared_error(adapter)
                self._retry_shared = time.monotonic() + SHARED_RETRY
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "rate_shared_unavailable", adapter=adapter, error=type(exc).__name__
                    )
            else:
                if self._failing:
                    self._failing = False
                    log.warning("rate_shared_back", adapter=adapter)
                return pause
        with self._lock:
            if self._local is None:
                bucket = InMemoryBucket(
                    [Rate(self.settings.calls, round(self.settings.window * 1000))]
                )
                # No delay inside the library: it would sleep holding its lock and log an error
                # when a slot it waited for was taken by another thread. This class waits instead.
                self._local = Limiter(bucket, clock=self._clock, raise_when_fail=False), bucket
            limiter, bucket = self._local
            if limiter.try_acquire(adapter):
                return 0.0
            item = RateItem(adapter, self._clock.now())  # type: ignore[no-untyped-call]
            wait_ms = bucket.waiting(item)
            assert isinstance(wait_ms, int)  # an in-memory bucket answers at once
            return max(wait_ms, 1) / 1000

    def close(self) -> None:
        """Stop the library's background leak of this bucket (its thread ends with the last)."""
        with self._lock:
            if self._local is not None:
                limiter, bucket = self._local
                limiter.dispose(bucket)
                self._local = None
