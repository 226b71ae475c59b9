"""How many durable journal transactions one request costs on the happy path (issue 16): each
write the engine can share with its neighbour, with nothing remote between them, is shared."""

from __future__ import annotations

from typing import Any

from processor.journal.base import Journal, State

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload, count_writes
from .test_engine import engine_for


def test_a_new_request_terminated_approved_and_noted(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(1)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    engine = engine_for(journal, adapter, market, clock)
    writes = count_writes(journal)

    assert engine.handle(payload) == "approved"
    # ensure+claim; intent; result; approved; noted+release
    assert writes() == 5
    assert len(market.notes) == 1
    states = [t.to_state.value for t in journal.transitions(payload["id"])]
    assert states == ["terminating", "terminated", "approved"]
    record = journal.get(payload["id"])
    assert record is not None and record.noted == "approved" and record.lease_owner is None


def test_a_fence_moved_while_the_note_was_posted_records_nothing(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(1)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    engine = engine_for(journal, adapter, market, clock)
    posted = market.post_note

    def post_then_force(request_id: str, text: str, **kwargs: Any) -> bool:
        answer = posted(request_id, text, **kwargs)
        journal.force(request_id, State.PARKED, detail="by hand", actor="operator")
        return answer

    market.post_note = post_then_force  # type: ignore[method-assign]
    assert engine.handle(payload) == "approved"
    record = journal.get(payload["id"])
    # The operator's force stands; the note stays owed (the release wrote nothing).
    assert record is not None and record.state is State.PARKED and record.noted is None
    assert record.lease_owner is None and len(market.notes) == 1
