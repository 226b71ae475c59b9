"""The released connect-extension-runner beside this project, in one fresh virtualenv per test
session (the ``runner_python`` fixture of tests/process/conftest.py).

Every published runner (43.1 the latest) needs connect-eaas-core 37.x and pydantic 1.10, while this
suite's environment has connect-eaas-core 38 and pydantic 2. The virtualenv is made in a temporary
directory; the extension project (extension/, which brings the processor from this repository by
its path dependency) and ``connect-extension-runner==43.1`` are installed into it together (pip's
cache makes a repeat quick), with pytest and responses for the EaaS tests run there. Without a
package index the fixture skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, need_or_skip
from tests.unit.test_extension_project import RUNNER_TAG

__all__ = ["RUNNER", "RUNNER_TAG", "INSTALL_TIMEOUT", "build_runner_venv", "run", "runner_environ"]

# The release extension/docker-compose.yml's image names: installing it from the index proves it
# exists.
RUNNER = f"connect-extension-runner=={RUNNER_TAG}"
INSTALL_TIMEOUT = 600  # seconds; about a minute with a warm pip cache


def runner_environ() -> dict[str, str]:
    """This process's environment without what would make the other interpreter read ours."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(args: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=runner_environ(),
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def build_runner_venv(venv: Path) -> Path:
    """Make the virtualenv at ``venv``; its interpreter (skips or fails as documented above)."""
    made = run([sys.executable, "-m", "venv", str(venv)], 120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    try:
        # The extension project, as the runner image's entrypoint installs it: the processor comes
        # with it through its path dependency on this repository.
        installed = run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-input",
                str(REPO / "extension"),
                RUNNER,
                "pytest>=8,<10",
                "responses>=0.25",
            ],
            INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        need_or_skip(f"installing {RUNNER} and the project took over {INSTALL_TIMEOUT} s")
        raise
    if installed.returncode != 0:
        need_or_skip(f"cannot install {RUNNER} with the project: {installed.stderr.strip()[-800:]}")
    return python
