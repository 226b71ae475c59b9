"""The hold window's step (processor.engine.hold) with a scripted vendor and a fake Connect: what is
held, when it is released, what a latch and an operator's choice do, and what stays safe when the
row's record of the held answer is damaged."""

from __future__ import annotations

from typing import Any

from processor.adapters.base import AlreadyGone, Failed, OperationFailed, Refused
from processor.engine.core import Engine
from processor.engine.results import name_of
from processor.engine.rowdata import RowData
from processor.journal.base import Journal, State

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload
from .test_engine import engine_for
from .test_operations import AsyncAdapter, due

HOLD = 60.0


def held_engine(
    journal: Journal, adapter: ScriptedAdapter, market: FakeMarketplace, clock: Clock, **proc: Any
) -> Engine:
    return engine_for(journal, adapter, market, clock, guard={"hold": HOLD}, **proc)


def test_a_refusal_is_held_then_told_to_connect_when_the_hold_is_over(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(1)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00001", Refused("Contract runs until March."))
    engine = held_engine(journal, adapter, market, clock)
    assert engine.handle(payload) == "held"
    assert engine.handle(payload) == "held"  # the poll sees it again: nothing moves, no call
    assert market.failed == [] and len(adapter.terminate_calls()) == 1
    assert due(engine, journal, clock, HOLD - 1) == []  # its timer is the end of the hold
    assert due(engine, journal, clock, 1) == ["failed"]
    assert market.failed == [(payload["id"], "Contract runs until March.")]
    assert len(adapter.terminate_calls()) == 1  # told to Connect, not asked again


def test_already_gone_is_held_then_approved(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(2)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00002", AlreadyGone("404 not_found"))
    engine = held_engine(journal, adapter, market, clock)
    assert engine.handle(payload) == "held"
    assert market.approved == []
    assert due(engine, journal, clock, HOLD) == ["approved"]
    record = journal.get(payload["id"])
    assert record is not None and record.outcome == "already_gone"
    assert RowData.of(record).held is None  # the held answer is gone once applied


def test_a_poison_refusal_and_a_failed_operation_are_held_too(
    journal: Journal, clock: Clock
) -> None:
    """Both close the request on Connect without a termination (processing.poison: fail)."""
    sync, op = cancel_payload(3), cancel_payload(4)
    market = FakeMarketplace([sync, op])
    plain = ScriptedAdapter()
    plain.script("SUB-00003", *[Failed("HTTP 400: bad plan")] * 3)
    engine = held_engine(journal, plain, market, clock, poison="fail")
    assert [engine.handle(sync) for _ in range(3) if not clock.advance(3600)] == [
        "new",
        "new",
        "held",
    ]
    async_adapter = AsyncAdapter(OperationFailed("status failed: billing locked"))
    other = held_engine(journal, async_adapter, market, clock, poison="fail")
    other.handle(op)
    assert due(other, journal, clock, 5) == ["held"]  # the poll said failed: held
    assert market.failed == []
    assert sorted(due(other, journal, clock, HOLD)) == ["failed", "failed"]
    reason = other.settings.poison_reason
    assert sorted(market.failed) == [(sync["id"], reason), (op["id"], reason)]


def test_a_latch_keeps_every_held_answer_until_a_person_chooses(
    journal: Journal, clock: Clock
) -> None:
    payloads = [cancel_payload(n) for n in range(10, 21)]
    market, adapter = FakeMarketplace(payloads), ScriptedAdapter()
    for p in payloads:
        adapter.script(p["asset"]["params"][0]["value"], Refused("no"), Refused("no"))
    engine = held_engine(journal, adapter, market, clock)
    reached = [name_of(engine.handle(p)) for p in payloads]
    assert reached == ["held"] * 10 + ["new"]  # ten in a row latched; the eleventh waits
    assert engine.breakers["vendor"].latched
    due(engine, journal, clock, HOLD * 3)  # over, and still held
    held = [journal.get(p["id"]) for p in payloads[:10]]
    assert all(r is not None and r.state is State.HELD for r in held)
    assert market.failed == []


def test_retry_held_calls_the_vendor_again_under_a_new_idempotency_key(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(30)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00030", Refused("vendor bug"))
    engine = held_engine(journal, adapter, market, clock)
    assert engine.handle(payload) == "held"
    record = journal.get(payload["id"])
    assert record is not None
    data = RowData.of(record).with_held_choice("retry").json()
    journal.force(payload["id"], State.HELD, detail="resume", actor="test", data=data)
    assert engine.handle(payload) == "approved"
    keys = [call.idempotency_key for call in adapter.terminate_calls()]
    assert keys == [f"cancel-{payload['id']}:terminate", f"cancel-{payload['id']}:terminate:2"]
    assert market.failed == []


def test_a_held_row_whose_record_is_damaged_is_parked_never_applied(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(40)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00040", Refused("no"))
    engine = held_engine(journal, adapter, market, clock)
    assert engine.handle(payload) == "held"
    record = journal.get(payload["id"])
    assert record is not None
    broken = {**record.data, "held": {"kind": "approved!", "at": "yesterday"}}
    journal.force(payload["id"], State.HELD, detail="damaged", actor="test", data=broken)
    assert engine.handle(payload) == "parked"
    assert market.failed == [] and market.approved == []


def test_connect_closing_a_held_request_parks_it_for_a_person(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(50)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00050", Refused("no"))
    engine = held_engine(journal, adapter, market, clock)
    assert engine.handle(payload) == "held"
    market.requests[payload["id"]]["status"] = "approved"  # someone approved it by hand
    assert engine.settle(payload["id"]) == "busy"  # its timer holds it until the hold ends
    assert due(engine, journal, clock, HOLD) == ["parked"]  # read fresh: closed on Connect
    assert market.failed == []
    record = journal.get(payload["id"])
    assert record is not None and "was held" in (record.reason or "")
