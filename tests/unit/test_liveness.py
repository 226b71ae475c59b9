"""The engine's rule for a request whose send right another holder keeps
(processor/engine/liveness.py), in process: suspended without a call while the holder lives, parked
after ``journal.holder_wait``, resumed as before once the right is free; vendors that deduplicate
never take a right.

The other holder is played by a second claim of this process (another fence), which the rights
table excludes exactly as a lock held by another process would (tests/test_journal_holders.py
shows the cross-process side, tests/test_frozen_holder.py the whole with real processes)."""

from __future__ import annotations

from typing import Any

import pytest

from processor.adapters.base import Idempotency, SubscriptionStatus
from processor.config.schema import Config, load_config
from processor.engine.core import Engine
from processor.engine.liveness import SUSPENDED
from processor.journal.base import Journal, State
from processor.observe import Metrics

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload
from ..policy_fakes import PolicyMarketplace, StepAdapter

HOLDER_WAIT = 120.0


def config(**policies: Any) -> Config:
    return load_config(None, environ={}).model_validate(
        {
            "adapters": {"vendor": {"type": "noop"}},
            "defaults": {"adapter": "vendor", **({"policy": "acct"} if policies else {})},
            "products": {"PRD-100-100-100": {"template": "TL-100-100-100"}},
            "policies": {"acct": policies} if policies else {},
            "journal": {"holder_wait": HOLDER_WAIT, "lease_seconds": 10},
            "processing": {"retry_base": 10, "retry_max": 60, "max_attempts": 3},
        }
    )


def engine_for(
    journal: Journal,
    adapter: ScriptedAdapter,
    market: FakeMarketplace,
    clock: Clock,
    cfg: Config | None = None,
) -> Engine:
    return Engine(
        config=cfg or config(),
        journal=journal,
        marketplace=market,
        adapters={"vendor": adapter},
        owner="worker-b",
        metrics=Metrics(),
        clock=clock,
    )


def frozen_mid_call(journal: Journal, clock: Clock, payload: dict[str, Any]) -> None:
    """Holder A: claimed, recorded the intent of a terminate, took the send right, froze. Its
    lease runs out; the right stays taken (as a live process's lock would)."""
    rid = str(payload["id"])
    journal.ensure(rid, idempotency_key=f"cancel-{rid}", subscription_id=f"SUB-{rid[-5:]}")
    claim = journal.claim(rid, "worker-a", 10)
    assert claim is not None and journal.senders.acquire(rid, claim.fence)  # type: ignore[attr-defined]
    journal.transition(claim, State.TERMINATING, attempts=1, data={"step_from": "new"})
    clock.advance(11)


@pytest.mark.parametrize("mode", [Idempotency.NONE, "read"])
def test_a_takeover_waits_for_a_live_holder_then_parks(
    journal: Journal, clock: Clock, mode: Any
) -> None:
    payload = cancel_payload(1)
    rid = str(payload["id"])
    read = mode == "read"
    adapter = ScriptedAdapter(
        idempotency=Idempotency.NONE, status=[SubscriptionStatus.ACTIVE] if read else None
    )
    engine = engine_for(journal, adapter, FakeMarketplace([payload]), clock)
    frozen_mid_call(journal, clock, payload)

    assert engine.handle(payload) == "terminating"  # suspended: nothing called, nothing parked
    record = journal.get(rid)
    assert record is not None and SUSPENDED in (record.last_error or "") and adapter.calls == []
    assert record.next_attempt_at is not None and record.next_attempt_at > clock()
    clock.advance(HOLDER_WAIT / 2)
    assert (
        engine.handle(payload) == "terminating"
    )  # still suspended: the wait counts from the first
    clock.advance(HOLDER_WAIT / 2)
    assert engine.handle(payload) == "parked"
    record = journal.get(rid)
    assert record is not None and record.reason is not None and record.reason.startswith(SUSPENDED)
    assert adapter.calls == []  # never raced the frozen holder
    assert journal.senders.held() == {rid: 1}  # type: ignore[attr-defined]  # still A's


def test_once_the_holder_is_gone_the_intent_resumes_as_before(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(2)
    rid = str(payload["id"])
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[SubscriptionStatus.TERMINATED])
    engine = engine_for(journal, adapter, FakeMarketplace([payload]), clock)
    frozen_mid_call(journal, clock, payload)
    assert engine.handle(payload) == "terminating"
    journal.senders.release(rid, 1)  # type: ignore[attr-defined]  # A died (or finished and released)
    clock.advance(30)
    assert (
        engine.handle(payload) == "approved"
    )  # the status read saw A's call: confirmed, not repeated
    assert [op for op, _ in adapter.calls] == ["status"]
    assert journal.senders.held() == {}  # type: ignore[attr-defined]  # B's right went with its claim


def test_vendors_that_deduplicate_take_no_right(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(3)
    adapter = ScriptedAdapter(idempotency=Idempotency.KEY)
    engine = engine_for(journal, adapter, FakeMarketplace([payload]), clock)
    frozen_mid_call(journal, clock, payload)
    assert engine.handle(payload) == "approved"  # repeated at once under the same key: harmless
    assert len(adapter.terminate_calls()) == 1


def test_a_batch_leaves_out_a_request_whose_right_is_held(journal: Journal, clock: Clock) -> None:
    payloads = [cancel_payload(n) for n in (11, 12)]
    held = str(payloads[0]["id"])
    assert journal.senders.acquire(held, 999)  # type: ignore[attr-defined]  # a holder of a force-retried row
    adapter = StepAdapter(batch=True, idempotency=Idempotency.NONE)
    engine = engine_for(journal, adapter, PolicyMarketplace(payloads), clock, config(batch=True))
    results = engine.handle_batch(payloads)
    assert results == {held: "new", str(payloads[1]["id"]): "approved"}
    assert [c.request.id for batch in adapter.batches for c in batch] == [payloads[1]["id"]]
    record = journal.get(held)
    assert record is not None and SUSPENDED in (record.last_error or "")
