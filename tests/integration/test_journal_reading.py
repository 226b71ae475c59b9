"""The journal's contract on both stores: history, operator actions, reading, schema, reopening."""

from datetime import datetime, timedelta

import pytest

from processor.journal.base import LeaseLost, SchemaError, State

from .. import journal_support
from ..journal_support import (
    MIGRATE_HINT,
    Store,
    claimed,
    new_request,
)

store, clock = journal_support.store, journal_support.clock


# -- history, operator actions, reading ------------------------------------------------------------


def test_transitions_history_is_complete_and_append_only(store: Store) -> None:
    journal = store.journal
    new_request(journal)
    claim = claimed(journal, owner="worker-a")
    claim = journal.transition(claim, State.TERMINATING, detail="intent: terminate")
    claim = journal.update(claim, noted="terminating")  # not a transition
    store.clock.advance(3)
    claim = journal.transition(claim, State.TERMINATED, detail="vendor confirmed")
    forced = journal.force("PR-1", State.PARKED, detail="operator parked it", actor="ops:alice")

    history = journal.transitions("PR-1")
    assert [(t.from_state, t.to_state, t.fence, t.owner, t.detail) for t in history] == [
        (State.NEW, State.TERMINATING, 1, "worker-a", "intent: terminate"),
        (State.TERMINATING, State.TERMINATED, 1, "worker-a", "vendor confirmed"),
        (State.TERMINATED, State.PARKED, forced.fence, "ops:alice", "operator parked it"),
    ]
    assert history[0].at == store.clock() - timedelta(seconds=3) and history[-1].at == store.clock()
    for statement in ("UPDATE transitions SET detail = 'edited'", "DELETE FROM transitions"):
        with pytest.raises(Exception, match="append-only"):
            store.raw(statement, ())
    assert journal.transitions("PR-1") == history


def test_force_bumps_the_fence_clears_the_lease_and_starts_the_step_afresh(store: Store) -> None:
    journal = store.journal
    new_request(journal)
    claim = journal.transition(
        claimed(journal),
        State.TERMINATING,
        attempts=4,
        next_attempt_at=store.clock() + timedelta(days=1),
    )
    record = journal.force("PR-1", State.NEW, detail="retry requested", actor="ops:bob")
    assert (record.state, record.fence) == (State.NEW, claim.fence + 1)
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert (record.attempts, record.next_attempt_at, record.updated_at) == (0, None, store.clock())
    assert journal.get("PR-1") == record
    with pytest.raises(LeaseLost):
        journal.transition(claim, State.TERMINATED)
    assert claimed(journal, owner="worker-b").fence == claim.fence + 2
    with pytest.raises(KeyError):
        journal.force("PR-404", State.PARKED, detail="nothing there", actor="ops:bob")


def test_restore_inserts_replaces_older_and_keeps_newer_rows(store: Store) -> None:
    """``journal import`` on both stores: the exported row and its history come back."""
    source, target = store.journal, store.fresh()
    target.migrate()
    new_request(source)
    claim = source.transition(
        claimed(source), State.TERMINATING, attempts=2, data={"sent_at": "2030-01-01T00:00:00Z"}
    )
    source.release(claim)
    record, history = source.get("PR-1"), source.transitions("PR-1")
    assert record is not None
    assert target.restore(record, history) == "inserted"
    restored = target.get("PR-1")
    assert restored is not None
    assert (restored.state, restored.attempts, dict(restored.data)) == (
        State.TERMINATING,
        2,
        {"sent_at": "2030-01-01T00:00:00Z"},
    )
    assert (restored.lease_owner, restored.updated_at) == (None, record.updated_at)
    assert [(t.to_state, t.at) for t in target.transitions("PR-1")] == [
        (t.to_state, t.at) for t in history
    ]
    assert target.restore(record, history) == "unchanged"
    # The target moves on: the older export is refused.
    store.clock.advance(60)
    target.release(target.transition(claimed(target), State.TERMINATED, detail="done"))
    assert target.restore(record, history) == "kept"
    # A newer export replaces an older row, past every claim, and appends only newer history.
    store.clock.advance(60)
    source.release(source.transition(claimed(source), State.PARKED, detail="by hand"))
    newer, newer_history = source.get("PR-1"), source.transitions("PR-1")
    assert newer is not None
    before = target.get("PR-1")
    assert before is not None
    held = claimed(target, owner="worker-z")
    assert target.restore(newer, newer_history) == "busy"  # leased now: not under its holder
    target.release(held)
    assert target.restore(newer, newer_history) == "replaced"
    after = target.get("PR-1")
    assert after is not None and after.state is State.PARKED and after.fence > held.fence
    assert [t.to_state for t in target.transitions("PR-1")] == [
        State.TERMINATING,
        State.TERMINATED,
        State.PARKED,
    ]
    with pytest.raises(LeaseLost):
        target.transition(held, State.APPROVED)


def test_counts_cover_every_state(store: Store) -> None:
    journal = store.journal
    for n in range(3):
        new_request(journal, f"PR-{n}")
    journal.transition(claimed(journal, "PR-0"), State.APPROVED)
    journal.force("PR-1", State.PARKED, detail="poison", actor="ops")
    counts = journal.counts()
    assert set(counts) == set(State)
    assert {s: n for s, n in counts.items() if n} == {
        State.NEW: 1,
        State.APPROVED: 1,
        State.PARKED: 1,
    }


def test_records_filter_by_state_and_update_time_and_stream_in_pages(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny pages so that ten rows cross several page (SQLite) / fetch (PostgreSQL) boundaries.
    monkeypatch.setattr("processor.journal.sqlite._PAGE", 3)
    monkeypatch.setattr("processor.journal.postgres._ITERSIZE", 3, raising=False)
    journal = store.journal
    start = store.clock()
    for n in range(10):
        new_request(journal, f"PR-{n:02d}")
        store.clock.advance(60)
    for n in (2, 5, 7):
        journal.release(journal.transition(claimed(journal, f"PR-{n:02d}"), State.TERMINATED))

    assert [r.request_id for r in journal.records()] == [f"PR-{n:02d}" for n in range(10)]
    assert [r.request_id for r in journal.records(states=[State.TERMINATED])] == [
        "PR-02",
        "PR-05",
        "PR-07",
    ]
    window = journal.records(
        updated_since=start + timedelta(minutes=3), updated_until=start + timedelta(minutes=6)
    )
    # "since" inclusive, "until" exclusive; PR-05 was updated again later.
    assert [r.request_id for r in window] == ["PR-03", "PR-04"]
    recent = journal.records(updated_since=start + timedelta(minutes=10))
    assert [r.request_id for r in recent] == ["PR-02", "PR-05", "PR-07"]
    first_new = journal.records(states=[State.NEW], limit=4)
    assert [r.request_id for r in first_new] == ["PR-00", "PR-01", "PR-03", "PR-04"]
    assert list(journal.records(limit=0)) == []
    with pytest.raises(ValueError):
        list(journal.records(updated_since=datetime(2030, 1, 1)))  # naive


# -- schema, reopening -----------------------------------------------------------------------------


def test_check_schema_before_and_after_migrate(store: Store) -> None:
    fresh = store.fresh()
    with pytest.raises(SchemaError, match=MIGRATE_HINT.replace("`", ".")):
        fresh.check_schema()
    with pytest.raises(SchemaError, match="migrate"):
        fresh.ensure("PR-1", idempotency_key="k")
    fresh.migrate()
    fresh.migrate()  # idempotent
    fresh.check_schema()
    assert fresh.ensure("PR-1", idempotency_key="k").state is State.NEW


def test_an_older_schema_is_upgraded_by_migrate_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from processor.journal.queries import Migration, load_migrations

    dialect = "sqlite" if store.kind == "sqlite" else "postgres"
    shipped = load_migrations(dialect)
    upgrade = Migration(
        len(shipped) + 1, "outcome_index", "CREATE INDEX requests_outcome ON requests (outcome);"
    )
    # This code now "needs" one more migration than the database has.
    monkeypatch.setattr(
        f"processor.journal.{dialect}.load_migrations", lambda _: (*shipped, upgrade)
    )
    new_request(store.journal)

    with pytest.raises(
        SchemaError, match=f"at version {len(shipped)}, this code needs {upgrade.version}"
    ):
        store.journal.check_schema()
    store.journal.migrate()
    store.journal.check_schema()
    versions = [
        row[0] for row in store.raw("SELECT version FROM schema_version ORDER BY version", ())
    ]
    assert versions == [m.version for m in (*shipped, upgrade)]
    assert store.journal.get("PR-1") is not None  # the data went through the upgrade untouched


def test_a_newer_schema_is_refused(store: Store) -> None:
    store.raw(
        "INSERT INTO schema_version (version, name, applied_at) VALUES (999, 'future', %s)",
        (store.clock() if store.kind == "postgres" else "2030-01-01T00:00:00.000000Z",),
    )
    with pytest.raises(SchemaError, match="newer than this code"):
        store.journal.check_schema()


def test_state_survives_reopening_the_store(store: Store) -> None:
    journal = store.journal
    new_request(journal, subscription_id="SUB-1")
    claim = journal.transition(
        claimed(journal, owner="worker-a"), State.TERMINATING, data={"k": [1, 2]}
    )
    journal.close()

    reopened = store.reopen()
    reopened.check_schema()
    record = reopened.get("PR-1")
    assert record == claim.record
    assert [t.to_state for t in reopened.transitions("PR-1")] == [State.TERMINATING]
    assert reopened.claim("PR-1", "worker-b", 60) is None  # the lease outlived the process
    assert (
        reopened.transition(claim, State.TERMINATED).state is State.TERMINATED
    )  # and so did the claim
