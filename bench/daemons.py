"""Processor daemons as real processes, and the journal schemas they share, for the soak.

A :class:`Daemon` is one ``python -m processor run`` process that can be SIGKILLed and restarted,
frozen with SIGSTOP and thawed; its stderr (JSON log lines) is appended to one file across
restarts. :func:`held_by` and :func:`taken_from` read, behind the daemons' backs, which claims a
process holds (and under which fence) and which of them another has taken over since.
:func:`fresh_schema` gives replicas on PostgreSQL a schema of their own through libpq's
``options`` in the URL, so every connection any of them opens (pool, migrate command) lands there
without a processor setting.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from processor.journal.base import FINAL_STATES

__all__ = [
    "Daemon",
    "catches_sigterm",
    "fresh_schema",
    "has_moved",
    "schema_url",
    "sigterm_when_ready",
]


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler installed (Linux: SigCgt in
    /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return False
    caught = next(
        (line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0"
    )
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def sigterm_when_ready(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM ``process`` once it catches SIGTERM (at most ``timeout`` s later). One restarted a
    moment ago may still be loading Python, and a SIGTERM then kills it by default: that would
    say nothing about the processor's shutdown, which is what the exit status is read for."""
    deadline = time.monotonic() + timeout
    while (
        process.poll() is None and not catches_sigterm(process.pid) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)


@dataclass
class Daemon:
    name: str
    config: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    frozen: bool = False
    started: float = 0.0  # time.monotonic() at the last start

    def start(self) -> None:
        self.started = time.monotonic()
        with self.log.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "processor", "run", "--config", str(self.config)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                # The run's own directory: files a PostgreSQL configuration keeps in the working
                # directory (the guard's latches) belong to this run, not to the next one.
                cwd=self.config.parent,
            )

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def uptime(self) -> float:
        """Seconds since the last start (0 before the first)."""
        return time.monotonic() - self.started if self.started else 0.0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap (a frozen process dies as well)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.frozen = False

    def freeze(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            self.frozen = True

    def thaw(self) -> None:
        if self.alive() and self.frozen:
            self.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        self.frozen = False

    def stop(self, timeout: float) -> int | str:
        """SIGTERM (after SIGCONT if frozen) and the exit status, or why there is none. A process
        that does not exit in time is killed, so that nothing is left behind."""
        if self.process is None:
            return "never started"
        if self.process.poll() is None:
            self.thaw()
            sigterm_when_ready(self.process)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return f"no exit within {timeout:.0f}s"


def schema_url(url: str, schema: str) -> str:
    """``url`` with libpq's ``options`` setting the search_path to ``schema``."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def fresh_schema(postgres_url: str, prefix: str = "soak", keep: bool = False) -> Iterator[str]:
    """A new, empty schema for one run (dropped afterwards unless ``keep``); yields its URL."""
    import psycopg
    from psycopg import sql

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema_url(postgres_url, schema)
    finally:
        if not keep:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


def _journal_rows(journal_url: str, query: str, params: list[object]) -> list[tuple[object, ...]]:
    """Rows of ``query`` (``?`` placeholders) on the journal, behind the daemons' backs."""
    if journal_url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(journal_url[len("sqlite:///") :], timeout=30)
        try:
            return list(conn.execute(query, params))
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(journal_url, autocommit=True) as pg:
        return pg.execute(query.replace("?", "%s"), params).fetchall()


def _journal_time(journal_url: str, moment: datetime) -> object:
    """``moment`` as the journal compares it: SQLite stores ISO text, PostgreSQL timestamptz."""
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if journal_url.startswith("sqlite:///") else moment
    )


def held_by(journal_url: str, pid: int) -> dict[str, int]:
    """Open requests on which process ``pid`` holds a live lease (owner = host:pid:nonce), with the
    fence of each claim. A lease that ran out is not held: it is anyone's to claim."""
    finals = sorted(state.value for state in FINAL_STATES)
    now = datetime.now(UTC)
    rows = _journal_rows(
        journal_url,
        "SELECT request_id, fence FROM requests WHERE lease_owner LIKE ? "
        "AND lease_expires_at > ? "
        f"AND state NOT IN ({','.join('?' * len(finals))})",
        [f"%:{pid}:%", _journal_time(journal_url, now), *finals],
    )
    return {str(row[0]): int(row[1]) for row in rows}  # type: ignore[call-overload]


def has_moved(journal_url: str, pid: int) -> bool:
    """Whether process ``pid`` has moved any request in the journal (a transition of its own):
    it is past start-up and at work. A claim alone is not enough: a restarted daemon claims at
    once, then may wait seconds for a stranded claim's lease before its first step."""
    rows = _journal_rows(
        journal_url,
        "SELECT 1 FROM transitions WHERE owner LIKE ? LIMIT 1",
        [f"%:{pid}:%"],
    )
    return bool(rows)


def taken_from(journal_url: str, held: Mapping[str, int]) -> set[str]:
    """Those of the claims ``held`` (request id -> fence, from :func:`held_by`) that another claim
    has superseded since: the row's fence moved on. Every claim bumps the fence, so this counts
    exactly the takeovers, whoever wrote the row's last transition before."""
    if not held:
        return set()
    ids = sorted(held)
    rows = _journal_rows(
        journal_url,
        f"SELECT request_id, fence FROM requests WHERE request_id IN ({','.join('?' * len(ids))})",
        list(ids),
    )
    return {str(rid) for rid, fence in rows if int(fence) > held[str(rid)]}  # type: ignore[call-overload]
