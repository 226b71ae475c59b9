"""Does the newest release of every dependency still pass? ``python -m tools.deps_latest``.

The suite runs on the locked set (``requirements/test.txt``), so a release published after the
lock cannot turn it red. Users who install the package into their own environment get the newest
releases ``setup.cfg``'s ranges allow, though, and so does the lock at its next refresh. This
command tells, the day a release appears, whether it breaks us: it builds a fresh virtual
environment with the newest allowed versions (no lock), lists every package whose version differs
from the lock, runs the unit and integration tiers there and prints what failed. The base install's
dependencies are taken at their newest even where only a test tool would hold one back.

CI runs it as an extra step that never fails the build (``.ci/run``); a maintainer runs it before
refreshing the lock (``python -m tools.lock --upgrade``). Exit status: 0 the tiers passed on the
newest set, 1 some test failed, 2 the newest set could not be installed, 3 it ran out of time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "test.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")
# The installer's own packages come with every virtual environment and the lock does not pin them;
# pip's listing hides the backports named like the standard library's modules it shadows.
INSTALLER = {"pip", "setuptools", "wheel", "argparse", "wsgiref"}


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """Package name (canonical) to its pinned version, from a ``uv pip compile`` lock."""
    pins: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def differences(locked: dict[str, str], installed: dict[str, str]) -> list[tuple[str, str, str]]:
    """(package, locked version or "-", installed version or "-") for each package that differs."""
    names = sorted((set(locked) | set(installed)) - INSTALLER)
    return [
        (name, locked.get(name, "-"), installed.get(name, "-"))
        for name in names
        if locked.get(name) != installed.get(name)
    ]


def failures(junit: Path) -> list[str]:
    """The node ids of the failed and errored tests in a pytest JUnit XML report."""
    if not junit.exists():
        return []
    found = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            found.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return found


def _run(command: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> int:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        return subprocess.run(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env
        ).returncode


def _installed(python: Path) -> dict[str, str]:
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {canonicalize_name(item["name"]): item["version"] for item in json.loads(listed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.deps_latest", description=__doc__)
    parser.add_argument("--tiers", default="unit or integration", help="pytest -m expression")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds for everything")
    parser.add_argument("--keep", action="store_true", help="keep the environment and the log")
    args = parser.parse_args(argv)
    deadline: float = time.monotonic() + args.timeout
    work = Path(tempfile.mkdtemp(prefix="deps-latest-"))
    log = work / "log.txt"
    python = work / "venv" / "bin" / "python"
    # Nothing from the calling environment may pin a version: no lock, no constraints file.
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONSTRAINT", "VIRTUAL_ENV")}
    # mypy's cache of the locked set (the tree's .mypy_cache) must not answer for the newest one,
    # nor a run there corrupt it while a developer's own mypy uses it.
    env["MYPY_CACHE_DIR"] = str(work / "mypy_cache")

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    try:
        venv.create(work / "venv", with_pip=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        installed_ok = (
            _run([*pip, "-U", "pip"], log, left(), env) == 0
            and _run([*pip, "-e", ".[test]"], log, left(), env) == 0
            # Then the base install's dependencies at their newest, even past a cap that only a
            # test tool sets (schemathesis holds starlette under 1.0): a user who installs the
            # package without the test extra gets those, so they are what must be tried.
            and _run([*pip, "-U", "--upgrade-strategy", "eager", "-e", "."], log, left(), env) == 0
        )
        if not installed_ok:
            print(f"deps_latest: the newest allowed set could not be installed; see {log}")
            print(log.read_text(encoding="utf-8")[-3000:])
            return 2
        moved = differences(locked_versions(), _installed(python))
        print(f"deps_latest: {len(moved)} package(s) differ from requirements/test.txt")
        width = max([len(name) for name, _, _ in moved] + [7])
        for name, was, now in moved:
            print(f"  {name:<{width}}  lock {was:<14} newest {now}")
        junit = work / "junit.xml"
        code = _run(
            [
                str(python),
                "-m",
                "pytest",
                "-m",
                args.tiers,
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=",
                f"--junitxml={junit}",
            ],
            log,
            left(),
            env,
        )
        tail = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        summary = tail[-1] if tail else "(no output)"
        failed = failures(junit)
        print(f"deps_latest: tests ({args.tiers}) on the newest set: {summary.strip('= ')}")
        for node in failed:
            print(f"  FAILED {node}")
        if code == 0:
            return 0
        print("deps_latest: the newest releases break the suite; CI stays on the locked set")
        return 1
    except subprocess.TimeoutExpired:
        print(f"deps_latest: out of time after {args.timeout:.0f} s")
        return 3
    finally:
        if args.keep:
            print(f"deps_latest: environment and log kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
