"""Every ops endpoint and every operator command against one real daemon run.

``python -m processor run`` as a subprocess (ops server on a free loopback port) against the
sandbox, with a policy that routes premium plans to a person and the vendor refusing some
subscriptions. Once the work is done, and while the daemon keeps running: the probes, the metric
names the issue lists, the status page, then ``status``, ``report`` (csv, json, table),
``waiting``, ``journal export``, ``park`` and ``retry`` as subprocesses on the same journal, each
checked against what the journal and the marketplace hold. The request parked and retried by hand
must then be carried out by the running daemon.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from cancel_sandbox.local import Sandbox
from processor.ops.serving import free_port

from .test_crash import processor_env

pytestmark = pytest.mark.slow

# The metric families the issue names: outcomes, vendor and Connect latency, retries by cause,
# 429s, backlog, age of the oldest pending cancel, parked requests, lease steals.
ISSUE_METRICS = (
    "cancel_requests_total",
    "cancel_vendor_call_seconds",
    "cancel_connect_call_seconds",
    "cancel_retries_total",
    "cancel_connect_throttled_total",
    "cancel_backlog",
    "cancel_oldest_pending_age_seconds",
    "cancel_parked",
    "cancel_lease_steals_total",
)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (requests.ConnectionError, sqlite3.OperationalError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _states(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select request_id, state from requests"))


def _gauge(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", metrics, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_endpoints_and_commands_against_a_running_daemon(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "journal.db"
    with Sandbox(generate=40, seed=3, refuse_pattern=r"[0-3]$") as sandbox:
        before = sandbox.pending_cancels()
        data = sandbox.config_data(
            f"sqlite:///{db}",
            processing={"poll_interval": 0.3},
            http={"enabled": True, "host": "127.0.0.1", "port": port},
            policies={
                "premium": {
                    "route_to": {"email": "csm@vendor.example", "note": "Your CSM calls you."}
                }
            },
            rules=[{"match": {"mpn": ["BACKUP-PREMIUM", "CHAT-PREMIUM"]}, "policy": "premium"}],
        )
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        env = processor_env(sandbox)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "processor", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "processor", *args, "--config", str(config)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        try:
            base = f"http://127.0.0.1:{port}"
            _wait_for(
                lambda: requests.get(f"{base}/healthz", timeout=2).status_code == 200,
                30,
                "/healthz",
            )
            done = {"approved", "failed", "waiting_human"}
            _wait_for(
                lambda: len(_states(db)) == len(before) and set(_states(db).values()) <= done,
                90,
                "every request approved, refused or waiting for a person",
            )
            states = _states(db)
            counts = Counter(states.values())
            assert counts["approved"] and counts["failed"] and counts["waiting_human"], counts

            # -- endpoints ------------------------------------------------------------------------
            assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
            ready = requests.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json() == {
                "journal": True,
                "connect": True,
                "circuits": {"noop": "closed", "vendor": "closed"},
                "vendors": {"vendor": True},  # the vendor's probe answers (cached 15 s)
            }
            metrics = requests.get(f"{base}/metrics", timeout=5).text
            for name in ISSUE_METRICS:
                assert f"# TYPE {name} " in metrics, name
            outcome = {
                m[0]: float(m[1])
                for m in re.findall(
                    r'^cancel_requests_total\{outcome="(\w+)"\} (\S+)$', metrics, re.M
                )
            }
            assert (
                outcome.get("approved") == counts["approved"]
                and outcome.get("failed") == counts["failed"]
            )
            assert _gauge(metrics, "cancel_parked") == 0
            assert 'cancel_vendor_call_seconds_count{operation="terminate"' in metrics
            assert 'cancel_connect_call_seconds_count{operation="approve"}' in metrics

            page = requests.get(f"{base}/", timeout=10)
            assert page.status_code == 200 and "Cancel processor" in page.text
            listed = set(re.findall(r'<tr data-request="([^"]+)"', page.text))
            assert listed == set(states)  # 40 requests: all of them fit on the page
            waiting_ids = sorted(rid for rid, s in states.items() if s == "waiting_human")
            one = requests.get(f"{base}/requests/{waiting_ids[0]}", timeout=10).text
            assert waiting_ids[0] in one and "waiting_human" in one

            # -- commands on the same journal, the daemon running ------------------------------
            status = cli("status")
            assert status.returncode == 0, status.stderr
            for state, n in counts.items():
                assert re.search(rf"{state}\s*│\s*{n}\b", status.stdout), (state, n, status.stdout)
            assert "Waiting for a person" in status.stdout and waiting_ids[0] in status.stdout

            report = cli("report", "--format", "csv")
            assert report.returncode == 0, report.stderr
            rows = list(csv.DictReader(io.StringIO(report.stdout)))
            assert {r["request_id"]: r["state"] for r in rows} == states
            as_json = json.loads(cli("report", "--format", "json").stdout)
            assert {r["request_id"]: r["state"] for r in as_json} == states
            table = cli("report", "--state", "failed")
            assert f"{counts['failed']} request(s): failed {counts['failed']}" in table.stdout

            waiting = cli("waiting", "--format", "json")
            assert waiting.returncode == 0, waiting.stderr
            assert (
                sorted(json.loads(line)["request_id"] for line in waiting.stdout.splitlines())
                == waiting_ids
            )

            export = cli("journal", "export")
            assert export.returncode == 0, export.stderr
            lines = [json.loads(line) for line in export.stdout.splitlines()]
            assert {line["request_id"]: line["state"] for line in lines} == states
            assert all(line["transitions"] for line in lines)

            approved_id = next(rid for rid, s in states.items() if s == "approved")
            refused = cli("park", approved_id, "--reason", "too late")
            assert refused.returncode == 1 and "final state" in refused.stderr

            chosen = waiting_ids[0]
            parked = cli("park", chosen, "--reason", "customer called: check first")
            assert parked.returncode == 0 and "-> parked" in parked.stdout, parked.stderr
            assert _gauge(requests.get(f"{base}/metrics", timeout=5).text, "cancel_parked") == 1
            assert chosen in requests.get(f"{base}/?state=parked", timeout=10).text
            time.sleep(1.0)  # three poll passes: the daemon must leave a parked request alone
            assert _states(db)[chosen] == "parked"
            assert sandbox.request(chosen)["status"] == "pending"

            retried = cli("retry", chosen, "--note", "checked with the customer")
            assert retried.returncode == 0 and "parked -> new" in retried.stdout, retried.stderr
            # Back to new, routing skipped: the running daemon carries it out.
            _wait_for(
                lambda: _states(db)[chosen] == "approved", 30, "the retried request to be approved"
            )
            assert sandbox.request(chosen)["status"] == "approved"
            timeline = requests.get(f"{base}/requests/{chosen}", timeout=10).text
            assert (
                "checked with the customer" in timeline
                and "customer called: check first" in timeline
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            out, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, err[-3000:]
        check = sandbox.check(initially_pending=before)
        assert check.ok and check.pending == len(waiting_ids) - 1
