"""What a run did: every request's last result, what is unfinished, what waits by design.

:class:`Tally` records the engine's typed results (:mod:`processor.engine.results`) into a
:class:`RunSummary` from the worker threads; the summary keeps plain names (``approved``, ``busy``)
for the reports. ``--once`` asks it how long to wait before another pass can make progress.

Two counts, not to be mixed up: :attr:`RunSummary.results` counts every result of every pass (a
request parked in the first of twenty passes and listed again in each counts twenty times: it says
how much work the passes did), :meth:`RunSummary.by_request` counts each request once, by the last
result it reached (its final state for a finished run): what the run did, summing to the number of
requests it saw.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from processor.engine.core import Engine
from processor.engine.results import Outcome, Reached
from processor.journal.base import FINAL_STATES, State

__all__ = ["RunSummary", "Tally", "WAITING"]

# Waiting for a date or for a person: not a failure, and not unfinished.
WAITING = frozenset({State.SCHEDULED, State.SUSPENDED, State.WAITING_HUMAN})
_WAITING_NAMES = frozenset(s.value for s in WAITING)
_DONE = frozenset({Outcome.IGNORED, Outcome.MALFORMED})


@dataclass
class RunSummary:
    # every result of every pass (see the module docstring), by name
    results: Counter[str] = field(default_factory=Counter)
    # request id -> the last result it reached; kept when ``per_request`` (run --once: one pass
    # after another over a finite backlog). A long-running daemon keeps none: it would grow with
    # every request the process ever saw.
    last: dict[str, str] = field(default_factory=dict)
    per_request: bool = False
    # results without a request id (a malformed payload), counted as they come
    unnamed: Counter[str] = field(default_factory=Counter)
    unfinished: dict[str, str] = field(default_factory=dict)
    # request id -> state: waits for a date or a person
    waiting: dict[str, str] = field(default_factory=dict)
    passes: int = 0
    seen: int = 0
    timers: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    interrupted: bool = False
    # Why the last pass could not list everything pending (Connect unreachable, TLS, auth), or None.
    listing_failed: str | None = None
    # --once's final count (processor.daemon.completeness): pending requests Connect still counts
    # that the journal does not hold as waiting, and some of their ids; or why it could not count.
    unaccounted: int = 0
    unaccounted_names: tuple[str, ...] = ()
    count_failed: str | None = None
    # Why the last pass could not write the journal (a full disk), or None.
    journal_full: str | None = None

    def by_request(self) -> Counter[str]:
        """Each request once, by the last result it reached (approved, failed, parked,
        waiting_human, scheduled, ...); sums to the number of requests seen."""
        return Counter(self.last.values()) + self.unnamed

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def complete(self) -> bool:
        """Everything reached a final state or waits by design (a date, a person named by policy);
        a parked request needs a person nobody planned for, so it is not complete."""
        return (
            not self.unfinished
            and not self.errors
            and not self.interrupted
            and not self.results["parked"]
            and self.listing_failed is None
            and not self.unaccounted
            and self.count_failed is None
            and self.journal_full is None
        )


class Tally:
    """Records results into ``summary`` (thread-safe), and which requests a pass saw waiting."""

    def __init__(
        self, summary: RunSummary, on_result: Callable[[str, Reached], None] | None = None
    ) -> None:
        self.summary = summary
        self.on_result = on_result
        self.lock = threading.Lock()
        self.waiting_seen: set[str] = set()

    def record(self, request_id: str, result: Reached) -> None:
        summary, name = self.summary, result.value
        with self.lock:
            summary.results[name] += 1
            if result is Outcome.ERROR:
                summary.errors += 1
            if result in WAITING or result is Outcome.BUSY:
                self.waiting_seen.add(request_id)
            if not request_id:
                summary.unnamed[name] += 1
            elif summary.per_request and (
                result is not Outcome.BUSY or request_id not in summary.last
            ):
                # "busy" (another worker holds it) says nothing new about a request already seen
                summary.last[request_id] = name
            if request_id:
                if result in FINAL_STATES or result in _DONE:
                    summary.unfinished.pop(request_id, None)
                    summary.waiting.pop(request_id, None)
                elif result in WAITING:
                    summary.unfinished.pop(request_id, None)
                    summary.waiting[request_id] = name
                elif result is not Outcome.BUSY or request_id not in summary.unfinished:
                    summary.unfinished[request_id] = name
        if self.on_result:
            self.on_result(request_id, result)

    def next_due_within(self, engine: Engine, deadline: float) -> float | None:
        """--once: seconds to wait before another pass can make progress, or None to stop."""
        summary, now = self.summary, engine.clock()
        soonest: float | None = None
        for request_id in list(summary.unfinished):
            record = engine.journal.get(request_id)
            if record is not None and summary.per_request:
                with self.lock:  # where a busy or lost claim left it: the journal knows
                    summary.last[request_id] = record.state.value
            if record is None or record.final:
                summary.unfinished.pop(request_id, None)
                continue
            summary.unfinished[request_id] = record.state.value
            if record.state.value in _WAITING_NAMES:
                summary.unfinished.pop(request_id, None)
                summary.waiting[request_id] = record.state.value
                continue
            due = (
                0.0
                if record.next_attempt_at is None
                else (record.next_attempt_at - now).total_seconds()
            )
            soonest = due if soonest is None else min(soonest, due)
        for request_id in list(summary.waiting):
            record = engine.journal.get(request_id)
            if record is None or record.final:
                summary.waiting.pop(request_id, None)
                continue
            if record.state is State.SUSPENDED and record.next_attempt_at is not None:
                due = (record.next_attempt_at - now).total_seconds()
                soonest = due if soonest is None else min(soonest, due)
        if soonest is None or time.monotonic() + soonest > deadline:
            return None
        return max(soonest, 0.05)
