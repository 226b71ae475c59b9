"""``run`` catches SIGTERM and SIGINT from before it opens the journal: one that arrives during
start-up is kept and stops the daemon as soon as it exists, instead of killing the process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from bench.daemons import catches_sigterm
from processor.daemon.signals import StopRequests as _StopRequests


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_stops_the_daemon_once_it_exists(
    signum: int, restore_handlers: None
) -> None:
    stops: list[str] = []
    requests = _StopRequests()
    assert catches_sigterm(os.getpid())
    os.kill(os.getpid(), signum)  # delivered to this (main) thread before kill returns
    assert stops == []
    requests.forward_to(lambda: stops.append("stop"))
    assert stops == ["stop"]


def test_a_signal_after_start_up_goes_straight_to_the_daemon(restore_handlers: None) -> None:
    stops: list[str] = []
    requests = _StopRequests()
    requests.forward_to(lambda: stops.append("stop"))
    assert stops == []
    os.kill(os.getpid(), signal.SIGTERM)
    assert stops == ["stop"]
