"""What the journal commits per call, on both stores: the engine's hot path shares transactions
where nothing can happen between two writes (issue 16), and the rows it leaves are the same."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from processor.journal.base import Claim, LeaseLost, State

from .. import journal_support
from ..fakes import count_writes
from ..journal_support import Store

# The stores under test (SQLite file, PostgreSQL schema) and their clock.
store, clock = journal_support.store, journal_support.clock


def test_a_new_request_is_ensured_and_claimed_in_one_transaction(store: Store) -> None:
    journal = store.journal
    writes = count_writes(journal)
    record, claim = journal.ensure_and_claim(
        "PR-1", "worker-a", 60, idempotency_key="cancel-PR-1", asset_id="AS-1", customer_id="CU-1"
    )
    assert writes() == 1
    assert claim is not None and claim.owner == "worker-a" and claim.fence == 1
    assert record == claim.record == journal.get("PR-1")
    assert (record.state.value, record.lease_owner, record.asset_id) == ("new", "worker-a", "AS-1")
    # The same history as ensure then claim: neither appends a transitions row.
    journal.ensure("PR-2", idempotency_key="cancel-PR-2")
    assert journal.claim("PR-2", "worker-a", 60) is not None
    assert journal.transitions("PR-1") == journal.transitions("PR-2") == []


def test_a_row_that_existed_comes_back_unclaimed(store: Store) -> None:
    journal = store.journal
    journal.ensure("PR-1", idempotency_key="cancel-PR-1")
    writes = count_writes(journal)
    record, claim = journal.ensure_and_claim("PR-1", "worker-a", 60, idempotency_key="x")
    assert (claim, writes()) == (None, 0)
    assert record == journal.get("PR-1") and record.fence == 0 and record.lease_owner is None
    assert record.idempotency_key == "cancel-PR-1"


def test_release_with_fields_writes_them_under_the_fence_in_the_same_transaction(
    store: Store,
) -> None:
    journal = store.journal
    _, claim = journal.ensure_and_claim("PR-1", "worker-a", 60, idempotency_key="cancel-PR-1")
    assert claim is not None
    claim = journal.transition(claim, State.PARKED, reason="a person decides")
    writes = count_writes(journal)
    journal.release(claim, noted="parked")
    assert writes() == 1
    record = journal.get("PR-1")
    assert record is not None and record.noted == "parked" and record.lease_owner is None
    assert record.lease_expires_at is None and record.fence == claim.fence
    # A field update, as update() writes it: no transitions row.
    assert [t.to_state for t in journal.transitions("PR-1")] == [State.PARKED]


def test_release_with_fields_on_a_moved_fence_writes_nothing(store: Store) -> None:
    journal = store.journal
    _, claim = journal.ensure_and_claim("PR-1", "worker-a", 60, idempotency_key="cancel-PR-1")
    assert claim is not None
    moved = journal.transition(claim, State.WAITING_HUMAN)
    journal.force("PR-1", State.PARKED, detail="by hand", actor="operator")
    before = journal.get("PR-1")
    with pytest.raises(LeaseLost):
        journal.release(moved, noted="waiting_human")
    assert journal.get("PR-1") == before
    with pytest.raises(ValueError, match="cannot set"):
        journal.release(moved, state="new")


def test_the_record_a_write_answers_is_the_record_a_read_returns(store: Store) -> None:
    journal = store.journal
    _, claim = journal.ensure_and_claim(
        "PR-1", "worker-a", 60, idempotency_key="cancel-PR-1", subscription_id="SUB-1"
    )
    assert claim is not None and claim.record == journal.get("PR-1")
    elsewhere = timezone(timedelta(hours=-5))
    writes: list[Callable[[Claim], Claim]] = [
        # JSON's own types come back from a read: lists for tuples, text keys for numbers.
        lambda c: journal.transition(
            c,
            State.TERMINATING,
            detail="intent",
            attempts=1,
            data={"policy": "p", "dates": ("a", "b"), 7: {"n": 1.5}},
        ),
        lambda c: journal.update(c, next_attempt_at=datetime(2031, 1, 2, 3, 4, 5, 6, elsewhere)),
        lambda c: journal.transition(c, State.TERMINATED, outcome="terminated", last_error=None),
        lambda c: journal.update(c, subscription_id="SUB-2", reason="why", next_attempt_at=None),
        lambda c: journal.transition(c, State.APPROVED, noted="approved", data={}),
    ]
    for write in writes:
        store.clock.advance(1.5)
        claim = write(claim)
        assert claim.record == journal.get("PR-1")
    assert claim.record.data == {} and claim.record.updated_at == store.clock.now


def test_a_write_decodes_the_stored_row_once_and_sends_unchanged_data_back_untouched(
    store: Store,
) -> None:
    journal = store.journal
    _, claim = journal.ensure_and_claim("PR-1", "worker-a", 60, idempotency_key="cancel-PR-1")
    assert claim is not None
    claim = journal.update(claim, data={"policy": "p"})
    connector: Any = getattr(journal, "connector")  # noqa: B009 - StoreJournal's
    decoded, encoded = [0], [0]
    decode, encode = connector.decode_data, connector.data

    def counted_decode(value: Any) -> Any:
        decoded[0] += 1
        return decode(value)

    def counted_encode(value: Any) -> Any:
        encoded[0] += 1
        return encode(value)

    connector.decode_data, connector.data = counted_decode, counted_encode
    claim = journal.transition(claim, State.PARKED, reason="a person decides")
    journal.release(claim, noted="parked")
    assert (decoded[0], encoded[0]) == (2, 0)  # the row each write read; no data sent back
    assert journal.get("PR-1") == replace(
        claim.record,
        noted="parked",
        lease_owner=None,
        lease_expires_at=None,
        updated_at=store.clock.now,
    )
    assert claim.record.data == {"policy": "p"}
