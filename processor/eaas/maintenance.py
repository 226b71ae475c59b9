"""What the daemon does between listings, for an extension that has no daemon: one run per schedule.

Connect delivers a cancel request's task until it is ``done``; after that the extension never
hears of the request again. What the journal still owes it then needs a clock of its own:

- due timers: grace periods that ended (terminate after suspend), retention that ran out (purge),
  steps a crash interrupted;
- stranded claims: a runner instance died (or froze) holding a request half done;
- rows Connect closed behind the journal's back, and notes Connect did not take when they were due.

:func:`run_maintenance` does exactly these steps of a daemon pass (:mod:`processor.daemon.core`,
:meth:`Daemon.maintain`), with the same limits per run, and no listing of pending requests (Connect
delivers those as tasks). It is called by the extension's schedulable, which Connect runs on the
schedule created in the DevOps module (see extension/README.md). Overlapping runs, on one instance
or several, are safe: each timer is claimed in the journal before it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from processor.daemon.core import Daemon
from processor.daemon.runtime import Runtime, selector_for

__all__ = ["MaintenanceSummary", "run_maintenance"]


@dataclass(frozen=True)
class MaintenanceSummary:
    timers: int
    taken_over: int
    notes: int
    results: dict[str, int]
    errors: int

    def __str__(self) -> str:
        outcomes = (
            ", ".join(f"{name} {count}" for name, count in sorted(self.results.items())) or "none"
        )
        return (
            f"{self.timers} due timer(s) run, {self.taken_over} stranded claim(s) taken over, "
            f"{self.notes} owed note(s) posted; outcomes: {outcomes}; errors: {self.errors}"
        )


def run_maintenance(runtime: Runtime) -> MaintenanceSummary:
    """One maintenance run over the whole configuration (see the module docstring)."""
    daemon = Daemon(runtime.engine, runtime.marketplace, selector_for(runtime.config), once=True)
    taken_over, notes = daemon.maintain()
    summary = daemon.summary
    return MaintenanceSummary(
        timers=summary.timers,
        taken_over=taken_over,
        notes=notes,
        results=dict(summary.results),
        errors=summary.errors,
    )
