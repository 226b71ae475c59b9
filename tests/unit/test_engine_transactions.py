"""How many durable journal transactions one request costs on the happy path (issue 16): each
write the engine can share with its neighbour, with nothing remote between them, is shared."""

from __future__ import annotations

from processor.journal.base import Journal

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload, count_writes
from .test_engine import engine_for


def test_a_new_request_terminated_approved_and_noted(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(1)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    engine = engine_for(journal, adapter, market, clock)
    writes = count_writes(journal)

    assert engine.handle(payload) == "approved"
    # ensure+claim; intent; result; approved; noted; release
    assert writes() == 6
    assert len(market.notes) == 1
    states = [t.to_state.value for t in journal.transitions(payload["id"])]
    assert states == ["terminating", "terminated", "approved"]
    record = journal.get(payload["id"])
    assert record is not None and record.noted == "approved" and record.lease_owner is None
