"""The journal's contract tests' ground: both stores under one fixture, SQLite (a real file) and
PostgreSQL (a fresh schema), with a clock the tests move.

Lease expiry: SQLite times leases by the injected clock, so tests move it; PostgreSQL times them by
the database clock, so tests use a short lease and wait (bounded) until the server's ``now()`` has
passed it. Everything else (due-ness, recorded times) follows the injected clock on both stores.
Test modules take the fixtures with ``store, clock = journal_support.store, journal_support.clock``
(the engine tests' ``clock`` in conftest.py is another clock).
"""

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processor.journal import open_journal
from processor.journal.base import Claim, Journal, State

REPO = Path(__file__).resolve().parents[1]
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


@contextlib.contextmanager
def fresh_postgres_schema(url: str, prefix: str) -> Iterator[str]:
    """A new schema's name for a test's journals on ``url`` (the first to migrate creates it),
    dropped with all it holds at the end."""
    import psycopg
    from psycopg import sql

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


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
