"""The transition table: its shape, and docs/design.md's copy of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from processor.config.schema import load_config
from processor.engine import crashpoints, transitions
from processor.engine.base import Mover, stub_request
from processor.engine.transitions import (
    ALLOWED,
    INTENT_STATES,
    TABLE,
    WINDOWS,
    IllegalMove,
    check,
    markdown,
)
from processor.journal.base import FINAL_STATES, State
from processor.observe import Metrics

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"
BEGIN, END = "<!-- transitions:begin -->\n", "<!-- transitions:end -->"


def test_design_md_holds_the_generated_table():
    text = DESIGN.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    documented = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert documented == markdown(), (
        "docs/design.md's transition table is stale: "
        "regenerate it with python -m processor.engine.transitions --markdown"
    )


def test_the_module_prints_the_table():
    out = subprocess.run(
        [sys.executable, "-m", "processor.engine.transitions", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == markdown()


def test_every_state_is_reachable_from_new():
    reached, frontier = {State.NEW}, [State.NEW]
    while frontier:
        source = frontier.pop()
        for edge in TABLE:
            if edge.source is source and edge.target not in reached:
                reached.add(edge.target)
                frontier.append(edge.target)
    assert reached == set(State)


def test_final_states_have_no_way_out_but_a_purge_timer():
    for edge in TABLE:
        if edge.source in FINAL_STATES and edge.source is not edge.target:
            # An approved row leaves only by its retention timer: purge, or park when unsafe.
            assert edge.source is State.APPROVED, edge
            assert edge.target in (State.PURGING, State.PARKED), edge


def test_every_move_into_an_intent_state_opens_its_crash_window():
    into_intent = [e for e in TABLE if e.target in INTENT_STATES and e.source not in INTENT_STATES]
    assert {e.target for e in into_intent} == set(INTENT_STATES)
    for edge in into_intent:
        assert edge.opens == "after_intent", edge


def test_recording_the_vendor_answer_closes_the_ambiguous_window():
    closing = [e for e in TABLE if e.closes == "after_vendor"]
    assert {e.source for e in closing} == set(INTENT_STATES)
    assert all(e.target not in INTENT_STATES for e in closing)
    pairs = {(e.source, e.target) for e in closing}
    assert (State.TERMINATING, State.TERMINATED) in pairs
    assert (State.SUSPENDING, State.SUSPENDED) in pairs
    assert (State.PURGING, State.APPROVED) in pairs


def test_windows_are_crash_points_and_each_named_one_exists():
    assert set(WINDOWS) == set(crashpoints.POINTS)
    named = {w for e in TABLE for w in (e.opens, e.closes) if w}
    assert named <= set(WINDOWS)
    assert {"after_intent", "after_vendor", "after_result", "after_approve"} <= named


def test_one_row_per_move_and_the_check_follows_the_table():
    assert len(ALLOWED) == len(TABLE)
    check(State.NEW, State.TERMINATING)
    with pytest.raises(IllegalMove):
        check(State.NEW, State.APPROVED)  # never approved before the vendor terminated
    with pytest.raises(IllegalMove):
        check(State.FAILED, State.NEW)  # a final state is left only by an operator's hand


def test_no_row_leaves_parked_failed_revoked_or_closed():
    terminal = FINAL_STATES - {State.APPROVED}
    assert not [e for e in transitions.TABLE if e.source in terminal]


def test_a_move_outside_the_table_raises_before_anything_is_written(journal, clock):
    settings = load_config(None, environ={}).processing
    mover = Mover(journal, settings, Metrics(), clock)
    journal.ensure("PR-1", idempotency_key="cancel-PR-1")
    claim = journal.claim("PR-1", "worker-1", 30)
    assert claim is not None
    request = stub_request("PR-1", claim.record, "pending")
    with pytest.raises(IllegalMove):
        mover.move(claim, request, State.APPROVED)
    assert journal.get("PR-1").state is State.NEW and journal.transitions("PR-1") == []
    assert mover.move(claim, request, State.TERMINATING).state is State.TERMINATING
