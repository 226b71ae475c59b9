"""Cancellation policies end to end: the daemon against the mock marketplace and the mock vendor
over real HTTP, one SQLite journal, and one controllable clock shared by the marketplace and the
processor (time moves by hand; nothing sleeps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from processor.journal import open_journal
from processor.journal.base import RequestRecord, State
from processor.model import parse_datetime

from ..policy_support import (
    ACME,
    AMERICA,
    DAY,
    GLOBEX,
    BatchingVendor,
    CrashAfter,
    SimulatedCrash,
    World,
    cancel,
    make_world,
    seed,
    subscription,
)

REQUEST = "PR-1000-0000-0001-002"


@pytest.fixture
def world_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., World]]:
    """Builds a world (seeded sandbox, shared clock, journal file); stops its servers afterwards."""
    started: list[World] = []

    def make(data: dict[str, Any], **options: Any) -> World:
        world = make_world(tmp_path, data, **options)
        started.append(world)
        for name, value in world.sandbox.environ().items():
            monkeypatch.setenv(name, value)
        return world

    yield make
    for world in started:
        world.sandbox.stop()


SUB = "SUB-00001"


def record(world: World, request_id: str) -> RequestRecord:
    journal = open_journal(f"sqlite:///{world.tmp_path}/journal.db")
    try:
        found = journal.get(request_id)
        assert found is not None
        return found
    finally:
        journal.close()


def effects(world: World, subscription_id: str) -> list[tuple[str, bool]]:
    return [(e["action"], e["duplicate"]) for e in world.sandbox.vendor_effects(subscription_id)]


def resume_and_crash_after(world: World, operation: str) -> None:
    """A process that takes the one due timer and dies right after the vendor did ``operation``."""
    runtime = world.runtime()
    runtime.engine.adapters["vendor"] = CrashAfter(runtime.engine.adapters["vendor"], operation)
    try:
        runtime.engine.resume(runtime.journal.claim_due(runtime.owner, 30, 1)[0])
    except SimulatedCrash:
        pass
    finally:
        runtime.close()


def monthly(**policy: Any) -> dict[str, Any]:
    return {
        "policies": {"monthly": {"timing": "end_of_period", **policy}},
        "defaults": {"policy": "monthly"},
    }


def test_end_of_period_is_scheduled_on_connect_and_terminated_when_it_returns_to_pending(
    world_factory: Any,
) -> None:
    world = world_factory(seed([subscription(1)], [cancel(1)]), **monthly())
    period_end = parse_datetime(world.sandbox.request(REQUEST)["asset"]["billing"]["next_date"])
    assert period_end is not None

    first = world.run()
    on_connect = world.sandbox.request(REQUEST)
    assert on_connect["status"] == "scheduled"
    assert parse_datetime(on_connect["planned_date"]) == period_end
    assert record(world, REQUEST).state is State.SCHEDULED
    assert first.complete and first.waiting == {
        REQUEST: "scheduled"
    }  # waiting for a date is not a failure
    assert effects(world, SUB) == []
    [note] = world.sandbox.messages(REQUEST)
    assert note.startswith("Cancellation scheduled") and period_end.strftime("%Y-%m-%d") in note

    world.set(
        period_end.replace(second=1)
    )  # Connect returns the request to pending at its planned date
    second = world.run()
    on_connect = world.sandbox.request(REQUEST)
    assert on_connect["status"] == "approved"
    assert (
        parse_datetime(on_connect["effective_date"]) == period_end
    )  # billing sees the end of the period
    assert effects(world, SUB) == [("terminate", False)]
    assert second.complete and record(world, REQUEST).state is State.APPROVED
    assert len(world.sandbox.messages(REQUEST)) == 2


def test_a_request_revoked_while_scheduled_is_confirmed_and_nothing_is_terminated(
    world_factory: Any,
) -> None:
    world = world_factory(seed([subscription(1)], [cancel(1)]), **monthly())
    world.run()
    assert world.sandbox.request(REQUEST)["status"] == "scheduled"

    world.sandbox.act(REQUEST, "revoke", {"reason": "The customer changed their mind."})
    world.advance(DAY)
    world.run()
    assert world.sandbox.request(REQUEST)["status"] == "revoked"
    assert world.sandbox.request(REQUEST)["asset"]["status"] == "active"
    assert record(world, REQUEST).state is State.REVOKED
    assert "withdrawn" in world.sandbox.messages(REQUEST)[-1]

    world.advance(60 * DAY)  # far past the planned date: nothing is left to happen
    world.run()
    assert effects(world, SUB) == [] and world.sandbox.vendor_ledger()["summary"]["calls"] == 0


def test_suspend_then_terminate_after_grace_then_purge_after_retention_each_once_across_restarts(
    world_factory: Any,
) -> None:
    world = world_factory(
        seed([subscription(1)], [cancel(1)]),
        policies={"graceful": {"grace_days": 14, "retention_days": 60}},
        defaults={"policy": "graceful"},
    )
    started = world.clock()

    world.run()  # process 1: suspends
    assert effects(world, SUB) == [("suspend", False)]
    assert (
        world.sandbox.request(REQUEST)["status"] == "pending"
    )  # reactivation stays possible on Connect
    suspended = record(world, REQUEST)
    assert suspended.state is State.SUSPENDED and suspended.next_attempt_at == started + timedelta(
        days=14
    )
    assert "can be reactivated until" in world.sandbox.messages(REQUEST)[-1]

    world.advance(13 * DAY)
    world.run()  # process 2: the grace period is not over
    assert effects(world, SUB) == [("suspend", False)]

    world.advance(DAY + 1)
    resume_and_crash_after(world, "terminate")  # process 3 dies right after the vendor terminated
    assert record(world, REQUEST).state is State.TERMINATING

    world.run()  # process 4: same key again, the vendor replays; then approve
    on_connect = world.sandbox.request(REQUEST)
    assert on_connect["status"] == "approved"
    assert parse_datetime(on_connect["effective_date"]) == started  # the day access ended
    approved = record(world, REQUEST)
    terminated_at = started + timedelta(days=14) + timedelta(seconds=1)
    assert (
        approved.state is State.APPROVED
        and approved.next_attempt_at == terminated_at + timedelta(days=60)
    )
    assert "kept until" in world.sandbox.messages(REQUEST)[-1]

    world.set(terminated_at + timedelta(days=60) - timedelta(seconds=1))
    world.run()  # process 5: one second early -- purge never runs early
    assert [a for a, _ in effects(world, SUB)] == ["suspend", "terminate"]

    world.advance(1)
    resume_and_crash_after(world, "purge")  # process 6 dies right after the vendor purged
    assert record(world, REQUEST).state is State.PURGING

    summary = world.run()  # process 7: the purge timer the intent left behind, same key
    assert summary.timers == 1
    final = record(world, REQUEST)
    assert (
        final.state is State.APPROVED
        and final.next_attempt_at is None
        and final.data.get("purged_at")
    )
    assert effects(world, SUB) == [("suspend", False), ("terminate", False), ("purge", False)]
    assert world.sandbox.vendor_ledger()["summary"]["replayed_calls"] == 2
    world.advance(365 * DAY)
    world.run()
    assert len(effects(world, SUB)) == 3


def test_premium_plans_go_to_a_person_with_one_note_and_no_vendor_call(world_factory: Any) -> None:
    route = {
        "email": "csm@vendor.example",
        "note": "Premium plans are cancelled with your customer success manager.",
    }
    world = world_factory(
        seed([subscription(1, plan="BACKUP-PREMIUM"), subscription(2)], [cancel(1), cancel(2)]),
        policies={"premium": {"route_to": route}},
        rules=[{"match": {"mpn": "BACKUP-PREMIUM"}, "policy": "premium"}],
    )
    first = world.run()
    second = world.run()
    routed = world.sandbox.request(REQUEST)
    assert routed["status"] == "pending" and routed["assignee"]["email"] == "csm@vendor.example"
    assert world.sandbox.messages(REQUEST) == [route["note"]]
    assert (
        world.sandbox.vendor_ledger()["summary"]["calls"] == 1
    )  # the standard plan's terminate only
    assert effects(world, SUB) == []
    assert world.sandbox.request("PR-1000-0000-0002-002")["status"] == "approved"
    assert first.complete and second.complete and second.waiting == {REQUEST: "waiting_human"}

    # The person decides on Connect; the processor closes its row and never calls the vendor.
    world.sandbox.act(REQUEST, "fail", {"reason": "Kept after a call with the customer."})
    world.run()
    assert record(world, REQUEST).state is State.CLOSED and effects(world, SUB) == []


def test_refusals_carry_the_configured_reason(world_factory: Any) -> None:
    reseller = "Cancellations in this marketplace go through your reseller."
    world = world_factory(
        seed(
            [subscription(1, marketplace=AMERICA), subscription(2), subscription(7)],
            [cancel(1), cancel(2), cancel(7, cancellation_reason="too_expensive")],
        ),
        policies={
            "via_reseller": {"refuse": {"reason": reseller}},
            "reasoned": {
                "require_reason": {
                    "on_missing": "refuse",
                    "reason": "Tell us why you cancel, please.",
                }
            },
        },
        rules=[{"match": {"marketplace": AMERICA}, "policy": "via_reseller"}],
        defaults={"policy": "reasoned"},
    )
    world.run()
    failed = {
        rid: world.sandbox.request(rid)
        for rid in (REQUEST, "PR-1000-0000-0002-002", "PR-1000-0000-0007-002")
    }
    assert {rid: (r["status"], r["reason"]) for rid, r in failed.items()} == {
        REQUEST: ("failed", reseller),
        "PR-1000-0000-0002-002": ("failed", "Tell us why you cancel, please."),
        # Reason given, so the vendor was asked -- and refused with a reason the customer can read.
        "PR-1000-0000-0007-002": (
            "failed",
            "Subscription has an outstanding balance; contact billing.",
        ),
    }
    calls = world.sandbox.vendor_ledger()["calls"]
    assert [c["subscription_id"] for c in calls] == ["SUB-00007"]


def test_a_customers_cancels_in_one_pass_go_as_one_batch_with_a_partial_failure(
    world_factory: Any,
) -> None:
    subs = [subscription(n, customer=ACME) for n in (1, 2, 7)] + [subscription(3, customer=GLOBEX)]
    world = world_factory(
        seed(subs, [cancel(n) for n in (1, 2, 7, 3)]),
        policies={"account": {"batch": True}},
        defaults={"policy": "account"},
    )
    runtime = world.runtime()
    vendor = BatchingVendor(runtime.engine.adapters["vendor"])
    runtime.engine.adapters["vendor"] = vendor
    try:
        summary = world.run(runtime)
    finally:
        runtime.close()
    [batch] = vendor.batches
    assert sorted(call.subscription_id for call in batch) == ["SUB-00001", "SUB-00002", "SUB-00007"]
    assert [call.subscription_id for call in vendor.single_calls] == [
        "SUB-00003"
    ]  # Globex has one cancel
    statuses = {
        n: world.sandbox.request(f"PR-1000-0000-{n:04d}-002")["status"] for n in (1, 2, 7, 3)
    }
    assert statuses == {1: "approved", 2: "approved", 7: "failed", 3: "approved"}
    assert {
        r.data.get("batch") for r in (record(world, f"PR-1000-0000-{n:04d}-002") for n in (1, 2, 7))
    } == {batch_id(world)}
    assert summary.complete and summary.results["failed"] == 1


def batch_id(world: World) -> str:
    found = record(world, REQUEST).data.get("batch")
    assert isinstance(found, str) and found.startswith("batch-")
    return found
