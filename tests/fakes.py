"""Fakes for unit tests of the engine: a scripted vendor adapter, an in-memory marketplace, a clock.

The journal is never faked: unit tests use the real SQLite store in memory.
"""

from __future__ import annotations

import copy
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from processor.adapters.base import Idempotency, Outcome, SubscriptionStatus, Terminated, VendorCall
from processor.marketplace import NotFound, NotPending, Selector


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ScriptedAdapter:
    """Answers terminate calls from a script per subscription (default: Terminated)."""

    def __init__(
        self,
        name: str = "vendor",
        idempotency: Idempotency = Idempotency.KEY,
        status: Iterable[Any] | None = None,
    ) -> None:
        self.name = name
        self.idempotency = idempotency
        self.scripts: dict[str, deque[Outcome]] = defaultdict(deque)
        self.calls: list[tuple[str, VendorCall]] = []
        self._lock = threading.Lock()
        if status is not None:
            self._status: deque[Any] = deque(status)
            self.status = self._read_status  # only adapters with a status read have the attribute

    def script(self, subscription_id: str, *outcomes: Outcome) -> None:
        self.scripts[subscription_id].extend(outcomes)

    def terminate(self, call: VendorCall) -> Outcome:
        with self._lock:
            self.calls.append(("terminate", call))
            queue = self.scripts[call.subscription_id]
            return queue.popleft() if queue else Terminated("ok")

    def _read_status(self, call: VendorCall) -> Any:
        with self._lock:
            self.calls.append(("status", call))
            return self._status.popleft() if self._status else SubscriptionStatus.UNKNOWN

    def terminate_calls(self, subscription_id: str | None = None) -> list[VendorCall]:
        return [
            c
            for op, c in self.calls
            if op == "terminate" and subscription_id in (None, c.subscription_id)
        ]


class FakeMarketplace:
    """Connect in memory, as the engine and the daemon use it: the whole :class:`Marketplace`
    protocol (mypy checks this class against it), recording every action for assertions."""

    def __init__(self, requests: Iterable[dict[str, Any]] = ()) -> None:
        self.requests = {r["id"]: r for r in requests}
        self.assets: dict[str, dict[str, Any]] = {}
        self.approved: list[tuple[str, str]] = []
        self.effective: dict[str, datetime | None] = {}
        self.failed: list[tuple[str, str]] = []
        self.scheduled: list[tuple[str, datetime]] = []
        self.assigned: list[tuple[str, str | None, str | None]] = []
        self.notes: list[tuple[str, str]] = []
        self.first_attempts: list[bool] = []  # post_note's first_attempt, one per note posted
        self.errors: dict[str, deque[Exception]] = defaultdict(deque)

    def _raise(self, operation: str) -> None:
        if self.errors[operation]:
            raise self.errors[operation].popleft()

    def iter_pending(self, selector: Selector) -> Iterator[dict[str, Any]]:
        return self.iter_cancels(selector, "pending")

    def iter_cancels(self, selector: Selector, status: str) -> Iterator[dict[str, Any]]:
        for request in list(self.requests.values()):
            if request["status"] == status:
                yield request

    def count_pending(self, selector: Selector) -> int:
        return sum(1 for _ in self.iter_pending(selector))

    def count_unaccounted(
        self, selector: Selector, accounted: Iterable[str], *, names: int = 10
    ) -> tuple[int, list[str]]:
        known = set(accounted)
        left = [
            rid
            for rid, r in self.requests.items()
            if r.get("status") == "pending" and rid not in known
        ]
        return len(left), left[:names]

    def get_request(self, request_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.requests[request_id])

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        if asset_id not in self.assets:
            raise NotFound(asset_id)
        return self.assets[asset_id]

    def approve(
        self,
        request_id: str,
        template_id: str,
        *,
        effective_date: datetime | None = None,
        first_attempt: bool = False,
    ) -> dict[str, Any]:
        self.effective[request_id] = effective_date
        self._raise("approve")
        request = self.requests[request_id]
        if request["status"] != "pending":
            raise NotPending(request["status"])
        request["status"] = "approved"
        self.approved.append((request_id, template_id))
        return request

    def fail(self, request_id: str, reason: str) -> dict[str, Any]:
        self._raise("fail")
        request = self.requests[request_id]
        if request["status"] != "pending":
            raise NotPending(request["status"])
        request["status"] = "failed"
        self.failed.append((request_id, reason))
        return request

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

    def post_note(
        self,
        request_id: str,
        text: str,
        *,
        once_key: str | None = None,
        first_attempt: bool = False,
    ) -> bool:
        self._raise("post_note")
        self.notes.append((request_id, text))
        self.first_attempts.append(first_attempt)
        return True

    def default_template(self, product_id: str) -> str | None:
        return f"TL-{product_id[4:]}"

    def close(self) -> None:
        pass


def cancel_payload(
    n: int,
    *,
    product: str = "PRD-100-100-100",
    subscription: str | None = "auto",
    environment: str = "production",
    customer: str = "TA-0000-0000-0001",
    status: str = "pending",
) -> dict[str, Any]:
    """A cancel request shaped like Connect's, written for these tests."""
    sub = f"SUB-{n:05d}" if subscription == "auto" else subscription
    params = [{"id": "subscription_id", "phase": "fulfillment", "type": "text", "value": sub or ""}]
    return {
        "id": f"PR-1000-2000-{n:04d}-001",
        "type": "cancel",
        "status": status,
        "created": f"2026-10-01T10:{n // 60 % 60:02d}:{n % 60:02d}+00:00",
        "asset": {
            "id": f"AS-1000-2000-{n:04d}",
            "status": "terminating",
            "product": {"id": product, "name": "Product"},
            "connection": {"id": "CT-1000-1000-1000", "type": environment},
            "params": params,
            "items": [{"id": "PRD-100-100-100-0001", "mpn": "PLAN-BASIC", "quantity": "3"}],
            "tiers": {"customer": {"id": customer, "name": "Customer"}},
        },
        "marketplace": {"id": "MP-12345", "name": "Main"},
    }


def count_writes(journal: Any) -> Callable[[], int]:
    """Count the write transactions (``transaction``, ``atomic``) a StoreJournal opens now on."""
    connector = journal.connector
    seen = [0]
    for name in ("transaction", "atomic"):
        opened = getattr(connector, name)

        def counted(opened: Any = opened) -> Any:
            seen[0] += 1
            return opened()

        setattr(connector, name, counted)
    return lambda: seen[0]
