"""connect-devops-testing-library 25.2 in a virtualenv of its own (it pins connect-openapi-client
<26, this project 35), built once and cached in ``$XDG_CACHE_HOME`` (or ``~/.cache``) under
``cancel-processor/devops-testing-venv``; a missing or broken one is rebuilt (a minute at most
with a package index at hand). The test skips without one on a developer's machine and fails in
CI (``need_or_skip``)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["DevopsEnvError", "devops_python", "SCRIPT"]

REQUIREMENT = "connect-devops-testing-library==25.2"
SCRIPT = Path(__file__).resolve().parent / "devops_cancel_script.py"


class DevopsEnvError(RuntimeError):
    """The library's virtualenv cannot be built or used here."""


def _venv() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cancel-processor" / "devops-testing-venv"


def _healthy(python: Path) -> bool:
    probe = (
        "import json, importlib.metadata as m, connect.devops_testing.fixtures;"
        "print(json.dumps(m.version('connect-devops-testing-library')))"
    )
    try:
        found = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
        )
        return bool(json.loads(found.stdout) == REQUIREMENT.split("==")[1])
    except (subprocess.SubprocessError, OSError, ValueError):
        return False


def _build(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    python = venv / "bin" / "python"
    steps = [
        ([sys.executable, "-m", "venv", str(venv)], 120),
        ([str(python), "-m", "pip", "install", "--quiet", "--no-input",
          "--disable-pip-version-check", REQUIREMENT], 300),
    ]  # fmt: skip
    for command, timeout in steps:
        try:
            subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(venv, ignore_errors=True)
            raise DevopsEnvError(
                f"cannot build {REQUIREMENT}'s virtualenv: {exc.stderr.strip()[-600:]}"
            ) from None
        except subprocess.TimeoutExpired:
            shutil.rmtree(venv, ignore_errors=True)
            raise DevopsEnvError(
                f"building {REQUIREMENT}'s virtualenv took over {timeout} s"
            ) from None


def devops_python() -> Path:
    """The interpreter of a virtualenv holding connect-devops-testing-library."""
    venv = _venv()
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "devops-testing-venv.lock", "w") as lock:  # one builder at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _healthy(python):
            _build(venv)
            if not _healthy(python):
                raise DevopsEnvError(f"the virtualenv at {venv} is unusable after a rebuild")
    return python
