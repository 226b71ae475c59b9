"""The journal row's data, read and written through RowData."""

from __future__ import annotations

from datetime import UTC, datetime

from processor.engine.rowdata import Routed, RowData
from processor.journal.base import State
from processor.policy.timing import Dates

AT = datetime(2026, 1, 31, tzinfo=UTC)


def test_keys_it_does_not_know_are_kept_and_bad_values_read_as_absent():
    data = RowData({"future_key": [1, 2], "failures": 2, "retention_days": "x", "scheduled": 1})
    assert data.failures == 2 and data.retention_days is None and data.scheduled is None
    assert data.step_from is State.NEW and data.dates is None and data.routed is None
    assert data.with_failures(3).json() == {
        "future_key": [1, 2],
        "failures": 3,
        "retention_days": "x",
        "scheduled": 1,
    }


def test_a_step_started_and_finished_round_trips():
    dates = Dates(AT, AT, None)
    planned = RowData().planned(
        policy="p",
        timing="immediate",
        adapter="vendor",
        template="TL-1",
        retention_days=30,
        date_source="immediate",
        dates=dates,
    )
    started = planned.step_started(State.SCHEDULED, AT, batch="batch-1")
    assert started.step_from is State.SCHEDULED and started.raw["batch"] == "batch-1"
    assert started.sent_at == AT and started.with_sent(dates.effective_at).sent_at == AT
    assert RowData().sent_at is None  # a row from before sent_at: no send recorded
    failed = started.with_failures(2)
    finished = failed.step_finished()
    assert "step_from" not in finished.raw and "failures" not in finished.raw
    assert (
        finished.dates == dates and finished.adapter == "vendor" and finished.retention_days == 30
    )


def test_routing_and_a_send_right_wait_read_back():
    data = RowData().with_routed("ops@example.com", AT, "vip").with_suspended(AT, 2)
    assert data.routed == Routed("ops@example.com", data.raw["routed"]["at"], "vip")
    assert data.suspended_since(2) == AT and data.suspended_since(3) is None
    assert RowData({"routed": True}).routed == Routed("", "", None)  # an older writer's mark
