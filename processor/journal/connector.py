"""What the journal asks of a store: connections, transactions, and the running of its own SQL.

The journal's rules -- leases, fences, which row a claim may take, what a transition writes -- are
written once, in :mod:`processor.journal.store`. A connector (:mod:`processor.journal.sqlite`,
:mod:`processor.journal.postgres`) owns everything that differs between databases and nothing
else: the driver and its connections, how a transaction is opened, the dialect's named queries
(``sql/<dialect>.sql``) and migrations, how values are written to and read from its column types,
where send rights live, and how the driver's errors become :class:`JournalError`.

Every query of one name means the same in both dialects and takes the same parameters; a dialect
may ignore some of them. Leases are the one deliberate difference: SQLite times them with the
injected clock (``lease_expires_at``), PostgreSQL with the database's (``lease_seconds``), so the
journal passes both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from processor.journal.holders import LocalSendRights
from processor.journal.queries import Migration
from processor.journal.rows import Row

__all__ = ["MIGRATE_HINT", "Params", "Session", "Connector", "full_message"]

MIGRATE_HINT = "run `cancel-processor journal migrate`"


def full_message(where: str, exc: BaseException, path: str | None = None) -> str:
    """Why a write was refused, naming disk space (and how much is free where ``path`` lives)."""
    free = ""
    if path is not None:
        try:
            free = (
                f", {shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free:,} bytes free"
            )
        except OSError:
            pass
    return (
        f"{where}: {exc}: the disk that holds the journal is full or refuses writes (disk space, "
        f"a quota, a file size limit{free}); waiting for space, nothing is lost"
    )


Params = Mapping[str, Any]


class Session(Protocol):
    """Statements on one connection, inside whatever transaction the connector opened for them."""

    def run(self, query: str, params: Params | None = None) -> None: ...

    def one(self, query: str, params: Params | None = None) -> Row | None:
        """The first row the statement returns (the statement is run to its end either way)."""

    def all(self, query: str, params: Params | None = None) -> Sequence[Row]: ...

    def script(self, sql: str) -> None:
        """Run a migration: several statements, no parameters."""


class Connector(Protocol):
    url: str  # without its password: safe to log
    where: str  # what messages name: the file (SQLite) or the redacted URL (PostgreSQL)

    @property
    def queries(self) -> Mapping[str, str]:
        """The dialect's named queries."""

    def migrations(self) -> Sequence[Migration]:
        """The dialect's migrations, oldest first."""

    def read(self) -> AbstractContextManager[Session]:
        """Reads, outside any explicit transaction."""

    def atomic(self) -> AbstractContextManager[Session]:
        """One writing statement, atomic on its own; SQLite still takes the write lock first."""

    def transaction(self) -> AbstractContextManager[Session]:
        """Several statements, committed together on success, rolled back on any exception;
        a row read in it stays the transaction's until it ends (write lock, ``FOR UPDATE``)."""

    def migration(self) -> AbstractContextManager[Session]:
        """A transaction that no other process migrates at the same time."""

    def stream(self, params: Params, limit: int | None) -> Iterator[Row]:
        """The rows of the ``records`` filter ``params``, ordered by request id, ``limit`` at
        most, read a batch at a time; lazy: nothing runs before the first row is asked for."""

    def time(self, value: datetime | None) -> Any:
        """An aware datetime as the database stores it."""

    def names(self, names: Sequence[str] | None) -> Any:
        """A list of state names as a query parameter (None: no filter)."""

    def data(self, value: Mapping[str, Any]) -> Any:
        """The record's ``data`` as the database stores it."""

    def decode_time(self, value: Any) -> datetime | None: ...

    def decode_data(self, value: Any) -> dict[str, Any]: ...

    def send_rights(self) -> LocalSendRights:
        """A new holder of send rights (:mod:`processor.journal.holders`) for this database."""

    def close(self) -> None: ...
