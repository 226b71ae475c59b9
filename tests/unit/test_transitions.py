"""The transition table: its shape, and docs/design.md's copy of it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from processor.adapters.base import Refused, RetryLater
from processor.config.schema import load_config
from processor.engine import crashpoints, transitions
from processor.engine.base import Mover, stub_request
from processor.engine.core import Engine
from processor.engine.transitions import (
    INTENT_STATES,
    STOPS,
    TABLE,
    WINDOWS,
    Event,
    IllegalMove,
    lookup,
    markdown,
)
from processor.journal.base import FINAL_STATES, State
from processor.observe import Metrics
from processor.states import (
    NOTED_STATES,
    RESTING_STATES,
    STRANDED_STATES,
    TIMER_STATES,
    TRAITS,
)

from ..fakes import FakeMarketplace, ScriptedAdapter, cancel_payload

PROCESSOR = Path(__file__).resolve().parents[2] / "processor"
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


def test_one_row_per_state_and_event_and_the_lookup_follows_the_table():
    assert len({(e.source, e.event) for e in TABLE}) == len(TABLE)
    assert lookup(State.NEW, Event.TERMINATE).target is State.TERMINATING
    assert lookup(State.NEW, Event.TERMINATE).step == "resume_intent"
    assert lookup(State.TERMINATING, Event.DONE).target is State.TERMINATED
    assert lookup(State.SUSPENDING, Event.DONE).target is State.SUSPENDED
    assert lookup(State.PURGING, Event.DONE).target is State.APPROVED
    with pytest.raises(IllegalMove):
        lookup(State.NEW, Event.APPROVE)  # never approved before the vendor terminated
    with pytest.raises(IllegalMove):
        lookup(State.FAILED, Event.RETRY)  # a final state is left only by an operator's hand
    with pytest.raises(IllegalMove):
        transitions.returned_to(State.TERMINATING)  # no vendor step starts in an intent


def test_every_event_is_used_and_every_state_has_a_stop_and_traits():
    assert {e.event for e in TABLE} == set(Event)
    assert set(STOPS) == set(State) == set(TRAITS)
    # The sets every reader uses, derived from the one table of traits.
    assert RESTING_STATES == FINAL_STATES | {State.SCHEDULED, State.SUSPENDED, State.WAITING_HUMAN}
    assert NOTED_STATES == RESTING_STATES
    assert set(TIMER_STATES) == {
        State.SUSPENDED,
        State.SUSPENDING,
        State.PURGING,
        State.APPROVED,
        State.SCHEDULED,
        State.HELD,
        State.AWAITING_VENDOR,
    }
    assert STRANDED_STATES == (State.NEW, State.TERMINATING, State.TERMINATED, State.REFUSING)
    assert INTENT_STATES == {State.TERMINATING, State.SUSPENDING, State.PURGING}
    # A state with a step can be left: the step's moves are in the table.
    for state, stop in STOPS.items():
        if stop.step is not None:
            assert any(e.source is state and e.target is not state for e in TABLE), state


def test_settling_follows_connect_except_where_the_vendor_may_hold_the_subscription():
    from processor.engine.transitions import settling

    def settled(state: State, status: str) -> State:
        return lookup(state, settling(state, status)[0]).target

    assert settled(State.TERMINATED, "approved") is State.APPROVED
    assert settled(State.REFUSING, "failed") is State.FAILED
    assert settled(State.NEW, "failed") is State.CLOSED
    assert settled(State.SUSPENDED, "approved") is State.PARKED
    assert "resume it there" in (settling(State.SUSPENDED, "approved")[1] or "")
    assert settled(State.TERMINATING, "rejected") is State.PARKED
    assert settled(State.TERMINATED, "failed") is State.PARKED
    assert settled(State.PURGING, "rejected") is State.CLOSED
    assert all(settled(s, "revoked") is State.REVOKED for s in State if s not in FINAL_STATES)
    assert settling(State.NEW, "approved")[1] is None
    # A held answer is either a refusal or "already gone": Connect agrees with one only.
    assert settled(State.HELD, "approved") is State.PARKED
    assert settled(State.HELD, "failed") is State.PARKED
    assert "held" in (settling(State.HELD, "failed")[1] or "")


def _calls_of(tree: ast.AST, attribute: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attribute
    ]


def test_the_table_lookup_is_the_only_way_to_the_journals_transition():
    """Every ``.transition(`` call in the processor is in Mover.move, after its lookup."""
    callers = []
    for path in sorted(PROCESSOR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [c for c in _calls_of(func, "transition") if c.args]
                if inner and not path.match("journal/*.py"):
                    callers.append((path.relative_to(PROCESSOR).as_posix(), func.name, func))
    assert [(p, n) for p, n, _ in callers] == [("engine/base.py", "move")]
    [(_, _, move)] = callers
    lookups = _calls_of(move, "lookup")
    assert lookups and lookups[0].lineno < _calls_of(move, "transition")[0].lineno


def test_every_move_the_engine_writes_is_the_tables(journal, clock, monkeypatch):
    """A run through terminate, refuse, retry and approve: each written move is a looked-up one."""
    looked: list[tuple[State, State]] = []
    real = transitions.lookup

    def recording(source: State, event: Event) -> transitions.Move:
        move = real(source, event)
        looked.append((source, move.target))
        return move

    monkeypatch.setattr(transitions, "lookup", recording)
    payloads = [cancel_payload(n) for n in (1, 2, 3)]
    adapter = ScriptedAdapter()
    adapter.script("SUB-00002", Refused("no"))
    adapter.script("SUB-00003", RetryLater("busy", after=1))
    config = load_config(None, environ={}).model_validate(
        {
            "adapters": {"vendor": {"type": "noop"}},
            "defaults": {"adapter": "vendor"},
            "products": {"PRD-100-100-100": {"template": "TL-100-100-100"}},
        }
    )
    engine = Engine(
        config=config,
        journal=journal,
        marketplace=FakeMarketplace(payloads),
        adapters={"vendor": adapter},
        owner="worker-1",
        clock=clock,
    )
    # The refusal is held first (guard.hold): that move goes through the table too.
    assert [engine.handle(p) for p in payloads] == ["approved", "held", "new"]
    written = [
        (t.from_state, t.to_state)
        for p in payloads
        for t in journal.transitions(p["id"])
        if t.from_state is not None
    ]
    assert sorted(written) == sorted(looked) and len(written) >= 7


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
        mover.move(claim, request, Event.APPROVE)
    assert journal.get("PR-1").state is State.NEW and journal.transitions("PR-1") == []
    assert mover.move(claim, request, Event.TERMINATE).state is State.TERMINATING


def test_a_stop_naming_a_step_the_engine_lacks_fails_at_start_up(journal, clock, monkeypatch):
    monkeypatch.setitem(STOPS, State.WAITING_HUMAN, transitions.Stop("call_a_person"))
    with pytest.raises(RuntimeError, match="call_a_person"):
        Engine(
            config=load_config(None, environ={}),
            journal=journal,
            marketplace=FakeMarketplace(),
            adapters={},
            owner="worker-1",
            clock=clock,
        )
