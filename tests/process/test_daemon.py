"""The daemon as a real process: it serves health, readiness and metrics while it works, and a
SIGTERM makes it finish what it holds and exit 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from cancel_sandbox.local import Sandbox
from processor.ops.serving import free_port

from .test_crash import processor_env

pytestmark = pytest.mark.slow


def test_daemon_serves_health_and_metrics_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with Sandbox(generate=120, seed=3) as sandbox:
        before = sandbox.pending_cancels()
        data = sandbox.config_data(
            f"sqlite:///{tmp_path}/journal.db",
            processing={"poll_interval": 0.3},
            http={"enabled": True, "host": "127.0.0.1", "port": port},
        )
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "processor", "run", "--config", str(config)],
            env=processor_env(sandbox),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.1)
            assert requests.get(f"{base}/healthz", timeout=5).json()["status"] == "ok"
            while sandbox.pending_cancels() and time.monotonic() < deadline:
                time.sleep(0.2)
            ready = requests.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            metrics = requests.get(f"{base}/metrics", timeout=5).text
            assert 'cancel_requests_total{outcome="approved"}' in metrics
            assert "cancel_vendor_call_seconds_bucket" in metrics
            assert sandbox.api_key.split(":")[-1] not in metrics
        finally:
            daemon.send_signal(signal.SIGTERM)
            out, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err[-3000:]
        check = sandbox.check(initially_pending=before)
        assert check.ok and check.approved + check.failed == len(before)
