"""``reconcile.every``: the daemon reconciles on its own and exports what it found.

A real ``python -m processor run`` against the mocks, its ops server on a free loopback port: once
the backlog is done, a clean reconciliation shows 0 divergences; a subscription re-activated at the
mock vendor behind the processor's back then shows as ``approved_but_active`` 1 on ``/metrics``
and one warning line; a SIGTERM during a (slowly paced) reconciliation ends the run early and the
daemon within its shutdown budget.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from cancel_sandbox.local import Sandbox
from processor.config.schema import ConfigError, load_config
from processor.daemon.signals import MARGIN
from processor.ops.serving import free_port

from .test_crash import processor_env

SHUTDOWN = 3.0  # processing.shutdown_timeout of the daemon below


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not _quietly(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _quietly(predicate: Callable[[], bool]) -> bool:
    try:
        return predicate()
    except (requests.ConnectionError, sqlite3.OperationalError):
        return False


def _metric(text: str, name: str, labels: str = "") -> float | None:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def _subscription(request: dict) -> str:  # type: ignore[type-arg]
    return next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")


def test_the_daemon_reconciles_on_schedule_and_stops_within_its_budget(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "journal.db"
    with Sandbox(generate=12, seed=21) as sandbox:
        before = sandbox.pending_cancels()
        data = sandbox.config_data(
            f"sqlite:///{db}",
            preview_noop=True,
            processing={"notes": False, "poll_interval": 0.3, "shutdown_timeout": SHUTDOWN},
            http={"enabled": True, "host": "127.0.0.1", "port": port},
            # Back to back, and slow: a run takes a few seconds (about ten subscriptions read at 4
            # a second), so the SIGTERM below lands in one; twenty at 3 a second bought nothing.
            reconcile={"every": 1, "rate": 4, "concurrency": 2},
            log={"level": "info", "format": "json"},
        )
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        log_path = tmp_path / "daemon.log"
        base = f"http://127.0.0.1:{port}"

        def metrics() -> str:
            return requests.get(f"{base}/metrics", timeout=5).text

        def completed_after(moment: float) -> Callable[[], bool]:
            return lambda: (
                (_metric(metrics(), "cancel_reconcile_last_completed_timestamp_seconds") or 0)
                > moment
            )

        with log_path.open("w") as log_file:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "processor", "run", "--config", str(config)],
                env=processor_env(sandbox),
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                text=True,
            )
            try:
                _wait_for(
                    lambda: not (sandbox.pending_cancels() & before), 90, "the backlog processed"
                )
                done = time.time()
                _wait_for(completed_after(done), 60, "a reconciliation after the backlog")
                kind = '{kind="approved_but_active"}'
                assert _metric(metrics(), "cancel_reconcile_divergences", kind) == 0

                cancels = sandbox.cancel_requests()
                approved = sorted(
                    r["id"]
                    for r in cancels.values()
                    if r["id"] in before
                    and r["status"] == "approved"
                    and r["asset"]["connection"]["type"] != "preview"
                )
                back = cancels[approved[0]]
                requests.put(
                    f"{sandbox.vendor.url}/admin/subscriptions/{_subscription(back)}",
                    json={"status": "active"},
                    timeout=10,
                ).raise_for_status()
                # The run in progress may have read that subscription before the change: wait for
                # the gauge (bounded), not for the next completion.
                _wait_for(
                    lambda: _metric(metrics(), "cancel_reconcile_divergences", kind) == 1,
                    60,
                    "the divergence on /metrics",
                )
                scraped = metrics()
                assert (
                    _metric(
                        scraped, "cancel_reconcile_divergences", '{kind="refused_but_terminated"}'
                    )
                    == 0
                )
                assert _metric(scraped, "cancel_reconcile_unreadable") == 0
                time.sleep(0.5)  # into the next (back-to-back) run
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(
                        timeout=SHUTDOWN + MARGIN
                    )  # the budget the daemon promises, not a speed
                finally:
                    if daemon.poll() is None:
                        daemon.kill()
                        daemon.wait(10)
        events = [
            json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
        ]
        assert daemon.returncode == 0, log_path.read_text()[-3000:]
        every = [e for e in events if e.get("event") == "reconcile_divergence"]
        # Reconcile reads Connect too: the mock's seeded history (cancels approved or pending
        # before this run, outside its backlog) has divergences of its own; this run's are these.
        warned = [e for e in every if e["request_id"] in before]
        assert warned and {e["request_id"] for e in warned} == {back["id"]}, warned
        assert {e["kind"] for e in warned} == {"approved_but_active"} and all(
            e["level"] == "warning" for e in warned
        )
        assert any(e.get("event") == "reconcile_interrupted" for e in events), (
            "the stop did not cut the run short"
        )
        assert not any("still busy" in line for line in log_path.read_text().splitlines())
        assert sandbox.environ()["CONNECT_API_KEY"] not in log_path.read_text()


@pytest.mark.parametrize(
    "value, fine",
    [(None, True), (3600, True), (1, True), (0.5, False), (-60, False), ("daily", False)],
)
def test_reconcile_every_is_off_by_default_and_at_least_a_second(
    tmp_path: Path, value: object, fine: bool
) -> None:
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump({"reconcile": {"every": value}}))
    if fine:
        assert load_config(path, environ={}).reconcile.every == value
        return
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert "reconcile.every" in str(raised.value)


def test_reconcile_defaults_are_off_over_seven_days(tmp_path: Path) -> None:
    path = tmp_path / "processor.yaml"
    path.write_text("{}\n")
    settings = load_config(path, environ={}).reconcile
    assert settings.every is None and settings.window == 7 * 86400
    path.write_text(yaml.safe_dump({"reconcile": {"window": 0}}))
    with pytest.raises(ConfigError, match="reconcile.window"):
        load_config(path, environ={})


def test_a_failed_run_is_logged_and_the_schedule_goes_on_until_stopped(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from processor.config.schema import Config
    from processor.journal import open_journal
    from processor.observe import Metrics
    from processor.ops.reconcile_schedule import ReconcileSchedule

    db = tmp_path / "journal.db"
    config = Config.model_validate(
        {"journal": {"url": f"sqlite:///{db}"}, "reconcile": {"every": 1}}
    )
    journal = open_journal(config.journal.url)
    journal.migrate()
    metrics = Metrics()
    schedule = ReconcileSchedule(config, journal, {}, metrics)
    try:
        result = schedule.run_once()
        assert result is not None and result.checked == 0
        assert (
            metrics.registry.get_sample_value("cancel_reconcile_last_completed_timestamp_seconds")
            or 0
        ) > 0
        assert (
            metrics.registry.get_sample_value(
                "cancel_reconcile_divergences", {"kind": "approved_but_active"}
            )
            == 0
        )
        with sqlite3.connect(db) as conn:
            conn.execute("drop table requests")  # the journal breaks under the running schedule
        with capture_logs() as logs:
            schedule.start()
            _wait_for(
                lambda: sum(e["event"] == "reconcile_failed" for e in logs) >= 2,
                20,
                "two failed runs",
            )
            assert schedule.join()
        failed = [e for e in logs if e["event"] == "reconcile_failed"]
        assert all(e["log_level"] == "error" and "SchemaError" in e["error"] for e in failed), (
            failed
        )
        assert len(failed) >= 2  # the schedule went on after the first failure
    finally:
        schedule.join()
        journal.close()
