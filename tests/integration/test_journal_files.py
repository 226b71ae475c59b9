"""The SQLite journal's files are private: created 0600, and so are its -wal and -shm files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from processor.journal import open_journal


def test_a_new_journal_and_its_wal_and_shm_files_are_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    old = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
        journal.migrate()
        journal.ensure("PR-0000-0000-0000-001", idempotency_key="cancel-PR-0000-0000-0000-001")
        try:
            files = sorted(p.name for p in tmp_path.iterdir())
            assert files == ["journal.db", "journal.db-shm", "journal.db-wal"]
            modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in files}
            assert modes == {name: 0o600 for name in files}, {k: oct(v) for k, v in modes.items()}
        finally:
            journal.close()
    finally:
        os.umask(old)


def test_an_existing_journal_keeps_the_mode_its_operator_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = open_journal(f"sqlite:///{path}")
    journal.migrate()
    journal.close()
    path.chmod(0o640)  # shared with a group on purpose
    journal = open_journal(f"sqlite:///{path}")
    journal.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
