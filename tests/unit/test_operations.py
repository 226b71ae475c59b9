"""Asynchronous vendor steps in the engine: a terminate the vendor accepts as an operation is
recorded in ``awaiting_vendor`` before anything else, polled from the journal (also by another
engine, as after a restart), approved only once the operation is done, and never sent again;
failed operations follow ``processing.poison``, one never done is parked with its reference, and
a poll that cannot be read loses nothing."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from processor.adapters.base import (
    Accepted,
    Ambiguous,
    Done,
    Failed,
    Idempotency,
    OperationFailed,
    Pending,
    Refused,
    RetryLater,
    SubscriptionStatus,
    VendorCall,
)
from processor.engine.core import Engine
from processor.engine.results import name_of
from processor.engine.rowdata import RowData
from processor.engine.transitions import TABLE, Event, lookup
from processor.journal.base import Journal, State
from processor.states import INTENT_STATES, TIMER_STATES

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload
from .test_engine import engine_for

PRODUCT = "PRD-100-100-100"


class AsyncAdapter(ScriptedAdapter):
    """A vendor that accepts every terminate as an operation and answers polls from a script."""

    def __init__(self, *answers: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: deque[Any] = deque(answers)
        self.polls: list[tuple[str, str]] = []

    def terminate(self, call: VendorCall) -> Any:
        queue = self.scripts[call.subscription_id]
        self.calls.append(("terminate", call))
        if queue:
            return queue.popleft()
        return Accepted(f"OP-{call.subscription_id}", after=5, give_up=60)

    def poll(self, call: VendorCall, operation: str) -> Any:
        self.polls.append((call.subscription_id, operation))
        answer = self.answers.popleft() if self.answers else Pending("running")
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_engine(
    journal: Journal,
    adapter: ScriptedAdapter,
    market: FakeMarketplace,
    clock: Clock,
    owner: str = "worker-1",
    **processing: Any,
) -> Engine:
    """test_engine's engine, with short back-offs: polls come every few seconds."""
    return engine_for(
        journal, adapter, market, clock, owner, retry_base=1, retry_max=4, **processing
    )


def due(engine: Engine, journal: Journal, clock: Clock, seconds: float) -> list[str]:
    """Move the clock on and run the rows whose timer fell due, as the daemon's timer loop does."""
    clock.advance(seconds)
    claims = journal.claim_due(engine.owner, 30, 10, states=TIMER_STATES)
    return [name_of(engine.resume(claim)) for claim in claims]


def test_an_accepted_terminate_is_approved_only_once_its_operation_is_done(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(1)
    market = FakeMarketplace([payload])
    adapter = AsyncAdapter(Pending("queued"), Pending("running"), Done("succeeded"))
    engine = make_engine(journal, adapter, market, clock)

    assert engine.handle(payload) == "awaiting_vendor"
    record = journal.get(payload["id"])
    assert record is not None and record.outcome == "accepted"
    operation = RowData.of(record).operation
    assert operation is not None and operation.ref == "OP-SUB-00001"
    assert operation.step == "terminate" and operation.every == 5
    assert (operation.give_up_at - operation.accepted_at).total_seconds() == 60
    assert market.approved == []
    # Seen again by the poll before the next poll time: nothing is called.
    assert engine.handle(payload) == "busy"
    assert adapter.polls == []

    assert due(engine, journal, clock, 5) == ["awaiting_vendor"]
    assert due(engine, journal, clock, 5) == ["awaiting_vendor"]
    assert market.approved == []
    assert due(engine, journal, clock, 5) == ["approved"]
    assert market.approved == [(payload["id"], "TL-100-100-100")]
    assert adapter.polls == [("SUB-00001", "OP-SUB-00001")] * 3
    assert len(adapter.terminate_calls()) == 1
    states = [t.to_state for t in journal.transitions(payload["id"])]
    assert states[:2] == [State.TERMINATING, State.AWAITING_VENDOR]
    assert states[-2:] == [State.TERMINATED, State.APPROVED]
    assert State.TERMINATING not in states[2:]


def test_another_engine_polls_the_operation_from_the_journal_without_a_new_terminate(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(2)
    market = FakeMarketplace([payload])
    first = AsyncAdapter()
    make_engine(journal, first, market, clock).handle(payload)
    # A restarted process (or a replica) with a fresh adapter: only the journal knows the id.
    second = AsyncAdapter(Done())
    other = make_engine(journal, second, market, clock, owner="worker-2")
    assert other.handle(payload) == "busy"  # its poll time has not come
    assert due(other, journal, clock, 5) == ["approved"]
    assert second.polls == [("SUB-00002", "OP-SUB-00002")]
    assert first.terminate_calls() and not second.terminate_calls()


@pytest.mark.parametrize(("poison", "reached"), [("fail", "failed"), ("park", "parked")])
def test_a_failed_operation_follows_the_poison_policy(
    journal: Journal, clock: Clock, poison: str, reached: str
) -> None:
    payload = cancel_payload(3)
    market = FakeMarketplace([payload])
    adapter = AsyncAdapter(OperationFailed("status failed: billing locked"))
    engine = make_engine(journal, adapter, market, clock, poison=poison)
    engine.handle(payload)
    assert due(engine, journal, clock, 5) == [reached]
    record = journal.get(payload["id"])
    assert record is not None
    assert "OP-SUB-00003" in (record.last_error or "")
    assert market.approved == []
    if poison == "fail":
        assert market.failed == [(payload["id"], engine.settings.poison_reason)]
    else:
        assert market.failed == []
        assert "never sent again" in (record.reason or "")
    assert len(adapter.terminate_calls()) == 1


def test_an_operation_never_done_is_parked_with_its_reference_at_its_give_up_time(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(4)
    market = FakeMarketplace([payload])
    adapter = AsyncAdapter()  # pending forever
    engine = make_engine(journal, adapter, market, clock)
    engine.handle(payload)
    reached = []
    for _ in range(20):  # bounded: the give-up time (60 s) is twelve polls of 5 s away
        reached += due(engine, journal, clock, 5)
        if reached[-1] != "awaiting_vendor":
            break
    assert reached[-1] == "parked"
    record = journal.get(payload["id"])
    assert record is not None and "OP-SUB-00004" in (record.reason or "")
    assert "gave up waiting" in (record.reason or "")
    assert market.approved == [] and market.failed == []
    assert len(adapter.terminate_calls()) == 1


@pytest.mark.parametrize(
    "hostile",
    [
        Failed("poll: 200 but the body is not JSON"),
        Failed("poll: status is 'exploded', not a known value"),
        Failed("poll: 404 not_found"),
        RuntimeError("adapter bug"),
        SubscriptionStatus.TERMINATED,  # not a poll answer: never read as done
        "done",
    ],
    ids=["nonsense-json", "unknown-value", "404", "raised", "status", "string"],
)
def test_a_poll_that_cannot_be_read_parks_after_max_attempts_and_never_approves(
    journal: Journal, clock: Clock, hostile: Any
) -> None:
    payload = cancel_payload(5)
    market = FakeMarketplace([payload])
    adapter = AsyncAdapter(hostile, hostile, hostile)
    engine = make_engine(journal, adapter, market, clock)
    engine.handle(payload)
    reached = []
    for _ in range(6):
        reached += due(engine, journal, clock, 10)
        if reached and reached[-1] != "awaiting_vendor":
            break
    assert reached[-1] == "parked", reached
    record = journal.get(payload["id"])
    assert record is not None
    assert "OP-SUB-00005" in (record.reason or "") and "may still complete" in (record.reason or "")
    assert market.approved == [] and market.failed == []
    assert len(adapter.polls) == 3 and len(adapter.terminate_calls()) == 1


def test_a_500_on_a_poll_is_polled_again_and_the_operation_still_counts(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(6)
    market = FakeMarketplace([payload])
    busy = RetryLater("poll: 500 internal error", after=2)
    adapter = AsyncAdapter(busy, busy, busy, busy, Done())
    engine = make_engine(journal, adapter, market, clock)
    engine.handle(payload)
    reached = []
    for _ in range(8):
        reached += due(engine, journal, clock, 5)
        if reached[-1] != "awaiting_vendor":
            break
    assert reached[-1] == "approved"
    assert len(adapter.polls) == 5 and len(adapter.terminate_calls()) == 1


def test_an_adapter_without_poll_that_accepts_parks_with_the_reference(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(7)
    market = FakeMarketplace([payload])
    adapter = ScriptedAdapter()
    adapter.script("SUB-00007", Accepted("OP-77"))
    engine = make_engine(journal, adapter, market, clock)
    assert engine.handle(payload) == "parked"
    record = journal.get(payload["id"])
    assert record is not None and "OP-77" in (record.reason or "")
    assert "no poll()" in (record.reason or "")


@pytest.mark.parametrize("ref", ["", "x" * 3000, "OP-1\nLocation: evil"])
def test_an_unusable_operation_reference_is_parked_not_polled(
    journal: Journal, clock: Clock, ref: str
) -> None:
    payload = cancel_payload(8)
    market = FakeMarketplace([payload])
    adapter = AsyncAdapter()
    adapter.script("SUB-00008", Accepted(ref))
    engine = make_engine(journal, adapter, market, clock)
    assert engine.handle(payload) == "parked"
    assert adapter.polls == [] and market.approved == []


def test_a_status_read_that_answers_accepted_is_not_taken_for_an_operation(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(9)
    market = FakeMarketplace([payload])
    adapter = AsyncAdapter(
        idempotency=Idempotency.NONE, status=[Accepted("OP-status"), SubscriptionStatus.TERMINATED]
    )
    adapter.script("SUB-00009", Ambiguous("timeout"))
    engine = make_engine(journal, adapter, market, clock)
    engine.handle(payload)
    record = journal.get(payload["id"])
    assert record is not None and record.state is not State.AWAITING_VENDOR
    assert RowData.of(record).operation is None


def test_the_table_never_leads_from_awaiting_vendor_back_to_a_vendor_call() -> None:
    for intent in INTENT_STATES:
        move = lookup(intent, Event.ACCEPT)
        assert move.target is State.AWAITING_VENDOR and move.step == "poll_operation"
        assert move.edge.closes == "after_vendor" and move.edge.opens == "after_accepted"
    out = [e for e in TABLE if e.source is State.AWAITING_VENDOR]
    assert not [e for e in out if e.target in INTENT_STATES]
    assert lookup(State.AWAITING_VENDOR, Event.DONE_TERMINATE).target is State.TERMINATED
    assert lookup(State.AWAITING_VENDOR, Event.DONE_SUSPEND).target is State.SUSPENDED
    assert lookup(State.AWAITING_VENDOR, Event.DONE_PURGE).target is State.APPROVED
    assert lookup(State.AWAITING_VENDOR, Event.OPERATION_FAILED).target is State.REFUSING
    assert lookup(State.AWAITING_VENDOR, Event.PARK).target is State.PARKED
    assert lookup(State.AWAITING_VENDOR, Event.RETRY).target is State.AWAITING_VENDOR
    closes = {e.closes for e in out if e.target is not State.AWAITING_VENDOR and e.closes}
    assert closes == {"after_poll"}
    assert State.AWAITING_VENDOR in TIMER_STATES


def test_the_row_data_of_an_operation_reads_back_and_junk_reads_as_none(clock: Clock) -> None:
    now = clock()
    data = RowData({"step_from": "new"}).with_operation(
        ref="https://vendor.example/ops/1",
        step="terminate",
        adapter="vendor",
        accepted_at=now,
        give_up_at=now,
        every=2.5,
    )
    operation = data.with_polls(4).operation
    assert operation is not None
    assert (operation.ref, operation.step, operation.adapter) == (
        "https://vendor.example/ops/1",
        "terminate",
        "vendor",
    )
    assert operation.every == 2.5 and operation.polls == 4 and operation.accepted_at == now
    assert data.json()["step_from"] == "new"  # other keys kept
    good = data.json()["operation"]
    for junk in (
        "OP-1",
        {**good, "ref": ""},
        {**good, "ref": 7},
        {**good, "step": "explode"},
        {**good, "accepted_at": "yesterday"},
        {**good, "every": 0},
        {**good, "every": True},
    ):
        assert RowData({"operation": junk}).operation is None, junk
    assert RowData({"operation": {**good, "polls": "x"}}).operation.polls == 0  # type: ignore[union-attr]


def test_an_accepted_step_counts_for_the_anomaly_guard_when_it_is_answered(
    journal: Journal, clock: Clock
) -> None:
    """A backfill sends every call before any operation completes: twelve genuine refusals among
    thirty, answered at once between acceptances, do not latch the adapter (before: the guard saw
    only the refusals, ten in a row, and latched; found by the asynchronous soak)."""
    payloads = [cancel_payload(n) for n in range(100, 130)]
    market = FakeMarketplace(payloads)
    adapter = AsyncAdapter(*[Done("succeeded")] * 30)
    for n, payload in enumerate(payloads):
        if n % 5 in (0, 2):
            adapter.script(payload["asset"]["params"][0]["value"], Refused("contract runs on"))
    engine = make_engine(journal, adapter, market, clock)
    for payload in payloads:  # every call first, as a backfill's workers send them
        engine.handle(payload)
    for _ in range(3):
        due(engine, journal, clock, 5)
    assert engine.breakers["vendor"].latched is None
    assert len(market.approved) == 18 and len(market.failed) == 12


def test_a_vendor_failing_every_operation_latches_the_adapter(
    journal: Journal, clock: Clock
) -> None:
    payloads = [cancel_payload(n) for n in range(200, 215)]
    market = FakeMarketplace(payloads)
    adapter = AsyncAdapter(*[OperationFailed("internal error")] * 15)
    engine = make_engine(journal, adapter, market, clock)
    for payload in payloads:
        engine.handle(payload)
        due(engine, journal, clock, 5)
    assert "refused" in str(engine.breakers["vendor"].latched)
