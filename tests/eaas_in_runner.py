"""The extension as connect-extension-runner 43.1 runs it: the runner's own discovery, handler and
task managers, against the live mock marketplace and mock vendor.

Runs only inside the virtualenv that tests/process/test_eaas_runner_env.py builds (the runner,
connect-eaas-core 37.4 and pydantic 1.10 beside this project); the main suite does not collect it
(no ``test_`` prefix).

What is the runner's and what is the test's:

- the runner: entry-point discovery (``EventsApp``), the application object per task, the Connect
  clients it hands the task, the fetch of the request (the event definition's filter on the
  statuses the application subscribed, then the resource), the call, the task result;
- the test: the runner's dynamic configuration (what Connect's websocket would send: variables,
  event definitions), Connect's part of the API address (the runner always says ``https://`` plus
  ``API_ADDRESS``; the mock serves plain HTTP on 127.0.0.1, so ``get_api_url`` is pointed at it),
  and the DevOps endpoint that holds a schedule (a tiny local server: the mock has no DevOps API).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from connect.client import AsyncConnectClient
from connect.eaas.core.enums import ResultType
from connect.eaas.core.proto import (
    EventDefinition,
    Logging,
    LogMeta,
    SetupResponse,
    Task,
    TaskInput,
    TaskOptions,
)
from connect.eaas.runner.config import ConfigHelper
from connect.eaas.runner.handlers.events import EventsApp
from connect.eaas.runner.managers.background import BackgroundTasksManager
from connect.eaas.runner.managers.scheduled import ScheduledTasksManager
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from cancel_sandbox.local import SANDBOX_VENDOR_TOKEN, VENDOR_TOKEN_ENV, Sandbox
from processor.eaas.app import EVENT_TYPE, RUNTIMES, CancelEventsApplication
from processor.eaas.variables import CONFIG_YAML, SQLITE_PERSISTENT
from processor.ops.serving import ServerThread

# Connect's definition of the event (the runner reads it from the setup message).
DEFINITION = EventDefinition(
    event_type=EVENT_TYPE,
    api_resource_endpoint="requests/{pk}",
    api_collection_endpoint="requests",
    api_collection_filter="and(eq(id,${_object_id_}),in(status,${_statuses_}))",
)
SERVICE, ENVIRONMENT, SCHEDULE = "SRVC-1234-5678", "ENV-1234-5678-01", "EFS-1234"
# One loop for the module, as the runner has one for its life: connect-openapi-client keeps its
# async HTTP connections between calls, and they belong to the loop that opened them.
LOOP = asyncio.new_event_loop()


class LocalConfig(ConfigHelper):
    """The runner's configuration, with Connect's API at the mock's plain-HTTP address."""

    def __init__(self, api_url: str) -> None:
        super().__init__(secure=False)
        self.api_url = api_url

    def get_api_url(self) -> str:
        return self.api_url


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(generate=24, seed=17) as box:
        monkeypatch.setenv("API_KEY", box.api_key)
        monkeypatch.setenv("ENVIRONMENT_ID", ENVIRONMENT)
        monkeypatch.setenv("INSTANCE_ID", "INS-1")
        monkeypatch.delenv(VENDOR_TOKEN_ENV, raising=False)  # the secret comes from a variable
        yield box
    RUNTIMES.close()


@pytest.fixture
def devops() -> Iterator[ServerThread]:
    """Connect's DevOps API for the one schedule the test created in the DevOps module."""

    async def schedule(request: Any) -> JSONResponse:
        return JSONResponse(
            {"id": request.path_params["sid"], "method": "run_due_timers", "parameter": {}}
        )

    path = "/public/v1/devops/services/{svc}/environments/{env}/schedules/{sid}"
    with ServerThread(Starlette(routes=[Route(path, schedule)])) as server:
        yield server


def runner(box: Sandbox, variables: dict[str, str]) -> tuple[LocalConfig, EventsApp]:
    config = LocalConfig(box.endpoint)
    config.update_dynamic_config(
        SetupResponse(
            variables=[{"name": k, "value": v} for k, v in variables.items()],
            environment_type="development",
            logging=Logging(log_level="INFO", meta=LogMeta(service_id=SERVICE)),
            event_definitions=[DEFINITION],
        )
    )
    return config, EventsApp(config)


def variables(box: Sandbox, journal: Path, **sections: Any) -> dict[str, str]:
    return {
        CONFIG_YAML: yaml.safe_dump(box.config_data(f"sqlite:///{journal}", **sections)),
        VENDOR_TOKEN_ENV: SANDBOX_VENDOR_TOKEN,
        SQLITE_PERSISTENT: "yes",
    }


def run_task(
    config: LocalConfig, handler: EventsApp, object_id: str, *, scheduled: str | None = None
) -> Task:
    """One task through the runner's task manager; its result message (what goes back to
    Connect)."""

    async def go() -> Task:
        results: asyncio.Queue[Task] = asyncio.Queue()
        if scheduled is None:
            manager: Any = BackgroundTasksManager(config, handler, results.put)
            category, event_type = "background", EVENT_TYPE
        else:
            manager = ScheduledTasksManager(config, handler, results.put)
            manager.client = AsyncConnectClient(
                config.api_key, endpoint=f"{scheduled}/public/v1", use_specs=False
            )
            category, event_type = "scheduled", "scheduled_execution"
        task = Task(
            options=TaskOptions(task_id=f"TQ-{object_id}", task_category=category),
            input=TaskInput(event_type=event_type, object_id=object_id),
        )
        await manager.submit(task)
        return await asyncio.wait_for(results.get(), timeout=120)

    return LOOP.run_until_complete(go())


def pending_by_subscription(box: Sandbox) -> tuple[list[str], list[str]]:
    """Pending cancels the vendor accepts, and those it refuses (subscription ids ending in 7)."""
    accepted, refused = [], []
    for request_id in sorted(box.pending_cancels()):
        params = box.cancel_requests()[request_id]["asset"].get("params") or []
        sub = next((p.get("value") for p in params if p.get("id") == "subscription_id"), None)
        if sub:
            (refused if str(sub).endswith("7") else accepted).append(request_id)
    return accepted, refused


def test_the_runner_discovers_the_application_by_its_entry_point(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    _, handler = runner(sandbox, variables(sandbox, tmp_path / "j.db"))
    assert handler.get_application() is CancelEventsApplication
    assert handler.events[EVENT_TYPE]["method"] == "handle_cancel_request"
    assert [s["method"] for s in handler.schedulables] == ["run_due_timers"]
    assert handler.should_start and handler.audience == ["vendor"]


def test_tasks_run_by_the_runner_approve_reschedule_and_fail(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config, handler = runner(sandbox, variables(sandbox, tmp_path / "j.db"))
    accepted, refused = pending_by_subscription(sandbox)
    approved, outage, refusal = accepted[0], accepted[1], refused[0]

    done = run_task(config, handler, approved)
    assert done.output.result == ResultType.SUCCESS
    assert sandbox.request(approved)["status"] == "approved"

    requests.put(f"{sandbox.vendor.url}/admin/faults", json={"error_rate": 1.0}, timeout=10)
    later = run_task(config, handler, outage)
    assert later.output.result == ResultType.RESCHEDULE and later.output.countdown >= 30
    assert sandbox.request(outage)["status"] == "pending"
    requests.put(f"{sandbox.vendor.url}/admin/faults", json={"error_rate": 0.0}, timeout=10)

    failed = run_task(config, handler, refusal)
    assert (
        failed.output.result == ResultType.SUCCESS
    )  # the task is done; the request is failed on Connect
    assert sandbox.request(refusal)["status"] == "failed"

    again = run_task(
        config, handler, approved
    )  # an approved request no longer matches the statuses
    assert again.output.result == ResultType.SKIP
    terminated = [
        e["subscription_id"] for e in sandbox.vendor_effects() if e["action"] == "terminate"
    ]
    assert len(terminated) == 1


def test_scheduled_then_revoking_through_the_runner(sandbox: Sandbox, tmp_path: Path) -> None:
    monthly = {
        "policies": {"monthly": {"timing": "end_of_period"}},
        "defaults": {"policy": "monthly"},
    }
    config, handler = runner(sandbox, variables(sandbox, tmp_path / "j.db", **monthly))
    request_id = pending_by_subscription(sandbox)[0][0]

    first = run_task(config, handler, request_id)
    assert first.output.result == ResultType.SUCCESS
    assert sandbox.request(request_id)["status"] == "scheduled"
    while_scheduled = run_task(config, handler, request_id)  # Connect's task for the new status
    assert while_scheduled.output.result in (ResultType.SUCCESS, ResultType.SKIP)
    assert sandbox.request(request_id)["status"] == "scheduled"

    sandbox.act(request_id, "revoke", {"reason": "The customer changed their mind."})
    revoked = run_task(config, handler, request_id)
    assert revoked.output.result == ResultType.SUCCESS
    assert sandbox.request(request_id)["status"] == "revoked"
    assert [e for e in sandbox.vendor_effects() if e["action"] == "terminate"] == []


def test_a_grace_timer_is_fired_by_the_schedulable(
    sandbox: Sandbox, tmp_path: Path, devops: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "j.db"
    graceful = {"policies": {"graceful": {"grace_days": 14}}, "defaults": {"policy": "graceful"}}
    config, handler = runner(sandbox, variables(sandbox, journal, **graceful))
    request_id = pending_by_subscription(sandbox)[0][0]

    suspended = run_task(config, handler, request_id)
    assert suspended.output.result == ResultType.RESCHEDULE
    assert [e["action"] for e in sandbox.vendor_effects()] == ["suspend"]
    nothing_due = run_task(config, handler, SCHEDULE, scheduled=devops.url)
    assert (
        nothing_due.output.result == ResultType.SUCCESS
        and "0 due timer(s)" in nothing_due.output.message
    )

    # Fourteen days later: the grace period's end, in the row's dates and its timer, moved to now
    # (the processor in this process runs on the wall clock).
    ended = datetime.now(UTC) - timedelta(seconds=1)
    with sqlite3.connect(journal) as db:
        db.execute(
            "UPDATE requests SET next_attempt_at = ?, data = json_set(data, '$.terminate_at', ?) "
            "WHERE request_id = ?",
            (ended.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ended.isoformat(), request_id),
        )
    with caplog.at_level(logging.INFO, logger=EventsApp.LOGGER_NAME):
        fired = run_task(config, handler, SCHEDULE, scheduled=devops.url)
    assert fired.output.result == ResultType.SUCCESS, fired.output.message
    assert "1 due timer(s) run" in fired.output.message
    assert [e["action"] for e in sandbox.vendor_effects()] == ["suspend", "terminate"]
    assert sandbox.request(request_id)["status"] == "approved"
    # The processor's own events reached the runner's extension logger, with their fields as extra.
    events = [
        r
        for r in caplog.records
        if r.name == EventsApp.LOGGER_NAME and getattr(r, "request_id", None)
    ]
    assert any(r.request_id == request_id for r in events)
    assert all(
        "\n" not in r.getMessage() for r in caplog.records if r.name == EventsApp.LOGGER_NAME
    )
