"""SIGTERM and SIGINT for the CLI: a bounded shutdown whatever the remote side does.

The first signal asks whatever runs to stop (the daemon claims nothing new, retry waits end) and
starts a watchdog: if the process has not exited ``budget`` seconds later (``shutdown_timeout``
plus a small margin), because a thread is blocked in a Connect or vendor call that will not
answer, the watchdog prints one line and ends the process with :func:`os._exit`. That is safe by
design: the journal is written for processes that die at any instant (every crash window is
tested with SIGKILL), and a claim left behind is taken over within half a lease. A second signal
ends the process at once, the same way.

``--dry-run`` writes nothing, so there the first signal interrupts the main thread where it is
(:class:`Interrupted`), even in the middle of a Connect read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["StopRequests", "Interrupted", "MARGIN", "exit_now", "stray_threads"]

MARGIN = 2.0  # seconds after shutdown_timeout: the orderly path ends first whenever it can


class Interrupted(BaseException):
    """Raised in the main thread by a signal when the running command asked for it (``--dry-run``).
    A BaseException, so that no ``except Exception`` on the way (HTTP clients) swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stray_threads() -> list[threading.Thread]:
    """Live non-daemon threads other than this one: the interpreter would wait for them at exit."""
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]


def exit_now(status: int, line: str | None = None) -> None:
    """Flush what was printed, say ``line`` on stderr, and end the process without waiting for
    threads blocked in remote calls."""
    try:
        if line:
            print(line, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more can be said
        pass
    os._exit(status)


class StopRequests:
    """Catches SIGTERM and SIGINT from creation on; see the module docstring.

    A signal that arrives before there is anything to stop is remembered and passed on by
    :meth:`forward_to`. :meth:`bound` sets the budget and the exit status of a forced exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._stop: Callable[[], None] | None = None
        self._interrupt = False
        self._budget: float | None = None
        self._forced_status = 1
        self._watchdog: threading.Timer | None = None
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def bound(self, budget: float, *, forced_status: int) -> None:
        """Exit at most ``budget`` seconds after the first signal, with ``forced_status``."""
        self._budget = budget
        self._forced_status = forced_status
        if self.requested:
            self._arm()

    def interrupt_main(self) -> None:
        """From now on a signal raises :class:`Interrupted` in the main thread (commands that
        write nothing); one already received does so at once."""
        self._interrupt = True
        if self.requested and self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block a signal raises :class:`Interrupted` in the main thread, as after
        :meth:`interrupt_main` (a step that writes nothing, like ``run --once``'s Connect check);
        after it, signals are handled as before."""
        before = self._interrupt
        self.interrupt_main()
        try:
            yield
        finally:
            self._interrupt = before

    def forward_to(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        if self.requested:  # arrived during start-up: stop before the first pass
            stop()

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.requested:
            exit_now(
                self._forced_status,
                f"cancel-processor: {signal.Signals(signum).name} again: stopping now; "
                "the journal resumes the work in flight on the next start",
            )
        self.requested, self.signum = True, signum
        self._arm()
        if self._stop is not None:
            self._stop()
        if self._interrupt:
            raise Interrupted(signum)

    def _arm(self) -> None:
        if self._budget is None or self._watchdog is not None:
            return
        budget = self._budget

        def force() -> None:
            exit_now(
                self._forced_status,
                (
                    f"cancel-processor: still busy {budget:g} s after the stop request "
                    "(processing.shutdown_timeout plus a margin), most likely waiting on Connect "
                    "or the vendor: stopping now; the journal resumes the work in flight on the "
                    "next start"
                ),
            )

        self._watchdog = threading.Timer(budget, force)
        self._watchdog.daemon = True
        self._watchdog.name = "shutdown-watchdog"
        self._watchdog.start()

    def disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
