"""``cancel-processor reconcile`` against the real mocks: a subscription re-activated at the vendor
behind the processor's back, one refused on Connect but terminated at the vendor anyway."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import requests
import yaml

from cancel_sandbox.local import Sandbox
from processor.ops.reconcile import _Pace


def cli(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **sandbox.environ()}
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def subscription(request: dict[str, Any]) -> str:
    return next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")


def test_reconcile_lists_what_the_vendor_changed_behind_our_back(tmp_path: Path) -> None:
    with Sandbox(generate=20, seed=21) as sandbox:
        data = sandbox.config_data(
            f"sqlite:///{tmp_path / 'journal.db'}", preview_noop=True, processing={"notes": False}
        )
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        before = sandbox.pending_cancels()
        done = cli(sandbox, "run", "--once", "-c", str(config))
        assert done.returncode == 0, done.stderr[-2000:]
        since = "2000-01-01"
        clean = cli(sandbox, "reconcile", "-c", str(config), "--since", since)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert " 0 divergent, 0 unreadable" in clean.stdout

        cancels = sandbox.cancel_requests()
        by_vendor = [
            r
            for r in cancels.values()
            if r["id"] in before and r["asset"]["connection"]["type"] != "preview"
        ]
        approved = sorted(
            (r for r in by_vendor if r["status"] == "approved"), key=lambda r: r["id"]
        )
        refused = sorted((r for r in by_vendor if r["status"] == "failed"), key=lambda r: r["id"])
        assert approved and refused
        back, ended = approved[0], refused[0]
        for request, status in ((back, "active"), (ended, "terminated")):
            requests.put(
                f"{sandbox.vendor.url}/admin/subscriptions/{subscription(request)}",
                json={"status": status},
                timeout=10,
            ).raise_for_status()

        table = cli(sandbox, "reconcile", "-c", str(config), "--since", since)
        assert table.returncode == 1, table.stdout + table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:5] == [
            "divergence",
            "request_id",
            "journal_state",
            "vendor_status",
            "subscription_id",
        ]
        rows = {line.split()[1]: line.split() for line in lines[1:-1]}
        assert len(rows) == 2, table.stdout
        assert rows[back["id"]][:5] == [
            "approved_but_active",
            back["id"],
            "approved",
            "active",
            subscription(back),
        ]
        assert rows[ended["id"]][:5] == [
            "refused_but_terminated",
            ended["id"],
            "failed",
            "terminated",
            subscription(ended),
        ]
        assert "2 divergent" in lines[-1]

        as_json = json.loads(
            cli(
                sandbox, "reconcile", "-c", str(config), "--since", since, "--format", "json"
            ).stdout
        )
        assert (
            as_json["status"] == 1 and as_json["skipped"] >= 1
        )  # preview requests: noop, no status read
        assert {d["request_id"]: d["divergence"] for d in as_json["divergences"]} == {
            back["id"]: "approved_but_active",
            ended["id"]: "refused_but_terminated",
        }
        assert as_json["checked"] == len(by_vendor)
        as_csv = list(
            csv.DictReader(
                io.StringIO(
                    cli(
                        sandbox, "reconcile", "-c", str(config), "--since", since, "--format", "csv"
                    ).stdout
                )
            )
        )
        assert sorted(r["request_id"] for r in as_csv) == sorted([back["id"], ended["id"]])

        # The range is by the journal's last change: nothing changed after now.
        later = cli(sandbox, "reconcile", "-c", str(config), "--since", "2999-01-01")
        assert later.returncode == 0 and " 0 checked" in later.stdout


def test_the_pace_spaces_calls_across_threads() -> None:
    pace, stamps, lock = _Pace(rate=50.0), [], threading.Lock()

    def call() -> None:
        for _ in range(5):
            pace.wait()
            with lock:
                stamps.append(__import__("time").monotonic())

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    stamps.sort()
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # 20 calls at 50/s take at least 19 gaps of 20 ms (small slack for clock resolution)
    assert len(stamps) == 20 and stamps[-1] - stamps[0] >= 19 * 0.02 * 0.95, gaps
