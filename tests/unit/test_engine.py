"""The engine's state machine on fakes (scripted vendor, in-memory marketplace) and a real SQLite
journal."""

from __future__ import annotations

from typing import Any

import pytest

from processor.adapters.base import (
    AlreadyGone,
    Ambiguous,
    Failed,
    Idempotency,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
)
from processor.config.schema import load_config
from processor.engine.core import Engine
from processor.journal.base import Journal, State
from processor.marketplace import NotPending, TransientError
from processor.observe import Metrics

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload

PRODUCT = "PRD-100-100-100"


def make_config(guard: dict[str, Any] | None = None, **processing: Any) -> Any:
    settings = {"retry_base": 10, "retry_max": 60, "max_attempts": 3, **processing}
    return load_config(None, environ={}).model_validate(
        {
            "adapters": {"vendor": {"type": "noop"}},
            "defaults": {"adapter": "vendor"},
            "products": {PRODUCT: {"template": "TL-100-100-100"}},
            "processing": settings,
            # Refusals reach Connect at once here; the hold's tests (test_hold) set it.
            "guard": {"hold": 0, **(guard or {})},
        }
    )


def engine_for(
    journal: Journal,
    adapter: ScriptedAdapter,
    market: FakeMarketplace,
    clock: Clock,
    owner: str = "worker-1",
    guard: dict[str, Any] | None = None,
    **processing: Any,
) -> Engine:
    return Engine(
        config=make_config(guard, **processing),
        journal=journal,
        marketplace=market,
        adapters={"vendor": adapter},
        owner=owner,
        metrics=Metrics(),
        clock=clock,
    )


def test_terminate_then_approve_with_a_stable_key_and_one_note(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(1)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    engine = engine_for(journal, adapter, market, clock)

    assert engine.handle(payload) == "approved"
    assert market.approved == [(payload["id"], "TL-100-100-100")]
    [call] = adapter.terminate_calls()
    assert call.idempotency_key == f"cancel-{payload['id']}:terminate"
    assert call.subscription_id == "SUB-00001"
    assert len(market.notes) == 1 and "terminated" in market.notes[0][1]

    # A later pass sees it again (Connect lags): nothing is called, nothing is posted.
    payload["status"] = "pending"
    assert engine.handle(payload) == "approved"
    assert len(adapter.terminate_calls()) == 1 and len(market.notes) == 1
    states = [t.to_state for t in journal.transitions(payload["id"])]
    assert states == [State.TERMINATING, State.TERMINATED, State.APPROVED]


def test_already_gone_is_approved(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(2)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00002", AlreadyGone("404"))
    assert engine_for(journal, adapter, market, clock).handle(payload) == "approved"
    assert journal.get(payload["id"]).outcome == "already_gone"  # type: ignore[union-attr]


def test_a_vendor_refusal_fails_the_request_with_its_reason(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(3)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00003", Refused("Outstanding balance\x07 of $12"))
    assert engine_for(journal, adapter, market, clock).handle(payload) == "failed"
    assert market.failed == [(payload["id"], "Outstanding balance  of $12")]
    assert market.approved == []


def test_retry_later_defers_without_refusing(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(4)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00004", RetryLater("503", after=120))
    engine = engine_for(journal, adapter, market, clock)

    assert engine.handle(payload) == "new"
    assert engine.handle(payload) == "busy"  # not due yet: no call
    assert len(adapter.terminate_calls()) == 1
    clock.advance(121)
    assert engine.handle(payload) == "approved"
    assert market.failed == []


def test_ambiguous_outcome_with_an_idempotent_vendor_repeats_the_same_key(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(5)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter(idempotency=Idempotency.KEY)
    adapter.script("SUB-00005", Ambiguous("connection dropped"))
    engine = engine_for(journal, adapter, market, clock)

    assert engine.handle(payload) == "terminating"
    clock.advance(60)
    assert engine.handle(payload) == "approved"
    keys = {c.idempotency_key for c in adapter.terminate_calls()}
    assert len(adapter.terminate_calls()) == 2 and len(keys) == 1


def test_ambiguous_outcome_without_idempotency_or_status_read_is_parked(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(6)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter(idempotency=Idempotency.NONE)
    adapter.script("SUB-00006", Ambiguous("read timeout"))
    engine = engine_for(journal, adapter, market, clock)

    assert engine.handle(payload) == "parked"
    clock.advance(3600)
    assert engine.handle(payload) == "parked"
    assert len(adapter.terminate_calls()) == 1  # never a blind second call
    assert market.approved == [] and market.failed == []


def test_status_read_settles_an_ambiguous_terminate(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(7)
    market = FakeMarketplace([payload])
    statuses = [SubscriptionStatus.ACTIVE, SubscriptionStatus.TERMINATED]
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=statuses)
    adapter.script("SUB-00007", Ambiguous("dropped"))
    engine = engine_for(journal, adapter, market, clock)

    assert engine.handle(payload) == "terminating"
    clock.advance(60)
    assert engine.handle(payload) == "approved"
    assert len(adapter.terminate_calls()) == 1
    # read before the first terminate (mode read), the call, the read that settles it
    assert [op for op, _ in adapter.calls] == ["status", "terminate", "status"]


def test_status_read_active_means_the_first_call_did_not_act(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(8)
    market = FakeMarketplace([payload])
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[SubscriptionStatus.ACTIVE] * 3)
    adapter.script("SUB-00008", Ambiguous("dropped"))
    engine = engine_for(journal, adapter, market, clock)
    engine.handle(payload)
    clock.advance(60)
    # "active" a minute after the dropped call is no proof yet: a vendor behind a gateway may
    # still apply it. The request waits for the lease (60 s) plus the apply horizon (120 s).
    assert engine.handle(payload) == "terminating"
    assert [op for op, _ in adapter.calls] == ["status", "terminate", "status"]
    clock.advance(120)
    assert engine.handle(payload) == "approved"
    assert [op for op, _ in adapter.calls] == [
        "status",
        "terminate",
        "status",
        "status",
        "terminate",
    ]


@pytest.mark.parametrize(("poison", "final"), [("park", "parked"), ("fail", "failed")])
def test_poison_requests_stop_after_max_attempts(
    journal: Journal, clock: Clock, poison: str, final: str
) -> None:
    payload = cancel_payload(9)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    adapter.script("SUB-00009", *[Failed("HTTP 400: bad plan")] * 5)
    engine = engine_for(
        journal, adapter, market, clock, poison=poison, poison_reason="Contact support."
    )
    results = []
    for _ in range(5):
        results.append(engine.handle(payload))
        clock.advance(3600)
    assert results[:3] == ["new", "new", final]
    assert len(adapter.terminate_calls()) == 3
    assert market.failed == ([(payload["id"], "Contact support.")] if poison == "fail" else [])


def test_approve_landed_before_a_crash_is_recognised(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(10)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    market.errors["approve"].append(NotPending("approved"))
    assert engine_for(journal, adapter, market, clock).handle(payload) == "approved"


def test_connect_trouble_on_approve_never_calls_the_vendor_again(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(11)
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    market.errors["approve"].append(TransientError("503 storm", retry_after=30))
    engine = engine_for(journal, adapter, market, clock)
    assert engine.handle(payload) == "terminated"
    clock.advance(31)
    assert engine.handle(payload) == "approved"
    assert len(adapter.terminate_calls()) == 1


def test_malformed_requests_get_a_recorded_outcome_and_the_loop_goes_on(
    journal: Journal, clock: Clock
) -> None:
    market, adapter = FakeMarketplace(), ScriptedAdapter()
    engine = engine_for(journal, adapter, market, clock)
    no_sub = cancel_payload(12, subscription=None)
    no_asset = {"id": "PR-9999-9999-9999-001", "type": "cancel", "status": "pending"}
    assert engine.handle(no_sub) == "parked"
    assert engine.handle(no_asset) == "parked"
    assert engine.handle({"type": "cancel"}) == "malformed"
    assert engine.handle(["not", "an", "object"]) == "malformed"  # type: ignore[arg-type]
    assert "no vendor subscription id" in (journal.get(no_sub["id"]).reason or "")  # type: ignore[union-attr]
    assert adapter.calls == []


def test_unconfigured_products_are_never_touched(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(13, product="PRD-999-999-999")
    market, adapter = FakeMarketplace([payload]), ScriptedAdapter()
    assert engine_for(journal, adapter, market, clock).handle(payload) == "ignored"
    assert journal.get(payload["id"]) is None and adapter.calls == []


def test_a_stolen_lease_stops_the_worker_before_connect_is_told(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(14)
    market = FakeMarketplace([payload])
    thief = engine_for(journal, ScriptedAdapter(), market, clock, owner="worker-2")

    class SlowAdapter(ScriptedAdapter):
        def terminate(self, call: Any) -> Any:
            clock.advance(3600)  # the lease runs out while the vendor thinks
            assert thief.handle(payload) == "approved"  # another worker takes over
            return Terminated("late")

    engine = engine_for(journal, SlowAdapter(), market, clock)
    assert engine.handle(payload) == "lease_lost"
    assert market.approved == [(payload["id"], "TL-100-100-100")]  # once, by the thief


def test_the_circuit_opens_during_a_vendor_outage(journal: Journal, clock: Clock) -> None:
    payloads = [cancel_payload(n) for n in range(20, 30)]
    market, adapter = FakeMarketplace(payloads), ScriptedAdapter()
    for p in payloads:
        adapter.script(p["asset"]["params"][0]["value"], RetryLater("down"))
    engine = engine_for(journal, adapter, market, clock)
    for p in payloads:
        engine.handle(p)
    assert len(adapter.terminate_calls()) == 5  # the threshold; the rest wait without a call
    assert all(journal.get(p["id"]).state is State.NEW for p in payloads)  # type: ignore[union-attr]
