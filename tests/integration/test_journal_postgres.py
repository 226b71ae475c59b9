"""What only the PostgreSQL journal promises: several replicas on one database.

Each test gets a fresh schema (dropped afterwards) and opens as many stores -- "replicas", each with
its own connection pool and its own clock -- as it needs.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processor.journal import open_journal
from processor.journal.base import Journal, JournalError, State
from processor.journal.queries import load_migrations

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("postgres_url")]

Open = Callable[..., Journal]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def schema() -> str:
    return f"journal_pg_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def raw(postgres_url: str, schema: str) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """SQL on the test schema behind the stores' backs, on a connection of its own."""
    import psycopg
    from psycopg import sql

    conn = psycopg.connect(postgres_url, autocommit=True)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))

    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    try:
        yield run
    finally:
        conn.close()


@pytest.fixture
def replica(postgres_url: str, schema: str) -> Iterator[Open]:
    """Opens stores on the test schema (migrated by the first); closes them and drops the schema."""
    import psycopg
    from psycopg import sql

    opened: list[Journal] = []

    def open_replica(
        clock: Callable[[], datetime] | None = None, url: str = postgres_url, **options: Any
    ) -> Journal:
        journal = open_journal(url, clock=clock, schema=schema, connect_timeout=5, **options)
        opened.append(journal)
        if len(opened) == 1:
            journal.migrate()
        return journal

    try:
        yield open_replica
    finally:
        for journal in opened:
            journal.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_leases_follow_the_database_clock_not_the_replicas(
    replica: Open, raw: Callable[..., Any]
) -> None:
    real = datetime.now(UTC)
    ahead = replica(Clock(real + timedelta(hours=2)))  # a replica whose clock runs two hours fast
    behind = replica(Clock(real - timedelta(hours=2)))
    ahead.ensure("PR-1", idempotency_key="k")

    claim = behind.claim("PR-1", "replica-behind", 60)
    assert claim is not None
    [(db_now,)] = raw("SELECT now()")
    assert timedelta(seconds=50) < claim.record.lease_expires_at - db_now <= timedelta(seconds=61)
    # Two hours fast is not "the lease ran out" for the database.
    assert ahead.claim("PR-1", "replica-ahead", 60) is None
    assert ahead.claim_due("replica-ahead", 60, limit=10) == []


def test_claim_due_skips_rows_another_transaction_is_claiming(
    replica: Open, raw: Callable[..., Any], postgres_url: str
) -> None:
    import psycopg
    from psycopg import sql

    clock = Clock(datetime.now(UTC))
    journal = replica(clock)
    for n in range(3):
        journal.ensure(f"PR-{n}", idempotency_key=f"k{n}")
        claim = journal.claim(f"PR-{n}", "setup", 60)
        assert claim is not None
        due = clock.now - timedelta(minutes=3 - n)
        journal.release(journal.transition(claim, State.SUSPENDED, next_attempt_at=due))
    [(schema,)] = raw("SELECT current_schema()")

    # Another replica is in the middle of claiming PR-0: its row lock is held, its transaction open.
    taken: list[str] = []
    poller = threading.Thread(
        target=lambda: taken.extend(
            c.request_id for c in journal.claim_due("replica-b", 60, limit=10)
        )
    )
    with psycopg.connect(postgres_url) as other:
        other.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        other.execute("SELECT 1 FROM requests WHERE request_id = 'PR-0' FOR UPDATE")
        poller.start()
        poller.join(timeout=5)
        waited_for_the_lock = poller.is_alive()
        other.rollback()  # lets a poller that did wait finish, so the test ends either way
    poller.join(timeout=10)
    assert not waited_for_the_lock
    assert taken == ["PR-1", "PR-2"]
    assert [c.request_id for c in journal.claim_due("replica-b", 60, limit=10)] == ["PR-0"]


def test_replicas_migrating_at_once_take_turns(
    replica: Open, postgres_url: str, schema: str, raw: Callable[..., Any]
) -> None:
    first = replica()  # migrates
    raw("DROP TABLE transitions, requests, rate_slots, schema_version")
    raw("DROP FUNCTION transitions_append_only()")
    others = [open_journal(postgres_url, schema=schema, connect_timeout=5) for _ in range(3)]
    start = threading.Barrier(3, timeout=10)
    errors: list[BaseException] = []

    def migrate(journal: Journal) -> None:
        start.wait()
        try:
            journal.migrate()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(j,)) for j in others]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for journal in others:
            journal.close()
    assert errors == []
    # Each migration applied exactly once, however many replicas raced for it.
    shipped = [(m.version,) for m in load_migrations("postgres")]
    assert raw("SELECT version FROM schema_version ORDER BY version") == shipped
    first.check_schema()


def test_records_reads_through_a_server_side_cursor(
    replica: Open, raw: Callable[..., Any], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("processor.journal.postgres._ITERSIZE", 3)
    name = f"journal-test-{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in postgres_url else "?"
    journal = replica(url=f"{postgres_url}{separator}application_name={name}", pool_size=1)
    for n in range(10):
        journal.ensure(f"PR-{n}", idempotency_key=f"k{n}")

    rows = journal.records()
    assert [next(rows).request_id for _ in range(4)] == ["PR-0", "PR-1", "PR-2", "PR-3"]
    [(query,)] = raw("SELECT query FROM pg_stat_activity WHERE application_name = %s", name)
    assert query.startswith(
        "FETCH FORWARD 3"
    )  # batches of 3 fetched on demand, not 10 rows at once
    rows.close()  # an abandoned iterator gives its connection back to the (one-connection) pool
    assert journal.get("PR-9") is not None


def test_an_unreachable_server_is_a_journal_error_without_the_password(replica: Open) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    journal = open_journal(
        f"postgresql://app:s3cret-pw@127.0.0.1:{port}/journal", connect_timeout=1
    )
    try:
        with pytest.raises(JournalError) as failed:
            journal.check_schema()
        assert "s3cret-pw" not in str(failed.value) and "app:***@" in str(failed.value)
        assert "s3cret-pw" not in journal.url
    finally:
        journal.close()


def test_pool_options_are_checked(replica: Open) -> None:
    with pytest.raises(ValueError, match="min_size"):
        replica(pool_size=2, min_size=3)


def test_concurrent_transitions_of_two_replicas_on_many_requests_never_cross_fences(
    replica: Open,
) -> None:
    """Replicas race to claim and drive the same requests; every request ends with one clean
    history."""
    clock = Clock(datetime.now(UTC))
    a, b = replica(clock, pool_size=4), replica(clock, pool_size=4)
    ids = [f"PR-{n:02d}" for n in range(30)]
    for rid in ids:
        a.ensure(rid, idempotency_key=rid)
    start = threading.Barrier(4, timeout=10)

    def drive(journal: Journal, owner: str) -> None:
        start.wait()
        for rid in ids:
            claim = journal.claim(rid, owner, 60)
            if claim is None:  # another worker has it
                continue
            claim = journal.transition(claim, State.TERMINATING, attempts=1)
            claim = journal.transition(claim, State.TERMINATED)
            journal.release(journal.transition(claim, State.APPROVED))

    workers = [(a, "a-0"), (a, "a-1"), (b, "b-0"), (b, "b-1")]
    threads = [threading.Thread(target=drive, args=worker) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert a.counts()[State.APPROVED] == len(ids)
    for rid in ids:
        history = b.transitions(rid)
        assert [t.to_state for t in history] == [
            State.TERMINATING,
            State.TERMINATED,
            State.APPROVED,
        ]
        assert len({(t.owner, t.fence) for t in history}) == 1  # one claim did the whole pass


def test_a_stalled_transaction_does_not_keep_its_rows_from_the_other_replicas(
    replica: Open,
) -> None:
    # A replica frozen in the middle of a step: its transaction holds the row lock, its lease runs
    # out. Without the stall timeout the others' claims would wait on that lock until it woke up.
    stalled = replica(stall_timeout=0.5)
    other = replica()
    stalled.ensure("PR-1", idempotency_key="k")
    claim = stalled.claim("PR-1", "frozen", 1.1)
    assert claim is not None
    woke: list[BaseException] = []
    locked = threading.Event()

    def freeze_mid_step() -> None:
        try:
            with stalled.connector.cursor(transaction=True) as cur:
                cur.execute("SELECT 1 FROM requests WHERE request_id = 'PR-1' FOR UPDATE")
                locked.set()
                threading.Event().wait(3.0)  # SIGSTOP, as far as the server can tell
                cur.execute("SELECT 1")  # it wakes and goes on with its step
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            woke.append(exc)

    frozen = threading.Thread(target=freeze_mid_step)
    frozen.start()
    assert locked.wait(5)
    started = datetime.now(UTC)
    taken = None
    for _ in range(40):  # bounded: about 4 s
        taken = other.claim("PR-1", "replica-b", 60)
        if taken is not None:
            break
        threading.Event().wait(0.1)
    waited = datetime.now(UTC) - started
    frozen.join(timeout=10)
    assert taken is not None and taken.fence == claim.fence + 1
    assert waited < timedelta(seconds=2.9), waited  # well before the frozen one woke up
    # When it wakes, its transaction is gone: an error, not a write under the old claim.
    assert len(woke) == 1 and isinstance(woke[0], JournalError), woke
    with pytest.raises(ValueError, match="stall_timeout"):
        replica(stall_timeout=0)
