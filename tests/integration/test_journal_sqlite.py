"""The SQLite journal's own behaviour (threads, WAL, processes), and opening a journal by URL."""

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from processor.journal import open_journal, redact_url
from processor.journal.base import State

from .. import journal_support
from ..journal_support import (
    REPO,
    FakeClock,
    Store,
    new_request,
    with_timer,
)

store, clock = journal_support.store, journal_support.clock


# -- SQLite only -----------------------------------------------------------------------------------


def test_sqlite_memory_store_is_one_database_shared_by_threads(clock: FakeClock) -> None:
    journal = open_journal("sqlite:///:memory:", clock=clock, auto_migrate=True)
    try:
        workers = [
            threading.Thread(target=new_request, args=(journal, f"PR-{n}")) for n in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=10)
        assert journal.counts()[State.NEW] == 4
    finally:
        journal.close()


@pytest.mark.parametrize("connections", ["shared", "per-thread"])
def test_sqlite_file_uses_wal_and_both_connection_modes_serialise_claims(
    tmp_path: Path, clock: FakeClock, connections: str
) -> None:
    journal = open_journal(
        f"sqlite:///{tmp_path / 'j.db'}",
        clock=clock,
        connections=connections,
        auto_migrate=True,
        pool_size=4,
    )  # pool_size is PostgreSQL's: ignored here
    try:
        with sqlite3.connect(tmp_path / "j.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for n in range(6):
            with_timer(
                Store("sqlite", journal, clock, 30, lambda _: journal, lambda *_: []),
                f"PR-{n}",
                -10,
            )
        taken: list[list[str]] = []
        start = threading.Barrier(3, timeout=10)

        def poll(owner: str) -> None:
            start.wait()
            taken.append([c.request_id for c in journal.claim_due(owner, 60, limit=6)])

        threads = [threading.Thread(target=poll, args=(f"w{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert sorted(sum(taken, [])) == [f"PR-{n}" for n in range(6)]
    finally:
        journal.close()


CHILD = textwrap.dedent("""
    import sys
    from processor.journal import open_journal
    from processor.journal.base import State
    journal = open_journal("sqlite:///" + sys.argv[1], auto_migrate=True)
    for n in range(int(sys.argv[3])):
        rid = f"PR-{sys.argv[2]}-{n}"
        journal.ensure(rid, idempotency_key=rid)
        claim = journal.claim(rid, sys.argv[2], 3600)
        claim = journal.transition(claim, State.TERMINATING, attempts=1)
        # The lease is kept: the process "dies" holding it.
        journal.transition(claim, State.TERMINATED)
    journal.close()
""")


@pytest.mark.slow
def test_sqlite_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), name, "25"], cwd=REPO, stderr=subprocess.PIPE
        )
        for name in ("proc-a", "proc-b")
    ]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()

    journal = open_journal(f"sqlite:///{path}")
    try:
        journal.check_schema()
        assert journal.counts()[State.TERMINATED] == 50
        assert journal.claim("PR-proc-a-0", "parent", 60) is None  # proc-a's lease is still live
        assert [t.owner for t in journal.transitions("PR-proc-b-7")] == ["proc-b", "proc-b"]
    finally:
        journal.close()


# -- opening by URL --------------------------------------------------------------------------------


def test_open_journal_refuses_unknown_schemes_without_showing_the_password() -> None:
    with pytest.raises(ValueError) as refused:
        open_journal("mysql://app:s3cret-pass@db.internal/journal")
    message = str(refused.value)
    assert "'mysql'" in message and "sqlite:///" in message and "postgresql://" in message
    assert "s3cret-pass" not in message
    for malformed in ("sqlite://relative.db", "sqlite:///", "journal.db"):
        with pytest.raises(ValueError):
            open_journal(malformed)
    with pytest.raises(TypeError):
        open_journal("sqlite:///:memory:", busy_timeuot=3)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/journal", "postgresql://app:***@db:5432/journal"),
        ("postgres://app:p@ss/w0rd@db/journal", "postgres://app:***@db/journal"),
        (
            "postgresql://db/journal?user=app&password=s3cret&sslmode=require",
            "postgresql://db/journal?user=app&password=***&sslmode=require",
        ),
        ("postgresql://app@db/journal", "postgresql://app@db/journal"),
        ("sqlite:////var/lib/cancel/journal.db", "sqlite:////var/lib/cancel/journal.db"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_store_reports_its_url_without_the_password(tmp_path: Path) -> None:
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    try:
        assert journal.url == f"sqlite:///{tmp_path / 'j.db'}"
    finally:
        journal.close()


def test_sql_files_parse_and_every_query_is_used() -> None:
    from processor.journal.queries import load_migrations, load_queries, parse_queries

    for dialect in ("sqlite", "postgres"):
        # The journal's rules (store.py, schema.py, rate_slots.py) run most queries; the dialect's
        # connector the rest.
        files = ("store.py", "schema.py", "rate_slots.py", f"{dialect}.py")
        source = "".join((REPO / "processor" / "journal" / f).read_text() for f in files)
        unused = [name for name in load_queries(dialect) if f'q["{name}"]' not in source]
        assert unused == [], f"{dialect}.sql has queries its store never runs"
        versions = [m.version for m in load_migrations(dialect)]
        assert versions == list(range(1, len(versions) + 1))
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    with pytest.raises(ValueError, match="before the first"):
        parse_queries("SELECT 0;\n-- name: a\nSELECT 1;")
    assert json.loads(json.dumps(parse_queries("-- name: a\n-- doc\nSELECT 1;"))) == {
        "a": "-- doc\nSELECT 1"
    }
