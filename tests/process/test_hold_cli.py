"""The hold window through the installed CLI, each command in its own process, as an operator meets
it: a vendor that turns to refusing every cancellation refuses no customer.

``run --once`` holds the refusals and latches (exit 1, one stderr line naming the adapter, the
reason and the command); ``status`` and ``waiting`` show the held requests; a bare ``resume`` is
refused (exit 2) and changes nothing; a daemon then answers ``/readyz`` 503 naming the latch and
``cancel_held`` in its metrics; ``resume --retry-held`` beside it reaches it within seconds (the
time from the resume to the next vendor call is measured from the vendor's ledger), and every
request ends approved, none refused, none terminated twice.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import requests
import yaml

from cancel_sandbox.local import Sandbox
from processor.ops.serving import free_port

from .test_crash import processor_env


def _subscription(request: dict[str, object]) -> str:
    params = request["asset"]["params"]  # type: ignore[index]
    return next(p["value"] for p in params if p["id"] == "subscription_id")  # type: ignore[index]


def _refuse(box: Sandbox, refuse: bool) -> None:
    for request in box.cancel_requests().values():
        if request["status"] == "pending":
            requests.put(
                f"{box.vendor.url}/admin/subscriptions/{_subscription(request)}",
                json={"status": "active", "refuse": refuse},
                timeout=10,
            ).raise_for_status()


def _held(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("select count(*) from requests where state = 'held'").fetchone()[0])


def test_an_operator_meets_the_hold_through_the_cli(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "journal.db"
    with Sandbox(generate=16, seed=5, refuse_pattern="") as box:
        _refuse(box, True)
        data = box.config_data(
            f"sqlite:///{db}",
            processing={"poll_interval": 30, "once_max_wait": 2, "concurrency": 2},
            http={"enabled": True, "host": "127.0.0.1", "port": port},
            guard={"hold": 600},
        )
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        env = processor_env(box)
        pending = box.pending_cancels()

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "processor", *args, "--config", str(config)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
            )

        once = cli("run", "--once", "--no-progress")
        assert once.returncode == 1, once.stderr[-2000:]
        assert "Traceback" not in once.stderr
        latch_lines = [line for line in once.stderr.splitlines() if "latched" in line]
        assert len(latch_lines) == 1, once.stderr[-2000:]
        assert "vendor" in latch_lines[0] and "refused answers in a row" in latch_lines[0]
        assert "cancel-processor resume vendor" in latch_lines[0]
        held = _held(db)
        assert 10 <= held <= 12  # ten in a row, plus what the two workers had in flight
        statuses = {r["status"] for i, r in box.cancel_requests().items() if i in pending}
        assert statuses == {"pending"}  # no customer refused, none approved

        status = cli("status")
        assert status.returncode == 0, status.stderr
        assert "Latched:" in status.stdout
        assert re.search(rf"\bheld\W+{held}\b", status.stdout), status.stdout
        assert "Held back from Connect" in status.stdout
        waiting = cli("waiting", "--format", "json")
        assert waiting.returncode == 0, waiting.stderr
        assert waiting.stdout.count("vendor latched; resume vendor --release-held") == held

        bare = cli("resume", "vendor")
        assert bare.returncode == 2
        assert f"{held} answer(s) held back from Connect ({held} refused)" in bare.stderr
        assert "--release-held" in bare.stderr and "nothing changed" in bare.stderr

        daemon = subprocess.Popen(
            [sys.executable, "-m", "processor", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            ready = None
            while time.monotonic() < deadline:
                try:
                    ready = requests.get(f"{base}/readyz", timeout=2)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            assert ready is not None and ready.status_code == 503
            assert "refused answers in a row" in ready.text
            assert "resume with: cancel-processor resume vendor" in ready.text
            metrics = requests.get(f"{base}/metrics", timeout=5).text
            assert f"cancel_held {float(held)}" in metrics

            calls_before = len(box.vendor_ledger()["calls"])
            _refuse(box, False)  # the vendor fixed
            resumed_at = time.time()
            result = cli("resume", "vendor", "--retry-held")
            assert result.returncode == 0, result.stderr
            assert f"{held} refused marked retry" in result.stdout
            deadline = time.monotonic() + 30
            while len(box.vendor_ledger()["calls"]) == calls_before:
                assert time.monotonic() < deadline, "no vendor call after the resume"
                time.sleep(0.05)
            first = box.vendor_ledger()["calls"][calls_before]
            took = datetime.fromisoformat(first["at"]).timestamp() - resumed_at
            print(f"resume to the next vendor call: {took:.2f} s")
            assert took < 5  # the daemon wakes on the release; its poll interval is 30 s
            deadline = time.monotonic() + 60
            while any(box.request(r)["status"] == "pending" for r in pending):
                assert time.monotonic() < deadline, "the retried requests did not finish"
                time.sleep(0.2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
        assert {box.request(r)["status"] for r in pending} == {"approved"}
        ended = [e["subscription_id"] for e in box.vendor_effects() if e["action"] == "terminate"]
        assert len(ended) == len(set(ended)) == len(pending)  # none twice, none refused
