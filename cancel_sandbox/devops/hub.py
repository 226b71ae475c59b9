"""Connect's DevOps side as connect-extension-runner uses it, beside the mock marketplace.

The runner opens a websocket at ``/public/v1/devops/ws/{environment}/{instance}`` (its
``Authorization`` header is the environment's API key) and speaks ``connect.eaas.core.proto``
version 2: it sends a ``setup_request`` (event subscriptions, declared variables, schedulables),
is answered a ``setup_response`` (variables, logging meta, event definitions), then receives
``task`` messages and sends each back with its ``output``; on SIGTERM it sends ``shutdown``. The
hub does Connect's part of that, in JSON, without importing the runner's models:

- a **cancel task** (``asset_cancel_request_processing``, category ``background``, sent on the
  background worker's connection) for every cancel request of the marketplace's store whose status
  the runner subscribed, once per status it reaches (a cancel created, a request that became
  ``scheduled``, ``revoking``...), with the installation's id and key as Connect sends them;
- a task answered ``reschedule`` (or ``retry``) is delivered again after its countdown (at least a
  second), at most :data:`MAX_DELIVERIES` times per request and status;
- a **scheduled task** (``scheduled_execution``) for each schedule when it falls due, or at once
  after ``POST /admin/devops/schedules/{id}/run``;
- the REST routes the runner calls: ``accounts`` (start-up validation reads the ``Connect-Version``
  header the gateway adds), ``devops/event-definitions``, the environment, its schedules and the
  installation.

``GET /admin/devops`` shows the runners that connected (their setup requests, variables' values
left out) and every task with the result the runner sent back: what tests assert on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from cancel_sandbox.devops.variables import Variable
from cancel_sandbox.marketplace import Store

__all__ = ["DevopsHub", "DevopsSettings", "EVENT_TYPE", "MAX_DELIVERIES"]

EVENT_TYPE = "asset_cancel_request_processing"
# The object statuses Connect's event definition lists (start-up validation checks the
# application's statuses against them).
OBJECT_STATUSES = ["pending", "inquiring", "approved", "failed", "scheduled", "revoking", "revoked"]
MAX_DELIVERIES = 20  # per request and status: a runner that always reschedules is not fed forever
HANDSHAKE_TIMEOUT = 30.0  # seconds for the runner's setup_request after the connection opens
_RETRY_RESULTS = {"reschedule", "slow_process_reschedule", "retry"}


@dataclass
class DevopsSettings:
    api_key: str = field(repr=False)  # the environment's key: the whole Authorization value
    environment_id: str = "ENV-0000-0000-01"
    installation_id: str = "EIN-0000-0000-0001"
    account: dict[str, str] = field(
        default_factory=lambda: {"id": "VA-000-000", "name": "Local Vendor Inc"}
    )
    variables: list[Variable] = field(default_factory=list)
    # schedule id -> (method, seconds between runs)
    schedules: dict[str, tuple[str, float]] = field(
        default_factory=lambda: {"EFS-0000-0001": ("run_due_timers", 900.0)}
    )
    connect_version: str = "43.0.0"  # major version 43: the runner 43.x line
    scan_interval: float = 0.5  # seconds between looks at the store for tasks to send

    @property
    def service_id(self) -> str:
        # The runner derives it the same way from the environment id.
        return f"SRVC-{self.environment_id[4:-3]}"


@dataclass
class Delivery:
    task_id: str
    category: str
    object_id: str
    status: str  # the request's status when sent ("" for a schedule)
    instance_id: str
    sent_at: str
    sent_monotonic: float
    result: dict[str, Any] | None = None
    seconds: float | None = None  # from sending the task to receiving its result

    def view(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "category": self.category,
            "object_id": self.object_id,
            "status": self.status,
            "instance_id": self.instance_id,
            "sent_at": self.sent_at,
            "result": self.result,
            "seconds": self.seconds,
        }


@dataclass
class Runner:
    instance_id: str
    connected_at: str
    setup: dict[str, Any]
    statuses: list[str]
    runner_type: str = ""  # "background" or "interactive" (its own websocket, its own tasks)
    shutdown_received: bool = False
    disconnected: bool = False

    def view(self) -> dict[str, Any]:
        declared = [
            {k: v for k, v in var.items() if k != "initial_value"}
            for var in self.setup.get("variables") or []
            if isinstance(var, dict)
        ]
        return {
            "instance_id": self.instance_id,
            "runner_type": self.runner_type,
            "connected_at": self.connected_at,
            "runner_version": self.setup.get("runner_version"),
            "event_subscriptions": self.setup.get("event_subscriptions"),
            "schedulables": self.setup.get("schedulables"),
            "declared_variables": declared,
            "shutdown_received": self.shutdown_received,
            "disconnected": self.disconnected,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _page(items: list[dict[str, Any]]) -> JSONResponse:
    count = len(items)
    return JSONResponse(
        items, headers={"Content-Range": f"items {0 if count else 0}-{max(count - 1, 0)}/{count}"}
    )


class DevopsHub:
    """The DevOps websocket and REST routes over ``store`` (see the module docstring)."""

    def __init__(self, store: Store, settings: DevopsSettings) -> None:
        self.store = store
        self.settings = settings
        self.runners: list[Runner] = []
        self.deliveries: dict[str, Delivery] = {}
        self._ids = itertools.count(1)
        self._seen: dict[str, str] = {}  # request id -> the status a task was sent for
        self._again: dict[tuple[str, str], float] = {}  # (request, status) -> when to resend
        self._count: dict[tuple[str, str], int] = {}
        start = time.monotonic()
        self._schedule_due = {sid: start + every for sid, (_, every) in settings.schedules.items()}

    # -- REST ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        devops = "/public/v1/devops/services/{svc}/environments/{env}"
        return [
            WebSocketRoute("/public/v1/devops/ws/{env}/{instance}", self._session),
            Route("/public/v1/accounts", self._accounts, methods=["GET"]),
            Route("/public/v1/devops/event-definitions", self._definitions, methods=["GET"]),
            Route(devops, self._environment, methods=["GET", "PUT"]),
            Route(f"{devops}/schedules/{{sid}}", self._schedule, methods=["GET"]),
            Route(
                "/public/v1/devops/services/{svc}/installations/{iid}",
                self._installation,
                methods=["GET"],
            ),
            Route("/admin/devops", self._admin, methods=["GET"]),
            Route("/admin/devops/schedules/{sid}/run", self._run_schedule, methods=["POST"]),
        ]

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        return headers.get("authorization") == self.settings.api_key

    @staticmethod
    def _error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error_code": code, "errors": [message]}, status)

    def _gate(self, request: Request) -> Response | None:
        if not self._authorized(request.headers):
            return self._error(401, "AUTH_001", "API request is unauthorized.")
        return None

    async def _accounts(self, request: Request) -> Response:
        return self._gate(request) or _page([{**self.settings.account, "type": "vendor"}])

    def definition(self) -> dict[str, Any]:
        return {
            "type": EVENT_TYPE,
            "group": "Fulfillment",
            "name": "Process cancel requests",
            "object_statuses": OBJECT_STATUSES,
            "api_resource_endpoint": "requests/{pk}",
            "api_collection_endpoint": "requests",
            "api_collection_filter": "and(eq(id,${_object_id_}),in(status,${_statuses_}))",
        }

    async def _definitions(self, request: Request) -> Response:
        return self._gate(request) or _page([self.definition()])

    def _ours(self, request: Request) -> Response | None:
        params = request.path_params
        if params.get("svc") != self.settings.service_id or params.get(
            "env", self.settings.environment_id
        ) != (self.settings.environment_id):
            return self._error(404, "REQ_001", f"Not found: {request.url.path}.")
        return None

    async def _environment(self, request: Request) -> Response:
        refused = self._gate(request) or self._ours(request)
        if refused:
            return refused
        if request.method == "PUT":  # the runner reports a worker restart (cloud mode only)
            await request.body()
        return JSONResponse(
            {"id": self.settings.environment_id, "type": "development", "runtime": "local"}
        )

    async def _schedule(self, request: Request) -> Response:
        refused = self._gate(request) or self._ours(request)
        if refused:
            return refused
        sid = request.path_params["sid"]
        if sid not in self.settings.schedules:
            return self._error(404, "REQ_001", f"Not found: schedule {sid}.")
        method, every = self.settings.schedules[sid]
        return JSONResponse(
            {"id": sid, "method": method, "parameter": {}, "status": "enabled", "every": every}
        )

    async def _installation(self, request: Request) -> Response:
        refused = self._gate(request) or self._ours(request)
        if refused:
            return refused
        if request.path_params["iid"] != self.settings.installation_id:
            return self._error(404, "REQ_001", f"Not found: {request.url.path}.")
        return JSONResponse(
            {
                "id": self.settings.installation_id,
                "environment": {"id": self.settings.environment_id},
                "owner": self.settings.account,
                "status": "installed",
                "settings": {},
            }
        )

    async def _admin(self, request: Request) -> Response:
        return JSONResponse(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        return {
            "environment_id": self.settings.environment_id,
            "runners": [r.view() for r in self.runners],
            "tasks": [d.view() for d in self.deliveries.values()],
        }

    async def _run_schedule(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        if sid not in self.settings.schedules:
            return self._error(404, "REQ_001", f"Not found: schedule {sid}.")
        self._schedule_due[sid] = time.monotonic()
        return JSONResponse({"id": sid, "queued": True}, 202)

    # -- the websocket ---------------------------------------------------------------------

    async def _session(self, websocket: WebSocket) -> None:
        params = websocket.path_params
        if not self._authorized(websocket.headers) or params["env"] != self.settings.environment_id:
            await websocket.close(code=1008)  # before accept: the runner sees a 403
            return
        await websocket.accept()
        try:
            runner = await self._handshake(websocket, str(params["instance"]))
        except (WebSocketDisconnect, TimeoutError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else "no setup request"
            if not isinstance(exc, WebSocketDisconnect):
                await websocket.close(code=1002, reason=reason[:120])
            return
        runner.runner_type = str(websocket.query_params.get("runner_type") or "")
        # Connect sends background and scheduled tasks to the background worker's connection;
        # this extension has no interactive events, so that worker only receives its setup.
        producer = (
            None
            if runner.runner_type == "interactive"
            else asyncio.create_task(self._produce(websocket, runner))
        )
        try:
            while True:
                text = await websocket.receive_text()
                try:
                    self._receive(runner, json.loads(text))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # a message Connect would not understand: dropped, session kept
        except WebSocketDisconnect:
            pass
        finally:
            runner.disconnected = True
            if producer is not None:
                producer.cancel()

    async def _handshake(self, websocket: WebSocket, instance_id: str) -> Runner:
        message = await asyncio.wait_for(websocket.receive_json(), HANDSHAKE_TIMEOUT)
        if (
            not isinstance(message, dict)
            or message.get("version") != 2
            or message.get("message_type") != "setup_request"
            or not isinstance(message.get("data"), dict)
        ):
            raise ValueError("expected a version 2 setup_request")
        setup = message["data"]
        statuses = (setup.get("event_subscriptions") or {}).get(EVENT_TYPE) or []
        runner = Runner(instance_id, _now(), setup, [str(s) for s in statuses])
        self.runners.append(runner)
        await websocket.send_json(
            {"version": 2, "message_type": "setup_response", "data": self.setup_response(setup)}
        )
        return runner

    def setup_response(self, setup: Mapping[str, Any]) -> dict[str, Any]:
        """What Connect answers: the environment's variables (a declared one not set there gets
        its initial value, as Connect creates it), logging meta and the event definitions."""
        given = {v.name: v.message() for v in self.settings.variables}
        for declared in setup.get("variables") or []:
            if isinstance(declared, dict) and declared.get("name") not in given:
                given[str(declared["name"])] = {
                    "name": declared["name"],
                    "value": str(declared.get("initial_value") or ""),
                    "secure": bool(declared.get("secure")),
                }
        definition = {k: v for k, v in self.definition().items() if k.startswith("api_")}
        return {
            "variables": list(given.values()),
            "environment_type": "development",
            "logging": {
                "log_level": "INFO",
                "runner_log_level": "INFO",
                "meta": {
                    "service_id": self.settings.service_id,
                    "account_id": self.settings.account["id"],
                    "account_name": self.settings.account["name"],
                },
            },
            "event_definitions": [{"event_type": EVENT_TYPE, **definition}],
            "environment_runtime": "local",
            "model_type": "setup_response",
        }

    def _receive(self, runner: Runner, message: Any) -> None:
        kind = message.get("message_type")
        if kind == "shutdown":
            runner.shutdown_received = True
            return
        if kind != "task":
            return
        data = message["data"]
        delivery = self.deliveries.get(str(data["options"]["task_id"]))
        if delivery is None or delivery.result is not None:
            return  # not ours, or a duplicate result
        delivery.result = dict(data.get("output") or {})
        delivery.seconds = round(time.monotonic() - delivery.sent_monotonic, 3)
        if delivery.category == "background" and delivery.result.get("result") in _RETRY_RESULTS:
            countdown = float(delivery.result.get("countdown") or 0)
            self._again[(delivery.object_id, delivery.status)] = time.monotonic() + max(
                1.0, countdown
            )

    async def _produce(self, websocket: WebSocket, runner: Runner) -> None:
        while True:
            for message in self._due_tasks(runner):
                await websocket.send_text(json.dumps(message))
            await asyncio.sleep(self.settings.scan_interval)

    def _due_tasks(self, runner: Runner) -> list[dict[str, Any]]:
        """The task messages to send now (no await in here: one session takes each)."""
        now = time.monotonic()
        with self.store.lock:
            self.store.tick()  # scheduled requests whose date passed become pending again
            current = [(r.id, r.status) for r in self.store.requests.values() if r.type == "cancel"]
        messages = []
        for request_id, status in current:
            key = (request_id, status)
            again = self._again.get(key)
            if status not in runner.statuses:
                continue
            if self._seen.get(request_id) == status and (again is None or again > now):
                continue
            if self._count.get(key, 0) >= MAX_DELIVERIES:
                continue
            self._seen[request_id] = status
            self._again.pop(key, None)
            self._count[key] = self._count.get(key, 0) + 1
            messages.append(self._task(runner, "background", EVENT_TYPE, request_id, status))
        for sid, due in self._schedule_due.items():
            if due <= now:
                self._schedule_due[sid] = now + self.settings.schedules[sid][1]
                messages.append(self._task(runner, "scheduled", "scheduled_execution", sid, ""))
        return messages

    def _task(
        self, runner: Runner, category: str, event_type: str, object_id: str, status: str
    ) -> dict[str, Any]:
        task_id = f"TQ-{next(self._ids):03d}-{object_id}"
        self.deliveries[task_id] = Delivery(
            task_id, category, object_id, status, runner.instance_id, _now(), time.monotonic()
        )
        options: dict[str, Any] = {"task_id": task_id, "task_category": category}
        if category == "background":
            # Connect sends the installation's own key with a vendor-audience event.
            options.update(
                api_key=self.settings.api_key, installation_id=self.settings.installation_id
            )
        return {
            "version": 2,
            "message_type": "task",
            "data": {
                "options": options,
                "input": {"event_type": event_type, "object_id": object_id, "data": {}},
                "model_type": "task",
            },
        }
