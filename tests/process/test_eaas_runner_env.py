"""The project beside the released connect-extension-runner, in one fresh virtualenv.

Every published runner (43.1 the latest) needs connect-eaas-core 37.x and pydantic 1.10, while this
suite's environment has connect-eaas-core 38 and pydantic 2. Once per session a virtualenv is made
in a temporary directory, the extension project (extension/, which brings the processor from this
repository by its path dependency) and ``connect-extension-runner==43.1`` are installed into it
together (pip's cache makes a repeat quick), ``pip check`` must be clean, and the EaaS tests run
there in a pytest subprocess: tests/eaas_in_runner.py (the runner's own discovery and task managers
against the mock marketplace and vendor), tests/integration/test_eaas*.py (the application on
pydantic 1 and connect-eaas-core 37.4) and tests/unit/test_extension_project.py (connect-eaas-core
37.4's validators on extension/).
Without a package index the test skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, need_or_skip
from tests.unit.test_extension_project import RUNNER_TAG

# The release extension/docker-compose.yml's image names: installing it from the index proves it
# exists.
RUNNER = f"connect-extension-runner=={RUNNER_TAG}"
EXPECTED = {"connect-extension-runner": RUNNER_TAG, "connect-eaas-core": "37.4"}
INSTALL_TIMEOUT = 600  # seconds; about a minute with a warm pip cache

pytestmark = pytest.mark.slow


def _run(args: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=env, check=False, **kwargs
    )


@pytest.fixture(scope="module")
def runner_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("runner-venv")
    made = _run([sys.executable, "-m", "venv", str(venv)], 120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    try:
        # The extension project, as the runner image's entrypoint installs it: the processor comes
        # with it through its path dependency on this repository.
        installed = _run(
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


def test_the_project_installs_beside_the_released_runner_and_its_eaas_tests_pass_there(
    runner_python: Path,
) -> None:
    check = _run([str(runner_python), "-m", "pip", "check"], 120)
    assert check.returncode == 0, check.stdout + check.stderr

    probe = (
        "import json, importlib.metadata as m; print(json.dumps([{n: m.version(n) for n in "
        "['connect-extension-runner', 'connect-eaas-core', 'pydantic', "
        "'cancel-processor-extension']}, "
        "json.loads(m.distribution('connect-cancel-processor').read_text('direct_url.json'))]))"
    )
    # Not from the repository's folder: its own metadata (an editable install's) would answer.
    versions = _run([str(runner_python), "-c", probe], 60, cwd=runner_python.parent)
    assert versions.returncode == 0, versions.stderr
    found, origin = json.loads(versions.stdout)
    assert {k: found[k] for k in EXPECTED} == EXPECTED and found["pydantic"].startswith("1.10")
    assert origin["url"] == REPO.as_uri()  # the processor from this repository, not from an index

    tests = _run(
        [
            str(runner_python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/eaas_in_runner.py",
            "tests/integration/test_eaas.py",
            "tests/integration/test_eaas_live.py",
            "tests/integration/test_eaas_deploy.py",
            "tests/unit/test_extension_project.py",
        ],
        900,
        cwd=REPO,
    )
    print(tests.stdout[-3000:])
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-2000:]
    summary = tests.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary
