"""Signs that another processor (or this journal restored from a backup) acts on the same requests.

Each sign latches the adapter with the reason "another processor or a restored journal"; a resume
accepts what the journal held when it was resumed. The engine runs with the in-memory journal and
the fakes; the latch file sits in the test's working directory (the default configuration's).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from processor.adapters.base import (
    AlreadyGone,
    Ambiguous,
    Failed,
    Idempotency,
    RetryLater,
    SubscriptionStatus,
)
from processor.config.schema import load_config
from processor.engine.core import Engine
from processor.engine.guard import LatchFile, latch_path
from processor.journal.base import Journal, State
from processor.marketplace import TransientError
from processor.observe import Metrics

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload

PRODUCT = "PRD-100-100-100"
SIGN = "another processor or a restored journal"
S = SubscriptionStatus


def engine_for(
    journal: Journal, adapter: ScriptedAdapter, market: FakeMarketplace, clock: Clock, **guard: Any
) -> Engine:
    config = load_config(None, environ={}).model_validate(
        {
            "adapters": {"vendor": {"type": "noop"}},
            "defaults": {"adapter": "vendor"},
            "products": {PRODUCT: {"template": "TL-100-100-100"}},
            "processing": {"retry_base": 10, "retry_max": 60, "max_attempts": 3},
            "guard": {"hold": 0, **guard},  # the hold window is tested on its own
        }
    )
    return Engine(
        config=config,
        journal=journal,
        marketplace=market,
        adapters={"vendor": adapter},
        owner="worker-1",
        metrics=Metrics(),
        clock=clock,
    )


def latched(engine: Engine) -> str | None:
    return engine.breakers["vendor"].latched


def latches(engine: Engine) -> LatchFile:
    return LatchFile(latch_path(engine.config))


def test_mode_read_reads_before_the_first_terminate_and_goes_ahead_on_active(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(1)
    market = FakeMarketplace([payload])
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[S.ACTIVE])
    engine = engine_for(journal, adapter, market, clock)
    assert engine.handle(payload) == State.APPROVED
    assert [op for op, _ in adapter.calls] == ["status", "terminate"]
    assert latched(engine) is None


def test_terminated_before_this_journal_called_is_approved_without_a_call_and_latches(
    journal: Journal, clock: Clock
) -> None:
    """A restored journal (or a second one): the read sees the earlier termination."""
    first, second = cancel_payload(1), cancel_payload(2)
    market = FakeMarketplace([first, second])
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[S.TERMINATED])
    engine = engine_for(journal, adapter, market, clock)
    assert engine.handle(first) == State.APPROVED  # the subscription is gone: approving is right
    assert adapter.terminate_calls() == []
    why = latched(engine)
    assert why is not None and SIGN in why and "resume vendor" in why
    assert SIGN in latches(engine).read()["vendor"]["reason"]
    # Latched: the next request waits where it is, no vendor call at all.
    assert engine.handle(second) == State.NEW
    assert [op for op, _ in adapter.calls] == ["status"]
    record = journal.get(second["id"])
    assert record is not None and "latched" in (record.last_error or "")


def test_a_failed_read_before_the_first_terminate_sends_nothing(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(3)
    market = FakeMarketplace([payload])
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[RetryLater("503", after=7)])
    engine = engine_for(journal, adapter, market, clock)
    assert engine.handle(payload) == State.NEW
    assert adapter.terminate_calls() == []
    record = journal.get(payload["id"])
    assert record is not None and record.next_attempt_at == clock() + timedelta(seconds=7)
    assert "read before terminate" in (record.last_error or "")


def test_not_found_before_the_first_terminate_is_gone_not_a_sign(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(4)
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[S.NOT_FOUND])
    engine = engine_for(journal, adapter, FakeMarketplace([payload]), clock)
    assert engine.handle(payload) == State.APPROVED
    assert adapter.terminate_calls() == [] and latched(engine) is None


def test_modes_key_and_natural_do_not_read_first(journal: Journal, clock: Clock) -> None:
    for n, mode in ((5, Idempotency.KEY), (6, Idempotency.NATURAL)):
        payload = cancel_payload(n)
        adapter = ScriptedAdapter(idempotency=mode, status=[S.TERMINATED])
        engine = engine_for(journal, adapter, FakeMarketplace([payload]), clock)
        assert engine.handle(payload) == State.APPROVED
        assert [op for op, _ in adapter.calls] == ["terminate"]


def test_approved_by_someone_else_as_this_journal_terminated_latches(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(7)
    market = FakeMarketplace([copy.deepcopy(payload)])
    market.requests[payload["id"]]["status"] = "approved"  # the other processor was quicker
    engine = engine_for(journal, ScriptedAdapter(), market, clock)
    assert engine.handle(payload) == State.APPROVED
    why = latched(engine)
    assert why is not None and SIGN in why and "approved on Connect by someone else" in why
    assert market.approved == []


def test_already_approved_after_a_deferred_approve_is_this_journals_own(
    journal: Journal, clock: Clock
) -> None:
    """The approve left before (its answer lost, or a crash): found approved later, not a sign."""
    payload = cancel_payload(8)
    market = FakeMarketplace([copy.deepcopy(payload)])
    market.errors["approve"].append(TransientError("timeout"))
    engine = engine_for(journal, ScriptedAdapter(), market, clock)
    assert engine.handle(payload) == State.TERMINATED
    market.requests[payload["id"]]["status"] = "approved"  # the lost approve had landed
    clock.advance(600)
    assert engine.handle(payload) == State.APPROVED
    assert latched(engine) is None


def test_a_request_never_started_found_approved_on_connect_latches(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(9)
    market = FakeMarketplace([copy.deepcopy(payload)])
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[RetryLater("busy")])
    engine = engine_for(journal, adapter, market, clock)
    assert engine.handle(payload) == State.NEW  # deferred before any call
    market.requests[payload["id"]]["status"] = "approved"
    clock.advance(600)
    assert engine.settle(payload["id"]) == State.CLOSED
    why = latched(engine)
    assert why is not None and "had not started was approved on Connect" in why


def test_a_resume_accepts_the_rows_it_saw_and_a_later_row_latches_again(
    journal: Journal, clock: Clock
) -> None:
    clock.now = datetime.now(UTC) - timedelta(hours=1)  # the journal's clock too
    old, later = cancel_payload(10), cancel_payload(11)
    market = FakeMarketplace([old, later])
    statuses = [S.TERMINATED, S.TERMINATED, S.TERMINATED]
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=statuses)
    engine = engine_for(journal, adapter, market, clock)
    engine.handle(old)  # approved, latched
    # A restore: more rows the journal held before the operator looked.
    restored = cancel_payload(12)
    market.requests[restored["id"]] = restored
    assert engine.handle(restored) == State.NEW  # latched: waits
    assert latches(engine).clear("vendor") is not None  # cancel-processor resume vendor
    engine.guard.sync(force=True)
    clock.advance(600)
    assert engine.handle(restored) == State.APPROVED
    assert latched(engine) is None  # recorded before the resume: explained
    clock.advance(7200)  # a request first seen after the resume
    assert engine.handle(later) == State.APPROVED
    assert latched(engine) is not None
    assert adapter.terminate_calls() == []


def test_the_sign_only_logs_when_the_setting_is_off(journal: Journal, clock: Clock) -> None:
    payload = cancel_payload(13)
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=[S.TERMINATED])
    engine = engine_for(
        journal, adapter, FakeMarketplace([payload]), clock, another_processor=False
    )
    assert engine.handle(payload) == State.APPROVED
    assert latched(engine) is None and adapter.terminate_calls() == []


def test_a_status_read_that_keeps_failing_before_terminate_parks_never_refuses(
    journal: Journal, clock: Clock
) -> None:
    payload = cancel_payload(14)
    statuses = [Failed("HTTP 404 no_route")] * 3
    adapter = ScriptedAdapter(idempotency=Idempotency.NONE, status=statuses)
    market = FakeMarketplace([payload])
    engine = engine_for(journal, adapter, market, clock)
    assert engine.handle(payload) == State.NEW
    clock.advance(600)
    assert engine.handle(payload) == State.NEW
    clock.advance(600)
    assert engine.handle(payload) == State.PARKED  # max_attempts 3
    record = journal.get(payload["id"])
    assert record is not None and "failed status reads before terminate" in (record.reason or "")
    assert adapter.terminate_calls() == [] and market.failed == []


def test_already_gone_confirming_a_repeat_is_not_an_anomaly(journal: Journal, clock: Clock) -> None:
    """Natural idempotency and a vendor that applied the first call late: every repeat answers
    "already terminated". That confirms this journal's own call; the guard must not latch."""
    payloads = [cancel_payload(100 + n) for n in range(4)]  # under the breaker's threshold (5)
    adapter = ScriptedAdapter(idempotency=Idempotency.NATURAL)
    for payload in payloads:
        sub = payload["asset"]["params"][0]["value"]
        adapter.script(sub, Ambiguous("504 gateway timeout"), AlreadyGone("already terminated"))
    engine = engine_for(journal, adapter, FakeMarketplace(payloads), clock, in_a_row=3)
    assert [engine.handle(p) for p in payloads] == [State.TERMINATING] * len(payloads)
    clock.advance(600)
    assert [engine.handle(p) for p in payloads] == [State.APPROVED] * len(payloads)
    assert latched(engine) is None
