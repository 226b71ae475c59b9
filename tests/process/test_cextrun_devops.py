"""The released ``cextrun`` (connect-extension-runner 43.1, in the session's runner virtualenv)
runs the extension against the mock marketplace's DevOps surface, as Connect would run it.

One module-wide set-up, as a vendor's dev loop has it: ``cancel-processor mock-marketplace
--tls-dir DIR --devops --devops-variables FILE`` in a subprocess (HTTPS from a throwaway local CA,
the DevOps websocket and routes, the runner's release lookup answered on loopback), the mock
vendor in this process, and ``cextrun`` started from extension/ with the environment the mock
wrote, start-up validation included (no ``-n``). Each case creates its cancel through the API and
waits for the task result the runner sends back over the websocket; then asserts on the
marketplace's request, the vendor's ledger and that result:

(a) a cancel the vendor accepts: terminated, approved, result ``success``;
(b) one the vendor refuses (its subscription id ends in 7): failed on Connect, result ``success``;
(c) one under an end-of-period policy: scheduled on Connect, nothing terminated yet;
(d) a grace period: suspended, result ``reschedule``; the timer moved to now in the journal, the
    schedule run from the hub: the runner's scheduled task ends the grace period (terminated,
    approved, result ``success`` with "1 due timer(s) run").

The last test sends SIGTERM: the runner says ``shutdown`` on the websocket and exits 0.
Every wait is bounded; ports are free loopback ports; times are printed, never asserted.
"""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cancel_sandbox.vendor import VendorSettings
from cancel_sandbox.vendor import create_app as create_vendor_app
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from processor.ops.serving import ServerThread, free_port
from tests.conftest import REPO
from tests.runner_env import runner_environ

pytestmark = pytest.mark.slow

PRODUCT, TEMPLATE = "PRD-100-200-300", "TL-100-200-301"
SCHEDULE = "EFS-0000-0001"
TOKEN_ENV = "DEVOPS_TEST_VENDOR_TOKEN"
# Subscriptions: the customer picks the policy (rules below); SUB-...7 is refused by the vendor.
CASES = {
    "approved": ("AS-1000-0000-0001", "SUB-00001", "TA-1000-0000-0001"),
    "refused": ("AS-1000-0000-0002", "SUB-00007", "TA-1000-0000-0001"),
    "scheduled": ("AS-1000-0000-0003", "SUB-00003", "TA-2000-0000-0002"),
    "grace": ("AS-1000-0000-0004", "SUB-00004", "TA-3000-0000-0003"),
}
START_TIMEOUT = 180.0  # the runner's start on a loaded machine: imports, validation, workers
TASK_TIMEOUT = 60.0


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def seed() -> dict[str, Any]:
    return {
        "products": [
            {
                "id": PRODUCT,
                "name": "Cloud Backup",
                "billing_period": "monthly",
                "items": [{"mpn": "BACKUP-STD", "name": "Backup Standard", "period": "Monthly"}],
                "templates": [{"id": TEMPLATE, "name": "Cancellation confirmed", "body": "Done."}],
            }
        ],
        "customers": [
            {"id": customer, "name": f"Customer {n}"}
            for n, customer in enumerate(sorted({c for _, _, c in CASES.values()}))
        ],
        "subscriptions": [
            {"id": asset, "product": PRODUCT, "customer": customer, "subscription_id": sub}
            for asset, sub, customer in CASES.values()
        ],
    }


def variables(vendor_url: str, journal: Path) -> dict[str, Any]:
    config = {
        "adapters": {
            "vendor": {
                "type": "http",
                "options": {
                    "base_url": vendor_url,
                    "idempotency": "key",
                    "auth": {"type": "bearer", "env": "VENDOR_API_TOKEN"},
                    "status": True,
                    "suspend": True,
                    "purge": True,
                    "outcomes": MOCK_VENDOR_OUTCOMES,
                },
            }
        },
        "defaults": {"adapter": "vendor"},
        "journal": {"url": f"sqlite:///{journal}"},
        # A refusal reaches Connect in the task that meets it; with the default hold the task is
        # rescheduled to the hold's end (tests/integration/test_eaas.py shows that).
        "guard": {"hold": 0},
        "policies": {
            "monthly": {"timing": "end_of_period"},
            "graceful": {"grace_days": 14},
        },
        "rules": [
            {"match": {"customer": [CASES["scheduled"][2]]}, "policy": "monthly"},
            {"match": {"customer": [CASES["grace"][2]]}, "policy": "graceful"},
        ],
    }
    return {
        "CANCEL_PROCESSOR_CONFIG_YAML": yaml.safe_dump(config),
        "CANCEL_PROCESSOR_APPROVE_TEMPLATES": {"from_mock": "approve_templates"},
        "CANCEL_PROCESSOR_SQLITE_PERSISTENT": "yes",
        "VENDOR_API_TOKEN": {"env": TOKEN_ENV, "secure": True},
    }


@dataclass
class Loop:
    """The mock (with its DevOps hub), the vendor, the runner."""

    url: str
    ca: Path
    key: str
    vendor: ServerThread
    journal: Path
    runner: subprocess.Popen[bytes]
    runner_log: Path
    started: float

    def get(self, path: str) -> Any:
        answer = requests.get(f"{self.url}{path}", verify=str(self.ca), timeout=10)
        answer.raise_for_status()
        return answer.json()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        answer = requests.request(
            method,
            f"{self.url}/public/v1/{path}",
            json=body,
            headers={"Authorization": self.key},
            verify=str(self.ca),
            timeout=10,
        )
        assert answer.status_code < 300, answer.text
        return answer.json()

    def hub(self) -> dict[str, Any]:
        return self.get("/admin/devops")  # type: ignore[no-any-return]

    def results(self, object_id: str) -> list[dict[str, Any]]:
        """Results the runner sent for ``object_id``'s tasks, in the order the tasks were sent."""
        tasks = self.hub()["tasks"]
        return [t for t in tasks if t["object_id"] == object_id and t["result"] is not None]

    def effects(self, subscription_id: str) -> list[str]:
        ledger = requests.get(f"{self.vendor.url}/admin/ledger", timeout=10).json()
        return [e["action"] for e in ledger["effects"] if e["subscription_id"] == subscription_id]

    def log_tail(self) -> str:
        return self.runner_log.read_text(errors="replace")[-4000:]


def _environment(env_file: Path) -> dict[str, str]:
    env = runner_environ()
    for line in env_file.read_text().splitlines():
        name, _, value = line.partition("=")
        env[name] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="module")
def loop(runner_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    work = tmp_path_factory.mktemp("devops-loop")
    (work / "seed.yaml").write_text(yaml.safe_dump(seed()))
    token = "devops-test-vendor-token"
    vendor = ServerThread(create_vendor_app(VendorSettings(token=token))).start()
    (work / "vars.yaml").write_text(yaml.safe_dump(variables(vendor.url, work / "journal.db")))
    port = free_port()
    mock_log = (work / "mock.log").open("wb")
    mock = subprocess.Popen(
        [sys.executable, "-m", "processor.cli.main", "mock-marketplace", "--port", str(port),
         "--generate", "0", "--seed-file", str(work / "seed.yaml"), "--tls-dir",
         str(work / "tls"), "--devops", "--devops-variables", str(work / "vars.yaml"),
         "--devops-schedule-every", "3600"],
        cwd=REPO, stdout=mock_log, stderr=subprocess.STDOUT,
        env={**os.environ, TOKEN_ENV: token},
    )  # fmt: skip
    runner = None
    try:
        env_file = work / "tls" / "cextrun.env"
        wait_for("the mock's cextrun.env", lambda: env_file.exists() or mock.poll() is not None, 60)
        assert mock.poll() is None, (work / "mock.log").read_text()
        env = _environment(env_file)
        assert env_file.stat().st_mode & 0o777 == 0o600  # it holds the API key
        url, ca = f"https://127.0.0.1:{port}", Path(env["SSL_CERT_FILE"])
        wait_for("the mock over HTTPS", lambda: _healthy(url, ca), 30)
        printed = (work / "mock.log").read_text()  # flushed before it serves
        assert "cextrun environment" in printed and env["API_KEY"].rsplit(":", 1)[1] not in printed
        runner_log = work / "runner.log"
        started = time.monotonic()
        with runner_log.open("wb") as out:
            runner = subprocess.Popen(
                [str(runner_python.parent / "cextrun"), "--no-rich-logging"],
                cwd=REPO / "extension",
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        journal = work / "journal.db"
        box = Loop(url, ca, env["API_KEY"], vendor, journal, runner, runner_log, started)

        def connected() -> bool:
            assert runner.poll() is None, f"cextrun exited {runner.returncode}:\n{box.log_tail()}"
            return any(r["runner_type"] == "background" for r in box.hub()["runners"])

        wait_for("the runner's background worker on the websocket", connected, START_TIMEOUT, 0.5)
        print(f"\ncextrun connected {time.monotonic() - started:.1f} s after its start")
        yield box
    finally:
        if runner is not None and runner.poll() is None:
            runner.kill()
            runner.wait(30)
        mock.send_signal(signal.SIGINT)
        try:
            mock.wait(30)
        except subprocess.TimeoutExpired:
            mock.kill()
            mock.wait(30)
        mock_log.close()
        vendor.stop()


def _healthy(url: str, ca: Path) -> bool:
    try:
        return requests.get(f"{url}/healthz", verify=str(ca), timeout=2).status_code == 200
    except requests.RequestException:
        return False


def cancel(loop: Loop, case: str) -> tuple[str, str, float]:
    """Create the case's cancel; its id, its subscription and when it was created."""
    asset, subscription, _ = CASES[case]
    created = loop.api("POST", "requests", {"type": "cancel", "asset": {"id": asset}})
    return created["id"], subscription, time.monotonic()


def first_result(loop: Loop, request_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        assert loop.runner.poll() is None, f"cextrun exited:\n{loop.log_tail()}"
        done = loop.results(request_id)
        return done[0] if done else None

    return wait_for(f"the task result for {request_id}", found, TASK_TIMEOUT)  # type: ignore[no-any-return]


def report(case: str, began: float, task: dict[str, Any]) -> None:
    out = task["result"]
    print(
        f"case {case}: {task['object_id']} {task['status']} -> {out['result']}"
        f"{' ' + str(out.get('countdown')) + 's' if out['result'] == 'reschedule' else ''}"
        f" | runner {task['seconds']:.2f} s, case {time.monotonic() - began:.2f} s"
    )


def test_a_cancel_the_vendor_accepts_is_approved(loop: Loop) -> None:
    request_id, subscription, began = cancel(loop, "approved")
    task = first_result(loop, request_id)
    report("approved", began, task)
    assert task["status"] == "pending" and task["result"]["result"] == "success"
    assert task["category"] == "background"
    assert loop.api("GET", f"requests/{request_id}")["status"] == "approved"
    assert loop.effects(subscription) == ["terminate"]


def test_a_cancel_the_vendor_refuses_is_failed_on_connect(loop: Loop) -> None:
    request_id, subscription, began = cancel(loop, "refused")
    task = first_result(loop, request_id)
    report("refused", began, task)
    assert task["result"]["result"] == "success"  # the task is done; the request is failed
    request = loop.api("GET", f"requests/{request_id}")
    assert request["status"] == "failed" and request["reason"]
    assert loop.effects(subscription) == []


def test_a_cancel_under_an_end_of_period_policy_is_scheduled(loop: Loop) -> None:
    request_id, subscription, began = cancel(loop, "scheduled")
    task = first_result(loop, request_id)
    report("scheduled", began, task)
    assert task["result"]["result"] == "success"
    request = loop.api("GET", f"requests/{request_id}")
    assert request["status"] == "scheduled" and request.get("planned_date")
    # Connect's next task is for the new status: the extension answers it without acting.
    again = wait_for(
        "the task for the scheduled status",
        lambda: [t for t in loop.results(request_id) if t["status"] == "scheduled"],
        TASK_TIMEOUT,
    )[0]
    assert again["result"]["result"] in ("success", "skip")
    assert loop.api("GET", f"requests/{request_id}")["status"] == "scheduled"
    assert loop.effects(subscription) == []


def test_the_timers_schedulable_ends_a_grace_period(loop: Loop) -> None:
    request_id, subscription, began = cancel(loop, "grace")
    task = first_result(loop, request_id)
    report("grace (cancel task)", began, task)
    assert task["result"]["result"] == "reschedule" and task["result"]["countdown"] >= 30
    assert loop.effects(subscription) == ["suspend"]
    assert loop.api("GET", f"requests/{request_id}")["status"] == "pending"

    # Fourteen days later: the grace period's end, in the row's dates and its timer, moved to now.
    ended = datetime.now(UTC) - timedelta(seconds=1)
    with sqlite3.connect(loop.journal) as db:
        changed = db.execute(
            "UPDATE requests SET next_attempt_at = ?, data = json_set(data, '$.terminate_at', ?) "
            "WHERE request_id = ?",
            (ended.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ended.isoformat(), request_id),
        ).rowcount
    assert changed == 1
    began = time.monotonic()
    queued = requests.post(
        f"{loop.url}/admin/devops/schedules/{SCHEDULE}/run", verify=str(loop.ca), timeout=10
    )
    assert queued.status_code == 202
    run = wait_for("the scheduled task's result", lambda: loop.results(SCHEDULE), TASK_TIMEOUT)[0]
    report("grace (schedule)", began, run)
    assert run["category"] == "scheduled" and run["result"]["result"] == "success"
    assert "1 due timer(s) run" in run["result"]["message"]
    assert loop.effects(subscription) == ["suspend", "terminate"]
    assert loop.api("GET", f"requests/{request_id}")["status"] == "approved"


def test_sigterm_ends_the_runner_cleanly(loop: Loop) -> None:
    began = time.monotonic()
    loop.runner.send_signal(signal.SIGTERM)
    code = loop.runner.wait(60)
    print(f"cextrun exit code {code} {time.monotonic() - began:.1f} s after SIGTERM")
    assert code == 0, loop.log_tail()
    background = [r for r in loop.hub()["runners"] if r["runner_type"] == "background"]
    assert background and all(r["shutdown_received"] for r in background)
    log = loop.runner_log.read_text(errors="replace")
    assert "Connect EaaS runtime terminated" in log
    assert "devops-test-vendor-token" not in log  # a secure variable's value stays out of the log
