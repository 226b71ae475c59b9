"""The journal's contract on both stores: ensure, claim, transition, release, leases, claim_due."""

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processor.journal.base import Claim, LeaseLost, State

from .. import journal_support
from ..journal_support import (
    Store,
    claimed,
    new_request,
    with_timer,
)

store, clock = journal_support.store, journal_support.clock


# -- ensure, claim, transition, release ------------------------------------------------------------


def test_ensure_inserts_once_and_returns_the_current_row(store: Store) -> None:
    journal = store.journal
    first = journal.ensure(
        "PR-1",
        idempotency_key="cancel-PR-1",
        subscription_id="SUB-1",
        asset_id="AS-1",
        product_id="PRD-1",
        marketplace_id="MP-1",
        environment="production",
        customer_id="TA-1",
    )
    assert (first.state, first.fence, first.attempts, first.data) == (State.NEW, 0, 0, {})
    assert first.created_at == first.updated_at == store.clock()
    assert (first.subscription_id, first.customer_id, first.environment) == (
        "SUB-1",
        "TA-1",
        "production",
    )

    claim = journal.transition(claimed(journal), State.TERMINATING, attempts=1)
    store.clock.advance(5)
    again = journal.ensure("PR-1", idempotency_key="other-key", subscription_id="SUB-OTHER")
    assert again == journal.get("PR-1")
    assert again.state is State.TERMINATING
    assert (again.idempotency_key, again.subscription_id) == (
        "cancel-PR-1",
        "SUB-1",
    )  # the first ensure's
    assert again.fence == claim.fence and journal.get("PR-404") is None


def test_claim_transition_update_release(store: Store) -> None:
    journal = store.journal
    new_request(journal)
    claim = claimed(journal, owner="worker-a")
    assert (claim.fence, claim.owner, claim.record.lease_owner) == (1, "worker-a", "worker-a")
    assert claim.record.lease_expires_at is not None

    store.clock.advance(2)
    when = store.clock() + timedelta(hours=1)
    data = {"failures": 1, "batch": "B-7"}
    moved = journal.transition(
        claim,
        State.TERMINATING,
        detail="intent",
        attempts=1,
        next_attempt_at=when,
        outcome="ambiguous",
        last_error="timeout",
        data=data,
    )
    record = moved.record
    assert (moved.fence, moved.state) == (1, State.TERMINATING)
    assert (record.attempts, record.next_attempt_at) == (1, when)
    assert (record.outcome, record.last_error, record.data) == ("ambiguous", "timeout", data)
    assert record.updated_at == store.clock() and record.created_at == store.clock() - timedelta(
        seconds=2
    )

    noted = journal.update(moved, noted="terminating", subscription_id="SUB-9")
    assert noted.state is State.TERMINATING
    assert (noted.record.noted, noted.record.subscription_id) == ("terminating", "SUB-9")
    assert noted.record.attempts == 1 and noted.record.data == data  # fields not named are kept
    cleared = journal.transition(
        noted, State.TERMINATING, next_attempt_at=None, last_error=None
    ).record
    assert (cleared.next_attempt_at, cleared.last_error, cleared.outcome) == (
        None,
        None,
        "ambiguous",
    )
    assert [t.to_state for t in journal.transitions("PR-1")] == [
        State.TERMINATING,
        State.TERMINATING,
    ]

    journal.release(noted)
    after = journal.get("PR-1")
    assert after is not None and (after.lease_owner, after.lease_expires_at, after.fence) == (
        None,
        None,
        1,
    )
    with pytest.raises(LeaseLost):
        journal.transition(noted, State.TERMINATED)  # a released claim is spent
    assert claimed(journal, owner="worker-b").fence == 2


def test_a_live_lease_keeps_other_owners_out_but_not_its_owner(store: Store) -> None:
    journal = store.journal
    new_request(journal)
    first = claimed(journal, owner="worker-a")
    assert journal.claim("PR-1", "worker-b", 60) is None
    again = claimed(journal, owner="worker-a")
    assert again.fence == first.fence + 1
    with pytest.raises(LeaseLost):
        journal.update(first, noted="new")  # the re-claim voided the older claim of the same owner


def test_after_the_lease_runs_out_another_owner_claims_and_the_first_loses_every_write(
    store: Store,
) -> None:
    journal = store.journal
    new_request(journal)
    slow = claimed(journal, owner="worker-a", lease=store.short_lease)
    slow = journal.transition(slow, State.TERMINATING, attempts=1)
    store.wait_past(slow.record.lease_expires_at)

    fast = claimed(journal, owner="worker-b")
    assert fast.fence == slow.fence + 1 and fast.state is State.TERMINATING
    for write in (
        lambda: journal.transition(slow, State.TERMINATED, outcome="terminated"),
        lambda: journal.update(slow, noted="terminated"),
        lambda: journal.renew(slow, 60),
    ):
        with pytest.raises(LeaseLost) as lost:
            write()
        assert (lost.value.request_id, lost.value.fence) == ("PR-1", slow.fence)
    journal.release(slow)  # a no-op: it must not free worker-b's lease

    record = journal.get("PR-1")
    assert record is not None and record.state is State.TERMINATING
    assert (record.lease_owner, record.outcome) == ("worker-b", None)
    assert [t.owner for t in journal.transitions("PR-1")] == ["worker-a"]
    assert journal.transition(fast, State.TERMINATED).record.fence == fast.fence


def test_an_expired_lease_nobody_took_over_still_records(store: Store) -> None:
    # Only the fence decides: a re-claim always bumps it, so an unchanged fence means no one else
    # acted.
    journal = store.journal
    new_request(journal)
    claim = claimed(journal, lease=store.short_lease)
    store.wait_past(claim.record.lease_expires_at)
    assert journal.transition(claim, State.TERMINATING).state is State.TERMINATING
    assert journal.renew(claim, 60).record.lease_owner == "worker-a"


def test_renew_extends_the_lease(store: Store) -> None:
    journal = store.journal
    new_request(journal)
    claim = claimed(journal, lease=store.short_lease)
    renewed = journal.renew(claim, 600)
    assert renewed.fence == claim.fence
    assert renewed.record.lease_expires_at > claim.record.lease_expires_at
    store.wait_past(claim.record.lease_expires_at)
    assert journal.claim("PR-1", "worker-b", 60) is None


def test_next_attempt_at_gates_claims_on_the_injected_clock(store: Store) -> None:
    journal = store.journal
    with_timer(store, "PR-1", 120)
    assert journal.claim("PR-1", "worker-a", 60) is None
    store.clock.advance(119)
    assert journal.claim("PR-1", "worker-a", 60) is None
    store.clock.advance(1)
    assert claimed(journal).record.next_attempt_at == store.clock()


def test_final_requests_are_not_claimed(store: Store) -> None:
    journal = store.journal
    new_request(journal)
    journal.release(journal.transition(claimed(journal), State.APPROVED))
    assert journal.claim("PR-1", "worker-a", 60) is None


def test_park_unseen_inserts_a_parked_row_no_worker_claims_and_leaves_an_existing_row_alone(
    store: Store,
) -> None:
    journal = store.journal
    parked = journal.park_unseen(
        "PR-9", idempotency_key="cancel-PR-9", detail="customer called", actor="cli:ops"
    )
    assert parked is not None and parked.state is State.PARKED and parked.lease_owner is None
    [first] = journal.transitions("PR-9")
    assert (first.from_state, first.to_state, first.detail, first.owner) == (
        None,
        State.PARKED,
        "customer called",
        "cli:ops",
    )
    assert journal.claim("PR-9", "worker-a", 60) is None
    record, claim = journal.ensure_and_claim("PR-9", "worker-a", 60, idempotency_key="cancel-PR-9")
    assert claim is None and record.state is State.PARKED  # what the daemon gets when it lists it
    new_request(journal)
    assert journal.park_unseen("PR-1", idempotency_key="k", detail="late", actor="cli") is None
    assert journal.get("PR-1").state is State.NEW  # type: ignore[union-attr]
    assert all(t.to_state is not State.PARKED for t in journal.transitions("PR-1"))


def test_claims_refuse_bad_arguments_before_writing(store: Store) -> None:
    journal = store.journal
    new_request(journal)
    claim = claimed(journal)
    bad_writes: list[Callable[[], Any]] = [
        lambda: journal.transition(claim, State.TERMINATING, fence=9),
        lambda: journal.transition(claim, State.TERMINATING, state="approved"),
        lambda: journal.update(claim, next_attempt_at=datetime(2030, 1, 1)),  # naive
        lambda: journal.update(claim, data={"when": datetime(2030, 1, 1, tzinfo=UTC)}),
        lambda: journal.update(claim, attempts=-1),
        lambda: journal.transition(claim, "exploded"),  # type: ignore[arg-type]
        lambda: journal.claim("PR-1", "worker-b", 0),
        lambda: journal.claim_due("worker-b", 60, 5, states=State.NEW),  # type: ignore[arg-type]
    ]
    for write in bad_writes:
        with pytest.raises(ValueError):
            write()
    assert journal.get("PR-1") == claim.record and journal.transitions("PR-1") == []


# -- claim_due -------------------------------------------------------------------------------------


def test_claim_due_takes_due_timers_in_order_and_skips_leased_rows(store: Store) -> None:
    journal = store.journal
    with_timer(store, "PR-late", -10)
    with_timer(store, "PR-early", -300)
    with_timer(store, "PR-purge", -60, state=State.APPROVED)  # final, but its purge timer is due
    with_timer(store, "PR-future", 300)
    with_timer(store, "PR-leased", -200, state=State.SUSPENDED)
    claimed(journal, "PR-leased", owner="other-replica")
    new_request(journal, "PR-no-timer")

    claims = journal.claim_due("worker-a", 60, limit=2)
    assert [c.request_id for c in claims] == ["PR-early", "PR-purge"]
    assert all(c.owner == "worker-a" and c.record.lease_owner == "worker-a" for c in claims)
    assert [c.request_id for c in journal.claim_due("worker-a", 60, limit=10)] == ["PR-late"]
    assert journal.claim_due("worker-a", 60, limit=10) == []  # its own live leases are skipped too


def test_claim_due_filters_by_state(store: Store) -> None:
    with_timer(store, "PR-1", -30, state=State.SUSPENDED)
    with_timer(store, "PR-2", -20, state=State.APPROVED)
    with_timer(store, "PR-3", -10, state=State.SCHEDULED)
    due = store.journal.claim_due(
        "worker-a", 60, limit=10, states=[State.SCHEDULED, State.SUSPENDED]
    )
    assert [(c.request_id, c.state) for c in due] == [
        ("PR-1", State.SUSPENDED),
        ("PR-3", State.SCHEDULED),
    ]
    assert store.journal.claim_due("worker-a", 60, limit=10, states=[]) == []


def test_two_concurrent_claim_due_callers_get_disjoint_sets(store: Store) -> None:
    for n in range(20):
        with_timer(store, f"PR-{n:02d}", -100 + n)
    start = threading.Barrier(2, timeout=10)
    taken: dict[str, list[str]] = {}

    def poll(owner: str) -> None:
        start.wait()
        taken[owner] = [c.request_id for c in store.journal.claim_due(owner, 60, limit=15)]

    threads = [threading.Thread(target=poll, args=(f"replica-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    first, second = taken["replica-0"], taken["replica-1"]
    assert not set(first) & set(second)
    assert sorted(first + second) == [f"PR-{n:02d}" for n in range(20)]
    owners = {r.request_id: r.lease_owner for r in store.journal.records()}
    assert {owners[rid] for rid in first} <= {"replica-0"}
    assert {owners[rid] for rid in second} <= {"replica-1"}


def test_eight_threads_claiming_one_request_one_wins(store: Store) -> None:
    new_request(store.journal)
    start = threading.Barrier(8, timeout=10)
    results: list[Claim | None] = []
    lock = threading.Lock()

    def grab(owner: str) -> None:
        start.wait()
        claim = store.journal.claim("PR-1", owner, 60)
        with lock:
            results.append(claim)

    threads = [threading.Thread(target=grab, args=(f"worker-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    winners = [c for c in results if c is not None]
    assert len(results) == 8 and len(winners) == 1
    record = store.journal.get("PR-1")
    assert record is not None and (record.fence, record.lease_owner) == (1, winners[0].owner)


# -- any text a vendor or Connect sends can be stored ---------------------------------------------

UNSTORABLE = ["a\x00b", "lone \ud800 surrogate", "\udfff", "\x00" * 3, "ok \U0001f600 pair"]


@pytest.mark.parametrize("text", UNSTORABLE)
def test_text_no_store_takes_as_it_is_is_stored_with_a_replacement_character(
    store: Store, text: str
) -> None:
    """NUL (PostgreSQL refuses it in text and jsonb) and lone surrogates (no driver encodes them)
    reach the journal from outside: a vendor's refusal reason, an error body, a note. Every
    field and the data (keys too) keep the rest of the text; the write never fails."""
    journal = store.journal
    new_request(journal, customer_id=text)
    claim = claimed(journal)
    expected = text.replace("\x00", "\ufffd")
    expected = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in expected)
    moved = journal.transition(
        claim,
        State.FAILED,
        detail=text,
        outcome=text,
        reason=text,
        last_error=text,
        data={"why": text, text: [text, {"nested": text}]},
    )
    for record in (moved.record, journal.get("PR-1")):
        assert record is not None
        assert (record.reason, record.last_error, record.outcome) == (expected,) * 3
        assert record.data == {"why": expected, expected: [expected, {"nested": expected}]}
    assert journal.transitions("PR-1")[-1].detail == expected
    assert journal.get("PR-1").customer_id == expected  # type: ignore[union-attr]
