"""The README's commands work as written: every block marked ``<!-- runnable -->`` runs against the
mocks, and every file its "Running it" section names exists.

The mocks run as the README starts them (``mock-marketplace --seed-file config/seed.example.yaml``
and ``mock-vendor``), but on free ports: the block's 8181 and 8282 are replaced by those ports,
nothing else. The block runs with ``bash -e`` from a scratch directory whose ``config`` is the
repository's, so the journal it creates stays out of the checkout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from processor.ops.serving import free_port

from ..conftest import REPO

MARK = "<!-- runnable -->"


def _readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def runnable_blocks(text: str) -> list[str]:
    """The bash blocks right after a runnable mark."""
    return re.findall(re.escape(MARK) + r"\s*```bash\n(.*?)```", text, flags=re.S)


def _section(title: str) -> str:
    text = _readme()
    start = text.index(f"\n## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def test_running_it_names_only_files_that_exist() -> None:
    named = set(
        re.findall(r"\b((?:config|docs|tests|processor)/[\w./-]+\.\w+)", _section("Running it"))
    )
    assert "config/processor.example.yaml" in named and "config/seed.example.yaml" in named
    assert [path for path in sorted(named) if not (REPO / path).exists()] == []


@pytest.fixture
def mocks() -> Iterator[tuple[int, int]]:
    market, vendor = free_port(), free_port()
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MOCK_", "CANCEL_PROCESSOR_", "CONNECT_"))
    }
    started = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "processor",
                "mock-marketplace",
                "--port",
                str(market),
                "--seed-file",
                str(REPO / "config" / "seed.example.yaml"),
            ],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "processor", "mock-vendor", "--port", str(vendor)],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        for port, process in zip((market, vendor), started, strict=True):
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, f"a mock exited ({process.returncode})"
                try:
                    if (
                        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
                        == 200
                    ):
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, "a mock did not start"
                time.sleep(0.1)
        yield market, vendor
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_every_runnable_block_runs_against_the_mocks(
    mocks: tuple[int, int], tmp_path: Path
) -> None:
    blocks = runnable_blocks(_readme())
    assert blocks, f"no block marked {MARK}"
    market, vendor = mocks
    (tmp_path / "config").symlink_to(REPO / "config")
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }
    # The README's cancel-processor is this checkout's, as after `pip install -e .`.
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    for block in blocks:
        script = block.replace("127.0.0.1:8181", f"127.0.0.1:{market}").replace(
            "127.0.0.1:8282", f"127.0.0.1:{vendor}"
        )
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{block}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "parked" not in done.stdout, done.stdout[-3000:]  # the example is green as shipped
