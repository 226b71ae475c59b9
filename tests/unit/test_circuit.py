"""The circuit breaker: ``with breaker.attempt():`` gives the half-open probe back on every exit
path, in the breaker itself and through the engine (park without a call, deferral, an exception, a
lost lease); and an adapter that raises counts toward the poison limit."""

from __future__ import annotations

from typing import Any

import pytest

from processor.adapters.base import Idempotency, RetryLater, SubscriptionStatus, Terminated
from processor.engine.circuit import CircuitBreaker, CircuitOpen
from processor.engine.core import Engine
from processor.journal.base import Journal, State

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload
from .test_engine import engine_for


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def half_open(ticks: Ticks, name: str = "vendor") -> CircuitBreaker:
    """A breaker whose next attempt is the half-open probe."""
    breaker = CircuitBreaker(name, failures=1, reset_after=10, clock=ticks)
    breaker.failure()
    ticks.now += 11
    return breaker


def probe_is_free(breaker: CircuitBreaker) -> bool:
    """True when a new attempt may go ahead (the probe slot was given back)."""
    try:
        with breaker.attempt():
            return True
    except CircuitOpen:
        return False


# -- the breaker itself -------------------------------------------------------------------------


def test_open_then_one_probe_at_a_time_then_closed_by_its_success() -> None:
    ticks = Ticks()
    breaker = CircuitBreaker("vendor", failures=2, reset_after=10, clock=ticks)
    for _ in range(2):
        with breaker.attempt() as attempt:
            attempt.failure()
    assert breaker.is_open
    with pytest.raises(CircuitOpen) as shut:
        with breaker.attempt():
            pass
    assert shut.value.wait == 10
    ticks.now += 11
    with breaker.attempt() as probe:
        assert probe.probe and breaker.probing
        with pytest.raises(CircuitOpen):  # exactly one probe
            with breaker.attempt():
                pass
        probe.success()
        probe.failure()  # a second verdict is ignored
    assert not breaker.is_open and not breaker.probing


def test_a_failed_probe_opens_it_again_for_a_whole_reset_period() -> None:
    ticks = Ticks()
    breaker = half_open(ticks)
    with breaker.attempt() as probe:
        probe.failure()
    assert breaker.is_open and not breaker.probing
    assert not probe_is_free(breaker)
    ticks.now += 11
    assert probe_is_free(breaker)


@pytest.mark.parametrize("leave", ["no verdict", "exception"])
def test_a_probe_left_without_a_verdict_is_given_back(leave: str) -> None:
    ticks = Ticks()
    breaker = half_open(ticks)
    with pytest.raises(RuntimeError) if leave == "exception" else _nothing():
        with breaker.attempt():
            if leave == "exception":
                raise RuntimeError("journal down")
    assert not breaker.probing and breaker.is_open
    assert probe_is_free(breaker)  # at once: no reset period is added


def test_a_latch_holds_it_open_until_unlatched() -> None:
    changes: list[tuple[str, bool]] = []
    breaker = CircuitBreaker("vendor", on_change=lambda n, o: changes.append((n, o)))
    assert breaker.latch("10 already_gone in a row") and not breaker.latch("again")
    with pytest.raises(CircuitOpen) as shut:
        with breaker.attempt():
            pass
    assert "latched: 10 already_gone in a row" in str(shut.value)
    breaker.success()  # a stray verdict does not unlatch it
    assert breaker.is_open
    assert breaker.unlatch() and not breaker.unlatch()
    assert probe_is_free(breaker) and changes == [("vendor", True), ("vendor", False)]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- through the engine: every exit path of a vendor step -----------------------------------------


def engine_with(
    journal: Journal,
    adapter: ScriptedAdapter,
    market: FakeMarketplace,
    clock: Clock,
    ticks: Ticks,
    **processing: Any,
) -> tuple[Engine, CircuitBreaker]:
    engine = engine_for(journal, adapter, market, clock, **processing)
    engine.breakers["vendor"] = breaker = half_open(ticks)
    return engine, breaker


def left_terminating(journal: Journal, payload: dict[str, Any], clock: Clock) -> None:
    """A row a dead process left in ``terminating``: its call may have acted."""
    journal.ensure(
        payload["id"],
        idempotency_key=f"cancel-{payload['id']}",
        subscription_id=payload["asset"]["params"][0]["value"],
    )
    claim = journal.claim(payload["id"], "dead-worker", 60)
    assert claim is not None
    journal.transition(
        claim, State.TERMINATING, attempts=1, data={"step_from": "new", "adapter": "vendor"}
    )
    clock.advance(120)  # its lease ran out


def test_resume_that_parks_without_a_call_gives_the_probe_back(
    journal: Journal, clock: Clock
) -> None:
    """The reported leak: ``_resume_step`` took the probe, then parked (no idempotency, no
    status)."""
    payload, ticks = cancel_payload(40), Ticks()
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE)
    engine, breaker = engine_with(journal, adapter, FakeMarketplace([payload]), clock, ticks)
    left_terminating(journal, payload, clock)
    assert engine.handle(payload) == "parked" and adapter.calls == []
    assert not breaker.probing and probe_is_free(breaker)


def test_a_probe_deferred_by_retry_later_reopens_and_is_not_stuck(
    journal: Journal, clock: Clock
) -> None:
    payload, ticks = cancel_payload(41), Ticks()
    adapter = ScriptedAdapter()
    adapter.script("SUB-00041", RetryLater("busy"))
    engine, breaker = engine_with(journal, adapter, FakeMarketplace([payload]), clock, ticks)
    assert engine.handle(payload) == "new"  # deferred back to where it started
    assert breaker.is_open and not breaker.probing
    ticks.now += 11
    clock.advance(3600)
    assert engine.handle(payload) == "approved" and not breaker.is_open


def test_a_probe_whose_journal_write_raises_is_given_back(
    journal: Journal, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload, ticks = cancel_payload(42), Ticks()
    adapter = ScriptedAdapter()
    engine, breaker = engine_with(journal, adapter, FakeMarketplace([payload]), clock, ticks)
    real = journal.transition

    def broken(claim: Any, state: State, **fields: Any) -> Any:
        if state is State.TERMINATING:
            raise RuntimeError("disk full")
        return real(claim, state, **fields)

    monkeypatch.setattr(journal, "transition", broken)
    with pytest.raises(RuntimeError):
        engine.handle(payload)
    assert adapter.calls == [] and not breaker.probing and probe_is_free(breaker)


def test_a_probe_whose_lease_was_lost_is_given_back(journal: Journal, clock: Clock) -> None:
    payload, ticks = cancel_payload(43), Ticks()
    market = FakeMarketplace([payload])
    thief = engine_for(journal, ScriptedAdapter(), market, clock, owner="worker-2")

    class SlowAdapter(ScriptedAdapter):
        def terminate(self, call: Any) -> Any:
            clock.advance(3600)  # the lease runs out while the vendor thinks
            assert thief.handle(payload) == "approved"
            return Terminated("late")

    engine, breaker = engine_with(journal, SlowAdapter(), market, clock, ticks)
    assert engine.handle(payload) == "lease_lost"
    assert not breaker.probing and probe_is_free(breaker)


def test_a_probe_that_reads_the_status_then_calls_again_gives_one_verdict(
    journal: Journal, clock: Clock
) -> None:
    payload, ticks = cancel_payload(44), Ticks()
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[SubscriptionStatus.ACTIVE])
    engine, breaker = engine_with(journal, adapter, FakeMarketplace([payload]), clock, ticks)
    left_terminating(journal, payload, clock)
    assert engine.handle(payload) == "approved"
    assert [op for op, _ in adapter.calls] == ["status", "terminate"] and not breaker.is_open


# -- adapter exceptions count toward the poison limit ----------------------------------------------


class RaisingAdapter(ScriptedAdapter):
    def terminate(self, call: Any) -> Any:
        super().terminate(call)
        raise KeyError("vendor_sdk_bug")


def test_an_adapter_that_keeps_raising_is_parked_after_max_attempts(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(45)
    market, adapter = FakeMarketplace([payload]), RaisingAdapter(idempotency=Idempotency.KEY)
    engine = engine_for(journal, adapter, market, clock, max_attempts=3, poison="fail")
    states = []
    for _ in range(6):
        states.append(engine.handle(payload))
        clock.advance(3600)
    assert states[:3] == ["terminating", "terminating", "parked"] and set(states[3:]) == {"parked"}
    record = journal.get(payload["id"])
    assert record is not None and "gave up after 3 vendor errors" in (record.reason or "")
    assert "adapter raised KeyError" in (record.last_error or "")
    # poison: fail is configured, but the call may have acted: parked, never refused
    assert len(adapter.terminate_calls()) == 3 and market.failed == [] and market.approved == []


def test_an_adapter_that_raises_without_a_safe_repeat_is_parked_at_once(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(46)
    market, adapter = FakeMarketplace([payload]), RaisingAdapter(idempotency=Idempotency.NONE)
    assert engine_for(journal, adapter, market, clock).handle(payload) == "parked"
    assert len(adapter.terminate_calls()) == 1
