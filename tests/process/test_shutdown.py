"""SIGTERM ends ``run``, ``run --once`` and ``run --dry-run`` within the shutdown budget, whatever
Connect or the vendor do, and what was in flight is finished by the next start.

Real processes: the mock marketplace and the mock vendor in processes of their own, made slow at
run time (60 s of latency on every faultable call), and the CLI as a subprocess with
``processing.shutdown_timeout: 3``. What is asserted is a behaviour bound: the process is gone
within the budget plus the watchdog's margin (plus slack for a loaded machine), never a speed.
The measured times are printed (``-s``) for the issue's table.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bench.daemons import catches_sigterm
from bench.servers import MockServers
from processor.daemon.signals import MARGIN
from processor.journal import open_journal
from processor.journal.base import JournalError, State

SHUTDOWN = 3.0
SLACK = 3.0  # a loaded 2-core machine: process teardown, the signal's delivery
BOUND = SHUTDOWN + MARGIN + SLACK
SLOW = {"latency_ms": 60_000}


@pytest.fixture
def healthy() -> Iterator[MockServers]:
    """Fresh mocks for each test: a run that finished the backlog leaves nothing to cut off. Killed
    soon after SIGTERM: their graceful shutdown would wait for the minute-long calls, and how the
    mocks stop is not what these tests are about."""
    with MockServers(generate=40, stop_grace=0.5) as running:
        yield running


def _faults(url: str, settings: dict[str, Any]) -> None:
    requests.put(f"{url}/admin/faults", json=settings, timeout=10).raise_for_status()


def _delayed(url: str) -> int:
    """Calls the mock has begun to delay so far: one more means a call is hanging there now."""
    reply = requests.get(f"{url}/admin/stats", timeout=10)
    reply.raise_for_status()
    return int(reply.json()["faults"]["delayed"])


def _config(servers: MockServers, tmp_path: Path) -> Path:
    data = servers.config_data(f"sqlite:///{tmp_path / 'journal.db'}", concurrency=4)
    data["connect"]["timeout_read"] = 30  # cut to 80 % of the budget by the processor
    data["journal"]["lease_seconds"] = (
        4  # the restart below takes the killed run's claims over soon
    )
    data["processing"].update(shutdown_timeout=SHUTDOWN, poll_interval=1)
    data["adapters"]["vendor"]["options"]["timeout"] = {
        "connect": 2,
        "read": 30,
    }  # longer than the budget
    data["http"] = {"enabled": False}
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _start(config: Path, *mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "processor", "run", "--config", str(config), *mode],
        env={**_environ(), **MockServers.environ()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _STARTED.append(process)
    return process


def _environ() -> dict[str, str]:
    import os

    return {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }


def _until(
    condition: Any, what: str, process: subprocess.Popen[str], timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, (
            f"exited early ({process.returncode}) while waiting for {what}"
        )
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


def _sigterm(
    process: subprocess.Popen[str], signum: int = signal.SIGTERM
) -> tuple[float, int, str, str]:
    """SIGTERM (or ``signum``), then the seconds until the process was gone, its status and its
    output."""
    started = time.monotonic()
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"still running 60 s after SIGTERM: {err[-2000:]}")
    return time.monotonic() - started, process.returncode, out, err


class _Lines:
    """stderr lines of a running process, read in a thread (the pipe must not fill up)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        import threading

        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.lines.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def text(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


@pytest.mark.parametrize(
    "mode, status, signum",
    [
        ((), 0, signal.SIGTERM),
        (("--once",), 3, signal.SIGTERM),
        # SIGTERM while --once's Connect check hangs (--no-check: no background preflight, so
        # the hanging call is the check's): it ends at once, interrupted, nothing changed
        (("--once", "--no-check"), 1, signal.SIGTERM),
        (("--dry-run",), 1, signal.SIGTERM),
        (("--dry-run",), 1, signal.SIGINT),  # Ctrl-C
    ],
    ids=["daemon", "once", "once-check-interrupted", "dry-run", "dry-run-ctrl-c"],
)
def test_sigterm_with_connect_hanging_exits_within_the_budget(
    healthy: MockServers, tmp_path: Path, mode: tuple[str, ...], status: int, signum: int
) -> None:
    config = _config(
        healthy, tmp_path
    )  # reads the products from the marketplace: before it is slow
    _faults(healthy.market_url, SLOW)
    hanging = _delayed(healthy.market_url)
    process = _start(config, *mode)
    lines = _Lines(process)
    _until(lambda: catches_sigterm(process.pid), "SIGTERM handler", process)
    if mode == ("--once",):
        # A backfill checks Connect before it claims anything (two quick attempts, each cut at
        # the read timeout): a Connect that does not answer ends it on its own, exit 3, one line,
        # within the budget, no signal needed. SIGTERM during --once is covered with the vendor
        # hanging below.
        code = process.wait(timeout=BOUND + 60)
        err = lines.text()
        assert code == status, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        assert [ln for ln in err.splitlines() if ln.startswith("cancel-processor: check connect")]
        return
    else:
        _until(lambda: _delayed(healthy.market_url) > hanging, "a Connect call hanging", process)
    process.stderr = None  # read by _Lines
    elapsed, code, _out, _err = _sigterm(process, signum)
    err = lines.text()
    print(
        f"\nslow Connect, run {' '.join(mode) or '(daemon)'}: exit {code} {elapsed:.2f} s after "
        f"{signal.Signals(signum).name}"
    )
    assert elapsed < BOUND, err[-2000:]
    assert code == status, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    if mode == ("--once", "--no-check"):  # stopped in the check, before the run began
        assert "stopped by SIGTERM: nothing was changed" in err, err[-2000:]


def _states(tmp_path: Path) -> dict[State, int]:
    if not (tmp_path / "journal.db").exists():
        return {}
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    try:
        return journal.counts()
    except JournalError:  # the run has created the file but not its tables yet
        return {}
    finally:
        journal.close()


@pytest.mark.parametrize("mode, status", [((), 0), (("--once",), 1)], ids=["daemon", "once"])
def test_sigterm_with_the_vendor_hanging_exits_within_the_budget_and_the_next_run_finishes(
    healthy: MockServers, tmp_path: Path, mode: tuple[str, ...], status: int
) -> None:
    config = _config(healthy, tmp_path)
    _faults(healthy.vendor_url, SLOW)
    process = _start(config, *mode)
    lines = _Lines(process)
    _until(lambda: catches_sigterm(process.pid), "SIGTERM handler", process)
    # A terminate call is under way once a request is recorded as terminating (intent first).
    _until(
        lambda: _states(tmp_path).get(State.TERMINATING, 0) > 0, "vendor call in flight", process
    )
    process.stderr = None
    elapsed, code, _out, _err = _sigterm(process)
    err = lines.text()
    print(
        f"\nslow vendor, run {' '.join(mode) or '(daemon)'}: exit {code} {elapsed:.2f} s "
        "after SIGTERM"
    )
    assert elapsed < BOUND, err[-2000:]
    assert code == status, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert _states(tmp_path).get(State.TERMINATING, 0) > 0  # cut off mid-call: the journal kept it

    # The vendor recovers: the next run takes the cut-off claims over (lease 4 s) and finishes them.
    _faults(healthy.vendor_url, {})
    again = _start(config, "--once")
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, (out[-2000:], err[-2000:])
    assert _states(tmp_path).get(State.TERMINATING, 0) == 0
