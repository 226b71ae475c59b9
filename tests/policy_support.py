"""Helpers for the policy tests: a seeded sandbox on a controllable clock, runs of the daemon, and
adapter wrappers (a batching vendor, a process that dies mid-step)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from cancel_sandbox.local import Sandbox
from cancel_sandbox.marketplace import MockClock
from processor.adapters.base import Outcome, VendorCall
from processor.config.schema import Config
from processor.daemon.core import Daemon, RunSummary
from processor.daemon.runtime import Runtime, build_runtime, selector_for

START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PRODUCT = "PRD-100-000-001"
ACME, GLOBEX = "TA-0001-0001-0001", "TA-0002-0002-0002"
EUROPE, AMERICA = "MP-10001", "MP-10002"
DAY = 86400.0


def seed(
    subscriptions: Sequence[dict[str, Any]], requests: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """A marketplace with one monthly product (a standard and a premium plan) and two customers."""
    return {
        "marketplaces": [{"id": EUROPE, "name": "Europe"}, {"id": AMERICA, "name": "America"}],
        "products": [
            {
                "id": PRODUCT,
                "name": "Cloud Backup",
                "billing_period": "monthly",
                "items": [
                    {"mpn": "BACKUP-STD", "name": "Standard"},
                    {"mpn": "BACKUP-PREMIUM", "name": "Premium"},
                ],
                "templates": [
                    {
                        "id": "TL-100-000-001",
                        "name": "Cancelled",
                        "body": "Cancelled {{ subscription_id }}.",
                    }
                ],
            }
        ],
        "customers": [{"id": ACME, "name": "Acme"}, {"id": GLOBEX, "name": "Globex"}],
        "subscriptions": list(subscriptions),
        "requests": list(requests),
    }


def subscription(
    n: int, *, customer: str = ACME, plan: str = "BACKUP-STD", marketplace: str = EUROPE
) -> dict[str, Any]:
    return {
        "id": f"AS-1000-0000-{n:04d}",
        "product": PRODUCT,
        "marketplace": marketplace,
        "customer": customer,
        "subscription_id": f"SUB-{n:05d}",
        "items": [{"mpn": plan, "quantity": 5}],
    }


def cancel(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"PR-1000-0000-{n:04d}-002",
        "subscription": f"AS-1000-0000-{n:04d}",
        "created": "2026-10-30T10:00:00+00:00",
        **fields,
    }


@dataclass
class World:
    """The sandbox, its clock, and a way to run the processor against them (one journal file)."""

    sandbox: Sandbox
    clock: MockClock
    tmp_path: Path
    sections: dict[str, Any]

    def config(self) -> Config:
        data = self.sandbox.config_data(f"sqlite:///{self.tmp_path}/journal.db", **self.sections)
        return Config.model_validate(data)

    def runtime(self) -> Runtime:
        return build_runtime(self.config(), clock=self.clock, heartbeat=False)

    def run(self, runtime: Runtime | None = None) -> RunSummary:
        """One ``--once`` run; a fresh runtime (a restarted process) unless one is given."""
        own = runtime is None
        runtime = runtime or self.runtime()
        try:
            return Daemon(
                runtime.engine, runtime.marketplace, selector_for(runtime.config), once=True
            ).run()
        finally:
            if own:
                runtime.close()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def set(self, moment: datetime) -> None:
        self.clock.set(moment)


def make_world(
    tmp_path: Path, data: dict[str, Any], *, refuse_pattern: str = r"7$", **sections: Any
) -> World:
    """A started sandbox seeded with ``data`` on a clock standing at :data:`START` (stop it after
    use)."""
    clock = MockClock(START)
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    sandbox = Sandbox(
        generate=0, seed_file=str(path), clock=clock, refuse_pattern=refuse_pattern
    ).start()
    sections["processing"] = {"once_max_wait": 2, **sections.get("processing", {})}
    return World(sandbox, clock, tmp_path, sections)


class SimulatedCrash(BaseException):
    """The process died: not an Exception, so nothing in the engine catches it."""


class CrashAfter:
    """Wraps an adapter: the first ``operation`` call reaches the vendor, then the process 'dies'
    before the engine can record the answer (the ambiguous window)."""

    def __init__(self, inner: Any, operation: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.idempotency = inner.idempotency
        self.operation = operation
        self.crashed = False
        for optional in ("status", "suspend", "purge"):
            if callable(getattr(inner, optional, None)):
                setattr(self, optional, self._wrap(optional))

    def _wrap(self, operation: str) -> Any:
        def call(vendor_call: VendorCall) -> Any:
            answer = getattr(self.inner, operation)(vendor_call)
            if operation == self.operation and not self.crashed:
                self.crashed = True
                raise SimulatedCrash(operation)
            return answer

        return call

    def terminate(self, call: VendorCall) -> Outcome:
        return self._wrap("terminate")(call)  # type: ignore[no-any-return]


class BatchingVendor:
    """The mock vendor's adapter plus ``terminate_batch``: one call from the engine for a whole
    group (this vendor takes the group and ends each subscription in it; an answer per
    subscription)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.idempotency = inner.idempotency
        self.status = inner.status
        self.batches: list[list[VendorCall]] = []
        self.single_calls: list[VendorCall] = []
        self._lock = threading.Lock()

    def terminate(self, call: VendorCall) -> Outcome:
        with self._lock:
            self.single_calls.append(call)
        return self.inner.terminate(call)  # type: ignore[no-any-return]

    def terminate_batch(self, calls: Sequence[VendorCall]) -> list[Outcome]:
        with self._lock:
            self.batches.append(list(calls))
        return [self.inner.terminate(call) for call in calls]
