"""``run --once`` proves its own completeness, whatever precision Connect compares ``created`` at.

Each case runs the installed ``cancel-processor run --once`` in its own process against the mock
marketplace with several cancels created within one second (fractions served), the marketplace
set to a ``created_precision`` fault: comparing and ordering at whole seconds while serving
fractions, the reverse, or coarser than the processor assumes (whole minutes). Exit 0 must mean
that nothing the run selected is still pending on Connect; otherwise exit 1, naming what is left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import Sandbox

from ..cli_support import CROWDED_SECOND, crowd_pending, pending_cancels, write_config

CLI = str(Path(sys.executable).with_name("cancel-processor"))


def _sandbox(precision: str, count: int) -> Sandbox:
    return Sandbox(generate=count, marketplace_faults=FaultSettings(created_precision=precision))


def _run_once(box: Sandbox, config: Path) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }
    environ.update(box.environ())
    return subprocess.run(
        [CLI, "run", "--once", "--no-progress", "-c", str(config)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.parametrize("precision", ["compare_seconds", "serve_seconds", "exact"])
def test_several_cancels_within_one_second_all_processed_exit_0(
    tmp_path: Path, precision: str
) -> None:
    with _sandbox(precision, 6) as box:
        ids = crowd_pending(box, timedelta(milliseconds=150))
        assert len(ids) >= 5
        served = box.market_app.store.requests[ids[0]].created
        assert served.microsecond and served.replace(microsecond=0) == CROWDED_SECOND
        config = write_config(tmp_path, box, connect={"page_size": 2})
        result = _run_once(box, config)
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
        assert pending_cancels(box) == []  # exit 0 only when nothing matching is pending


def test_a_server_coarser_than_a_second_is_caught_by_the_final_count(tmp_path: Path) -> None:
    # Whole minutes: ge(created, <second>) hides the rest of the minute from the listing. The final
    # count sees them: the run lists again (a bounded number of times) and, with more left than
    # those passes can reach, exits 1 naming what is left.
    with _sandbox("compare_minutes", 14) as box:
        ids = crowd_pending(box, timedelta(seconds=2))
        config = write_config(tmp_path, box, connect={"page_size": 2})
        result = _run_once(box, config)
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        left = pending_cancels(box)
        assert left, "the fault should leave some pending"
        assert len(left) < len(ids)  # the relists made progress
        assert result.returncode == 1, (result.stdout[-2000:], result.stderr[-3000:])
        assert "still pending on Connect" in result.stdout, result.stdout[-2000:]
        assert left[0] in result.stdout or str(len(left)) in result.stdout
        assert "pass_incomplete" in result.stderr
