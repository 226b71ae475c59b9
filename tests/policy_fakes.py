"""Fakes for policy unit tests: an in-memory Connect that schedules, confirms and assigns, and a
scripted vendor that suspends, purges and takes batches. Built on tests/fakes.py."""

from __future__ import annotations

import copy
from collections import defaultdict, deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from processor.adapters.base import Outcome, Terminated, VendorCall
from processor.marketplace import NotFound, NotPending

from .fakes import FakeMarketplace, ScriptedAdapter


class PolicyMarketplace(FakeMarketplace):
    """FakeMarketplace plus what policies use: schedule, confirm, assign, reads, approve's effective date."""

    def __init__(self, requests: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(requests)
        self.assets: dict[str, dict[str, Any]] = {}
        self.scheduled: list[tuple[str, datetime]] = []
        self.assigned: list[tuple[str, str | None, str | None]] = []
        self.effective: dict[str, datetime | None] = {}

    def approve(
        self, request_id: str, template_id: str, *, effective_date: datetime | None = None
    ) -> dict[str, Any]:
        self.effective[request_id] = effective_date
        return super().approve(request_id, template_id)

    def schedule(self, request_id: str, planned_date: datetime) -> dict[str, Any]:
        self._raise("schedule")
        request = self.requests[request_id]
        if request["status"] != "pending":
            raise NotPending(request["status"])
        request["status"] = "scheduled"
        self.scheduled.append((request_id, planned_date))
        return request

    def confirm(self, request_id: str) -> dict[str, Any]:
        request = self.requests[request_id]
        if request["status"] != "revoking":
            raise NotPending(request["status"])
        request["status"] = "revoked"
        return request

    def assign(
        self, request_id: str, *, email: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        self.assigned.append((request_id, email, user_id))
        return self.requests[request_id]

    def get_request(self, request_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.requests[request_id])

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        if asset_id not in self.assets:
            raise NotFound(asset_id)
        return self.assets[asset_id]


class StepAdapter(ScriptedAdapter):
    """A vendor with suspend, purge and (optionally) terminate_batch; answers scripted per operation."""

    def __init__(self, *, batch: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: dict[str, deque[Any]] = defaultdict(deque)
        self.batches: list[list[VendorCall]] = []
        if batch:
            self.terminate_batch = self._batch

    def suspend(self, call: VendorCall) -> Outcome:
        self.calls.append(("suspend", call))
        return (
            self.answers["suspend"].popleft()
            if self.answers["suspend"]
            else Terminated("suspended")
        )

    def purge(self, call: VendorCall) -> Outcome:
        self.calls.append(("purge", call))
        return self.answers["purge"].popleft() if self.answers["purge"] else Terminated("purged")

    def _batch(self, calls: Sequence[VendorCall]) -> Any:
        self.batches.append(list(calls))
        return (
            self.answers["batch"].popleft()
            if self.answers["batch"]
            else [Terminated("ok") for _ in calls]
        )

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]
