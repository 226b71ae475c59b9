"""Files the processor creates are never created through a symbolic link, and a configuration
someone else could change is refused, as ssh refuses such a key file (real files, real links)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from processor.config.permissions import ALLOW_ENV
from processor.config.schema import ConfigError, load_config
from processor.journal import open_journal
from processor.journal.base import JournalError
from processor.journal.holders import file_send_rights
from processor.ops.private_files import write_private

# -- the journal's files ----------------------------------------------------------------------


def test_a_dangling_symlink_journal_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "planted.db"
    target.parent.mkdir()
    link = tmp_path / "journal.db"
    link.symlink_to(target)
    with pytest.raises(JournalError, match="symbolic link") as refused:
        open_journal(f"sqlite:///{link}")
    assert str(link) in str(refused.value) and str(target) in str(refused.value)
    assert not target.exists()
    assert link.is_symlink()


def test_a_journal_reached_through_a_link_to_an_existing_file_is_used(tmp_path: Path) -> None:
    real = tmp_path / "volume" / "journal.db"
    real.parent.mkdir()
    first = open_journal(f"sqlite:///{real}")
    first.migrate()
    first.close()
    link = tmp_path / "journal.db"
    link.symlink_to(real)
    journal = open_journal(f"sqlite:///{link}")
    try:
        journal.ensure("PR-0000-0000-0000-001", idempotency_key="k-1")
        assert journal.get("PR-0000-0000-0000-001") is not None
    finally:
        journal.close()


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_link_in_place_of_a_sidecar_file_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "journal.db"
    planted = tmp_path / "planted"
    (tmp_path / f"journal.db{suffix}").symlink_to(planted)
    with pytest.raises(JournalError, match="symbolic link"):
        open_journal(f"sqlite:///{path}")
    assert not planted.exists()


def test_the_send_rights_file_is_not_opened_through_a_link(tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    planted = tmp_path / "planted"
    Path(str(journal) + ".senders").symlink_to(planted)
    with pytest.raises(JournalError, match="symbolic link"):
        file_send_rights(str(journal))
    assert not planted.exists()


# -- the configuration's permissions ------------------------------------------------------------


def _config(directory: Path, mode: int) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "processor.yaml"
    path.write_text("log: {level: info}\n", encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_config_file_writable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _config(tmp_path / "private", mode)
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    message = str(refused.value)
    assert (
        str(path) in message and f"{mode:04o}" in message and "--allow-writable-config" in message
    )
    assert load_config(path, environ={ALLOW_ENV: "1"}).log.level == "info"


def test_a_config_in_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    path = _config(directory, 0o644)
    directory.chmod(0o777)
    try:
        with pytest.raises(ConfigError, match="its directory"):
            load_config(path, environ={})
        directory.chmod(0o1777)  # sticky: others cannot replace a file they do not own
        assert load_config(path, environ={}).log.level == "info"
    finally:
        directory.chmod(0o755)


def test_a_linked_config_is_judged_by_the_file_it_leads_to(tmp_path: Path) -> None:
    real = _config(tmp_path / "real", 0o666)
    (tmp_path / "named").mkdir()
    link = tmp_path / "named" / "processor.yaml"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match=str(real)):
        load_config(link, environ={})
    real.chmod(0o600)
    assert load_config(link, environ={}).log.level == "info"


def test_the_usual_modes_are_accepted(tmp_path: Path) -> None:
    for mode in (0o600, 0o640, 0o644, 0o400):
        path = _config(tmp_path / f"m{mode:o}", mode)
        assert load_config(path, environ={}).log.level == "info"
        assert stat.S_IMODE(os.stat(path).st_mode) == mode


# -- exports and evidence ---------------------------------------------------------------------


def test_a_private_file_replaces_a_link_instead_of_following_it(tmp_path: Path) -> None:
    planted = tmp_path / "planted.txt"
    planted.write_text("theirs", encoding="utf-8")
    target = tmp_path / "evidence.json"
    target.symlink_to(planted)
    old = os.umask(0o022)
    try:
        write_private(target, '{"a": 1}')
    finally:
        os.umask(old)
    assert planted.read_text(encoding="utf-8") == "theirs"
    assert not target.is_symlink() and target.read_text(encoding="utf-8") == '{"a": 1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.json", "planted.txt"]


def test_journal_export_replaces_a_link_at_its_output_instead_of_following_it(
    tmp_path: Path,
) -> None:
    from processor.cli.main import main

    journal_path = tmp_path / "journal.db"
    journal = open_journal(f"sqlite:///{journal_path}")
    journal.migrate()
    journal.ensure("PR-0000-0000-0000-001", idempotency_key="k-1")
    journal.close()
    config = tmp_path / "processor.yaml"
    config.write_text(f"journal: {{url: 'sqlite:///{journal_path}'}}\n", encoding="utf-8")
    planted = tmp_path / "planted.txt"
    planted.write_text("theirs", encoding="utf-8")
    output = tmp_path / "export.jsonl"
    output.symlink_to(planted)
    assert main(["journal", "export", "-c", str(config), "-o", str(output)]) == 0
    assert planted.read_text(encoding="utf-8") == "theirs"
    assert not output.is_symlink() and "PR-0000-0000-0000-001" in output.read_text("utf-8")
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
