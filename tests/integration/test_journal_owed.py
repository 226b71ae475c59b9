"""The journal's contract on both stores: owed notes (unnoted, mark_noted, migration 0002) and
stranded claims."""

from datetime import timedelta

import pytest

from processor.journal.base import SchemaError, State

from .. import journal_support
from ..journal_support import (
    Store,
    claimed,
    new_request,
)

store, clock = journal_support.store, journal_support.clock


# -- owed notes (unnoted, mark_noted, migration 0002) ----------------------------------------------


def put_in(store: Store, request_id: str, state: State, noted: str | None) -> None:
    """A row in ``state`` with ``noted`` as given, lease released, changed at the clock's now."""
    new_request(store.journal, request_id)
    claim = claimed(store.journal, request_id, owner="setup")
    store.journal.release(store.journal.transition(claim, state, noted=noted))


def test_unnoted_lists_exactly_the_owed_notes_oldest_first(store: Store) -> None:
    from processor.journal.base import NOTED_STATES

    journal, start = store.journal, store.clock()
    owed = []
    for n, state in enumerate(sorted(State, key=lambda s: s.value)):
        store.clock.advance(1)
        put_in(store, f"PR-{n:02d}-none", state, None)  # never noted
        put_in(store, f"PR-{n:02d}-done", state, state.value)  # noted: nothing owed
        put_in(
            store,
            f"PR-{n:02d}-prev",
            state,
            State.SCHEDULED.value if state is not State.SCHEDULED else "new",
        )
        if state in NOTED_STATES:
            owed += [f"PR-{n:02d}-none", f"PR-{n:02d}-prev"]
    until = store.clock() + timedelta(seconds=1)
    found = journal.unnoted(updated_until=until, limit=100)
    # Every noted state, and only those, whatever noted held before (NULL or another state).
    assert [r.request_id for r in found] == owed
    assert {r.state for r in found} == set(NOTED_STATES)
    assert [r.request_id for r in journal.unnoted(updated_until=until, limit=3)] == owed[:3]
    # updated_until is exclusive, updated_since inclusive: the bounds a daemon pass uses.
    first = journal.get(owed[0])
    assert first is not None and first.updated_at is not None
    assert journal.unnoted(updated_until=first.updated_at, limit=100) == []
    later = [
        r.request_id
        for r in journal.unnoted(
            updated_until=until,
            updated_since=first.updated_at + timedelta(microseconds=1),
            limit=100,
        )
    ]
    assert later == [rid for rid in owed if journal.get(rid).updated_at > first.updated_at]  # type: ignore[union-attr]
    assert start < first.updated_at


def test_unnoted_skips_rows_a_live_worker_holds(store: Store) -> None:
    journal = store.journal
    put_in(store, "PR-1", State.SCHEDULED, None)
    claim = claimed(journal, "PR-1", owner="worker-a", lease=store.short_lease)
    until = store.clock() + timedelta(seconds=1)
    assert journal.unnoted(updated_until=until, limit=10) == []  # the worker posts its own note
    store.wait_past(claim.record.lease_expires_at)  # type: ignore[arg-type]
    assert [
        r.request_id
        for r in journal.unnoted(updated_until=store.clock() + timedelta(seconds=1), limit=10)
    ] == ["PR-1"]


def test_mark_noted_records_the_note_only_for_the_state_it_was_posted_for(store: Store) -> None:
    journal = store.journal
    put_in(store, "PR-1", State.APPROVED, State.SCHEDULED.value)
    put_in(store, "PR-2", State.SUSPENDED, None)
    assert journal.mark_noted("PR-1", State.FAILED) is False  # not that state: the debt stays
    assert journal.get("PR-1").noted == State.SCHEDULED.value  # type: ignore[union-attr]
    assert journal.mark_noted("PR-1", State.APPROVED) is True
    assert journal.mark_noted("PR-1", State.APPROVED) is True  # idempotent
    assert journal.mark_noted("PR-unknown", State.APPROVED) is False
    until = store.clock() + timedelta(seconds=1)
    assert [r.request_id for r in journal.unnoted(updated_until=until, limit=10)] == ["PR-2"]

    # A worker holding a claim on the row merges its own writes into the row as it is: the mark
    # made meanwhile, without a claim, is not undone by the worker's next step.
    claim = claimed(journal, "PR-2", owner="worker-a")
    assert journal.mark_noted("PR-2", State.SUSPENDED) is True
    moved = journal.transition(claim, State.SUSPENDED, attempts=1)
    assert moved.record.noted == State.SUSPENDED.value
    journal.release(moved)
    # And the row that moves on owes the note of its new state.
    claim = claimed(journal, "PR-2", owner="worker-a")
    journal.release(journal.transition(claim, State.APPROVED))
    assert journal.mark_noted("PR-2", State.SUSPENDED) is False
    until = store.clock() + timedelta(seconds=1)
    assert [r.request_id for r in journal.unnoted(updated_until=until, limit=10)] == ["PR-2"]
    assert journal.transitions("PR-1")[-1].to_state is State.APPROVED  # no history row for a note


def test_unnoted_reads_the_partial_index_not_the_table(store: Store) -> None:
    # A journal of many settled, noted rows and a few owed ones: the owed ones are found through
    # requests_unnoted, whose size is the owed notes, not the journal.
    if store.kind == "sqlite":
        store.raw(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) "
            "INSERT INTO requests (request_id, state, idempotency_key, noted, created_at, "
            "updated_at) SELECT printf('PR-BULK-%05d', i), 'approved', 'k', 'approved', "
            "'2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z' FROM n",
            (),
        )
        store.raw("ANALYZE", ())
        plan = " ".join(
            str(r[-1])
            for r in store.raw(
                "EXPLAIN QUERY PLAN "
                + _unnoted_sql("sqlite")
                .replace(":updated_until", "'2031'")
                .replace(":updated_since", "NULL")
                .replace(":now", "'2030'")
                .replace(":limit", "10"),
                (),
            )
        )
    else:
        store.raw(
            "INSERT INTO requests (request_id, state, idempotency_key, noted, created_at, "
            "updated_at) SELECT 'PR-BULK-' || lpad(i::text, 5, '0'), 'approved', 'k', 'approved', "
            "%s, %s FROM generate_series(1, 5000) AS i",
            (store.clock(), store.clock()),
        )
        store.raw("ANALYZE requests", ())
        sql_text = (
            _unnoted_sql("postgres")
            .replace("%(updated_until)s", "'2031-01-01'::timestamptz")
            .replace("%(updated_since)s", "NULL")
            .replace("%(limit)s", "10")
        )
        plan = " ".join(str(r[0]) for r in store.raw("EXPLAIN " + sql_text, ()))
    assert "requests_unnoted" in plan, plan
    put_in(store, "PR-OWED", State.FAILED, None)
    found = store.journal.unnoted(updated_until=store.clock() + timedelta(seconds=1), limit=10)
    assert [r.request_id for r in found] == ["PR-OWED"]


def _unnoted_sql(dialect: str) -> str:
    from processor.journal.queries import load_queries

    return "\n".join(
        ln
        for ln in load_queries(dialect)["unnoted"].splitlines()
        if not ln.lstrip().startswith("--")
    )


def test_migration_0002_upgrades_a_0001_journal_and_keeps_its_data(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from processor.journal.queries import load_migrations

    dialect = "sqlite" if store.kind == "sqlite" else "postgres"
    shipped = load_migrations(dialect)
    assert [m.version for m in shipped][:2] == [1, 2]
    target = f"processor.journal.{dialect}.load_migrations"
    monkeypatch.setattr(target, lambda _: shipped[:1])  # the code as it was before 0002
    old = store.fresh()
    old.migrate()
    old.check_schema()
    new_request(old, "PR-1", subscription_id="SUB-1")
    claim = old.transition(
        claimed(old, "PR-1"), State.APPROVED, data={"policy": "default"}, outcome="terminated"
    )
    old.release(claim)
    new_request(old, "PR-2")
    old.release(old.transition(claimed(old, "PR-2"), State.FAILED, reason="no", noted="failed"))
    before = [old.get("PR-1"), old.get("PR-2")]
    history = old.transitions("PR-1")

    monkeypatch.setattr(target, load_migrations)  # this code
    with pytest.raises(SchemaError, match=f"at version 1, this code needs {shipped[-1].version}"):
        old.check_schema()
    old.migrate()
    old.check_schema()
    assert [old.get("PR-1"), old.get("PR-2")] == before
    assert old.transitions("PR-1") == history
    owed = old.unnoted(updated_until=store.clock() + timedelta(seconds=1), limit=10)
    assert [r.request_id for r in owed] == ["PR-1"]
    old.migrate()  # again: nothing left to do
    old.check_schema()


# -- stranded claims (a process died or froze holding them) ---------------------------------------


def test_stranded_lists_expired_unreleased_claims_of_the_states_asked(store: Store) -> None:
    journal = store.journal
    open_states = [State.NEW, State.TERMINATING, State.TERMINATED, State.REFUSING]
    for rid in (
        "PR-dead-mid-call",
        "PR-dead-at-start",
        "PR-live",
        "PR-released",
        "PR-dead-final",
        "PR-dead-retry",
    ):
        new_request(journal, rid)
    backing_off = claimed(journal, "PR-dead-retry", owner="ghost", lease=store.short_lease)
    journal.update(
        backing_off, next_attempt_at=store.clock() + timedelta(hours=1)
    )  # died before releasing
    mid_call = journal.transition(
        claimed(journal, "PR-dead-mid-call", owner="ghost", lease=store.short_lease),
        State.TERMINATING,
        attempts=1,
    )
    store.clock.advance(
        1
    )  # SQLite's leases run on this clock; PostgreSQL's on the server's, which moves anyway
    claimed(journal, "PR-dead-at-start", owner="ghost", lease=store.short_lease)
    journal.transition(
        claimed(journal, "PR-dead-final", owner="ghost", lease=store.short_lease), State.APPROVED
    )
    journal.release(
        journal.transition(claimed(journal, "PR-released", owner="worker-a"), State.TERMINATING)
    )
    claimed(journal, "PR-live", owner="worker-a", lease=600)
    assert journal.stranded(states=open_states, limit=10) == []  # the ghost's leases still run

    store.wait_past(journal.get("PR-dead-at-start").lease_expires_at)  # type: ignore[union-attr, arg-type]
    found = journal.stranded(states=open_states, limit=10)
    # Oldest expiry first; not the live lease, the released row, the final row (not asked for), nor
    # the row whose retry is not due (a claim would not take it yet).
    assert [r.request_id for r in found] == ["PR-dead-mid-call", "PR-dead-at-start"]
    assert found[0].lease_owner == "ghost" and found[0].state is State.TERMINATING
    assert [r.request_id for r in journal.stranded(states=[State.NEW], limit=10)] == [
        "PR-dead-at-start"
    ]
    assert len(journal.stranded(states=open_states, limit=1)) == 1

    # Listing takes nothing; a claim does, bumping the fence past the ghost's.
    taken = claimed(journal, "PR-dead-mid-call", owner="worker-b")
    assert taken.fence == mid_call.fence + 1
    assert [r.request_id for r in journal.stranded(states=open_states, limit=10)] == [
        "PR-dead-at-start"
    ]
    store.clock.advance(7200)
    assert "PR-dead-retry" in {r.request_id for r in journal.stranded(states=open_states, limit=10)}
    with pytest.raises(ValueError):
        journal.stranded(states=State.NEW, limit=10)  # type: ignore[arg-type]
