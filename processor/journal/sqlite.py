"""The SQLite journal: one host, any number of threads, a few processes on one file.

Durability and concurrency:

- WAL mode with ``synchronous=FULL``: a committed transition survives a power cut, and readers never
  block the writer.
- Every write runs in ``BEGIN IMMEDIATE``, which takes the file's write lock before reading, so a
  claim's check and its update cannot interleave with another thread's or process's; a writer
  waits up to ``busy_timeout`` seconds for the lock, then gets :class:`JournalError`. The lock is
  also what serialises ``claim_due`` claimers (SQLite has no ``SKIP LOCKED``) and what holds a row
  between a transition's read and its write (no ``FOR UPDATE`` either).
- One connection shared by the threads of a process behind a lock (``connections="shared"``, the
  default) or one connection per thread (``"per-thread"``). SQLite admits one writer at a time
  either way, and ``bench/journal_throughput.py`` finds the two within noise of each other at 1 and
  32 threads (about 1,500-1,900 transitions/s on a 2-core machine; at a paced 200/s from 32
  threads both keep p99 under 1 ms). The shared connection wins on what is left: threads queue
  in arrival order on a lock rather than polling in SQLite's sleeping busy handler, and a pool
  whose threads come and go leaves no connection behind.
  ``sqlite:///:memory:`` is always one shared connection (each connection would be its own
  database).

Time: the injected ``clock`` decides everything here -- leases included -- so tests move time by
hand. Times are stored as fixed-width UTC text, so comparisons in SQL are comparisons of instants.

Schema: :meth:`~processor.journal.store.StoreJournal.migrate` creates or upgrades it;
``auto_migrate=True`` does so when the store opens (convenient for one-host setups and tests; the
daemon's runtime calls ``migrate()`` for SQLite itself). Without it, a store on a new file raises
:class:`SchemaError` at its first use.

Failure modes: a locked, unreadable or corrupt file raises :class:`JournalError`; a missing or old
schema :class:`SchemaError`; a bad argument :class:`ValueError` before anything is written.

The journal's rules are :mod:`processor.journal.store`'s; this module is its connector.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from processor.journal.base import JournalError, JournalFull, SchemaError
from processor.journal.connector import MIGRATE_HINT, Params, full_message
from processor.journal.holders import LocalSendRights, file_send_rights
from processor.journal.queries import Migration, load_migrations, load_queries
from processor.journal.rows import Clock, aware_utc, data_json, storable_params, utcnow
from processor.journal.sqlite_connections import MEMORY, Connections, PerThread, Shared
from processor.journal.store import StoreJournal

__all__ = ["sqlite_journal", "SQLiteConnector"]

_PAGE = 500  # rows per read of records(): bounded memory, short lock holds


def _ts(value: datetime | None) -> str | None:
    # Fixed width (microseconds always written), so text order is time order.
    return None if value is None else aware_utc(value, "time").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (triggers included) with SQLite's own tokenizer."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if any(ln.strip() and not ln.strip().startswith("--") for ln in buffer.splitlines()):
        raise ValueError(
            f"incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}"
        )


class _Session:
    """Statements on one connection. Every statement is read to its end (``fetchall``): one left
    half-read would keep the transaction from committing."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def run(self, query: str, params: Params | None = None) -> None:
        self._conn.execute(query, storable_params(params)).fetchall()

    def one(self, query: str, params: Params | None = None) -> sqlite3.Row | None:
        rows = self.all(query, params)
        return rows[0] if rows else None

    def all(self, query: str, params: Params | None = None) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = self._conn.execute(query, storable_params(params)).fetchall()
        return rows

    def script(self, sql: str) -> None:
        for statement in _statements(sql):
            self._conn.execute(statement)


# What SQLite answers when the disk is full (SQLITE_FULL) and when the operating system refused a
# write (a file size limit or quota: EFBIG, EDQUOT, reported as an I/O error of the write). The
# shared-memory index (-shm) is grown by writing to it: SHMSIZE when that is refused.
_REFUSED_WRITES = frozenset(
    {
        "SQLITE_FULL",
        "SQLITE_IOERR_WRITE",
        "SQLITE_IOERR_FSYNC",
        "SQLITE_IOERR_TRUNCATE",
        "SQLITE_IOERR_SHMSIZE",
    }
)


def _storage_refused(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in _REFUSED_WRITES


class SQLiteConnector:
    """Connections to one SQLite file (or ``:memory:``), its transactions and its SQL."""

    def __init__(
        self,
        path: str,
        *,
        url: str | None = None,
        busy_timeout: float = 30.0,
        connections: Connections = "shared",
    ) -> None:
        if connections not in ("shared", "per-thread"):
            raise ValueError(f"connections must be 'shared' or 'per-thread', got {connections!r}")
        self.path = self.where = path
        self.url = url or f"sqlite:///{path}"
        self._q = load_queries("sqlite")
        with self._errors():
            kind = Shared if path == MEMORY or connections == "shared" else PerThread
            self._connections: Shared | PerThread = kind(path, busy_timeout)

    @property
    def queries(self) -> Mapping[str, str]:
        return self._q

    def migrations(self) -> Sequence[Migration]:
        return load_migrations("sqlite")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3's errors as the journal's: the caller learns *what* failed, not which driver."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise SchemaError(
                    f"the journal schema is missing in {self.path}: {MIGRATE_HINT}"
                ) from exc
            if _storage_refused(exc):
                raise JournalFull(
                    full_message(f"SQLite journal {self.path}", exc, self.path)
                ) from exc
            raise JournalError(f"SQLite journal {self.path}: {exc}") from exc
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as exc:  # "file is not a database", disk I/O, ...
            if _storage_refused(exc):
                raise JournalFull(
                    full_message(f"SQLite journal {self.path}", exc, self.path)
                ) from exc
            raise JournalError(f"SQLite journal {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[_Session]:
        with self._errors(), self._connections() as conn:
            yield _Session(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Session]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any
        exception."""
        with self._errors(), self._connections() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Session(conn)
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # A lone write takes the write lock before it reads too; so does a migration, whose lock keeps
    # other processes out until it commits.
    atomic = migration = transaction

    def stream(self, params: Params, limit: int | None) -> Iterator[sqlite3.Row]:
        """Keyset pages on the request id: the lock is held for one page, never across a yield."""
        after, left = "", limit
        while left is None or left > 0:
            page = _PAGE if left is None else min(_PAGE, left)
            with self.read() as tx:
                rows = tx.all(self._q["records_page"], {**params, "after": after, "page": page})
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["request_id"]
            left = None if left is None else left - len(rows)

    def time(self, value: datetime | None) -> str | None:
        return _ts(value)

    def names(self, names: Sequence[str] | None) -> str | None:
        return None if names is None else json.dumps(list(names))

    def data(self, value: Mapping[str, Any]) -> str:
        return data_json(value)

    def decode_time(self, value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    def decode_data(self, value: str) -> dict[str, Any]:
        return dict(json.loads(value))

    def send_rights(self) -> LocalSendRights:
        """A lock file beside the database; an in-memory one has no other process to exclude."""
        return LocalSendRights() if self.path == MEMORY else file_send_rights(self.path)

    def close(self) -> None:
        self._connections.close()


def sqlite_journal(
    path: str, *, clock: Clock = utcnow, auto_migrate: bool = False, **options: Any
) -> StoreJournal:
    """The :class:`~processor.journal.base.Journal` on an SQLite file (or ``:memory:``): the rules
    over this module's connector. ``options`` are :class:`SQLiteConnector`'s (an unknown one raises
    :class:`TypeError`)."""
    journal = StoreJournal(SQLiteConnector(path, **options), clock=clock)
    if auto_migrate:
        journal.migrate()
    return journal
