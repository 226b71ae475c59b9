"""``retry`` and ``park`` on a request in every state the journal has: each answer is a decision
with a reason (an ActionRefused for a person), never a KeyError for a state added later."""

from __future__ import annotations

from datetime import timedelta

import pytest

from processor.journal.base import Journal, State
from processor.ops.actions import ActionRefused, park_request, retry_request
from processor.states import FINAL_STATES

from ..ops_support import Clock, clock_fixture, journal_fixture, put  # noqa: F401 - fixtures


@pytest.mark.parametrize("state", list(State))
def test_retry_answers_every_state_with_a_reason(journal: Journal, state: State) -> None:
    put(journal, "PR-0001", state, detail=f"put in {state.value}")
    try:
        done = retry_request(journal, "PR-0001", actor="test")
    except ActionRefused as refused:
        assert str(refused).startswith(f"PR-0001 is {state.value}"), refused
        assert state is not State.PARKED
        return
    assert state is State.PARKED and done.after.state is State.NEW


def test_retry_of_a_held_answer_names_the_resume_choice(journal: Journal) -> None:
    put(journal, "PR-0002", State.HELD, detail="refused held until 12:10")
    with pytest.raises(ActionRefused, match="resume ADAPTER --retry-held"):
        retry_request(journal, "PR-0002", actor="test")


@pytest.mark.parametrize("state", [s for s in State if s not in FINAL_STATES])
def test_park_takes_every_open_state(journal: Journal, state: State) -> None:
    put(journal, "PR-0003", state, detail=f"put in {state.value}")
    done = park_request(journal, "PR-0003", reason="looked at by hand", actor="test")
    assert done.after.state is State.PARKED


def test_an_operators_hand_sets_the_timer_it_is_given_and_clears_it_otherwise(
    journal: Journal, clock: Clock
) -> None:
    """``resume --release-held`` makes a held row due at once (the timer loop takes it up even
    when its request left Connect's pending list); ``retry`` and ``park`` leave no timer."""
    put(journal, "PR-0004", State.HELD, detail="held", next_attempt_at=clock() + timedelta(hours=1))
    marked = journal.force("PR-0004", State.HELD, detail="resume", actor="test", due=clock())
    assert marked.next_attempt_at == clock()
    due = journal.claim_due("worker-1", 30, 10, states=[State.HELD])
    assert [c.request_id for c in due] == ["PR-0004"]
    journal.release(due[0])
    parked = park_request(journal, "PR-0004", reason="by hand", actor="test")
    assert parked.after.next_attempt_at is None
