"""Optional SQLite persistence: the marketplace survives a restart with everything it had.

Write-through, deliberately simple: one table of JSON documents per kind (``products``,
``marketplaces``, ``users``, ``assets``, ``requests``, ``conversations``), the ledger as rows,
and a ``meta`` table. Every change of the store is written in one transaction before the API
answers, so a client that saw a response can trust that a restarted mock still knows it.

Limits: one process per file (no cross-process locking beyond SQLite's own); WAL with
``synchronous=NORMAL``: a power cut may lose the last transactions, a killed process does not.
Writing costs roughly a millisecond per change, which is why the benchmark runs in memory.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cancel_sandbox.marketplace.ledger import Entry

__all__ = ["SqliteState", "KINDS"]

KINDS = ("products", "marketplaces", "users", "assets", "requests", "conversations")


class SqliteState:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # The store serialises every access with its own lock; the server thread and a test's
        # thread may both reach here, hence check_same_thread=False plus this lock for safety.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            for kind in KINDS:
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {kind} (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"
                )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY, doc TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )

    def is_empty(self) -> bool:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM products").fetchone()
        return not row[0]

    def load(self) -> tuple[dict[str, list[dict[str, Any]]], list[Entry], dict[str, Any]]:
        """Every document by kind (in insertion order), the ledger, and the meta values."""
        with self._lock:
            docs = {
                kind: [
                    json.loads(doc)
                    for (doc,) in self._db.execute(f"SELECT doc FROM {kind} ORDER BY rowid")
                ]
                for kind in KINDS
            }
            ledger = [
                Entry.from_dict(json.loads(doc))
                for (doc,) in self._db.execute("SELECT doc FROM ledger ORDER BY seq")
            ]
            meta = {
                key: json.loads(value)
                for key, value in self._db.execute("SELECT key, value FROM meta")
            }
        return docs, ledger, meta

    def write(
        self,
        docs: Mapping[str, Iterable[tuple[str, dict[str, Any]]]],
        ledger: Iterable[Entry],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Upsert documents and append ledger entries, atomically."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for kind, rows in docs.items():
                    self._db.executemany(
                        f"INSERT INTO {kind} (id, doc) VALUES (?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                        [
                            (object_id, json.dumps(doc, separators=(",", ":")))
                            for object_id, doc in rows
                        ],
                    )
                self._db.executemany(
                    "INSERT INTO ledger (seq, doc) VALUES (?, ?)",
                    [(entry.seq, json.dumps(entry.as_dict())) for entry in ledger],
                )
                for key, value in (meta or {}).items():
                    self._db.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, json.dumps(value)),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
