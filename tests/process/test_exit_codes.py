"""README.md's exit-status table, one test per row, each running the installed ``cancel-processor``
in its own process against the mock marketplace and mock vendor on loopback.

The rows: 0 every matching request final; 1 work left unfinished; 2 something the operator must
change (a rejected API key, a product the key cannot see, a journal file that cannot be used); 3
a dependency out of reach (Connect at the start of ``run --once``, the journal's PostgreSQL for
``run``, ``status``, ``report`` and ``reconcile``). No case waits on retries: each ends in seconds.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import Sandbox

from ..cli_support import crowd_pending, pending_cancels, write_config

CLI = str(Path(sys.executable).with_name("cancel-processor"))
PG_DOWN = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(generate=4) as box:
        yield box


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed once the block ends: nothing answers


def _cli(sandbox: Sandbox, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }
    environ.update(sandbox.environ())
    environ.update(env)
    return subprocess.run(
        [CLI, *args], env=environ, capture_output=True, text=True, timeout=120, check=False
    )


def _line(result: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    """The status, and one ``cancel-processor`` line on stderr naming what is wrong."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == status, (result.returncode, result.stderr[-3000:])
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("cancel-processor")]
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]


def test_row_0_every_matching_request_final(tmp_path: Path, sandbox: Sandbox) -> None:
    config = write_config(tmp_path, sandbox)
    result = _cli(sandbox, "run", "--once", "--no-progress", "-c", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    for command in ("status", "report"):
        assert _cli(sandbox, command, "-c", str(config)).returncode == 0


def test_row_1_a_latched_adapter_names_itself_and_how_to_resume(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    from processor.engine.guard import LatchFile

    config = write_config(tmp_path, sandbox, processing={"once_max_wait": 1})
    why = "10 already_gone answers in a row; resume with: cancel-processor resume vendor"
    LatchFile(tmp_path / "journal.db.guard.json").set("vendor", why)
    result = _cli(sandbox, "run", "--once", "--no-progress", "-c", str(config))
    _line(
        result, 1, "adapter vendor is latched", "10 already_gone", "cancel-processor resume vendor"
    )


def test_row_1_work_left_unfinished(tmp_path: Path, sandbox: Sandbox) -> None:
    # The vendor cannot be reached: every request is deferred, none is final when --once stops.
    config = write_config(
        tmp_path,
        sandbox,
        processing={"once_max_wait": 1, "retry_base": 0.1, "retry_max": 0.2},
    )
    data = yaml.safe_load(config.read_text())
    data["adapters"]["vendor"]["options"]["base_url"] = f"http://127.0.0.1:{_closed_port()}"
    config.write_text(yaml.safe_dump(data))
    result = _cli(sandbox, "run", "--once", "--no-progress", "--no-check", "-c", str(config))
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1, result.stderr[-3000:]


def test_row_1_requests_left_pending_on_connect(tmp_path: Path) -> None:
    # A server comparing created at whole minutes hides most of a crowded minute from the listing;
    # Connect's final count still sees them: listed again (bounded), then unfinished, named.
    faults = FaultSettings(created_precision="compare_minutes")
    with Sandbox(generate=14, marketplace_faults=faults) as box:
        crowd_pending(box, timedelta(seconds=2))
        config = write_config(tmp_path, box, connect={"page_size": 2})
        result = _cli(box, "run", "--once", "--no-progress", "-c", str(config))
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert result.returncode == 1, result.stderr[-3000:]
        left = pending_cancels(box)
        assert left and left[0] in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("case", ["rejected key", "invisible product", "journal file"])
def test_row_2_something_to_change(tmp_path: Path, sandbox: Sandbox, case: str) -> None:
    config = write_config(tmp_path, sandbox)
    if case == "rejected key":
        result = _cli(
            sandbox, "run", "--once", "-c", str(config), CONNECT_API_KEY="ApiKey SU-1:wrong"
        )
        _line(result, 2, "401")
        assert "wrong" not in result.stderr + result.stdout  # the key is never echoed
    elif case == "invisible product":
        data = yaml.safe_load(config.read_text())
        data["products"]["PRD-999-999-999"] = {"template": "TL-999-999-999"}
        config.write_text(yaml.safe_dump(data))
        for selected in ((), ("--product", "PRD-999-999-999")):
            result = _cli(sandbox, "run", "--once", *selected, "-c", str(config))
            _line(result, 2, "PRD-999-999-999", "not visible")
    else:  # a SQLite journal that does not exist: the operator's path to fix
        for command in ("status", "report"):
            _line(_cli(sandbox, command, "-c", str(config)), 2)
        _line(_cli(sandbox, "reconcile", "-c", str(config), "--since", "2026-01-01"), 2)


@pytest.mark.parametrize("command", ["run", "status", "report", "reconcile", "connect"])
def test_row_3_dependency_out_of_reach(tmp_path: Path, sandbox: Sandbox, command: str) -> None:
    config = write_config(tmp_path, sandbox)
    if command == "connect":  # Connect itself, at the start of a backfill
        endpoint = f"http://127.0.0.1:{_closed_port()}/public/v1"
        result = _cli(
            sandbox, "run", "--once", "-c", str(config), CANCEL_PROCESSOR_CONNECT__ENDPOINT=endpoint
        )
        _line(result, 3, endpoint)
        return
    extra = {"run": ["--once"], "reconcile": ["--since", "2026-01-01"]}.get(command, [])
    result = _cli(
        sandbox, command, *extra, "-c", str(config), CANCEL_PROCESSOR_JOURNAL__URL=PG_DOWN
    )
    _line(result, 3, "127.0.0.1:1")


def test_every_row_of_the_readme_table_has_its_test_here() -> None:
    from processor import exits

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("| Status | Meaning |")
    table_text = readme[start : readme.index("\n\n", start)]
    rows = [int(n) for n in re.findall(r"^\| (\d) \| ", table_text, flags=re.M)]
    table = sorted(getattr(exits, n) for n in exits.__all__ if n.startswith("EXIT_"))
    assert rows == table, (rows, table)  # the README's table is processor.exits' table
    tests = {n for n in globals() if n.startswith("test_row_")}
    assert {int(n.split("_")[2]) for n in tests} == set(rows), tests
