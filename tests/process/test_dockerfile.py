"""The Dockerfile, checked as far as this machine allows (no Docker engine runs here).

Its shape is read (two stages, an unprivileged user, a health check, the entry point), and its
build stage's install steps are replayed in a fresh virtual environment from only the files the
Dockerfile copies: what the image would hold must install, start, and find its packaged data
(SQL migrations) without the source tree beside it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.slow

DOCKERFILE = REPO / "Dockerfile"


def stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


def test_the_image_is_multi_stage_slim_unprivileged_and_health_checked() -> None:
    build, final = stages()
    assert all(s[0].startswith("FROM python:3.11-slim") for s in (build, final))
    assert any(i.startswith("COPY --from=build /opt/venv") for i in final)
    user = next(i for i in final if i.startswith("USER "))
    assert user.split()[1] not in ("root", "0")
    health = next(i for i in final if i.startswith("HEALTHCHECK "))
    assert "/healthz" in health
    assert any(i.startswith("VOLUME") and "/var/lib/cancel-processor" in i for i in final)
    assert any(i.startswith("ENTRYPOINT") and "cancel-processor" in i for i in final)


def test_the_build_steps_install_a_working_processor(tmp_path: Path) -> None:
    build, _ = stages()
    context = tmp_path / "src"
    context.mkdir()
    for instruction in build:
        if instruction.startswith("COPY "):
            *sources, _dest = shlex.split(instruction)[1:]
            for source in sources:
                origin = REPO / source
                target = context / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                    )
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for instruction in build:
        if not instruction.startswith("RUN "):
            continue
        command = (
            instruction[4:]
            .replace("/opt/venv", str(venv))
            .replace("python -m venv", f"{sys.executable} -m venv")
        )
        done = subprocess.run(
            command, shell=True, cwd=context, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]

    cli = venv / "bin" / "cancel-processor"
    shown = subprocess.run(
        [str(cli), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert shown.returncode == 0 and "mock-marketplace" in shown.stdout
    # The packaged SQL must be inside the installed package, not read from a source tree.
    probe = (
        "from processor.journal import open_journal; j = open_journal('sqlite:///probe.db'); "
        "j.migrate(); j.check_schema(); print('journal ok')"
    )
    migrated = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert migrated.returncode == 0 and "journal ok" in migrated.stdout, migrated.stderr[-2000:]
    # compose.yaml runs the mocks from this image: their package must be installed beside the
    # processor (the CLI loads them lazily, so --help alone would not notice them missing).
    for command in ("mock-marketplace", "mock-vendor", "demo"):
        helped = subprocess.run(
            [str(cli), command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
        )
        assert helped.returncode == 0 and "usage" in helped.stdout, (command, helped.stderr[-2000:])
