"""The Connect EaaS events application: cancel requests delivered as
``asset_cancel_request_processing`` tasks, handled by the same engine, journal and adapters as the
daemon.

Connect delivers a task per request and status; connect-extension-runner fetches the request,
calls :meth:`CancelEventsApplication.handle_cancel_request` with it, and reports the response.
The engine's answer becomes the task's result:

==========================================  ==================================================
engine result                               task response
==========================================  ==================================================
approved, failed, closed, revoked,          ``done``: the request left ``pending`` on Connect
scheduled
parked, waiting_human                       ``skip`` with the reason: a person must act. The
                                            journal records it; the Connect request stays
                                            pending and is never failed because of this
ignored                                     ``skip`` with why (status, product not configured)
new, terminating, terminated, refusing,     ``reschedule``: transient or not yet due. The
suspending, suspended, purging, held, busy, countdown is the journal's ``next_attempt_at``
lease_lost, anything unexpected             when it has one (at least 30 s, at most a day)
==========================================  ==================================================

A configuration the processor cannot use, or a journal it cannot reach, reschedules too (300 s and
60 s) and logs why: the task is kept until an operator fixes it, and no Connect request is failed.
An installation with no product configured yet reschedules for an hour
(:data:`NOT_CONFIGURED_RETRY`): a cancel that arrives before the vendor set the extension up is
kept, never skipped. Other exceptions propagate; the runner records them and delivers the task
again.

Connect is reached with ``installation_client`` when the runner gives one (an extension with
``audience: vendor`` installed by several accounts: each task acts with the installing account's
key), else with ``client``. The processor's log events go to the runner's logger (``self.logger``),
one record each with the structured fields as ``extra``; nothing is written to stderr or added to
the root logger.

:meth:`CancelEventsApplication.run_due_timers` is the schedulable (``@schedulable``) that does what
no task triggers: due grace/retention timers, stranded claims, owed notes
(:mod:`processor.eaas.maintenance`). Connect runs it on a schedule created in the DevOps module.
A schedule's task carries no installation, so it acts with the extension's own key.

Repeated deliveries are harmless: the runner may deliver a task twice, even concurrently (a
timed-out handler still running), and Connect spreads tasks over runner instances that do not
coordinate. Within a process, :class:`InFlight` turns a second concurrent delivery away
(reschedule); across processes the journal's claim lets one of them act while the other sees
``busy`` (reschedule) or the final state (``done``). The vendor is never called twice for one
subscription.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog
from connect.client import ConnectClient
from connect.eaas.core.decorators import event, schedulable, variables
from connect.eaas.core.enums import ResultType
from connect.eaas.core.extension import EventsApplicationBase
from connect.eaas.core.responses import BackgroundResponse, ScheduledExecutionResponse

from processor.config.schema import ConfigError
from processor.daemon.runtime import Runtime
from processor.eaas.maintenance import run_maintenance
from processor.eaas.runtimes import RuntimeCache
from processor.eaas.variables import DECLARED, NotConfigured, config_from_variables
from processor.engine.results import Outcome, Reached
from processor.journal.base import JournalError, SchemaError, State
from processor.model import admitted
from processor.observe import log_through, mask

__all__ = [
    "CancelEventsApplication",
    "InFlight",
    "EVENT_TYPE",
    "STATUSES",
    "RUNTIMES",
    "IN_FLIGHT",
    "respond",
    "countdown",
]

EVENT_TYPE = "asset_cancel_request_processing"
# pending is processed; scheduled and revoking are what the cancellation policies act on (end of
# period, withdrawal): subscribed now so that an installation does not change when they arrive.
STATUSES = ["pending", "scheduled", "revoking"]

MIN_COUNTDOWN = 30  # Connect's floor for a reschedule
MAX_COUNTDOWN = 86_400  # a later timer is re-read on the next delivery, which reschedules again
CONFIG_RETRY = 300
NOT_CONFIGURED_RETRY = (
    3600  # an installation waiting to be set up: hourly, without filling the task list
)
JOURNAL_RETRY = 60

_DONE = frozenset({State.APPROVED, State.FAILED, State.CLOSED, State.REVOKED, State.SCHEDULED})
_FOR_A_PERSON = frozenset({State.PARKED, State.WAITING_HUMAN})


class InFlight:
    """Request ids being handled in this process. The journal's lease does not keep a process off
    its own claims (they share one owner), so a second delivery of a task that is still running
    here -- the runner re-runs a handler that timed out -- is turned away before it claims."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, request_id: str) -> Iterator[bool]:
        """True (and held until the block ends) unless ``request_id`` is already held."""
        with self._lock:
            mine = request_id not in self._ids
            self._ids.add(request_id)
        try:
            yield mine
        finally:
            if mine:
                with self._lock:
                    self._ids.discard(request_id)


# One of each per process: the runner builds a new application object for every task.
RUNTIMES = RuntimeCache()
IN_FLIGHT = InFlight()


# connect-eaas-core has no type information: its base class and decorators are Any to mypy.
@variables(DECLARED)
class CancelEventsApplication(EventsApplicationBase):  # type: ignore[misc]
    """Processes cancel requests of the installation's products as Connect delivers them.

    ``runtimes`` and ``in_flight`` are process-wide; a subclass with its own behaves as another
    runner instance would (tests use that to show that instances need no coordination).
    """

    runtimes: ClassVar[RuntimeCache] = RUNTIMES
    in_flight: ClassVar[InFlight] = IN_FLIGHT

    @classmethod
    def on_startup(cls, logger: Any, config: dict[str, Any]) -> None:
        """At setup (the runner calls it once Connect's setup response arrived): say at once when
        the variables cannot configure the processor -- a secret in clear text in
        ``CANCEL_PROCESSOR_CONFIG_YAML`` among them -- rather than at the first task. Tasks refuse
        the same variables (rescheduled, never failed) until they are fixed."""
        try:
            config_from_variables(config)
        except ConfigError as exc:
            logger.error("the extension's variables are refused: %s", mask(str(exc)))

    @property
    def connect(self) -> ConnectClient:
        """The client that acts for this installation (see the module docstring)."""
        return getattr(self, "installation_client", None) or self.client

    @contextlib.contextmanager
    def _task_logging(self) -> Iterator[None]:
        """The processor's events to the runner's logger, with the task id the runner gives its
        own records (the handler runs in one thread of the runner's pool for the whole task)."""
        target = getattr(self.logger, "logger", self.logger)  # the runner gives a LoggerAdapter
        if isinstance(target, logging.Logger):
            log_through(target)
        extra = getattr(self.logger, "extra", None) or {}
        with structlog.contextvars.bound_contextvars(
            **{k: v for k, v in extra.items() if k == "task_id"}
        ):
            yield

    @event(EVENT_TYPE, statuses=STATUSES)  # type: ignore[untyped-decorator]
    def handle_cancel_request(self, request: dict[str, Any]) -> BackgroundResponse:
        with self._task_logging():
            return self._handle(admitted(request))

    def _handle(self, request: dict[str, Any]) -> BackgroundResponse:
        request_id = _request_id(request) or "<no id>"
        try:
            with self.in_flight.hold(request_id) as mine:
                if not mine:
                    self.logger.info(
                        "%s: already in progress in this process, retrying later", request_id
                    )
                    return BackgroundResponse.reschedule(MIN_COUNTDOWN)
                with self.runtimes.use(self.config or {}, self.connect) as runtime:
                    result = runtime.engine.handle(request)
                    response = respond(result, request, runtime)
        except NotConfigured as exc:
            self.logger.warning(
                "%s: %s; retrying in %ss", request_id, exc.problem, NOT_CONFIGURED_RETRY
            )
            return BackgroundResponse.slow_process_reschedule(NOT_CONFIGURED_RETRY)
        except ConfigError as exc:
            self.logger.error(
                "%s: the processor configuration is unusable, retrying in %ss: %s",
                request_id,
                CONFIG_RETRY,
                mask(str(exc)),
            )
            return BackgroundResponse.slow_process_reschedule(CONFIG_RETRY)
        except SchemaError as exc:
            self.logger.error("%s: %s", request_id, mask(str(exc)))
            return BackgroundResponse.slow_process_reschedule(CONFIG_RETRY)
        except JournalError as exc:
            self.logger.warning(
                "%s: journal unavailable, retrying in %ss: %s",
                request_id,
                JOURNAL_RETRY,
                mask(str(exc)),
            )
            return BackgroundResponse.reschedule(JOURNAL_RETRY)
        self.logger.info(
            "%s: %s -> %s%s",
            request_id,
            result.value,
            response.status,
            f" in {response.countdown}s" if response.status == ResultType.RESCHEDULE else "",
        )
        return response

    @schedulable(  # type: ignore[untyped-decorator]
        "Run due timers",
        "Ends grace periods and purges whose time came, takes over requests a stopped instance "
        "left half done, and posts notes Connect did not take. Schedule it every 15 minutes.",
    )
    def run_due_timers(self, schedule: dict[str, Any]) -> ScheduledExecutionResponse:
        with self._task_logging():
            return self._maintain()

    def _maintain(self) -> ScheduledExecutionResponse:
        try:
            with self.runtimes.use(self.config or {}, self.connect) as runtime:
                summary = run_maintenance(runtime)
        except NotConfigured as exc:
            return ScheduledExecutionResponse(ResultType.SUCCESS, f"nothing to do: {exc.problem}")
        except (ConfigError, JournalError) as exc:
            message = mask(str(exc))
            self.logger.error("scheduled maintenance not run: %s", message)
            return ScheduledExecutionResponse.fail(output=message)
        self.logger.info("scheduled maintenance: %s", summary)
        if summary.errors:
            return ScheduledExecutionResponse.fail(output=str(summary))
        # done() drops its output; the summary is worth keeping in the task's record.
        return ScheduledExecutionResponse(ResultType.SUCCESS, str(summary))


def respond(result: Reached, request: Mapping[str, Any], runtime: Runtime) -> BackgroundResponse:
    """The task response for the engine's ``result`` on ``request`` (see the module docstring)."""
    request_id = _request_id(request)
    if result in _DONE:
        return BackgroundResponse.done()
    if result in _FOR_A_PERSON:
        record = runtime.journal.get(request_id)
        reason = record.reason if record is not None and record.reason else "see the journal"
        what = "parked for a person" if result is State.PARKED else "routed to a person"
        return BackgroundResponse.skip(f"{request_id} {what}: {reason}")
    if result is Outcome.IGNORED:
        status = str(request.get("status") or "") if isinstance(request, Mapping) else ""
        if status != "pending":
            return BackgroundResponse.skip(
                f"{request_id} is {status or 'without a status'}: "
                "nothing to do for it in this version of the processor"
            )
        return BackgroundResponse.skip(f"{request_id}: {runtime.engine.plan(request).action}")
    if result is Outcome.MALFORMED:
        return BackgroundResponse.skip(
            "the request payload has no id: nothing can be recorded for it"
        )
    return BackgroundResponse.reschedule(countdown(runtime, request_id))


def countdown(runtime: Runtime, request_id: str, now: datetime | None = None) -> int:
    """Seconds until the journal says the request is due again, within Connect's bounds."""
    record = runtime.journal.get(request_id) if request_id else None
    if record is None or record.next_attempt_at is None:
        return MIN_COUNTDOWN
    wait = (record.next_attempt_at - (now or datetime.now(UTC))).total_seconds()
    return int(min(MAX_COUNTDOWN, max(MIN_COUNTDOWN, math.ceil(wait))))


def _request_id(request: Any) -> str:
    return str(request.get("id") or "") if isinstance(request, Mapping) else ""
