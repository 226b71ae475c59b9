"""Fixtures shared by the process tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runner_env import build_runner_venv


@pytest.fixture(scope="session")
def runner_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of the session's one virtualenv holding the released
    connect-extension-runner beside this project (tests/runner_env.py)."""
    return build_runner_venv(tmp_path_factory.mktemp("runner-venv"))
