"""The journal row's ``data``, typed: the one place that knows its JSON keys.

The row keeps ``data`` as a JSON object (``RequestRecord.data``); the engine reads and writes it
through :class:`RowData` only. Reading never fails on a row written by an older version: a key
missing or of the wrong type reads as absent. Writing keeps keys this version does not know.

Keys: the plan recorded on a request's first step (``policy``, ``timing``, ``adapter``,
``template``, ``retention_days``, ``date_source`` and the dates of :class:`Dates`), the vendor
step in flight (``step_from``, ``sent_at``: when its call last left, ``failures``, ``batch``,
``suspended``: a send-right wait, ``key_round``: see :meth:`RowData.keyed`), the
schedule on Connect (``scheduled``), a routing to a person (``routed``), the purge
(``purged_at``, ``purge``) and an outcome held back from Connect (``held``: :class:`Held`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from processor.journal.base import RequestRecord, State
from processor.model import parse_datetime
from processor.policy.timing import Dates, iso

__all__ = ["RowData", "Routed", "Operation", "Held", "HELD_KINDS", "HELD_CHOICES"]

HELD_KINDS = ("refused", "already_gone")
# What an operator chose for a held outcome after a latch: tell Connect, or call the vendor again.
HELD_CHOICES = ("release", "retry")


@dataclass(frozen=True, slots=True)
class Routed:
    to: str
    at: str
    policy: str | None


@dataclass(frozen=True, slots=True)
class Held:
    """A vendor answer held back from Connect (:mod:`processor.engine.hold`)."""

    kind: str  # one of HELD_KINDS
    adapter: str
    step: str  # the vendor step that answered: terminate or suspend
    reason: str  # the vendor's refusal, for the customer; or the "already gone" detail
    at: datetime
    until: datetime
    choice: str | None  # one of HELD_CHOICES, set by ``resume``; None: the hold decides


def _str(value: Any) -> str | None:
    return str(value) if value else None


@dataclass(frozen=True, slots=True)
class Operation:
    """A step the vendor accepted as an asynchronous operation (the row's ``operation`` key,
    written in the move that leaves the intent state; :mod:`processor.engine.operations`)."""

    ref: str  # what the adapter's poll() takes: the vendor's operation id, or its URL
    step: str  # terminate | suspend | purge
    adapter: str
    accepted_at: datetime
    give_up_at: datetime  # still pending after this: parked for a person
    every: float  # seconds between polls
    polls: int  # polls answered so far (any answer)


@dataclass(frozen=True, slots=True)
class RowData:
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, record: RequestRecord) -> RowData:
        return cls(record.data)

    # -- reading ------------------------------------------------------------------------------

    @property
    def adapter(self) -> str | None:
        return _str(self.raw.get("adapter"))

    @property
    def policy(self) -> str | None:
        return _str(self.raw.get("policy"))

    @property
    def template(self) -> str | None:
        return _str(self.raw.get("template"))

    @property
    def timing(self) -> str | None:
        return _str(self.raw.get("timing"))

    @property
    def retention_days(self) -> int | None:
        value = self.raw.get("retention_days")
        return value if isinstance(value, int) else None

    @property
    def dates(self) -> Dates | None:
        return Dates.from_data(self.raw)

    @property
    def step_from(self) -> State:
        """The state a vendor step started from (where a step that did not act returns)."""
        return State(self.raw.get("step_from") or State.NEW.value)

    @property
    def failures(self) -> int:
        return int(self.raw.get("failures", 0))

    @property
    def scheduled(self) -> bool | None:
        """True: Connect holds the request; False: the schedule call is intended, not confirmed."""
        value = self.raw.get("scheduled")
        return value if isinstance(value, bool) else None

    @property
    def routed(self) -> Routed | None:
        value = self.raw.get("routed")
        if not value:
            return None
        if not isinstance(value, Mapping):
            return Routed("", "", None)  # marked routed by an older writer: still routed
        return Routed(
            str(value.get("to") or ""), str(value.get("at") or ""), _str(value.get("policy"))
        )

    @property
    def purged_at(self) -> str | None:
        return _str(self.raw.get("purged_at"))

    @property
    def purge(self) -> str | None:
        return _str(self.raw.get("purge"))

    @property
    def sent_at(self) -> datetime | None:
        """When the step's call was last sent (recorded with its intent, before it left)."""
        return parse_datetime(self.raw.get("sent_at"))

    def suspended_since(self, attempts: int) -> datetime | None:
        """When the current send-right wait began, if it is of this step attempt."""
        episode = self.raw.get("suspended")
        if isinstance(episode, Mapping) and episode.get("attempts") == attempts:
            return parse_datetime(episode.get("since"))
        return None

    @property
    def held(self) -> Held | None:
        """The held answer; None when there is none, or when it cannot be read (a person then
        looks: the hold step parks such a row)."""
        value = self.raw.get("held")
        if not isinstance(value, Mapping):
            return None
        at, until = parse_datetime(value.get("at")), parse_datetime(value.get("until"))
        kind, choice = value.get("kind"), value.get("choice")
        if kind not in HELD_KINDS or at is None or until is None:
            return None
        return Held(
            kind=str(kind),
            adapter=str(value.get("adapter") or ""),
            step=str(value.get("step") or "terminate"),
            reason=str(value.get("reason") or ""),
            at=at,
            until=until,
            choice=choice if choice in HELD_CHOICES else None,
        )

    @property
    def key_round(self) -> int:
        """How many times the vendor steps started afresh after a definite answer (1: never)."""
        value = self.raw.get("key_round")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1

    def keyed(self, key: str, step: str) -> str:
        """The idempotency key of ``step``'s calls: ``<key>:<step>``, and ``:<round>`` after the
        first round. A vendor replays a key's first answer (a refusal too), so a step started
        again after a definite answer (``resume --retry-held``) needs a key of its own; only a
        definite answer -- the call did not act -- starts a new round, never an ambiguous one."""
        rounds = self.key_round
        return f"{key}:{step}" if rounds == 1 else f"{key}:{step}:{rounds}"

    # -- writing ------------------------------------------------------------------------------

    def json(self) -> dict[str, Any]:
        """The JSON object to store."""
        return dict(self.raw)

    def merged(self, other: Mapping[str, Any]) -> RowData:
        return RowData({**self.raw, **other})

    def _with(self, **keys: Any) -> RowData:
        return RowData({**self.raw, **keys})

    def planned(
        self,
        *,
        policy: str | None,
        timing: str,
        adapter: str | None,
        template: str | None,
        retention_days: int | None,
        date_source: str,
        dates: Dates,
    ) -> RowData:
        return self._with(
            policy=policy,
            timing=timing,
            adapter=adapter,
            template=template,
            retention_days=retention_days,
            date_source=date_source,
            **dates.as_data(),
        )

    def with_dates(self, dates: Dates) -> RowData:
        return self._with(**dates.as_data())

    def step_started(self, source: State, sent_at: datetime, batch: str | None = None) -> RowData:
        extra = {"batch": batch} if batch is not None else {}
        return self._with(step_from=source.value, sent_at=iso(sent_at), **extra)

    @property
    def terminated_under(self) -> int | None:
        """The fence under which the vendor's termination was recorded: an approve under the same
        fence is the journal's first (no crash in between, no earlier approve of its own)."""
        fence = self.raw.get("terminated_under")
        return fence if isinstance(fence, int) and not isinstance(fence, bool) else None

    def with_terminated_under(self, fence: int) -> RowData:
        return self._with(terminated_under=fence)

    def step_opened(self, source: State) -> RowData:
        """A step entered without a call (a status read answered for it): nothing was sent."""
        return self._with(step_from=source.value)

    def with_sent(self, at: datetime) -> RowData:
        """A call of the step is about to be sent again (see :attr:`sent_at`)."""
        return self._with(sent_at=iso(at))

    def step_finished(self) -> RowData:
        """The step is over: where it came from, its error count and a held answer go."""
        gone = ("step_from", "failures", "held")
        return RowData({k: v for k, v in self.raw.items() if k not in gone})

    def with_held(
        self, *, kind: str, adapter: str, step: str, reason: str, at: datetime, until: datetime
    ) -> RowData:
        held = {"kind": kind, "adapter": adapter, "step": step, "reason": reason}
        return self._with(held={**held, "at": iso(at), "until": iso(until)})

    def with_held_choice(self, choice: str) -> RowData:
        """The operator's choice for the held answer (``resume --release-held/--retry-held``)."""
        value = self.raw.get("held")
        return self._with(held={**(value if isinstance(value, Mapping) else {}), "choice": choice})

    def retried_after_held(self) -> RowData:
        """The held answer goes and the next round of keys begins (:meth:`keyed`)."""
        kept = RowData({k: v for k, v in self.raw.items() if k != "held"})
        return kept._with(key_round=self.key_round + 1)

    def with_failures(self, failures: int) -> RowData:
        return self._with(failures=failures)

    def with_scheduled(self, held: bool) -> RowData:
        return self._with(scheduled=held)

    def with_routed(self, to: str, at: datetime, policy: str | None) -> RowData:
        return self._with(routed={"to": to, "at": iso(at), "policy": policy})

    def with_suspended(self, since: datetime, attempts: int) -> RowData:
        return self._with(suspended={"since": iso(since), "attempts": attempts})

    def with_purged(self, at: datetime) -> RowData:
        return self._with(purged_at=iso(at))

    def with_purge_note(self, text: str) -> RowData:
        return self._with(purge=text)

    @property
    def operation(self) -> Operation | None:
        """The accepted operation; None when there is none or it cannot be read (the poll step
        then parks the row: without its reference nothing can be polled)."""
        value = self.raw.get("operation")
        if not isinstance(value, Mapping):
            return None
        ref, step = value.get("ref"), value.get("step")
        accepted = parse_datetime(value.get("accepted_at"))
        give_up = parse_datetime(value.get("give_up_at"))
        every, polls = value.get("every"), value.get("polls", 0)
        if not isinstance(ref, str) or not ref or step not in ("terminate", "suspend", "purge"):
            return None
        if accepted is None or give_up is None:
            return None
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
            return None
        polls = polls if isinstance(polls, int) and not isinstance(polls, bool) else 0
        adapter = str(value.get("adapter") or "")
        return Operation(ref, str(step), adapter, accepted, give_up, float(every), max(polls, 0))

    def with_operation(
        self,
        *,
        ref: str,
        step: str,
        adapter: str,
        accepted_at: datetime,
        give_up_at: datetime,
        every: float,
    ) -> RowData:
        """The vendor accepted ``step`` as the operation ``ref``: kept until the step is over
        (and after, as a record of it)."""
        operation = {
            "ref": ref,
            "step": step,
            "adapter": adapter,
            "accepted_at": iso(accepted_at),
            "give_up_at": iso(give_up_at),
            "every": every,
            "polls": 0,
        }
        return self._with(operation=operation)

    def with_polls(self, polls: int) -> RowData:
        value = self.raw.get("operation")
        known = value if isinstance(value, Mapping) else {}
        return self._with(operation={**known, "polls": polls})
