"""The operator commands, run as the CLI runs them: arguments parsed by each command's own parser,
``run(args)`` called, its output captured; against a real SQLite journal named by a real config
file."""

from __future__ import annotations

import argparse
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processor.config.schema import ConfigError, load_config
from processor.journal import open_journal
from processor.journal.base import Journal, State
from processor.observe import register_secret
from processor.ops.commands import EXPORT, IMPORT, PARK, PROCEED, REPORT, RETRY, STATUS, Command
from tests.ops_support import Clock, put

T0 = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)


class Ran:
    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.now = T0
    return clock


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "processor.yaml"
    path.write_text(f"journal:\n  url: sqlite:///{tmp_path / 'journal.db'}\n", encoding="utf-8")
    return path


@pytest.fixture
def journal(tmp_path: Path, clock: Clock, config_file: Path) -> Any:
    store = open_journal(f"sqlite:///{tmp_path / 'journal.db'}", clock=clock)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def run(config_file: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(command: Command, *argv: str) -> Ran:
        parser = argparse.ArgumentParser(prog=f"cancel-processor {command.name}")
        command.configure_parser(parser)
        args = parser.parse_args(["--config", str(config_file), *argv])
        capsys.readouterr()
        status = command.run(args)
        captured = capsys.readouterr()
        return Ran(status, captured.out, captured.err)

    return run


@pytest.fixture
def history(journal: Journal, clock: Clock) -> Journal:
    """One request a day from T0: PR-01 approved on Mar 1, ... PR-06 new on Mar 6."""
    rows = [
        ("PR-01", State.APPROVED, {"outcome": "terminated"}),
        ("PR-02", State.FAILED, {"outcome": "refused", "reason": "contract still running"}),
        (
            "PR-03",
            State.PARKED,
            {"reason": "the vendor offers neither idempotency nor a status read"},
        ),
        ("PR-04", State.TERMINATING, {"attempts": 2, "last_error": "vendor answered 503"}),
        ("PR-05", State.WAITING_HUMAN, {"reason": "account manager decides"}),
        ("PR-06", State.NEW, {}),
    ]
    for day, (request_id, state, fields) in enumerate(rows):
        clock.now = T0 + timedelta(days=day)
        put(journal, request_id, state, detail=fields.get("reason"), **fields)
    clock.now = T0 + timedelta(days=10)
    return journal


# -- status ---------------------------------------------------------------------------------------


def test_status_shows_counts_the_oldest_unfinished_request_and_why_requests_are_parked(
    run: Any, history: Journal
) -> None:
    ran = run(STATUS)
    assert ran.status == 0
    lines = ran.out.splitlines()
    counts = {
        parts[1]: int(parts[3])
        for parts in (line.split() for line in lines)
        if len(parts) == 5 and parts[1] in {s.value for s in State} | {"total"}
    }
    assert counts == {
        "approved": 1,
        "failed": 1,
        "parked": 1,
        "terminating": 1,
        "waiting_human": 1,
        "new": 1,
        "total": 6,
    }
    assert "Oldest unfinished request: PR-04 (terminating)" in ran.out  # PR-03 is parked: final
    assert "Parked (1)" in ran.out and "neither idempotency nor a status read" in ran.out
    assert "Waiting for a person (1)" in ran.out and "account manager decides" in ran.out


def test_status_of_an_empty_journal(run: Any, journal: Journal) -> None:
    ran = run(STATUS)
    assert ran.status == 0
    assert "No unfinished request." in ran.out and "Parked" not in ran.out


def test_status_names_a_latched_adapter_with_its_reason_and_check_warns(
    run: Any, journal: Journal, tmp_path: Path
) -> None:
    from processor.engine.guard import LatchFile
    from processor.ops import preflight

    why = (
        "another processor or a restored journal: ...; resume with: cancel-processor resume vendor"
    )
    LatchFile(tmp_path / "journal.db.guard.json").set("vendor", why)
    ran = run(STATUS)
    assert ran.status == 0
    assert "Latched: adapter vendor makes no vendor call since" in ran.out
    assert "cancel-processor resume vendor" in ran.out.replace("\n", " ")
    config = tmp_path / "processor.yaml"
    config.write_text(
        config.read_text() + "adapters:\n  vendor: {type: noop}\ndefaults: {adapter: vendor}\n"
    )
    checks = preflight.run_checks(load_config(str(config), environ={}), remote=False)
    guard = [c for c in checks if c.name == "guard vendor"]
    assert guard and guard[0].status == "warn" and "another processor" in guard[0].detail


def test_status_lists_at_most_limit_parked_requests_newest_first(
    run: Any, journal: Journal, clock: Clock
) -> None:
    for n in range(4):
        clock.now = T0 + timedelta(minutes=n)
        put(journal, f"PR-P{n}", State.PARKED, reason=f"reason {n}")
    ran = run(STATUS, "--limit", "2")
    assert "Parked (4, newest 2 shown)" in ran.out
    assert ran.out.index("PR-P3") < ran.out.index("PR-P2") and "PR-P1" not in ran.out


def test_a_missing_journal_is_a_configuration_error_and_is_not_created(
    run: Any, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no journal at"):
        run(STATUS)
    assert not (tmp_path / "journal.db").exists()


def test_a_journal_without_schema_exits_2_with_the_migrate_hint(run: Any, tmp_path: Path) -> None:
    open_journal(f"sqlite:///{tmp_path / 'journal.db'}").close()  # a file, but never migrated
    ran = run(STATUS)
    assert ran.status == 2 and "journal migrate" in ran.err


# -- report ---------------------------------------------------------------------------------------


def test_report_as_csv_has_one_row_per_request_updated_in_the_range(
    run: Any, history: Journal
) -> None:
    ran = run(REPORT, "--since", "2030-03-02", "--until", "2030-03-04", "--format", "csv")
    assert ran.status == 0
    rows = list(csv.DictReader(io.StringIO(ran.out)))
    # --until with a bare date includes that whole day
    assert [r["request_id"] for r in rows] == ["PR-02", "PR-03", "PR-04"]
    assert rows[0]["state"] == "failed" and rows[0]["reason"] == "contract still running"
    assert rows[2]["attempts"] == "2" and rows[2]["last_error"] == "vendor answered 503"
    assert rows[2]["updated_at"] == "2030-03-04T08:00:00Z"


def test_report_as_json_is_one_valid_document(run: Any, history: Journal) -> None:
    ran = run(REPORT, "--since", "2030-03-05T08:00:00Z", "--format", "json")
    rows = json.loads(ran.out)
    assert [(r["request_id"], r["state"]) for r in rows] == [
        ("PR-05", "waiting_human"),
        ("PR-06", "new"),
    ]
    assert json.loads(run(REPORT, "--since", "2031-01-01", "--format", "json").out) == []


def test_report_as_a_table_lists_every_request_and_sums_up(run: Any, history: Journal) -> None:
    ran = run(REPORT, "--state", "approved", "--state", "failed")
    assert ran.status == 0
    assert "PR-01" in ran.out and "PR-02" in ran.out and "PR-03" not in ran.out
    assert "2 request(s): approved 1, failed 1" in ran.out


def test_report_tables_survive_text_that_looks_like_markup(run: Any, journal: Journal) -> None:
    put(journal, "PR-M", State.TERMINATING, last_error="[/] unbalanced [bold]markup")
    ran = run(REPORT)
    assert ran.status == 0 and "[/] unbalanced [bold]markup" in ran.out


def test_report_refuses_an_empty_range_and_bad_dates(run: Any, history: Journal) -> None:
    ran = run(REPORT, "--since", "2030-03-05", "--until", "2030-03-01T00:00:00")
    assert ran.status == 2 and "--until must be later" in ran.err
    with pytest.raises(SystemExit):
        run(REPORT, "--since", "last tuesday")


# -- retry and park ---------------------------------------------------------------------------


def test_retry_sends_a_parked_request_back_to_new_and_names_the_operator(
    run: Any, history: Journal
) -> None:
    ran = run(RETRY, "PR-03", "--note", "vendor confirmed nothing happened")
    assert ran.status == 0 and "PR-03: parked -> new" in ran.out
    record = history.get("PR-03")
    assert record is not None and (record.state, record.attempts, record.next_attempt_at) == (
        State.NEW,
        0,
        None,
    )
    last = history.transitions("PR-03")[-1]
    assert (last.from_state, last.to_state) == (State.PARKED, State.NEW)
    assert last.detail == "vendor confirmed nothing happened"
    assert last.owner is not None and last.owner.startswith("cli")


def test_retry_of_a_request_waiting_for_a_person_is_refused_and_names_proceed(
    run: Any, history: Journal
) -> None:
    before = history.transitions("PR-05")
    for argv in (("PR-05",), ("PR-05", "--force")):
        refused = run(RETRY, *argv)
        assert refused.status == 1, refused.out
        assert "cancel-processor proceed PR-05" in refused.err, refused.err
    assert history.transitions("PR-05") == before
    assert history.get("PR-05").state is State.WAITING_HUMAN  # type: ignore[union-attr]


def test_proceed_sends_a_request_waiting_for_a_person_on_and_refuses_any_other(
    run: Any, history: Journal
) -> None:
    ran = run(PROCEED, "PR-05", "--note", "account manager: go ahead")
    assert ran.status == 0 and "PR-05: waiting_human -> new" in ran.out, ran.err
    assert history.get("PR-05").state is State.NEW  # type: ignore[union-attr]
    last = history.transitions("PR-05")[-1]
    assert (last.from_state, last.to_state, last.detail) == (
        State.WAITING_HUMAN,
        State.NEW,
        "account manager: go ahead",
    )
    for request_id, state in (("PR-03", "parked"), ("PR-01", "approved"), ("PR-05", "new")):
        refused = run(PROCEED, request_id)
        assert refused.status == 1 and f"{request_id} is {state}" in refused.err, refused.err
    assert "retry" in run(PROCEED, "PR-03").err  # parked: the verb is retry
    assert run(PROCEED, "PR-404").status == 1


@pytest.mark.parametrize("request_id", ["PR-01", "PR-02"])
def test_retry_refuses_final_requests(run: Any, history: Journal, request_id: str) -> None:
    before = history.transitions(request_id)
    ran = run(RETRY, request_id, "--force")
    assert ran.status == 1 and "final state" in ran.err
    assert history.transitions(request_id) == before


def test_retry_of_a_request_the_vendor_may_have_acted_on_needs_force(
    run: Any, history: Journal
) -> None:
    refused = run(RETRY, "PR-04")
    assert refused.status == 1
    assert "terminate call may have reached the vendor" in refused.err and "--force" in refused.err
    assert history.get("PR-04").state is State.TERMINATING  # type: ignore[union-attr]
    forced = run(RETRY, "PR-04", "--force")
    assert forced.status == 0 and history.get("PR-04").state is State.NEW  # type: ignore[union-attr]


def test_a_forced_retry_waits_until_the_last_call_can_no_longer_be_applied(
    run: Any, history: Journal
) -> None:
    """The default lease (60 s) plus the default apply horizon (120 s) after the last send."""
    now = datetime.now(UTC)
    for request_id, sent in (
        ("PR-07", now - timedelta(seconds=60)),
        ("PR-08", now - timedelta(seconds=200)),
    ):
        put(history, request_id, State.TERMINATING, data={"sent_at": sent.isoformat()})
    early = run(RETRY, "PR-07", "--force")
    assert early.status == 1 and "may still be applied until" in early.err
    assert "apply_horizon" in early.err
    assert history.get("PR-07").state is State.TERMINATING  # type: ignore[union-attr]
    late = run(RETRY, "PR-08", "--force")
    assert late.status == 0 and history.get("PR-08").state is State.NEW  # type: ignore[union-attr]


def test_retry_of_an_unknown_request(run: Any, history: Journal) -> None:
    ran = run(RETRY, "PR-404")
    assert ran.status == 1 and "PR-404: no such request" in ran.err


def test_park_sets_a_request_aside_with_the_reason_status_then_shows(
    run: Any, history: Journal
) -> None:
    ran = run(PARK, "PR-04", "--reason", "vendor ticket 4711: outage on their side")
    assert ran.status == 0 and "PR-04: terminating -> parked" in ran.out
    assert history.get("PR-04").state is State.PARKED  # type: ignore[union-attr]
    assert "vendor ticket 4711: outage on their side" in run(STATUS).out


def test_park_is_a_no_op_on_a_parked_request_and_refused_on_a_final_one(
    run: Any, history: Journal
) -> None:
    before = history.transitions("PR-03")
    again = run(PARK, "PR-03", "--reason", "still")
    assert again.status == 0 and "already parked" in again.out
    assert history.transitions("PR-03") == before
    final = run(PARK, "PR-01", "--reason", "too late")
    assert final.status == 1 and "final state" in final.err


def test_park_of_a_request_the_journal_has_not_seen_inserts_it_parked_with_the_reason(
    run: Any, history: Journal
) -> None:
    ran = run(PARK, "PR-07", "--reason", "customer called: keep it")
    assert ran.status == 0 and "PR-07: not seen yet -> parked" in ran.out, ran.err
    record = history.get("PR-07")
    assert record is not None and record.state is State.PARKED
    assert record.idempotency_key == "cancel-PR-07" and record.lease_owner is None
    [first] = history.transitions("PR-07")
    assert (first.from_state, first.to_state, first.detail) == (
        None,
        State.PARKED,
        "customer called: keep it",
    )
    assert first.owner is not None and first.owner.startswith("cli")
    assert "PR-07" in run(STATUS).out and "customer called: keep it" in run(STATUS).out
    again = run(PARK, "PR-07", "--reason", "twice")
    assert again.status == 0 and "already parked" in again.out
    assert len(history.transitions("PR-07")) == 1
    # a worker never claims it: parked is final to the claim
    assert history.claim("PR-07", "worker", 30) is None
    assert run(PARK, "PR-08", "--reason", "  ").status == 1 and history.get("PR-08") is None


def test_park_needs_a_reason(run: Any, history: Journal) -> None:
    with pytest.raises(SystemExit):
        run(PARK, "PR-04")
    assert run(PARK, "PR-04", "--reason", "   ").status == 1


# -- journal export ----------------------------------------------------------------------------


def test_export_writes_every_record_with_its_transitions_as_json_lines(
    run: Any, history: Journal
) -> None:
    ran = run(EXPORT)
    assert ran.status == 0
    lines = [json.loads(line) for line in ran.out.splitlines()]
    assert [line["request_id"] for line in lines] == [f"PR-0{n}" for n in range(1, 7)]
    parked = lines[2]
    assert parked["state"] == "parked" and parked["idempotency_key"] == "cancel-PR-03"
    assert [(t["from_state"], t["to_state"]) for t in parked["transitions"]] == [("new", "parked")]
    assert parked["transitions"][0]["at"] == "2030-03-03T08:00:00Z"
    assert lines[5]["transitions"] == []  # ensured, never moved


def test_export_to_a_file_masks_secrets(run: Any, journal: Journal, tmp_path: Path) -> None:
    secret = "vendor-secret-8e1f22c4a9"
    register_secret(secret)
    put(
        journal,
        "PR-S",
        State.PARKED,
        detail=f"401 for {secret}",
        reason="401",
        last_error=f"key {secret} refused",
    )
    target = tmp_path / "export.jsonl"
    ran = run(EXPORT, "--output", str(target))
    assert ran.status == 0 and ran.out == "" and "exported 1 request(s)" in ran.err
    text = target.read_text(encoding="utf-8")
    assert secret not in text
    line = json.loads(text)
    assert (
        line["last_error"] == "key *** refused"
        and line["transitions"][0]["detail"] == "401 for ***"
    )
    assert [
        p.name for p in tmp_path.iterdir() if p.name.startswith(".export")
    ] == []  # no temporary left


def test_import_restores_an_export_and_never_overwrites_a_newer_row(
    run: Any, history: Journal, clock: Clock, tmp_path: Path, config_file: Path
) -> None:
    export = tmp_path / "export.jsonl"
    assert run(EXPORT, "--output", str(export)).status == 0
    # Into an empty journal: everything comes back, transitions included.
    other = tmp_path / "restored.db"
    fresh = open_journal(f"sqlite:///{other}", clock=clock)
    fresh.migrate()
    config_file.write_text(f"journal:\n  url: sqlite:///{other}\n", encoding="utf-8")
    ran = run(IMPORT, str(export))
    assert ran.status == 0 and "imported 6 new and 0 older" in ran.out, ran.out
    for request_id in ("PR-03", "PR-04"):
        was, now = history.get(request_id), fresh.get(request_id)
        assert was is not None and now is not None
        assert (now.state, now.attempts, now.reason, now.last_error) == (
            was.state,
            was.attempts,
            was.reason,
            was.last_error,
        )
        assert now.lease_owner is None
        assert [(t.from_state, t.to_state, t.at) for t in fresh.transitions(request_id)] == [
            (t.from_state, t.to_state, t.at) for t in history.transitions(request_id)
        ]
    assert run(IMPORT, str(export)).status == 0  # the same export again: nothing changes
    # The journal moves on; the old export must not take it back.
    clock.now += timedelta(hours=1)
    claim = fresh.claim("PR-04", "worker-1", 60)
    assert claim is not None
    fresh.release(fresh.transition(claim, State.TERMINATED, detail="done"))
    ran = run(IMPORT, str(export))
    assert ran.status == 1 and "kept 1" in ran.out and "PR-04 (kept)" in ran.err
    kept = fresh.get("PR-04")
    assert kept is not None and kept.state is State.TERMINATED
    # An export newer than the journal replaces the older row, past every claim made on it.
    newer = tmp_path / "newer.jsonl"
    assert run(EXPORT, "--output", str(newer)).status == 0
    config_file.write_text(f"journal:\n  url: sqlite:///{tmp_path / 'journal.db'}\n")
    before = history.get("PR-04")
    ran = run(IMPORT, str(newer))
    assert ran.status == 0 and "0 new and 1 older" in ran.out, ran.out
    after = history.get("PR-04")
    assert before is not None and after is not None and after.state is State.TERMINATED
    assert after.fence > before.fence
    assert [t.to_state for t in history.transitions("PR-04")][-1] is State.TERMINATED
    fresh.close()


def test_import_names_unreadable_lines_and_goes_on(
    run: Any, journal: Journal, tmp_path: Path
) -> None:
    export = tmp_path / "export.jsonl"
    good = {"request_id": "PR-1", "state": "new", "idempotency_key": "cancel-PR-1"}
    lines = [
        "{not json",
        json.dumps({**good, "state": "exploded", "updated_at": "2030-01-01T00:00:00Z"}),
        json.dumps({**good, "updated_at": "2030-01-01T00:00:00Z", "attempts": -1}),
        json.dumps({**good, "updated_at": "2030-01-01T00:00:00Z", "data": {"nested": [1]}}),
    ]
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ran = run(IMPORT, str(export))
    assert ran.status == 1 and "imported 1 new" in ran.out
    assert "export.jsonl:1: skipped: not JSON" in ran.err
    assert "unknown state 'exploded'" in ran.err and "attempts must be" in ran.err
    restored = journal.get("PR-1")
    assert restored is not None and restored.data == {"nested": [1]}


def test_export_into_a_missing_folder_fails_with_a_message(
    run: Any, history: Journal, tmp_path: Path
) -> None:
    ran = run(EXPORT, "--output", str(tmp_path / "absent" / "export.jsonl"))
    assert ran.status == 1 and "cannot write beside" in ran.err
