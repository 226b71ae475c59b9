"""Commands run as a user runs them, each in a process of its own: the exit status and what the
first lines say (what they check is tested in-process beside it: unit/test_config.py,
integration/test_waiting.py, integration/test_mock_marketplace.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ..conftest import REPO
from ..integration.test_waiting import write_config
from ..mock_support import SECRET
from ..unit.test_config import write

pytestmark = pytest.mark.slow


def test_cli_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    path = write(tmp_path, "processing:\n  concurrency: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "processor", "run", "--once", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and "processing.concurrency" in result.stderr


def test_is_a_subcommand_of_the_cli_and_exits_2_without_a_journal(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "processor", "waiting", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "no journal at" in done.stderr
    assert not (tmp_path / "journal.db").exists()


def test_the_command_serves_and_says_what_it_serves(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "processor",
            "mock-marketplace",
            "--port",
            str(port),
            "--generate",
            "5",
            "--state-file",
            str(tmp_path / "state.sqlite"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = [process.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}" in banner[0] and "SU-000-000-000" in banner[1]
        assert SECRET not in "".join(banner)
        for _ in range(100):  # the banner comes before uvicorn listens
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert health.json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(10)
    assert (tmp_path / "state.sqlite").exists()
