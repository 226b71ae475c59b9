"""Send rights (processor.journal.holders) across real processes, on both stores.

A right taken by another process is refused while that process lives -- stopped included -- and
free the moment it dies; within one process two claims (fences) of one request exclude each other;
releasing under a stale fence gives nothing away.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.daemons import fresh_schema
from processor.journal import open_journal
from processor.journal.base import Journal
from processor.journal.holders import LocalSendRights, file_send_rights

# A second process: open the journal, take the right on PR-1 under fence 7, say so, then wait.
HOLDER = textwrap.dedent("""
    import sys, time
    from processor.journal import open_journal
    journal = open_journal(sys.argv[1], pool_size=1)
    print(journal.senders.acquire("PR-1", 7), flush=True)
    time.sleep(120)
""")


@pytest.fixture(params=["sqlite", "postgres"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/journal.db"
        journal = open_journal(url)
        journal.migrate()
        journal.close()
        yield url
        return
    with fresh_schema(request.getfixturevalue("postgres_url"), prefix="holders_test") as url:
        journal = open_journal(url, pool_size=1)
        journal.migrate()
        journal.close()
        yield url


@pytest.fixture
def journal(journal_url: str) -> Iterator[Journal]:
    opened = open_journal(journal_url, pool_size=1)
    try:
        yield opened
    finally:
        opened.close()


def start_holder(journal_url: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, journal_url], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "True"
    return holder


def test_a_right_held_by_a_live_process_is_refused_even_while_it_is_stopped(
    journal: Journal, journal_url: str
) -> None:
    rights = journal.senders  # type: ignore[attr-defined]
    holder = start_holder(journal_url)
    try:
        assert rights.acquire("PR-1", 8) is False
        assert rights.acquire("PR-2", 8) is True  # another request: its own right
        holder.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        assert rights.acquire("PR-1", 9) is False  # frozen is alive: it may still send
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        for _ in range(50):  # bounded: PostgreSQL ends the dead session within moments
            if rights.acquire("PR-1", 9):
                break
            time.sleep(0.1)
        assert rights.held() == {"PR-1": 9, "PR-2": 8}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
    # Released under its fence, the right is another process's to take.
    rights.release("PR-1", 9)
    again = start_holder(journal_url)
    again.kill()
    again.wait(timeout=10)


def test_two_claims_of_one_process_exclude_each_other(journal: Journal, journal_url: str) -> None:
    rights = journal.senders  # type: ignore[attr-defined]
    assert rights.acquire("PR-1", 3) is True
    assert rights.acquire("PR-1", 3) is True  # the same claim again: still its own
    assert rights.acquire("PR-1", 4) is False  # a later claim in this process must wait as well
    rights.release("PR-1", 4)  # a stale or foreign fence gives nothing away
    assert rights.held() == {"PR-1": 3}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, journal_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "False"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    rights.release("PR-1", 3)
    assert rights.acquire("PR-1", 4) is True


def test_a_released_claim_gives_its_right_up(journal: Journal) -> None:
    journal.ensure("PR-9", idempotency_key="cancel-PR-9")
    claim = journal.claim("PR-9", "me", 30)
    assert claim is not None
    rights = journal.senders  # type: ignore[attr-defined]
    assert rights.acquire("PR-9", claim.fence)
    journal.release(claim)
    assert "PR-9" not in rights.held()


def test_journals_on_one_sqlite_file_share_one_lock_table(tmp_path: Path) -> None:
    # POSIX locks belong to the process: two objects on one file must not release each other's.
    first, second = (
        file_send_rights(str(tmp_path / "j.db")),
        file_send_rights(str(tmp_path / "j.db")),
    )
    try:
        assert first is second
        assert first.acquire("PR-1", 1) and not second.acquire("PR-1", 2)
    finally:
        first.close()
        second.close()


def test_in_memory_rights_are_local_to_the_process() -> None:
    rights = LocalSendRights()
    assert rights.acquire("PR-1", 1) and not rights.acquire("PR-1", 2)
    rights.release("PR-1", 1)
    assert rights.acquire("PR-1", 2)
