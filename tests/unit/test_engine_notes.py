"""Which notes may skip the conversation search: only a row's first claim ever (fence 1)."""

from __future__ import annotations

from processor.journal.base import Journal, State

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload
from .test_engine import engine_for


def test_a_first_claim_posts_its_note_without_searching(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(1)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()

    assert engine_for(journal, adapter, market, clock).handle(payload) == State.APPROVED
    assert market.first_attempts == [True]


def test_a_row_taken_over_searches_before_it_posts(journal: Journal, clock: Clock) -> None:
    # A worker claimed the row (fence 1) and died: whatever it did, it may have posted a note, so
    # the next claim (fence 2) lets the gateway search the conversation first.
    payload = cancel_payload(2)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    journal.ensure(payload["id"], idempotency_key=f"cancel-{payload['id']}")
    assert journal.claim(payload["id"], "dead-worker", 30.0) is not None
    clock.advance(31)

    assert engine_for(journal, adapter, market, clock).handle(payload) == State.APPROVED
    assert market.first_attempts == [False]
