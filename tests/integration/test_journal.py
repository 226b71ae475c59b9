"""The journal's contract, checked on both stores: SQLite (a real file) and PostgreSQL (a fresh
schema).

Lease expiry: SQLite times leases by the injected clock, so tests move it; PostgreSQL times them by
the database clock, so tests use a short lease and wait (bounded) until the server's ``now()`` has
passed it. Everything else (due-ness, recorded times) follows the injected clock on both stores.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processor.journal import open_journal, redact_url
from processor.journal.base import Claim, Journal, LeaseLost, SchemaError, State

REPO = Path(__file__).resolve().parents[2]
MIGRATE_HINT = "run `cancel-processor journal migrate`"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Store:
    """One store under test and what a test needs to drive it across its clock and its files."""

    kind: str
    journal: Journal
    clock: FakeClock
    short_lease: float  # a lease a test lets run out
    opener: Callable[[str], Journal]  # a new store on the same database (or a fresh one, "fresh")
    raw: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]  # SQL behind the store's back
    opened: list[Journal] = field(default_factory=list)

    def reopen(self) -> Journal:
        journal = self.opener("same")
        self.opened.append(journal)
        return journal

    def fresh(self) -> Journal:
        journal = self.opener("fresh")
        self.opened.append(journal)
        return journal

    def wait_past(self, instant: datetime) -> None:
        """Until the lease clock has passed ``instant``: move the fake clock, or wait for the
        server's."""
        if self.kind == "sqlite":
            self.clock.now = max(self.clock.now, instant + timedelta(seconds=1))
            return
        deadline = time.monotonic() + 3.0
        while not self.raw("SELECT now() > %s", (instant,))[0][0]:
            assert time.monotonic() < deadline, "the database clock did not pass the lease in 3 s"
            time.sleep(0.05)


def _sqlite_store(tmp_path: Path, clock: FakeClock) -> Store:
    path = tmp_path / "journal.db"

    def opener(which: str) -> Journal:
        target = path if which == "same" else tmp_path / f"fresh-{uuid.uuid4().hex[:6]}.db"
        return open_journal(f"sqlite:///{target}", clock=clock)

    def raw(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path, isolation_level=None) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()

    journal = open_journal(f"sqlite:///{path}", clock=clock)
    journal.migrate()
    return Store("sqlite", journal, clock, 30.0, opener, raw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    if request.param == "sqlite":
        made = _sqlite_store(tmp_path, clock)
        yield made
        for journal in [made.journal, *made.opened]:
            journal.close()
        return

    import psycopg
    from psycopg import sql

    url = request.getfixturevalue("postgres_url")
    schemas = [f"journal_test_{uuid.uuid4().hex[:10]}"]

    def opener(which: str) -> Journal:
        if which == "fresh":
            schemas.append(f"journal_test_{uuid.uuid4().hex[:10]}")
        return open_journal(
            url,
            clock=clock,
            schema=schemas[0] if which == "same" else schemas[-1],
            pool_size=10,
            connect_timeout=5,
        )

    def raw(query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schemas[0])))
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    journal = opener("same")
    journal.migrate()
    made = Store("postgres", journal, clock, 0.3, opener, raw)
    try:
        yield made
    finally:
        for journal in [made.journal, *made.opened]:
            journal.close()
        with psycopg.connect(url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


def new_request(journal: Journal, request_id: str = "PR-1", **identifiers: Any) -> None:
    journal.ensure(request_id, idempotency_key=f"cancel-{request_id}", **identifiers)


def claimed(
    journal: Journal, request_id: str = "PR-1", owner: str = "worker-a", lease: float = 60
) -> Claim:
    claim = journal.claim(request_id, owner, lease)
    assert claim is not None, f"{request_id} should be claimable by {owner}"
    return claim


def with_timer(store: Store, request_id: str, seconds: float, state: State = State.NEW) -> None:
    """Give ``request_id`` a timer ``seconds`` from now (negative: already due), lease released."""
    new_request(store.journal, request_id)
    claim = claimed(store.journal, request_id, owner="setup")
    claim = store.journal.transition(
        claim, state, next_attempt_at=store.clock() + timedelta(seconds=seconds)
    )
    store.journal.release(claim)


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


# -- SQLite only -----------------------------------------------------------------------------------


def test_sqlite_memory_store_is_one_database_shared_by_threads(clock: FakeClock) -> None:
    journal = open_journal("sqlite:///:memory:", clock=clock, auto_migrate=True)
    try:
        workers = [
            threading.Thread(target=new_request, args=(journal, f"PR-{n}")) for n in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=10)
        assert journal.counts()[State.NEW] == 4
    finally:
        journal.close()


@pytest.mark.parametrize("connections", ["shared", "per-thread"])
def test_sqlite_file_uses_wal_and_both_connection_modes_serialise_claims(
    tmp_path: Path, clock: FakeClock, connections: str
) -> None:
    journal = open_journal(
        f"sqlite:///{tmp_path / 'j.db'}",
        clock=clock,
        connections=connections,
        auto_migrate=True,
        pool_size=4,
    )  # pool_size is PostgreSQL's: ignored here
    try:
        with sqlite3.connect(tmp_path / "j.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for n in range(6):
            with_timer(
                Store("sqlite", journal, clock, 30, lambda _: journal, lambda *_: []),
                f"PR-{n}",
                -10,
            )
        taken: list[list[str]] = []
        start = threading.Barrier(3, timeout=10)

        def poll(owner: str) -> None:
            start.wait()
            taken.append([c.request_id for c in journal.claim_due(owner, 60, limit=6)])

        threads = [threading.Thread(target=poll, args=(f"w{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert sorted(sum(taken, [])) == [f"PR-{n}" for n in range(6)]
    finally:
        journal.close()


CHILD = textwrap.dedent("""
    import sys
    from processor.journal import open_journal
    from processor.journal.base import State
    journal = open_journal("sqlite:///" + sys.argv[1], auto_migrate=True)
    for n in range(int(sys.argv[3])):
        rid = f"PR-{sys.argv[2]}-{n}"
        journal.ensure(rid, idempotency_key=rid)
        claim = journal.claim(rid, sys.argv[2], 3600)
        claim = journal.transition(claim, State.TERMINATING, attempts=1)
        # The lease is kept: the process "dies" holding it.
        journal.transition(claim, State.TERMINATED)
    journal.close()
""")


@pytest.mark.slow
def test_sqlite_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), name, "25"], cwd=REPO, stderr=subprocess.PIPE
        )
        for name in ("proc-a", "proc-b")
    ]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()

    journal = open_journal(f"sqlite:///{path}")
    try:
        journal.check_schema()
        assert journal.counts()[State.TERMINATED] == 50
        assert journal.claim("PR-proc-a-0", "parent", 60) is None  # proc-a's lease is still live
        assert [t.owner for t in journal.transitions("PR-proc-b-7")] == ["proc-b", "proc-b"]
    finally:
        journal.close()


# -- opening by URL --------------------------------------------------------------------------------


def test_open_journal_refuses_unknown_schemes_without_showing_the_password() -> None:
    with pytest.raises(ValueError) as refused:
        open_journal("mysql://app:s3cret-pass@db.internal/journal")
    message = str(refused.value)
    assert "'mysql'" in message and "sqlite:///" in message and "postgresql://" in message
    assert "s3cret-pass" not in message
    for malformed in ("sqlite://relative.db", "sqlite:///", "journal.db"):
        with pytest.raises(ValueError):
            open_journal(malformed)
    with pytest.raises(TypeError):
        open_journal("sqlite:///:memory:", busy_timeuot=3)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/journal", "postgresql://app:***@db:5432/journal"),
        ("postgres://app:p@ss/w0rd@db/journal", "postgres://app:***@db/journal"),
        (
            "postgresql://db/journal?user=app&password=s3cret&sslmode=require",
            "postgresql://db/journal?user=app&password=***&sslmode=require",
        ),
        ("postgresql://app@db/journal", "postgresql://app@db/journal"),
        ("sqlite:////var/lib/cancel/journal.db", "sqlite:////var/lib/cancel/journal.db"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_store_reports_its_url_without_the_password(tmp_path: Path) -> None:
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    try:
        assert journal.url == f"sqlite:///{tmp_path / 'j.db'}"
    finally:
        journal.close()


def test_sql_files_parse_and_every_query_is_used() -> None:
    from processor.journal.queries import load_migrations, load_queries, parse_queries

    for dialect in ("sqlite", "postgres"):
        # The journal's rules (store.py, schema.py) run most queries; the dialect's connector the
        # rest.
        files = ("store.py", "schema.py", f"{dialect}.py")
        source = "".join((REPO / "processor" / "journal" / f).read_text() for f in files)
        unused = [name for name in load_queries(dialect) if f'q["{name}"]' not in source]
        assert unused == [], f"{dialect}.sql has queries its store never runs"
        versions = [m.version for m in load_migrations(dialect)]
        assert versions == list(range(1, len(versions) + 1))
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    with pytest.raises(ValueError, match="before the first"):
        parse_queries("SELECT 0;\n-- name: a\nSELECT 1;")
    assert json.loads(json.dumps(parse_queries("-- name: a\n-- doc\nSELECT 1;"))) == {
        "a": "-- doc\nSELECT 1"
    }


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
    with pytest.raises(SchemaError, match="at version 1, this code needs 2"):
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
