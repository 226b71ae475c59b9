"""The Connect EaaS events application against the live mock marketplace and mock vendor: the same
effects as the daemon, concurrent deliveries of one task terminating once, and
the entry point the runner finds. (URL-mocked Connect: test_eaas.py, whose helpers these share.)"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml
from connect.client import ConnectClient
from connect.eaas.core.enums import ResultType

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import SANDBOX_VENDOR_TOKEN, VENDOR_TOKEN_ENV, Sandbox
from processor.config.schema import Config
from processor.daemon.core import Daemon
from processor.daemon.runtime import build_runtime, selector_for
from processor.eaas.app import CancelEventsApplication, InFlight
from processor.eaas.runtimes import RuntimeCache
from processor.eaas.variables import CONFIG_YAML, SQLITE_PERSISTENT

from .test_eaas import (
    application,
    isolated,  # noqa: F401 - the autouse fixture that puts the runtimes back
    vendor_effects,
)

# -- against the live mock marketplace -------------------------------------------------------------


def sandbox_variables(sandbox: Sandbox, journal: Path) -> dict[str, str]:
    config = sandbox.config_data(f"sqlite:///{journal}")
    return {
        CONFIG_YAML: yaml.safe_dump(config),
        VENDOR_TOKEN_ENV: SANDBOX_VENDOR_TOKEN,
        SQLITE_PERSISTENT: "yes",
    }


def deliver_until_settled(
    app: CancelEventsApplication, sandbox: Sandbox, request_ids: set[str]
) -> Counter[str]:
    """The runner's part: fetch each request fresh, call the handler, deliver rescheduled tasks
    again (without waiting the countdown: the journal decides when a request is due)."""
    responses: Counter[str] = Counter()
    waiting = set(request_ids)
    for _ in range(60):
        if not waiting:
            break
        for request_id in sorted(waiting):
            payload = requests.get(
                f"{sandbox.endpoint}/requests/{request_id}",
                headers={"Authorization": sandbox.api_key},
                timeout=10,
            ).json()
            response = app.handle_cancel_request(payload)
            responses[response.status] += 1
            if response.status != ResultType.RESCHEDULE:
                waiting.discard(request_id)
        time.sleep(0.2)
    assert not waiting, f"still rescheduled: {sorted(waiting)[:5]}"
    return responses


def outcome(sandbox: Sandbox, request_ids: set[str]) -> tuple[dict[str, str], Counter[str]]:
    cancels = sandbox.cancel_requests()
    statuses = {rid: cancels[rid]["status"] for rid in request_ids}
    terminations = Counter(
        e["subscription_id"] for e in vendor_effects(sandbox) if not e.get("duplicate")
    )
    return statuses, terminations


def test_the_events_app_has_the_same_effects_as_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = FaultSettings(error_rate=0.15, seed=9)  # some vendor outages: both must only delay
    with (
        Sandbox(generate=30, seed=21, vendor_faults=faults) as by_daemon,
        Sandbox(generate=30, seed=21, vendor_faults=faults) as by_events,
    ):
        pending = by_daemon.pending_cancels()
        assert pending == by_events.pending_cancels()

        for name, value in by_daemon.environ().items():
            monkeypatch.setenv(name, value)
        config = Config.model_validate(by_daemon.config_data(f"sqlite:///{tmp_path}/daemon.db"))
        runtime = build_runtime(config)
        try:
            summary = Daemon(
                runtime.engine, runtime.marketplace, selector_for(config), once=True
            ).run()
        finally:
            runtime.close()
        monkeypatch.delenv(VENDOR_TOKEN_ENV)  # the events app must get the secret from its variable
        monkeypatch.delenv("CONNECT_API_KEY")  # ... and Connect's key from the runner's client

        client = ConnectClient(by_events.api_key, endpoint=by_events.endpoint)
        app = application(sandbox_variables(by_events, tmp_path / "events.db"), client)
        responses = deliver_until_settled(app, by_events, pending)

        daemon_statuses, daemon_terminations = outcome(by_daemon, pending)
        events_statuses, events_terminations = outcome(by_events, pending)
        events_check = by_events.check(initially_pending=pending)

    assert summary.complete
    assert events_statuses == daemon_statuses
    assert set(events_statuses.values()) == {"approved", "failed"}
    assert events_terminations == daemon_terminations and set(events_terminations.values()) == {1}
    assert events_check.ok, events_check
    assert responses[ResultType.SUCCESS] == len(pending) and responses[ResultType.RESCHEDULE] > 0


class AnotherRunnerInstance(CancelEventsApplication):
    """A second runner process: its own runtime (engine, owner, journal pool), the same journal."""

    runtimes = RuntimeCache()
    in_flight = InFlight()


def test_concurrent_deliveries_of_one_task_terminate_once(tmp_path: Path) -> None:
    # A vendor without idempotency: a second terminate call would show as a duplicate effect.
    slow_vendor = FaultSettings(latency_ms=300)  # the deliveries are in flight together
    with Sandbox(
        generate=3, seed=5, vendor_mode="none", refuse_pattern="^$", vendor_faults=slow_vendor
    ) as sandbox:
        request_id = sorted(sandbox.pending_cancels())[0]
        payload = sandbox.cancel_requests()[request_id]
        variables = sandbox_variables(sandbox, tmp_path / "journal.db")
        client = ConnectClient(sandbox.api_key, endpoint=sandbox.endpoint)
        start = threading.Barrier(3)
        answers: dict[str, str] = {}

        def deliver(name: str, cls: type[CancelEventsApplication]) -> None:
            app = application(variables, client, cls)
            start.wait(timeout=10)
            answers[name] = app.handle_cancel_request(payload).status

        try:
            threads = [
                threading.Thread(target=deliver, args=("same instance", CancelEventsApplication)),
                threading.Thread(
                    target=deliver, args=("same instance again", CancelEventsApplication)
                ),
                threading.Thread(target=deliver, args=("other instance", AnotherRunnerInstance)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            later = application(variables, client).handle_cancel_request(payload).status
            effects = [e for e in vendor_effects(sandbox) if e["request_id"] == request_id]
            calls = [c for c in sandbox.vendor_ledger()["calls"] if c["action"] == "terminate"]
            status = sandbox.cancel_requests()[request_id]["status"]
        finally:
            AnotherRunnerInstance.runtimes.close()

    assert len(answers) == 3 and set(answers.values()) <= {
        ResultType.SUCCESS,
        ResultType.RESCHEDULE,
    }
    assert ResultType.SUCCESS in answers.values()
    assert later == ResultType.SUCCESS and status == "approved"
    assert len(effects) == 1 and not effects[0]["duplicate"]
    assert len(calls) == 1


def test_the_events_app_is_declared_by_entry_point_as_the_runner_finds_it() -> None:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group="connect.eaas.ext")}
    assert found["eventsapp"].load() is CancelEventsApplication
