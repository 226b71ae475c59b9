"""The READMEs as scripts: every shell block is marked, and the runnable ones run as a stranger
would run them.

Each fenced shell block (``bash``, ``sh``, ``shell``, ``console``, or any block whose first line is
a ``$`` prompt) in README.md and extension/README.md is preceded by ``<!-- runnable -->`` or by
``<!-- illustration: why -->``. The runnable blocks of README.md run in order, in one ``bash -e``,
so each sees the shell the previous ones left (the activated virtualenv, exported variables, the
mocks in the background), in a fresh copy of the repository's tracked files with no virtualenv:
the first block makes it, exactly as a new user's first command does. ``cancel-processor`` is not
on the test's PATH, so a block that forgets the virtualenv fails. The only edit is the mocks'
ports (8181 and 8282 become free ones), so parallel runs cannot collide.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from processor.ops.serving import free_port

from ..conftest import REPO

pytestmark = pytest.mark.slow

RUNNABLE = "<!-- runnable -->"
SHELL_INFO = {"bash", "sh", "shell", "console"}
DOCUMENTS = ("README.md", "extension/README.md")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", flags=re.S | re.M)


def shell_blocks(text: str) -> list[tuple[str, str]]:
    """(mark, body) of each fenced shell block; mark is the HTML comment right before it, or ""."""
    blocks = []
    for match in FENCE.finditer(text):
        info, body = match[1].strip().split(" ")[0], match[2]
        if info not in SHELL_INFO and not body.startswith("$ "):
            continue
        before = text[: match.start()].rstrip().splitlines()
        last = before[-1].strip() if before else ""
        blocks.append((last if last.startswith("<!--") else "", body))
    return blocks


def runnable_blocks(text: str) -> list[str]:
    return [body for mark, body in shell_blocks(text) if mark == RUNNABLE]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_shell_block_is_marked_runnable_or_illustration(document: str) -> None:
    blocks = shell_blocks((REPO / document).read_text(encoding="utf-8"))
    assert blocks
    unmarked = [
        body.splitlines()[0] if body else "(empty)"
        for mark, body in blocks
        if mark != RUNNABLE and not re.fullmatch(r"<!-- illustration: \S.* -->", mark)
    ]
    assert unmarked == [], f"{document}: blocks with no mark (or an illustration without a why)"


def test_the_marks_are_read_as_written() -> None:
    text = (
        "<!-- runnable -->\n```bash\necho a\n```\n\n"
        "<!-- illustration: why -->\n```sh\necho b\n```\n"
        "```\n$ cancel-processor status\n```\n```\nnot shell\n```\n"
    )
    assert shell_blocks(text) == [
        (RUNNABLE, "echo a\n"),
        ("<!-- illustration: why -->", "echo b\n"),
        ("", "$ cancel-processor status\n"),
    ]


def _fresh_copy(target: Path) -> None:
    """The repository's tracked files (what a clone holds): no virtualenv, no journal, no caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=60, check=False
    )
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (REPO / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, target / name)
    else:  # an export without git: everything but what a run or an install leaves behind
        shutil.copytree(
            REPO,
            target,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "*.db*", "*.sqlite*"
            ),
        )


def test_the_runnable_blocks_run_in_order_in_a_fresh_clone(tmp_path: Path) -> None:
    blocks = runnable_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "the demo, the mocks, a run and the commands"
    assert "cancel-processor demo" in blocks[0] and "kill" in blocks[-1]
    clone = tmp_path / "clone"
    clone.mkdir()
    _fresh_copy(clone)
    market, vendor = free_port(), free_port()
    script = ["set -e"]
    for number, block in enumerate(blocks, 1):
        block = re.sub(r"\b8181\b", str(market), block)
        block = re.sub(r"\b8282\b", str(vendor), block)
        # bash -e does not stop inside an `a && b && c` list, so each block's status is checked.
        script += [
            f"echo '>>> block {number}'",
            block,
            f"status=$?; [ $status = 0 ] || {{ echo 'block {number}: exit '$status >&2; exit 9; }}",
        ]
    # Nothing of this test's own environment may help: not its virtualenv, not its variables.
    here = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != here)
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_", "VENDOR_", "MOCK_"))
        and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    environ["PATH"] = path
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=clone,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the mocks it starts in the background are in its group
    )
    try:
        out, err = process.communicate(timeout=600)
    finally:
        try:  # whatever happened, nothing the blocks started outlives the test
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    reached = re.findall(r">>> block (\d+)", out)
    where = f"stopped in block {reached[-1] if reached else '?'} of {len(blocks)}"
    assert process.returncode == 0, f"{where}\n{out[-4000:]}\n{err[-4000:]}"
    assert reached == [str(n) for n in range(1, len(blocks) + 1)]
    assert "Traceback" not in err, err[-4000:]
    assert "Invariants hold." in out  # the demo
    # The shipped example runs without a warning (pip's own notes about indexes aside).
    warned = [line for line in err.splitlines() if '"level":"warning"' in line]
    assert warned == [] and "templates not on this product" not in out + err, warned
    assert (clone / "report.csv").exists() and (clone / "journal.jsonl").stat().st_size > 0


def test_running_it_names_only_files_that_exist() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Running it\n")
    section = text[start : text.index("\n## ", start + 1)]
    named = set(re.findall(r"\b((?:config|docs|tests|processor)/[\w./-]+\.\w+)", section))
    assert "config/processor.example.yaml" in named and "config/seed.example.yaml" in named
    assert [path for path in sorted(named) if not (REPO / path).exists()] == []
