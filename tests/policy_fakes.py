"""Fakes for policy unit tests: a scripted vendor that suspends, purges and takes batches, and the
in-memory Connect of tests/fakes.py under the name the policy tests use."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from processor.adapters.base import Outcome, Terminated, VendorCall

from .fakes import FakeMarketplace, ScriptedAdapter

# The in-memory Connect grew every operation of the Marketplace protocol (schedule, confirm, assign,
# reads, approve's effective date); the policy tests keep the name they were written with.
PolicyMarketplace = FakeMarketplace


class StepAdapter(ScriptedAdapter):
    """A vendor with suspend, purge and (optionally) terminate_batch; answers scripted per
    operation."""

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
