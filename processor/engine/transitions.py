"""The engine's state machine as data: state x event -> next state, and the crash window each opens.

Every move the engine makes goes through :func:`check` (via ``Mover.move``): a move that is not in
:data:`TABLE` is a bug and raises :class:`IllegalMove` before anything is written. The crash-window
table of ``docs/design.md`` is generated from this module
(``python -m processor.engine.transitions --markdown``) and a test keeps the two identical.

Each row names the crash windows (:mod:`processor.engine.crashpoints`) the move bounds: the one
it *closes* (a crash before the move committed left the row in its source state: what then
happens) and the one it *opens* (a crash right after it: what the committed move leaves, and how it
is taken up again). Every move into an intent state (``terminating``, ``suspending``, ``purging``)
opens ``after_intent``; every move out of one closes ``after_vendor``.
Settling (Connect closed the request behind the journal's back) and staying in a state (a retry
time recorded, a field updated) are allowed from every state that is not final.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from processor.journal.base import FINAL_STATES, State

__all__ = [
    "Edge",
    "IllegalMove",
    "TABLE",
    "WINDOWS",
    "INTENT_STATES",
    "ALLOWED",
    "check",
    "markdown",
]

S = State
INTENT_STATES = frozenset({S.TERMINATING, S.SUSPENDING, S.PURGING})
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
    "after_approve": (
        "Connect approved, the journal not: approve again answers 'already approved', "
        "or settle finds it approved"
    ),
}


class IllegalMove(RuntimeError):
    """The engine tried a move that the transition table does not hold: a bug, never data."""


@dataclass(frozen=True, slots=True)
class Edge:
    source: State
    event: str
    target: State
    opens: str | None = None  # a key of WINDOWS: the crash point right after this move
    closes: str | None = None  # a key of WINDOWS: the crash point this move ends


_OPEN = [s for s in State if s not in FINAL_STATES]
_RETURN_FROM = (S.NEW, S.SCHEDULED, S.SUSPENDED)  # where a vendor step may start (its step_from)


_V = "after_vendor"  # the ambiguous window: the vendor answered, the answer not recorded


def _table() -> tuple[Edge, ...]:
    e: list[Edge] = [
        # A request's first sight: the policy decides, then the dates.
        Edge(S.NEW, "rule refuses", S.REFUSING),
        Edge(S.NEW, "rule parks, adapter missing, no billing date", S.PARKED),
        Edge(S.NEW, "routed to a person", S.WAITING_HUMAN),
        Edge(S.NEW, "assign: request no longer pending", S.CLOSED),
        Edge(S.NEW, "effective later: schedule intent, then Connect holds it", S.SCHEDULED),
        Edge(S.NEW, "terminate intent", S.TERMINATING, opens="after_intent"),
        Edge(S.NEW, "suspend intent (grace period)", S.SUSPENDING, opens="after_intent"),
        # Scheduled on Connect until the effective date.
        Edge(S.SCHEDULED, "revocation confirmed", S.REVOKED),
        Edge(S.SCHEDULED, "request closed on Connect", S.CLOSED),
        Edge(S.SCHEDULED, "no dates, schedule refused", S.PARKED),
        Edge(S.SCHEDULED, "date came: terminate intent", S.TERMINATING, opens="after_intent"),
        Edge(S.SCHEDULED, "date came: suspend intent", S.SUSPENDING, opens="after_intent"),
        Edge(S.SCHEDULED, "malformed at the vendor call", S.REFUSING),
        # Suspended for the grace period.
        Edge(S.SUSPENDED, "grace over: terminate intent", S.TERMINATING, opens="after_intent"),
        Edge(S.SUSPENDED, "withdrawn, active at the vendor", S.CLOSED),
        Edge(S.SUSPENDED, "withdrawn, maybe still suspended", S.PARKED),
        Edge(S.SUSPENDED, "malformed at the vendor call", S.REFUSING),
        # Vendor steps in flight.
        Edge(S.TERMINATING, "repeat (deduplicating vendor), retry later", S.TERMINATING),
        Edge(S.TERMINATING, "terminated or already gone", S.TERMINATED, "after_result", _V),
        Edge(S.TERMINATING, "vendor refused, poison", S.REFUSING, closes=_V),
        Edge(S.TERMINATING, "no safe repeat, gave up", S.PARKED, closes=_V),
        Edge(S.SUSPENDING, "repeat (deduplicating vendor), retry later", S.SUSPENDING),
        Edge(S.SUSPENDING, "suspended or already gone", S.SUSPENDED, closes=_V),
        Edge(S.SUSPENDING, "vendor refused", S.REFUSING, closes=_V),
        Edge(S.SUSPENDING, "no safe repeat, gave up", S.PARKED, closes=_V),
        Edge(S.PURGING, "repeat (deduplicating vendor), retry later", S.PURGING),
        Edge(S.PURGING, "purged, already gone, restored (skipped)", S.APPROVED, closes=_V),
        Edge(S.PURGING, "refused, no safe repeat, gave up", S.PARKED, closes=_V),
        # Connect told of the vendor's result.
        Edge(S.TERMINATED, "approved (or already approved)", S.APPROVED, closes="after_approve"),
        Edge(S.TERMINATED, "approve refused, no template", S.PARKED),
        Edge(S.REFUSING, "failed (or already failed)", S.FAILED),
        Edge(S.REFUSING, "request no longer pending", S.CLOSED),
        Edge(S.REFUSING, "fail refused", S.PARKED),
        # Retention: an approved row with a purge timer.
        Edge(S.APPROVED, "purge due: purge intent", S.PURGING, opens="after_intent"),
        Edge(S.APPROVED, "purged already, restored (skipped), timer re-armed", S.APPROVED),
        Edge(S.APPROVED, "purge unsafe, adapter missing, timer on a vanished request", S.PARKED),
    ]
    for state in _OPEN:
        e.append(Edge(state, "retry later, field update", state))
        e.append(Edge(state, "settle: revoked on Connect", S.REVOKED))
        e.append(Edge(state, "settle: closed on Connect", S.CLOSED))
        e.append(
            Edge(state, "settle, timer on a vanished request, malformed, holder alive", S.PARKED)
        )
        e.append(Edge(state, "malformed payload (processing.malformed=fail)", S.REFUSING))
    for intent in INTENT_STATES - {S.PURGING}:
        for back in _RETURN_FROM:
            e.append(Edge(intent, "the vendor did not act: back to step_from", back, closes=_V))
    e.append(Edge(S.PURGING, "the vendor did not act: back to step_from", S.APPROVED, closes=_V))
    e.append(Edge(S.TERMINATED, "settle: approved on Connect", S.APPROVED))
    e.append(Edge(S.REFUSING, "settle: failed on Connect", S.FAILED))
    return _dedupe(e)


def _dedupe(edges: list[Edge]) -> tuple[Edge, ...]:
    """One row per (source, target): the first, most specific event names it."""
    seen: dict[tuple[State, State], Edge] = {}
    for edge in edges:
        seen.setdefault((edge.source, edge.target), edge)
    order = {state: i for i, state in enumerate(State)}
    return tuple(sorted(seen.values(), key=lambda x: (order[x.source], order[x.target])))


TABLE: tuple[Edge, ...] = _table()
ALLOWED: frozenset[tuple[State, State]] = frozenset((e.source, e.target) for e in TABLE)


def check(source: State, target: State) -> None:
    """Raise :class:`IllegalMove` unless the table holds ``source -> target``."""
    if (source, target) not in ALLOWED:
        raise IllegalMove(f"no transition {source.value} -> {target.value} in the table")


def markdown() -> str:
    """The crash-window table of ``docs/design.md``, generated."""
    lines = ["| from | event | to | closes | opens |", "|---|---|---|---|---|"]
    for edge in TABLE:
        closes = f"`{edge.closes}`" if edge.closes else ""
        opens = f"`{edge.opens}`" if edge.opens else ""
        row = (
            f"| `{edge.source.value}` | {edge.event} | `{edge.target.value}` | {closes} | {opens} |"
        )
        lines.append(row)
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
