"""Refresh the lock of the tested dependency set: ``python -m tools.lock``.

``requirements/test.txt`` pins every package the base install and the ``test`` extra bring;
``requirements/base.txt`` the base install alone. Both are universal locks made by ``uv pip
compile --universal`` from the ranges in ``setup.cfg``: one file holds every supported Python
(3.11 and later) and platform, with environment markers where they differ. uv rather than
pip-tools because pip-tools resolves for the interpreter that runs it only, so a lock "per
supported Python" would need each of them installed; uv resolves for all of them at once, in
seconds. Installing needs nothing but pip: the locks are used as constraints
(``pip install -c requirements/test.txt -e '.[test]'``).

``--upgrade`` moves every pin to the newest release the ranges allow (what ``tools.deps_latest``
tries first); without it, uv keeps the current pins and only adds or drops what ``setup.cfg``
changed. Run the test suite on the result before committing it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The test lock first; the base lock is then resolved within it, so the base install (the demo,
# the Docker image) gets exactly the versions the suite ran on, never a newer release that only
# the test tools' ranges happened to hold back.
LOCKS = {
    "test.txt": ["--extra", "test"],
    "base.txt": ["--constraint", "requirements/test.txt"],
}
OLDEST_PYTHON = "3.11"  # setup.cfg's python_requires


def uv() -> list[str]:
    """The uv command: on PATH, or installed into this interpreter's environment on first use."""
    found = shutil.which("uv")
    if found:
        return [found]
    try:
        import uv as uv_package  # noqa: PLC0415 - optional, only for refreshing the lock
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"], check=True)
        import uv as uv_package  # noqa: PLC0415
    return [uv_package.find_uv_bin()]


def compile_locks(upgrade: bool) -> None:
    """Write requirements/base.txt and requirements/test.txt from setup.cfg."""
    (REPO / "requirements").mkdir(exist_ok=True)
    for name, extra in LOCKS.items():
        command = [
            *uv(),
            "pip",
            "compile",
            "setup.cfg",
            "--universal",
            "--python-version",
            OLDEST_PYTHON,
            *extra,
            "-o",
            f"requirements/{name}",
            "--quiet",
        ]
        if upgrade:
            command.append("--upgrade")
        subprocess.run(command, cwd=REPO, check=True)
        print(f"wrote requirements/{name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.lock", description=__doc__)
    parser.add_argument(
        "--upgrade", action="store_true", help="move every pin to the newest allowed release"
    )
    args = parser.parse_args(argv)
    compile_locks(args.upgrade)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
