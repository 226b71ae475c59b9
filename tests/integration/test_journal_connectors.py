"""The journal's rules over its store connectors: what each connector must guarantee, checked at
the seam between them (processor.journal.store, .connector, .sqlite, .postgres)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from processor.journal.base import JournalError, State
from processor.journal.connector import Connector, Params, Session
from processor.journal.queries import load_queries
from processor.journal.rows import Row
from processor.journal.sqlite import SQLiteConnector
from processor.journal.store import StoreJournal

from ..fakes import Clock

REPO = Path(__file__).resolve().parents[2]
Make = Callable[[], Connector]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def connectors(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Connectors to one migrated database, as many as asked for, closed afterwards."""
    made: list[Connector] = []
    if request.param == "sqlite":

        def make() -> Connector:
            made.append(SQLiteConnector(str(tmp_path / "journal.db"), busy_timeout=5))
            return made[-1]

        StoreJournal(make()).migrate()
        yield make
        for connector in made:
            connector.close()
        return

    import psycopg
    from psycopg import sql

    from processor.journal.postgres import PostgresConnector

    url = request.getfixturevalue("postgres_url")
    schema = f"journal_test_{uuid.uuid4().hex[:10]}"

    def make_pg() -> Connector:
        made.append(PostgresConnector(url, schema=schema, pool_size=2, connect_timeout=5))
        return made[-1]

    StoreJournal(make_pg()).migrate()
    try:
        yield make_pg
    finally:
        for connector in made:
            connector.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


class _FailingSession:
    """A session whose statement ``failing`` raises, as a crash or a dropped connection would."""

    def __init__(self, inner: Session, failing: str) -> None:
        self._inner = inner
        self._failing = failing

    def _check(self, query: str) -> None:
        if query == self._failing:
            raise RuntimeError("the connection went away")

    def run(self, query: str, params: Params | None = None) -> None:
        self._check(query)
        self._inner.run(query, params)

    def one(self, query: str, params: Params | None = None) -> Row | None:
        self._check(query)
        return self._inner.one(query, params)

    def all(self, query: str, params: Params | None = None) -> list[Row]:
        self._check(query)
        return list(self._inner.all(query, params))

    def script(self, sql: str) -> None:
        self._inner.script(sql)


class _FailingConnector:
    """A connector whose transactions fail at one named query; everything else is the real one's."""

    def __init__(self, inner: Connector, query_name: str) -> None:
        self._inner = inner
        self._failing = inner.queries[query_name]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._inner.transaction() as tx:
            yield _FailingSession(tx, self._failing)


def test_every_query_the_rules_run_is_in_both_dialects() -> None:
    rules = (REPO / "processor" / "journal" / "store.py").read_text()
    used = set(re.findall(r'_q\["(\w+)"\]', rules))
    assert {"claim", "claim_due", "claimed", "save", "force", "get_for_update"} <= used
    for dialect in ("sqlite", "postgres"):
        missing = used - set(load_queries(dialect))
        assert missing == set(), f"sql/{dialect}.sql lacks {sorted(missing)}"


def test_a_transition_that_fails_midway_writes_nothing(connectors: Make, clock: Clock) -> None:
    # The row is saved, then the transitions row fails: the save must go with it, and the claim
    # must still hold (same fence), so the worker can retry the step.
    good = StoreJournal(connectors(), clock=clock)
    good.ensure("PR-1", idempotency_key="k")
    claim = good.claim("PR-1", "worker", 60)
    assert claim is not None
    failing = StoreJournal(_FailingConnector(connectors(), "log_transition"), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="went away"):
        failing.transition(claim, State.TERMINATING, attempts=1, data={"step": "terminate"})

    record = good.get("PR-1")
    assert record is not None
    assert (record.state, record.attempts, record.data) == (State.NEW, 0, {})
    assert record.fence == claim.fence and record.lease_owner == "worker"
    assert good.transitions("PR-1") == []
    after = good.transition(claim, State.TERMINATING, attempts=1)  # the claim still holds
    assert [t.to_state for t in good.transitions("PR-1")] == [State.TERMINATING]
    assert after.record.attempts == 1


def test_a_force_that_fails_midway_leaves_the_fence_where_it_was(
    connectors: Make, clock: Clock
) -> None:
    good = StoreJournal(connectors(), clock=clock)
    good.ensure("PR-1", idempotency_key="k")
    claim = good.claim("PR-1", "worker", 60)
    assert claim is not None
    failing = StoreJournal(_FailingConnector(connectors(), "log_transition"), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        failing.force("PR-1", State.PARKED, detail="by hand", actor="ops")
    good.renew(claim, 60)  # not LeaseLost: the fence did not move
    with pytest.raises(KeyError, match="PR-404"):
        good.force("PR-404", State.PARKED, detail="by hand", actor="ops")


@pytest.mark.parametrize("argument", ["updated_since", "updated_until"])
def test_naive_times_are_refused_naming_the_argument(
    connectors: Make, clock: Clock, argument: str
) -> None:
    journal = StoreJournal(connectors(), clock=clock)
    naive = datetime(2030, 1, 1)
    with pytest.raises(ValueError, match=f"{argument} must be timezone-aware"):
        journal.records(**{argument: naive})
    if argument == "updated_until":
        with pytest.raises(ValueError, match=f"{argument} must be timezone-aware"):
            journal.unnoted(updated_until=naive, limit=1)
    else:
        with pytest.raises(ValueError, match=f"{argument} must be timezone-aware"):
            journal.unnoted(updated_until=clock(), updated_since=naive, limit=1)


def test_sqlite_writes_wait_for_the_file_lock_and_reads_do_not(
    tmp_path: Path, clock: Clock
) -> None:
    # Claims, renewals and releases are single statements, but on SQLite they still take the write
    # lock first (BEGIN IMMEDIATE): another process's open write transaction holds them off, and
    # with WAL a read goes on meanwhile.
    path = str(tmp_path / "journal.db")
    journal = StoreJournal(SQLiteConnector(path, busy_timeout=0.1), clock=clock)
    try:
        journal.migrate()
        journal.ensure("PR-1", idempotency_key="k")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(JournalError, match="locked"):
                journal.claim("PR-1", "worker", 60)
            with pytest.raises(JournalError, match="locked"):
                journal.mark_noted("PR-1", State.NEW)
            record = journal.get("PR-1")
            assert record is not None and record.fence == 0
            other.execute("ROLLBACK")
        finally:
            other.close()
        claim = journal.claim("PR-1", "worker", 60)
        assert claim is not None and claim.fence == 1
    finally:
        journal.close()
