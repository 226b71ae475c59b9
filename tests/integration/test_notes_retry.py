"""Notes owed to a request's conversation are posted later, once: after a Connect outage that hit
only the notes, and after a crash that lost the journal's record of a note Connect already has."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import Sandbox
from processor.config.schema import Config
from processor.daemon.core import Daemon, RunSummary
from processor.daemon.runtime import build_runtime, selector_for
from processor.engine.base import utcnow
from processor.journal import open_journal
from processor.journal.base import NOTED_STATES

LEASE = 2.0  # seconds: owed notes are taken once their row has been quiet this long
NOTES_DOWN = FaultSettings(
    error_rate=1.0, methods="POST", path_pattern=r"^/public/v1/conversations/[^/]+/messages$"
)


def run_once(
    sandbox: Sandbox, journal_url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[RunSummary, float]:
    """One ``--once`` run; its summary and the ``cancel_notes_owed`` gauge it ends with."""
    for name, value in sandbox.environ().items():
        monkeypatch.setenv(name, value)
    data = sandbox.config_data(
        journal_url,
        journal={"lease_seconds": LEASE},
        connect={"retry": {"max_attempts": 2, "backoff_base": 0.01, "backoff_max": 0.05}},
    )
    config = Config.model_validate(data)
    runtime = build_runtime(config)
    try:
        summary = Daemon(runtime.engine, runtime.marketplace, selector_for(config), once=True).run()
        return summary, runtime.engine.metrics.registry.get_sample_value("cancel_notes_owed") or 0.0
    finally:
        runtime.close()


def owed(journal_url: str) -> list[str]:
    journal = open_journal(journal_url)
    try:
        until = utcnow() + timedelta(seconds=60)
        return [r.request_id for r in journal.unnoted(updated_until=until, limit=1000)]
    finally:
        journal.close()


def cancellation_notes(sandbox: Sandbox, request_id: str) -> list[str]:
    return [text for text in sandbox.messages(request_id) if text.startswith("Cancellation")]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(generate=12, seed=11) as box:
        yield box


def test_notes_lost_to_a_connect_outage_are_posted_by_a_later_pass(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/journal.db"
    before = sandbox.pending_cancels()
    sandbox.market_app.update(NOTES_DOWN)
    first, _ = run_once(sandbox, url, monkeypatch)
    check = sandbox.check(initially_pending=before)
    # The outage only hit the notes: every request got its outcome, none its note, and the journal
    # knows exactly which notes it owes. The pass that failed them did not hammer Connect again.
    assert first.complete and check.ok and check.approved + check.failed == len(before), (
        first,
        check,
    )
    assert all(cancellation_notes(sandbox, rid) == [] for rid in before)
    assert sorted(owed(url)) == sorted(before)

    time.sleep(LEASE + 0.5)  # quiet for a lease: no live worker is about to post them itself
    _, left = run_once(sandbox, url, monkeypatch)  # Connect still refusing: the debt stays, visibly
    assert left == len(before) and sorted(owed(url)) == sorted(before)

    sandbox.market_app.update(FaultSettings())
    _, left = run_once(sandbox, url, monkeypatch)
    assert left == 0
    for rid in before:
        notes = cancellation_notes(sandbox, rid)
        status = sandbox.request(rid)["status"]
        assert len(notes) == 1, (rid, notes)
        assert notes[0].startswith(
            "Cancellation processed" if status == "approved" else "Cancellation refused"
        )
    assert owed(url) == []

    time.sleep(LEASE + 0.5)
    run_once(sandbox, url, monkeypatch)  # nothing owed: nothing posted again
    assert all(len(cancellation_notes(sandbox, rid)) == 1 for rid in before)


def test_a_note_connect_has_but_the_journal_lost_is_recorded_not_posted_again(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "journal.db"
    url = f"sqlite:///{db}"
    before = sandbox.pending_cancels()
    run_once(sandbox, url, monkeypatch)
    assert owed(url) == [] and all(len(cancellation_notes(sandbox, rid)) == 1 for rid in before)

    # A crash between Connect taking the note and the journal recording it: the row says the note
    # is owed, but the conversation already holds it.
    states = tuple(s.value for s in NOTED_STATES)
    with sqlite3.connect(db) as conn:
        conn.execute(
            f"UPDATE requests SET noted = NULL WHERE state IN ({','.join('?' * len(states))})",
            states,
        )
    assert sorted(owed(url)) == sorted(before)
    time.sleep(LEASE + 0.5)
    run_once(sandbox, url, monkeypatch)
    assert owed(url) == []
    assert all(len(cancellation_notes(sandbox, rid)) == 1 for rid in before)
