"""How the SQLite journal gets its connections: the pragmas every one needs, and who shares them.

Every connection runs in autocommit (the store issues ``BEGIN IMMEDIATE`` itself), waits up to
``busy_timeout`` seconds for another writer, commits with ``synchronous=FULL`` and uses WAL, so
readers never block the writer. A file on which WAL cannot be enabled (a file system without
shared memory, such as many network mounts) is refused with :class:`JournalError` rather than used
with weaker guarantees.

Two ways to hand connections to threads: :class:`Shared` (one connection, one unit of work at a
time, behind a lock) and :class:`PerThread` (a connection per thread, opened on first use). See
:mod:`processor.journal.sqlite` for why ``shared`` is the default.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from typing import Literal

from processor.journal.base import JournalError

__all__ = ["MEMORY", "Connections", "Shared", "PerThread", "connect"]

MEMORY = ":memory:"
Connections = Literal["shared", "per-thread"]


def _create_private(path: str) -> None:
    """Create a new journal file readable by its owner only (0600), exclusively and without
    following a symbolic link. SQLite gives the ``-wal`` and ``-shm`` files the database file's
    permissions, so they are private too. The journal holds customer and subscription ids and
    vendor answers: nobody else on the host needs to read them. An existing file keeps the
    permissions its operator gave it, and may be reached through a link; a link that leads nowhere
    is refused (following it would create a file wherever it points, with SQLite's 0644), and so
    is a link in place of the ``-wal``, ``-shm`` or ``-journal`` file."""
    try:
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        link = False
    except OSError:
        return  # not readable here: sqlite3.connect says why, in its own words
    if link and not os.path.exists(path):
        raise JournalError(
            f"SQLite journal {path} is a symbolic link to {os.readlink(path)}, which does not "
            "exist: refusing to create the journal through it; point journal.url at the file "
            "itself (or create the target first)"
        )
    for suffix in ("-wal", "-shm", "-journal"):
        if os.path.islink(path + suffix):
            raise JournalError(
                f"SQLite journal {path}: {path + suffix} is a symbolic link; SQLite would write "
                "the journal through it. Remove it (SQLite creates that file itself)"
            )
    if link:
        return  # an existing journal reached through a link: the operator's choice
    try:
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(path, flags, 0o600))
    except FileExistsError:
        pass
    except OSError:
        pass  # not creatable here: sqlite3.connect says why, in its own words


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    if path != MEMORY and not path.startswith("file:"):
        _create_private(path)
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=64,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    if path != MEMORY:
        _use_wal(conn, path, busy_timeout)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _use_wal(conn: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    # Switching a new file to WAL can answer "database is locked" at once, without SQLite's busy
    # handler, while another process is switching it too: retry within the busy timeout.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
    if mode != "wal":
        conn.close()
        raise JournalError(f"SQLite journal {path}: WAL mode is unavailable (journal_mode={mode})")


class Shared:
    """One connection, one unit of work at a time."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._conn = connect(path, busy_timeout)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PerThread:
    """A connection per thread, opened on the thread's first use; all closed by :meth:`close`."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        with self():  # open the creating thread's connection now: a bad path fails at open time
            pass

    @contextlib.contextmanager
    def __call__(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise JournalError(f"the SQLite journal {self._path} is closed")
                conn = self._local.conn = connect(self._path, self._busy_timeout)
                self._all.append(conn)
        yield conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()
