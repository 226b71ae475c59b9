"""The PostgreSQL journal: several replicas on one database.

Concurrency: claims are single ``UPDATE`` statements (row locks make concurrent claimers of one
request queue, and exactly one wins); ``claim_due`` picks rows with ``FOR UPDATE SKIP LOCKED``, so
two replicas polling at once get disjoint sets without waiting on each other. Every transition
locks the row under its fence (``SELECT ... FOR UPDATE``) and writes it back with the fence in the
``UPDATE``'s ``WHERE`` clause; a fence that moved on means :class:`LeaseLost`.
Transactions hold a few statements and never a remote call.

Time: leases are timed by the *database* clock (``now()``): replicas whose clocks disagree still
agree on who holds a lease, and ``lease_expires_at`` is the server's time. The injected ``clock``
decides due-ness (``next_attempt_at``) and the recorded times (created, updated, transitions), so
tests and policy timers can move it by hand.

Connections: a :class:`psycopg_pool.ConnectionPool` (``pool_size`` at most, ``min_size`` kept
open), each connection checked before use, in autocommit with explicit transactions, session time
zone UTC, and ``search_path`` set to ``schema`` when given (tests use a fresh schema per run).

Stalls: a process frozen (SIGSTOP, a VM paused, swapping) between two statements of a transaction
keeps its row locks, and every other replica's claim of those rows waits on them: its lease runs
out, but nobody can take the work over. Each session therefore sets
``idle_in_transaction_session_timeout`` (``stall_timeout``): the server ends a transaction left idle
that long, releasing its locks. Journal transactions send their statements back to back, so only a
stalled process meets it; when it wakes, its write fails (:class:`JournalError`) and the claim is
someone else's to take.

Schema: only ``migrate()`` changes it (``cancel-processor journal migrate``); the daemon calls
``check_schema()`` at start. Migrations take an advisory lock, so replicas may all run them.

Failure modes: an unreachable server raises :class:`JournalError` after ``connect_timeout``
seconds; a missing or old schema :class:`SchemaError`. Messages show the URL without its password.

The journal's rules are :mod:`processor.journal.store`'s; this module is its connector.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from processor.journal import redact_url
from processor.journal.base import JournalError, JournalFull, SchemaError
from processor.journal.connector import MIGRATE_HINT, Params, full_message
from processor.journal.holders import LocalSendRights, PostgresSendRights
from processor.journal.queries import Migration, load_migrations, load_queries
from processor.journal.rows import Clock, storable, storable_params, utcnow
from processor.journal.store import StoreJournal

__all__ = ["postgres_journal", "PostgresConnector"]

_ITERSIZE = 500  # rows per fetch of the server-side cursor in records()

Cursor = psycopg.Cursor[DictRow]


class _Session:
    def __init__(self, cur: Cursor) -> None:
        self._cur = cur

    def run(self, query: str, params: Params | None = None) -> None:
        self._cur.execute(query, storable_params(params))

    def one(self, query: str, params: Params | None = None) -> DictRow | None:
        self._cur.execute(query, storable_params(params))
        return self._cur.fetchone()

    def all(self, query: str, params: Params | None = None) -> list[DictRow]:
        self._cur.execute(query, storable_params(params))
        return self._cur.fetchall()

    def script(self, sql: str) -> None:
        self._cur.execute(sql)  # no parameters: a "%" in a migration is just a character


class PostgresConnector:
    """A pool of connections to one PostgreSQL database (psycopg 3), its transactions, its SQL."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        min_size: int = 1,
        schema: str | None = None,
        connect_timeout: float = 10.0,
        stall_timeout: float = 5.0,
    ) -> None:
        self.url = self.where = redact_url(url)
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be positive, got {stall_timeout!r}")
        if not 1 <= min_size <= pool_size:
            raise ValueError(f"need 1 <= min_size <= pool_size, got {min_size=}, {pool_size=}")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise ValueError(f"malformed PostgreSQL journal URL {self.url!r}") from None
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if "application_name" not in params:
            kwargs["application_name"] = "cancel-processor"
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = max(1, int(connect_timeout))
        self._schema = schema
        self._dsn = url  # with its password, if any: for the send-rights session, never shown
        self._connect_timeout = connect_timeout
        self._stall_ms = max(1, round(stall_timeout * 1000))
        self._q = load_queries("postgres")
        self._pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=pool_size,
            kwargs=kwargs,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            name="journal",
            open=True,
        )

    @property
    def queries(self) -> Mapping[str, str]:
        return self._q

    def migrations(self) -> Sequence[Migration]:
        return load_migrations("postgres")

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(
            sql.SQL("SET idle_in_transaction_session_timeout = {}").format(
                sql.Literal(self._stall_ms)
            )
        )
        if self._schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg's errors as the journal's: the caller learns *what* failed, not which driver."""
        try:
            yield
        except psycopg.errors.UndefinedTable as exc:
            raise SchemaError(
                f"the journal schema is missing in {self.url}: {MIGRATE_HINT}"
            ) from exc
        except psycopg.errors.IdleInTransactionSessionTimeout as exc:  # see "Stalls" above
            raise JournalError(
                f"PostgreSQL journal {self.url}: this process stalled for over "
                f"{self._stall_ms} ms in a transaction, and the server ended it"
            ) from exc
        except (psycopg.errors.DiskFull, psycopg.errors.IoError) as exc:  # 53100, 58030
            raise JournalFull(full_message(f"PostgreSQL journal {self.url}", exc)) from exc
        except (
            psycopg.OperationalError,
            psycopg.InterfaceError,
        ) as exc:  # unreachable, pool timeout, ...
            raise JournalError(f"PostgreSQL journal {self.url}: {exc}") from exc

    @contextlib.contextmanager
    def cursor(self, *, transaction: bool) -> Iterator[Cursor]:
        """A pooled connection's cursor, in one transaction (committed on success, rolled back on
        any exception, LeaseLost included) or outside any (each statement commits on its own)."""
        with self._errors(), self._pool.connection() as conn:
            with (
                conn.transaction() if transaction else contextlib.nullcontext(),
                conn.cursor() as cur,
            ):
                yield cur

    @contextlib.contextmanager
    def read(self) -> Iterator[_Session]:
        with self.cursor(transaction=False) as cur:
            yield _Session(cur)

    # One statement in autocommit is atomic on its own, and a claim's UPDATE makes concurrent
    # claimers of one row queue on its lock: no transaction around it, no round trip more.
    atomic = read

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Session]:
        with self.cursor(transaction=True) as cur:
            yield _Session(cur)

    @contextlib.contextmanager
    def migration(self) -> Iterator[_Session]:
        with self.cursor(transaction=True) as cur:
            cur.execute(
                self._q["migration_lock"],
                {"lock": f"cancel-processor journal {self._schema or ''}"},
            )
            if self._schema is not None:
                cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema))
                )
            yield _Session(cur)

    def stream(self, params: Params, limit: int | None) -> Iterator[DictRow]:
        """Through a server-side cursor: holds one pooled connection until exhausted or closed."""
        with self._errors(), self._pool.connection() as conn, conn.transaction():
            with conn.cursor(name="journal_records") as cur:
                cur.itersize = _ITERSIZE
                cur.execute(self._q["records"], {**params, "limit": limit})
                yield from cur

    def time(self, value: datetime | None) -> datetime | None:
        return value

    def names(self, names: Sequence[str] | None) -> list[str] | None:
        return None if names is None else list(names)

    def data(self, value: Mapping[str, Any]) -> Jsonb:
        return Jsonb(storable(value))

    def decode_time(self, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def decode_data(self, value: Any) -> dict[str, Any]:
        return dict(value)

    def send_rights(self) -> LocalSendRights:
        """Advisory locks of one session of this process, on its own connection."""
        return PostgresSendRights(
            self._dsn, connect_timeout=self._connect_timeout, schema=self._schema
        )

    def close(self) -> None:
        self._pool.close()


def postgres_journal(url: str, *, clock: Clock = utcnow, **options: Any) -> StoreJournal:
    """The :class:`~processor.journal.base.Journal` on PostgreSQL (psycopg 3 and its pool): the
    rules over this module's connector. ``options`` are :class:`PostgresConnector`'s (an unknown
    one raises :class:`TypeError`)."""
    return StoreJournal(PostgresConnector(url, **options), clock=clock)
