"""The project beside the released connect-extension-runner, in the session's runner virtualenv
(tests/runner_env.py, shared with tests/process/test_cextrun_devops.py): ``pip check`` must be
clean, and the EaaS tests run there in a pytest subprocess: tests/eaas_in_runner.py (the runner's
own discovery and task managers against the mock marketplace and vendor),
tests/integration/test_eaas*.py (the application on pydantic 1 and connect-eaas-core 37.4) and
tests/unit/test_extension_project.py (connect-eaas-core 37.4's validators on extension/).
Without a package index the fixture skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.runner_env import RUNNER_TAG
from tests.runner_env import run as _run

EXPECTED = {"connect-extension-runner": RUNNER_TAG, "connect-eaas-core": "37.4"}

pytestmark = pytest.mark.slow


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
