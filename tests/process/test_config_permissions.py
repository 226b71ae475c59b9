"""The installed command refuses a configuration file others may write, in one line naming the
file, and accepts it with ``--allow-writable-config`` or
``CANCEL_PROCESSOR_ALLOW_WRITABLE_CONFIG=1``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).with_name("cancel-processor"))


def _status(config: Path, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }
    environ.update(env)
    return subprocess.run(
        [CLI, *options, "status", "-c", str(config)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_world_writable_config_is_refused_unless_accepted_knowingly(tmp_path: Path) -> None:
    config = tmp_path / "processor.yaml"
    journal = tmp_path / "journal.db"
    config.write_text(f"journal: {{url: 'sqlite:///{journal}'}}\n", encoding="utf-8")
    config.chmod(0o666)
    refused = _status(config)
    assert refused.returncode == 2, refused.stderr
    lines = [ln for ln in refused.stderr.splitlines() if ln.startswith("cancel-processor")]
    assert (
        len(lines) == 1 and str(config) in lines[0] and "writable by group and others" in lines[0]
    )
    assert "Traceback" not in refused.stderr
    for accepted in (
        _status(config, "--allow-writable-config"),
        _status(config, CANCEL_PROCESSOR_ALLOW_WRITABLE_CONFIG="1"),
    ):
        # past the configuration: now it is the journal that does not exist yet
        assert "writable by" not in accepted.stderr, accepted.stderr
        assert str(journal) in accepted.stderr, accepted.stderr
