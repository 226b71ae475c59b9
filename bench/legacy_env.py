"""The legacy connect-sdk 22.0 in a virtualenv of its own, and a way to run the baseline script.

connect-sdk pins requests 2.21 and six 1.12, which conflict with this project's environment, so
it is installed once into ``$XDG_CACHE_HOME`` (or ``~/.cache``) under
``cancel-processor/legacy-sdk-venv`` and rebuilt when missing or broken. Used by the legacy
compatibility test and by the benchmarks' baseline.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["LegacyEnvError", "legacy_python", "run_legacy", "SCRIPT"]

SDK_REQUIREMENT = "connect-sdk==22.0"
EXPECTED_PINS = {"connect-sdk": "22.0", "requests": "2.21.0", "six": "1.12.0"}
SCRIPT = Path(__file__).resolve().parent / "legacy_sdk_processor.py"


class LegacyEnvError(RuntimeError):
    """The legacy SDK's virtualenv cannot be built or used here."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cancel-processor" / "legacy-sdk-venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _healthy(venv: Path) -> bool:
    python = _venv_python(venv)
    if not python.exists():
        return False
    probe = (
        "import json, importlib.metadata as m, connect.resources;"
        f"print(json.dumps({{n: m.version(n) for n in {sorted(EXPECTED_PINS)!r}}}))"
    )
    try:
        found = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
        )
        return bool(json.loads(found.stdout) == EXPECTED_PINS)
    except (subprocess.SubprocessError, OSError, ValueError):
        return False


def _build(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        ([sys.executable, "-m", "venv", str(venv)], 120),
        (
            [
                str(_venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-input",
                "--disable-pip-version-check",
                SDK_REQUIREMENT,
            ],
            240,
        ),
    ]
    for command, timeout in steps:
        try:
            subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(venv, ignore_errors=True)
            raise LegacyEnvError(
                f"cannot build the legacy SDK virtualenv: {exc.stderr.strip()[-800:]}"
            ) from None
        except subprocess.TimeoutExpired:
            shutil.rmtree(venv, ignore_errors=True)
            raise LegacyEnvError(
                f"building the legacy SDK virtualenv took over {timeout} s"
            ) from None


def legacy_python() -> Path:
    """The interpreter of a virtualenv holding connect-sdk 22.0 and its old pins."""
    venv = _cache_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Two sessions at once must not build into the same directory.
    with open(venv.parent / "legacy-sdk-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _healthy(venv):
            _build(venv)
            if not _healthy(venv):
                raise LegacyEnvError(
                    f"the legacy SDK virtualenv at {venv} is unusable after a rebuild"
                )
    return _venv_python(venv)


def run_legacy(
    python: Path, endpoint: str, api_key: str, templates: dict[str, str], timeout: float = 600
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Run the baseline script once; the key goes by environment, never on the command line."""
    args = [str(python), str(SCRIPT), "--endpoint", endpoint]
    for product, template in sorted(templates.items()):
        args += ["--product", product, "--template-id", f"{product}={template}"]
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["CONNECT_API_KEY"] = api_key
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    try:
        summary = json.loads(done.stdout)
    except ValueError:
        summary = None
    return done, summary
