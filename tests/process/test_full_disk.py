"""A full disk under the SQLite journal is weather: the processor keeps running, says so once per
pass, and catches up when space returns; nothing is lost and nothing is done twice.

The disk is filled for real, as the operating system refuses writes: the processor runs with a
file size limit (``RLIMIT_FSIZE``), under which every write past the limit fails (``EFBIG``; SQLite
reports it as an I/O error of the write or of its shared-memory index, as it does ``ENOSPC`` as
``SQLITE_FULL``). Space "returns" when the test raises the running process's limit with
``prlimit``. Python ignores ``SIGXFSZ``, so the process is not killed by the limit; its logs go
to a pipe, which the limit does not cover.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cancel_sandbox.local import Sandbox

from .test_crash import processor_env

pytestmark = pytest.mark.slow

FULL = 1_000  # bytes: smaller than the journal file already is


def limited(size: int) -> Callable[[], None]:
    def set_limit() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    return set_limit


def run_limited(sandbox: Sandbox, config: Path, size: int, *args: str) -> subprocess.Popen[str]:
    """``cancel-processor run`` in its own process, writing at most ``size`` bytes to any file."""
    return subprocess.Popen(
        [sys.executable, "-m", "processor", "run", *args, "--config", str(config)],
        env=processor_env(sandbox),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=limited(size),
        cwd=config.parent,
    )


def space_returns(process: subprocess.Popen[str]) -> None:
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, unlimited)


class Lines:
    """The process's stderr, read as it comes (a pipe never fills and blocks the process)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        stream = process.stderr
        self.thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        found = []
        for line in list(self.lines):
            try:
                found.append(str(json.loads(line).get("event")))
            except ValueError:
                found.append(line.strip())
        return found


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., tuple[Sandbox, Path]]]:
    boxes: list[Sandbox] = []

    def start(generate: int) -> tuple[Sandbox, Path]:
        sandbox = Sandbox(generate=generate, seed=21).start()
        boxes.append(sandbox)
        data = sandbox.config_data(
            f"sqlite:///{tmp_path / 'journal.db'}",
            processing={"poll_interval": 0.5, "retry_base": 0.5, "notes": False},
        )
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        subprocess.run(
            [sys.executable, "-m", "processor", "journal", "migrate", "-c", str(config)],
            env=processor_env(sandbox),
            check=True,
            capture_output=True,
        )
        return sandbox, config

    yield start
    for box in boxes:
        box.stop()


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_the_daemon_waits_for_space_then_catches_up(started: Callable[..., Any]) -> None:
    sandbox, config = started(60)
    pending = sandbox.pending_cancels()
    daemon = run_limited(sandbox, config, FULL)
    log = Lines(daemon)
    try:
        # Full from the start: not an exit (a supervisor would restart it into the same wall).
        assert wait_for(lambda: log.events().count("journal_full_at_start") >= 3, 20)
        assert daemon.poll() is None
        assert sandbox.pending_cancels() == pending  # nothing happened without a journal
        space_returns(daemon)
        assert wait_for(lambda: not sandbox.pending_cancels(), 60), log.lines[-5:]
        assert daemon.poll() is None
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    check = sandbox.check(initially_pending=pending)
    assert check.ok and check.approved + check.failed == len(pending), check
    events = log.events()
    assert "request_error" not in events and "Traceback (most recent call last):" not in events


def test_a_disk_full_mid_run_costs_one_line_per_pass_and_once_finishes_when_space_returns(
    started: Callable[..., Any], tmp_path: Path
) -> None:
    sandbox, config = started(200)
    pending = sandbox.pending_cancels()
    room = sum(f.stat().st_size for f in tmp_path.glob("journal.db*")) + 60_000
    once = run_limited(sandbox, config, room, "--once")
    log = Lines(once)
    try:
        assert wait_for(lambda: log.events().count("journal_full") >= 3, 30), log.lines[-5:]
        assert once.poll() is None
        assert len(sandbox.pending_cancels()) > 0
        space_returns(once)
        out, _ = once.communicate(timeout=60)
    finally:
        if once.poll() is None:
            once.kill()
    log.thread.join(timeout=5)
    assert once.returncode == 0, (out[-2000:], log.lines[-5:])
    events = log.events()
    assert "request_error" not in events
    # One journal_full line per pass that met the full disk, nothing per request: besides
    # them only the start-up warnings about this configuration's timeouts.
    others = [e for e in events if e != "journal_full"]
    assert len(others) <= 3, others
    check = sandbox.check(initially_pending=pending)
    assert check.ok and check.approved + check.failed == len(pending), check
