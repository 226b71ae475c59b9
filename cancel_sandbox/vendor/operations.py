"""Asynchronous operations: a vendor that answers ``202 Accepted`` and finishes the job later.

With ``on``, every terminate, suspend or purge that would change something is *accepted*: the
client gets ``202`` at once with ``{"operation_id", "status": "pending", ...}`` and a ``Location``
header naming ``/operations/<id>``; the change is made ``delay`` (+ up to ``jitter``) seconds
later, or the operation *fails* instead (a share ``fail_rate`` of them, and every one whose
subscription id matches ``fail_pattern``): nothing changes and the operation says ``failed``.
``GET /operations/<id>`` answers ``pending``, ``done`` or ``failed``; 404 ``not_found`` for an
unknown id.

What a repeat of an accepted call does follows the mode, as for immediate calls: ``key``
replays the same ``202`` (same operation) for the same Idempotency-Key; ``natural`` answers the
operation already in flight for that subscription and action (and 409 once it is done); ``read``
and ``none`` accept a second operation, which acts again when it completes -- a duplicate effect
in the ledger, the thing a correct processor never causes. While a subscription has an operation
in flight, its status read says ``terminating`` (``suspending``, ``purging``): a status the
processor does not know, so it waits instead of taking ``active`` as proof.

Operations are part of the vendor's state: with a state file they survive a restart; ``POST
/admin/complete`` completes every pending one now; an admin reset drops them. Each completion goes
through the same state machine as an immediate call, so the ledger counts its effect (and a
duplicate) exactly as it would any other, at the moment it completed.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from cancel_sandbox.vendor.ledger import utc_now
from cancel_sandbox.vendor.persist import SqliteStore
from cancel_sandbox.vendor.state import Mode, VendorState

__all__ = ["OperationSettings", "Operation", "Operations", "IN_FLIGHT"]

_TICK = 0.05  # seconds between looks for due completions
# What a status read says of a subscription with an operation in flight.
IN_FLIGHT = {"terminate": "terminating", "suspend": "suspending", "purge": "purging"}


@dataclass
class OperationSettings:
    on: bool = False  # answer terminate/suspend/purge 202 and complete them later
    delay: float = 1.0  # seconds from acceptance to completion
    jitter: float = 0.0  # up to this many more seconds, uniformly
    fail_rate: float = 0.0  # share of operations that fail instead of completing
    fail_pattern: str = ""  # subscription ids matching this regex always fail; empty: none
    seed: int | None = None  # for repeatable failures

    def validate(self) -> None:
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"operations {name} must be a number of seconds")
            if not 0 <= value <= 3600:
                raise ValueError(f"operations {name} must be from 0 to 3600 seconds")
        rate = self.fail_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError("operations fail_rate must be a share from 0 to 1")
        if not isinstance(self.on, bool):
            raise ValueError("operations on must be true or false")
        try:
            re.compile(self.fail_pattern)
        except (re.error, TypeError) as exc:
            raise ValueError(
                f"operations fail_pattern is not a regular expression: {exc}"
            ) from None

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> OperationSettings:
        unknown = set(data) - {"on", "delay", "jitter", "fail_rate", "fail_pattern", "seed"}
        if unknown:
            raise ValueError(f"unknown operations settings: {', '.join(sorted(unknown))}")
        made = cls(**data)
        made.validate()
        return made


@dataclass
class Operation:
    id: str
    action: str
    sid: str
    mode: str
    key: str | None
    request_id: str | None
    accepted_at: str
    due: float  # wall-clock epoch seconds: a restarted vendor keeps the same due time
    fails: bool  # decided at acceptance, so that a restart does not change the outcome
    status: str = "pending"  # pending | done | failed
    completed_at: str | None = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        """The vendor API's view of the operation."""
        body: dict[str, Any] = {
            "id": self.id,
            "operation_id": self.id,
            "status": self.status,
            "action": self.action,
            "subscription_id": self.sid,
            "accepted_at": self.accepted_at,
        }
        if self.completed_at is not None:
            body["completed_at"] = self.completed_at
        if self.error is not None:
            body["error"] = self.error
        return body


class Operations:
    """The operations accepted, and the loop that completes them when due."""

    def __init__(
        self,
        state: VendorState,
        store: SqliteStore | None,
        settings: OperationSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state, self.store, self.clock = state, store, clock
        self.settings = settings or OperationSettings()
        self.settings.validate()
        self._random = random.Random(self.settings.seed)
        self._all: dict[str, Operation] = {}
        self._pending: dict[str, Operation] = {}  # the ones a tick looks at
        if store is not None:
            for data in store.load_operations():
                self._save(Operation(**data), write=False)

    @property
    def on(self) -> bool:
        return self.settings.on

    @property
    def waiting(self) -> bool:
        return bool(self._pending)

    def in_flight(self, sid: str, action: str | None = None) -> Operation | None:
        """The pending operation on ``sid`` (of ``action``, when given), if any."""
        for op in self._pending.values():
            if op.sid == sid and action in (None, op.action):
                return op
        return None

    def accept(
        self, action: str, sid: str, mode: Mode, key: str | None, request_id: str | None
    ) -> Operation:
        """A call accepted as an operation; in ``natural`` mode the one in flight answers a
        repeat of it."""
        if mode is Mode.NATURAL and (running := self.in_flight(sid, action)) is not None:
            return running
        fails = bool(
            (self.settings.fail_pattern and re.search(self.settings.fail_pattern, sid))
            or (self.settings.fail_rate and self._random.random() < self.settings.fail_rate)
        )
        wait = self.settings.delay + self._random.uniform(0.0, self.settings.jitter)
        operation = Operation(
            id=f"OP-{len(self._all) + 1:06d}",
            action=action,
            sid=sid,
            mode=mode.value,
            key=key,
            request_id=request_id,
            accepted_at=utc_now(),
            due=self.clock() + wait,
            fails=fails,
        )
        self._save(operation)
        return operation

    def get(self, operation_id: str) -> Operation | None:
        self.complete_due()
        return self._all.get(operation_id)

    def complete_due(self, now: float | None = None) -> int:
        """Complete every pending operation due by ``now`` (all of them when it is infinite)."""
        moment = self.clock() if now is None else now
        due = sorted(
            (op for op in self._pending.values() if op.due <= moment),
            key=lambda op: op.due,
        )
        for operation in due:
            self._complete(operation)
        return len(due)

    def _complete(self, operation: Operation) -> None:
        operation.completed_at = utc_now()
        if operation.fails:
            operation.status = "failed"
            operation.error = "the vendor could not complete the operation"
        else:
            result = self.state.act(
                operation.action,
                operation.sid,
                Mode(operation.mode),
                operation.key,
                operation.request_id,
            )
            if 200 <= result.status_code < 300:
                operation.status = "done"
            else:
                operation.status = "failed"
                operation.error = str(result.body.get("error") or result.status_code)
        self._save(operation)

    def counts(self) -> dict[str, int]:
        statuses = [op.status for op in self._all.values()]
        return {
            "operations_accepted": len(statuses),
            "operations_pending": statuses.count("pending"),
            "operations_done": statuses.count("done"),
            "operations_failed": statuses.count("failed"),
        }

    def listed(self) -> list[dict[str, Any]]:
        return [asdict(op) for op in self._all.values()]

    def clear(self) -> None:
        self._all.clear()
        self._pending.clear()
        if self.store is not None:
            self.store.clear_operations()

    def _save(self, operation: Operation, write: bool = True) -> None:
        self._all[operation.id] = operation
        if operation.status == "pending":
            self._pending[operation.id] = operation
        else:
            self._pending.pop(operation.id, None)
        if write and self.store is not None:
            self.store.put_operation(operation.id, asdict(operation))

    async def run(self) -> None:
        """Complete due operations until cancelled (the app's lifespan runs it)."""
        while True:
            if self._pending:
                self.complete_due()
            await asyncio.sleep(_TICK)
