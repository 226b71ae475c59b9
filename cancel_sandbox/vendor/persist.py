"""Optional SQLite persistence for the mock vendor, so a restarted vendor keeps its subscriptions,
idempotency keys, ledger, the calls it received but has not applied yet (:mod:`.late`) and its
asynchronous operations (:mod:`.operations`).

Write-through: the in-memory state stays authoritative while running, and every change is written
and committed at once (WAL journal, ``synchronous=NORMAL``: a vendor process killed with SIGKILL
loses nothing; a power cut may lose the last commits, which no test here simulates). Each write
is a few tens of microseconds on a local disk and runs on the event loop thread: acceptable for a
mock, and it keeps every handler's check-and-change atomic without locks.

One process per file. Opening a file written by an incompatible version fails with
``sqlite3.DatabaseError`` at start-up rather than later.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["SqliteStore"]

_SCHEMA = """
create table if not exists subscriptions (
    id text primary key,
    data text not null
);
create table if not exists idempotency_keys (
    key text primary key,
    fingerprint text not null,
    status_code integer not null,
    body text not null
);
create table if not exists calls (
    seq integer primary key,
    data text not null
);
create table if not exists effects (
    seq integer primary key,
    data text not null
);
create table if not exists late (
    seq integer primary key,
    data text not null
);
create table if not exists operations (
    id text primary key,
    data text not null
);
"""


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        # The server thread, not the one that built the app, does the writing.
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("pragma journal_mode=wal")
        self._conn.execute("pragma synchronous=normal")
        self._conn.executescript(_SCHEMA)

    def load_subscriptions(self) -> Iterator[dict[str, Any]]:
        for (data,) in self._conn.execute("select data from subscriptions"):
            yield json.loads(data)

    def load_keys(self) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
        rows = self._conn.execute(
            "select key, fingerprint, status_code, body from idempotency_keys"
        )
        for key, fp, status_code, body in rows:
            yield key, fp, status_code, json.loads(body)

    def load_calls(self) -> Iterator[dict[str, Any]]:
        for (data,) in self._conn.execute("select data from calls order by seq"):
            yield json.loads(data)

    def load_effects(self) -> Iterator[dict[str, Any]]:
        for (data,) in self._conn.execute("select data from effects order by seq"):
            yield json.loads(data)

    def put_subscription(self, data: dict[str, Any]) -> None:
        self._conn.execute(
            "insert into subscriptions (id, data) values (?, ?) on conflict (id) do update set "
            "data = excluded.data",
            (data["id"], json.dumps(data)),
        )

    def put_key(self, key: str, fp: str, status_code: int, body: dict[str, Any]) -> None:
        self._conn.execute(
            "insert or replace into idempotency_keys (key, fingerprint, status_code, body) values "
            "(?, ?, ?, ?)",
            (key, fp, status_code, json.dumps(body)),
        )

    def add_call(self, data: dict[str, Any]) -> None:
        self._conn.execute(
            "insert into calls (seq, data) values (?, ?)", (data["seq"], json.dumps(data))
        )

    def add_effect(self, data: dict[str, Any]) -> None:
        self._conn.execute(
            "insert into effects (seq, data) values (?, ?)", (data["seq"], json.dumps(data))
        )

    def load_late(self) -> Iterator[dict[str, Any]]:
        for (data,) in self._conn.execute("select data from late order by seq"):
            yield json.loads(data)

    def add_late(self, seq: int, data: dict[str, Any]) -> None:
        self._conn.execute("insert into late (seq, data) values (?, ?)", (seq, json.dumps(data)))

    def remove_late(self, seq: int) -> None:
        self._conn.execute("delete from late where seq = ?", (seq,))

    def clear_late(self) -> None:
        self._conn.execute("delete from late")

    def load_operations(self) -> Iterator[dict[str, Any]]:
        for (data,) in self._conn.execute("select data from operations order by id"):
            yield json.loads(data)

    def put_operation(self, operation_id: str, data: dict[str, Any]) -> None:
        self._conn.execute(
            "insert into operations (id, data) values (?, ?) on conflict (id) do update set "
            "data = excluded.data",
            (operation_id, json.dumps(data)),
        )

    def clear_operations(self) -> None:
        self._conn.execute("delete from operations")

    def clear(self) -> None:
        tables = ("subscriptions", "idempotency_keys", "calls", "effects", "late", "operations")
        for table in tables:
            self._conn.execute(f"delete from {table}")

    def close(self) -> None:
        self._conn.close()
