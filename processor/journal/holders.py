"""Send rights: proof, across processes, of whether an earlier holder of a request can still send.

A lease says who may *write* a request's row; a fence makes a late write harmless. Neither can stop
a call that a frozen process is about to *send*: a process stopped (SIGSTOP, a hung VM, a long GC
pause) between its last fence check and its vendor call sends that call when it wakes, whatever
happened to its lease meanwhile. A vendor with an idempotency key or natural idempotency makes the
second call harmless; for any other vendor the only protection is to know that the earlier holder
can no longer send, and to wait until then.

A *send right* is that knowledge. A worker takes the right on a request before it records the
intent of a vendor call and keeps it until it releases its claim; the right lives in something the
operating system or the database server ends with the process, never with a timer:

- SQLite (one host): a one-byte POSIX lock on ``<journal file>.senders`` at an offset derived from
  the request id. The kernel drops it when the process dies (SIGKILL included) and keeps it while
  the process is stopped.
- PostgreSQL: a session-level advisory lock (on a dedicated connection of the process) keyed by the
  schema and the request id. The server drops it when the session ends -- a killed process's socket
  closes at once -- and keeps it while a stopped process's kernel keeps the connection open.

Taking a right never waits: :meth:`SendRights.acquire` answers at once, and a caller that does not
get it leaves the request alone for now (``suspended: previous holder alive``). Within a process the
rights are kept in a table too, because POSIX locks and advisory locks do not exclude their own
process (or session); two claims of one process on the same request exclude each other there.

What stays open (see the design document): on PostgreSQL, a process whose right-holding session
ends while the process lives (a server restart, a network partition) loses its rights silently, so
it takes them again before any further intent, but a call it is already about to send is not
covered; nor is a database used through a transaction-pooling proxy, which has no sessions.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from typing import Any, Protocol

from processor.journal.base import JournalError

__all__ = [
    "SendRights",
    "LocalSendRights",
    "FileSendRights",
    "PostgresSendRights",
    "file_send_rights",
    "local_send_rights",
]

_OFFSETS = (1 << 62) - 1  # byte offsets of the lock file: well inside a 64-bit off_t


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class SendRights(Protocol):
    def acquire(self, request_id: str, fence: int) -> bool:
        """Take the right to send for ``request_id`` under the claim ``fence``; True when this
        process holds it now (already holding it under the same fence counts), False when another
        process -- or another claim of this one -- holds it."""

    def release(self, request_id: str, fence: int) -> None:
        """Give the right up if held under ``fence`` (a no-op otherwise)."""

    def close(self) -> None: ...


class LocalSendRights:
    """Rights within one process only: for an in-memory journal, which no other process can use.
    Subclasses add the cross-process lock in :meth:`_lock` and :meth:`_unlock`."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._mutex = threading.Lock()

    def acquire(self, request_id: str, fence: int) -> bool:
        with self._mutex:
            if request_id in self._held:
                return self._held[request_id] == fence
            if not self._lock(request_id):
                return False
            self._held[request_id] = fence
            return True

    def release(self, request_id: str, fence: int) -> None:
        with self._mutex:
            if self._held.get(request_id) != fence:
                return
            del self._held[request_id]
            self._unlock(request_id)

    def held(self) -> dict[str, int]:
        """The rights this object holds now (request id -> fence), for tests and the status page."""
        with self._mutex:
            return dict(self._held)

    def _lock(self, request_id: str) -> bool:
        return True

    def _unlock(self, request_id: str) -> None:
        return None

    def close(self) -> None:
        return None


_local = LocalSendRights()


def local_send_rights() -> LocalSendRights:
    """One process-wide table, for a journal that offers no rights of its own (a test's fake)."""
    return _local


class FileSendRights(LocalSendRights):
    """Byte-range locks on one file beside the SQLite journal. POSIX locks belong to the process,
    and closing *any* descriptor of the file drops all of them: so there is exactly one object per
    file and process (:func:`file_send_rights`), shared by every journal opened on it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        try:
            # never through a symbolic link: following one would create or lock a file elsewhere
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            self._fd = os.open(path, flags, 0o600)
        except OSError as exc:
            why = "it is a symbolic link" if os.path.islink(path) else exc.strerror
            raise JournalError(f"cannot open the send-rights file {path}: {why}") from exc
        self.users = 0

    def _lock(self, request_id: str) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _digest(request_id) & _OFFSETS)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def _unlock(self, request_id: str) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _digest(request_id) & _OFFSETS)

    def close(self) -> None:
        with _files_lock:
            self.users -= 1
            if self.users > 0:
                return
            _files.pop(self.path, None)
        os.close(self._fd)  # the process's last user of the file: its locks go with it


_files: dict[str, FileSendRights] = {}
_files_lock = threading.Lock()


def file_send_rights(journal_path: str) -> FileSendRights:
    """The process's rights for the SQLite journal at ``journal_path`` (one object per file)."""
    path = os.path.realpath(journal_path) + ".senders"
    with _files_lock:
        rights = _files.get(path)
        if rights is None:
            rights = _files[path] = FileSendRights(path)
        rights.users += 1
        return rights


class PostgresSendRights(LocalSendRights):
    """Session-level advisory locks on one connection of this process, opened on first use (a
    deployment whose vendors all deduplicate never opens it)."""

    def __init__(
        self, dsn: str, *, connect_timeout: float = 10.0, schema: str | None = None
    ) -> None:
        super().__init__()
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        # Advisory locks are per database, not per schema: journals in two schemas of one database
        # (the soak's replicas, tests) must not share keys.
        self._schema = schema or ""
        self._named = schema is not None

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                application_name="cancel-processor send-rights",
                connect_timeout=max(1, int(self._connect_timeout)),
            )
            if (
                not self._named
            ):  # the URL's search_path (libpq options), as the journal's pool sees it
                row = conn.execute("SELECT current_schema()").fetchone()
                self._schema = str(row[0]) if row else ""
            try:  # a server-wide idle limit would end the session, and the rights with it
                conn.execute("SET idle_session_timeout = 0")
            except psycopg.errors.UndefinedObject:  # before PostgreSQL 14 there is no such limit
                pass
            self._conn = conn
        return self._conn

    def _key(self, request_id: str) -> int:
        return _digest(f"{self._schema}\0{request_id}") - (1 << 63)  # a signed bigint

    def _lock(self, request_id: str) -> bool:
        import psycopg

        try:
            conn = self._connection()
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (self._key(request_id),)
            ).fetchone()
        except psycopg.Error as exc:
            self._lost(exc)
            return False  # no proof either way: the caller waits, which is always safe
        return bool(row and row[0])

    def _unlock(self, request_id: str) -> None:
        import psycopg

        if self._conn is None:
            return
        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key(request_id),))
        except psycopg.Error as exc:
            self._lost(exc)

    def _lost(self, exc: Exception) -> None:
        """The session is gone, and every right it held with it: forget them, reconnect next
        time."""
        from processor.observe import get_logger

        get_logger(component="send_rights").warning(
            "send_rights_session_lost", error=type(exc).__name__, held=len(self._held)
        )
        self._held.clear()
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        with self._mutex:
            self._held.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
