"""Shared by the tests that run the installed CLI in its own process against the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cancel_sandbox.local import Sandbox


def write_config(tmp_path: Path, sandbox: Sandbox, **sections: Any) -> Path:
    """The sandbox's configuration with an SQLite journal in ``tmp_path`` and Connect retries cut
    short (two quick attempts), so a failure the CLI reports arrives within a second."""
    data = sandbox.config_data(f"sqlite:///{tmp_path / 'journal.db'}", **sections)
    data["connect"]["retry"] = {"max_attempts": 2, "backoff_base": 0.05, "backoff_max": 0.1}
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
