"""The engine's state machine as data: ``(state, event) -> (target, step)``, and the crash windows.

Steps name what happened (an :class:`Event`); :meth:`processor.engine.base.Mover.move` looks the
move up here with :func:`lookup` and writes the target this table gives. A pair the table does not
hold is a bug and raises :class:`IllegalMove` before anything is written; :func:`lookup` is the only
caller of the journal's ``transition`` (a test keeps it so). Which step runs in a state
(:data:`STOPS`), where the loop rests, which rows the timer loop claims (:mod:`processor.states`),
where settling leaves a row, and how far along a plan a state is (the dry run) all come from here.

Adding a state (a hold window, an asynchronous vendor operation, ...) is: its traits in
:data:`processor.states.TRAITS`, its rows in :func:`_table` (the events that lead into it and out of
it), its :class:`Stop` (the step that runs in it), and that step; ``docs/design.md`` says how.

The crash-window table of ``docs/design.md`` is generated from this module
(``python -m processor.engine.transitions --markdown``) and a test keeps the two identical. Each
row names the crash windows (:mod:`processor.engine.crashpoints`) the move bounds: the one it
*closes* (a crash before the move committed left the row in its source state) and the one it
*opens* (a crash right after it: what the committed move leaves, and how it is taken up again).
Every move into an intent state opens ``after_intent``; every move out of one closes
``after_vendor``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from enum import Enum

from processor.states import FINAL_STATES, INTENT_STATES, State

__all__ = [
    "Edge",
    "Event",
    "IllegalMove",
    "Move",
    "Stop",
    "STOPS",
    "TABLE",
    "WINDOWS",
    "INTENT_STATES",
    "lookup",
    "returned_to",
    "settle_event",
    "settling",
    "rank",
    "markdown",
]

S = State
# What a crash right after a move leaves, and what takes it up again (crash point -> text).
WINDOWS: dict[str, str] = {
    "after_claim": "lease taken, nothing recorded: the next claim starts the step afresh",
    "after_intent": (
        "intent committed, the vendor maybe called: repeated only when the vendor deduplicates or "
        "a status read says it did not act, else parked"
    ),
    "after_vendor": "the vendor answered, not recorded: as after_intent (the row is in intent)",
    "after_result": (
        "the vendor's result recorded, Connect not told: the next claim tells Connect; "
        "'already approved/failed' counts as done"
    ),
    "after_hold": (
        "the vendor's refusal or 'already gone' held, Connect not told: the timer loop tells "
        "Connect when the hold ends, unless the adapter is latched (then a person chooses)"
    ),
    "after_approve": (
        "Connect approved, the journal not: approve again answers 'already approved', "
        "or settle finds it approved"
    ),
    "after_accepted": (
        "the vendor accepted the step, its operation recorded, not polled yet: the timer loop "
        "polls it when due; the step is never sent again"
    ),
    "after_poll": (
        "a poll answered done or failed, not recorded: the next claim polls again (a read "
        "changes nothing)"
    ),
}


class Event(str, Enum):  # noqa: UP042 - str() of a member names it, as State's does
    """What a step found or did; the table says where it leads from each state."""

    RETRY = "retry"  # try again later, or a field recorded: the row stays where it is
    REFUSE = "refuse"  # a rule, the vendor, poison, or a malformed request: fail it on Connect
    PARK = "park"  # a person must decide
    ROUTE = "route"  # assigned to a person by a policy
    SCHEDULE = "schedule"  # effective later: Connect holds the request until its date
    CLOSE = "close"  # the request is no longer pending on Connect; nothing (more) to do
    REVOKE = "revoke"  # the customer withdrew a scheduled cancellation, confirmed
    TERMINATE = "terminate"  # terminate intent (again, in the intent state: a repeat)
    SUSPEND = "suspend"  # suspend intent, for a grace period
    PURGE = "purge"  # purge intent, when retention is over
    DONE = "done"  # the vendor step happened (confirmed, already gone, or a purge skipped)
    HOLD = "hold"  # refused or already gone: held back from Connect for guard.hold
    RETURN_NEW = "return:new"  # the vendor did not act: back where the step started
    RETURN_SCHEDULED = "return:scheduled"
    RETURN_SUSPENDED = "return:suspended"
    RETURN_APPROVED = "return:approved"
    # An asynchronous vendor (processor.engine.operations): the step was accepted as an
    # operation to poll, and later that operation completed or failed.
    ACCEPT = "accept"
    DONE_TERMINATE = "done:terminate"
    DONE_SUSPEND = "done:suspend"
    DONE_PURGE = "done:purge"
    OPERATION_FAILED = "operation_failed"
    APPROVE = "approve"  # approved on Connect (or it already was)
    FAIL = "fail"  # failed on Connect (or it already was)
    SETTLE_REVOKED = "settle:revoked"  # Connect closed the request behind the journal's back:
    SETTLE_APPROVED = "settle:approved"  # ... approved,
    SETTLE_FAILED = "settle:failed"  # ... failed,
    SETTLE_CLOSED = "settle:closed"  # ... or any other status that is not open


_RETURNS = {
    S.NEW: Event.RETURN_NEW,
    S.SCHEDULED: Event.RETURN_SCHEDULED,
    S.SUSPENDED: Event.RETURN_SUSPENDED,
    S.APPROVED: Event.RETURN_APPROVED,
}
_SETTLES = {
    "revoked": Event.SETTLE_REVOKED,
    "approved": Event.SETTLE_APPROVED,
    "failed": Event.SETTLE_FAILED,
}


def returned_to(step_from: State) -> Event:
    """The event of a vendor step that did not act, going back to the state it started from."""
    event = _RETURNS.get(step_from)
    if event is None:
        raise IllegalMove(f"no vendor step starts from {step_from.value}")
    return event


def settle_event(status: str) -> Event:
    """The event of settling a row whose request is ``status`` (not open) on Connect."""
    return _SETTLES.get(status, Event.SETTLE_CLOSED)


class IllegalMove(RuntimeError):
    """The engine tried a move that the transition table does not hold: a bug, never data."""


@dataclass(frozen=True, slots=True)
class Edge:
    source: State
    event: Event
    target: State
    when: str = ""  # what the event means in this state, for the generated table
    opens: str | None = None  # a key of WINDOWS: the crash point right after this move
    closes: str | None = None  # a key of WINDOWS: the crash point this move ends


@dataclass(frozen=True, slots=True)
class Stop:
    """What the engine does in a state."""

    step: str | None  # the step that runs in it (a name the engine binds), None: nothing runs
    rank: int = 0  # how far along a policy's steps (the dry run): steps of a lower rank are done


@dataclass(frozen=True, slots=True)
class Move:
    """A looked-up move: the edge, and the step that runs in its target (None: none)."""

    edge: Edge
    step: str | None

    @property
    def target(self) -> State:
        return self.edge.target


_RESUME = "resume_intent"  # every intent state: the call may have acted (VendorSteps.resume)
STOPS: dict[State, Stop] = {
    S.NEW: Stop("start"),
    S.SCHEDULED: Stop("on_scheduled", rank=1),
    S.SUSPENDING: Stop(_RESUME, rank=1),
    S.SUSPENDED: Stop("after_grace", rank=2),  # once the grace is over
    S.TERMINATING: Stop(_RESUME, rank=2),
    S.TERMINATED: Stop("approve", rank=3),
    S.REFUSING: Stop("fail"),
    S.APPROVED: Stop("purge_due", rank=4),  # when a purge timer is set
    S.PURGING: Stop(_RESUME, rank=4),
    S.HELD: Stop("release_held", rank=2),
    S.WAITING_HUMAN: Stop(None),
    S.FAILED: Stop(None),
    S.REVOKED: Stop(None),
    S.CLOSED: Stop(None),
    S.PARKED: Stop(None),
    S.AWAITING_VENDOR: Stop("poll_operation", rank=2),
}

_V = "after_vendor"  # the ambiguous window: the vendor answered, the answer not recorded
_I = "after_intent"
_A, _P, _R = "after_accepted", "after_poll", "after_result"
_H = "after_hold"
E = Event
# Where settling leaves a row, by the request's status on Connect: approved, failed, any other.
# Connect's status is the truth, except where the vendor may hold the subscription in a state
# Connect does not know (suspended, a terminate in flight, a purge refused): a person decides.
_CLOSED3 = (S.CLOSED, S.CLOSED, S.CLOSED)  # nothing was done at the vendor; someone else closed it
_PARKED3 = (S.PARKED, S.PARKED, S.PARKED)
_SETTLED: dict[State, tuple[State, State, State]] = {
    S.NEW: _CLOSED3,
    S.WAITING_HUMAN: _CLOSED3,
    S.SCHEDULED: _CLOSED3,
    S.SUSPENDING: _PARKED3,
    S.SUSPENDED: _PARKED3,
    S.TERMINATING: _PARKED3,
    S.TERMINATED: (S.APPROVED, S.PARKED, S.CLOSED),
    S.REFUSING: (S.CLOSED, S.FAILED, S.CLOSED),
    S.PURGING: (S.CLOSED, S.PARKED, S.CLOSED),
    S.AWAITING_VENDOR: _PARKED3,  # an operation in flight at the vendor: a person looks
    # The held answer may be either a refusal or "already gone": Connect deciding either way
    # agrees with one of them only, so a person looks.
    S.HELD: (S.PARKED, S.PARKED, S.CLOSED),
}


def _table() -> tuple[Edge, ...]:
    e: list[Edge] = [
        # A request's first sight: the policy decides, then the dates.
        Edge(S.NEW, E.REFUSE, S.REFUSING, "a rule refuses, a malformed request"),
        Edge(S.NEW, E.ROUTE, S.WAITING_HUMAN, "routed to a person"),
        Edge(S.NEW, E.CLOSE, S.CLOSED, "assign: the request is no longer pending"),
        Edge(S.NEW, E.SCHEDULE, S.SCHEDULED, "effective later: Connect holds it"),
        Edge(S.NEW, E.TERMINATE, S.TERMINATING, "terminate intent", opens=_I),
        Edge(S.NEW, E.SUSPEND, S.SUSPENDING, "suspend intent (grace period)", opens=_I),
        # Scheduled on Connect until the effective date.
        Edge(S.SCHEDULED, E.SCHEDULE, S.SCHEDULED, "the schedule recorded or confirmed"),
        Edge(S.SCHEDULED, E.REVOKE, S.REVOKED, "revocation confirmed, or revoked on Connect"),
        Edge(S.SCHEDULED, E.CLOSE, S.CLOSED, "the request closed on Connect"),
        Edge(S.SCHEDULED, E.TERMINATE, S.TERMINATING, "date came: terminate intent", opens=_I),
        Edge(S.SCHEDULED, E.SUSPEND, S.SUSPENDING, "date came: suspend intent", opens=_I),
        Edge(S.SCHEDULED, E.REFUSE, S.REFUSING, "malformed at the vendor call"),
        # Suspended for the grace period.
        Edge(S.SUSPENDED, E.TERMINATE, S.TERMINATING, "grace over: terminate intent", opens=_I),
        Edge(S.SUSPENDED, E.CLOSE, S.CLOSED, "withdrawn, active at the vendor"),
        Edge(S.SUSPENDED, E.REFUSE, S.REFUSING, "malformed at the vendor call"),
        # Vendor steps in flight.
        Edge(S.TERMINATING, E.TERMINATE, S.TERMINATING, "repeat: the vendor deduplicates"),
        Edge(S.TERMINATING, E.DONE, S.TERMINATED, "terminated or already gone", "after_result", _V),
        Edge(S.TERMINATING, E.REFUSE, S.REFUSING, "the vendor refused, poison", closes=_V),
        Edge(S.SUSPENDING, E.SUSPEND, S.SUSPENDING, "repeat: the vendor deduplicates"),
        Edge(S.SUSPENDING, E.DONE, S.SUSPENDED, "suspended or already gone", closes=_V),
        Edge(S.SUSPENDING, E.REFUSE, S.REFUSING, "the vendor refused", closes=_V),
        Edge(S.TERMINATING, E.HOLD, S.HELD, "refused or already gone: held", _H, _V),
        Edge(S.SUSPENDING, E.HOLD, S.HELD, "the vendor refused: held", "after_hold", _V),
        # The hold window (processor.engine.hold): Connect is told when it ends, or as the
        # operator chose after the guard latched (resume --release-held / --retry-held).
        Edge(S.HELD, E.REFUSE, S.REFUSING, "hold over: the vendor's refusal applied", closes=_H),
        Edge(S.HELD, E.DONE, S.TERMINATED, "hold over: 'already gone' applied", "after_result", _H),
        Edge(S.PURGING, E.PURGE, S.PURGING, "repeat: the vendor deduplicates"),
        Edge(S.PURGING, E.DONE, S.APPROVED, "purged, already gone, restored (skipped)", closes=_V),
        # An asynchronous vendor: the step accepted as an operation, recorded before anything
        # else, then polled; the step is never sent again (processor.engine.operations).
        Edge(S.TERMINATING, E.ACCEPT, S.AWAITING_VENDOR, "accepted: operation recorded", _A, _V),
        Edge(S.SUSPENDING, E.ACCEPT, S.AWAITING_VENDOR, "accepted: operation recorded", _A, _V),
        Edge(S.PURGING, E.ACCEPT, S.AWAITING_VENDOR, "accepted: operation recorded", _A, _V),
        Edge(S.AWAITING_VENDOR, E.DONE_TERMINATE, S.TERMINATED, "the terminate completed", _R, _P),
        Edge(S.AWAITING_VENDOR, E.DONE_SUSPEND, S.SUSPENDED, "the suspend completed", closes=_P),
        Edge(S.AWAITING_VENDOR, E.DONE_PURGE, S.APPROVED, "the purge completed", closes=_P),
        Edge(
            S.AWAITING_VENDOR,
            E.OPERATION_FAILED,
            S.REFUSING,
            "the operation failed (processing.poison=fail)",
            closes=_P,
        ),
        Edge(S.AWAITING_VENDOR, E.HOLD, S.HELD, "the operation failed (poison=fail): held", _H, _P),
        # Connect told of the vendor's result.
        Edge(S.TERMINATED, E.APPROVE, S.APPROVED, "approved (or already)", closes="after_approve"),
        Edge(S.REFUSING, E.FAIL, S.FAILED, "failed (or already failed)"),
        Edge(S.REFUSING, E.CLOSE, S.CLOSED, "the request is no longer pending"),
        # Retention: an approved row with a purge timer.
        Edge(S.APPROVED, E.PURGE, S.PURGING, "purge due: purge intent", opens=_I),
        Edge(S.APPROVED, E.DONE, S.APPROVED, "purged already, restored (skipped)"),
        Edge(S.APPROVED, E.RETRY, S.APPROVED, "a status read failed: retry later"),
        Edge(S.APPROVED, E.PARK, S.PARKED, "purge unsafe, adapter missing, request vanished"),
    ]
    # A vendor step that did not act goes back where it started (its step_from).
    for intent, back in (
        (S.TERMINATING, (S.NEW, S.SCHEDULED, S.SUSPENDED)),
        (S.SUSPENDING, (S.NEW, S.SCHEDULED)),
        (S.PURGING, (S.APPROVED,)),
    ):
        for start in back:
            e.append(Edge(intent, returned_to(start), start, "the vendor did not act", closes=_V))
    for start in (S.NEW, S.SCHEDULED, S.SUSPENDED):  # --retry-held: the step starts again
        e.append(Edge(S.HELD, returned_to(start), start, "retry-held: call the vendor again"))
    for state, (approved, failed, other) in _SETTLED.items():
        out = _V if state in INTENT_STATES else None
        e.append(Edge(state, E.RETRY, state, "retry later, a field recorded"))
        e.append(Edge(state, E.PARK, S.PARKED, "a person decides", closes=out))
        if state not in (S.NEW, S.SCHEDULED, S.SUSPENDED, S.TERMINATING, S.SUSPENDING, S.HELD):
            e.append(Edge(state, E.REFUSE, S.REFUSING, "malformed (processing.malformed=fail)"))
        e.append(Edge(state, E.SETTLE_REVOKED, S.REVOKED, "revoked on Connect"))
        e.append(Edge(state, E.SETTLE_APPROVED, approved, "approved on Connect"))
        e.append(Edge(state, E.SETTLE_FAILED, failed, "failed on Connect"))
        e.append(Edge(state, E.SETTLE_CLOSED, other, "closed on Connect"))
    order = {state: i for i, state in enumerate(State)}
    events = {event: i for i, event in enumerate(Event)}
    return tuple(sorted(e, key=lambda x: (order[x.source], events[x.event])))


TABLE: tuple[Edge, ...] = _table()
_MOVES: dict[tuple[State, Event], Move] = {
    (edge.source, edge.event): Move(edge, STOPS[edge.target].step) for edge in TABLE
}


def lookup(source: State, event: Event) -> Move:
    """The move ``event`` makes from ``source``; :class:`IllegalMove` when the table has none."""
    move = _MOVES.get((source, event))
    if move is None:
        raise IllegalMove(f"no move for {event.value} from {source.value} in the table")
    return move


def settling(state: State, status: str) -> tuple[Event, str | None]:
    """Settling a row in ``state`` whose request is ``status`` on Connect (closed behind the
    journal's back; the vendor is not called): the event (``_SETTLED`` says where it leads), and
    why a person is needed when it leads to ``parked``, or None."""
    event = settle_event(status)
    if lookup(state, event).target is not S.PARKED:
        return event, None
    if state is S.HELD:
        return event, (
            f"the request was {status} on Connect while the vendor's refusal or 'already gone' "
            f"was held: check the subscription at the vendor"
        )
    if state in (S.SUSPENDING, S.SUSPENDED):
        return event, (
            f"the request was {status} on Connect while the subscription was suspended at the "
            f"vendor: resume it there"
        )
    return event, f"the request was {status} on Connect while the vendor step was {state.value}"


def rank(state: State) -> int:
    return STOPS[state].rank


def markdown() -> str:
    """The crash-window table of ``docs/design.md``, generated."""
    lines = ["| from | event | to | when | closes | opens |", "|---|---|---|---|---|---|"]
    for edge in TABLE:
        closes = f"`{edge.closes}`" if edge.closes else ""
        opens = f"`{edge.opens}`" if edge.opens else ""
        lines.append(
            f"| `{edge.source.value}` | `{edge.event.value}` | `{edge.target.value}` | "
            f"{edge.when} | {closes} | {opens} |"
        )
    lines += ["", "| state | step that runs in it | rank (dry run) |", "|---|---|---|"]
    lines += [
        f"| `{state.value}` | {f'`{stop.step}`' if stop.step else ''} | {stop.rank} |"
        for state, stop in STOPS.items()
        if state not in FINAL_STATES or stop.step
    ]
    lines += ["", "| crash window | a crash there leaves, and what takes it up |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in WINDOWS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processor.engine.transitions")
    parser.add_argument("--markdown", action="store_true", help="print the docs/design.md table")
    parser.parse_args(argv)
    print(markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
