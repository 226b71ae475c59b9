"""The lock of the tested set agrees with setup.cfg's ranges, and every install path uses it.

CI, the README's commands and the Dockerfile install through ``requirements/*.txt`` (as pip
constraints), so a release published after the last refresh cannot change what the suite runs on;
``tools.deps_latest`` tries the newest releases separately. These checks catch a ``setup.cfg``
edit without a refresh (``python -m tools.lock``), and an install path that bypasses the lock.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.deps_latest import differences, locked_versions

from ..conftest import REPO

BASE = REPO / "requirements" / "base.txt"
TEST = REPO / "requirements" / "test.txt"


def _declared(section: str, key: str) -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg", encoding="utf-8")
    return [Requirement(line) for line in config[section][key].strip().splitlines() if line]


@pytest.mark.parametrize(
    ("lock", "declared"),
    [
        (BASE, [("options", "install_requires")]),
        (TEST, [("options", "install_requires"), ("options.extras_require", "test")]),
    ],
    ids=["base", "test"],
)
def test_every_declared_requirement_is_pinned_within_its_range(
    lock: Path, declared: list[tuple[str, str]]
) -> None:
    pins = locked_versions(lock)
    wrong = []
    for section, key in declared:
        for requirement in _declared(section, key):
            pinned = pins.get(canonicalize_name(requirement.name))
            if pinned is None or not requirement.specifier.contains(pinned, prereleases=True):
                wrong.append(f"{requirement} pinned at {pinned}")
    assert wrong == [], "setup.cfg changed without `python -m tools.lock`: " + "; ".join(wrong)


def test_the_base_lock_is_the_test_lock_without_the_test_tools() -> None:
    base, test = locked_versions(BASE), locked_versions(TEST)
    assert base and set(base) <= set(test)
    assert {name: test[name] for name in base} == base  # the demo runs on the versions tested


def test_differences_name_each_package_that_moved() -> None:
    locked = {"uvicorn": "0.54.0", "rich": "14.0.0", "gone": "1.0"}
    installed = {"uvicorn": "0.55.0", "rich": "14.0.0", "new": "2.0", "pip": "26.0"}
    assert differences(locked, installed) == [
        ("gone", "1.0", "-"),
        ("new", "-", "2.0"),
        ("uvicorn", "0.54.0", "0.55.0"),
    ]


def test_every_install_path_goes_through_the_lock() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    demo, tests = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)[:2]
    assert "-c requirements/base.txt" in demo and "cancel-processor demo" in demo
    assert "-c requirements/test.txt" in tests and "-m pytest" in tests
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -q -c requirements/test.txt -e '.[test]'" in ci
    assert ".venv/bin/python -m pytest" in ci
    assert "-c requirements/base.txt" in (REPO / "Dockerfile").read_text(encoding="utf-8")
