"""The mock vendor in asynchronous mode: terminate (suspend, purge) answered 202 with an operation
and a Location, completed later or failed, polled at ``/operations/<id>``; each repeat as its mode
makes it (key: the same 202 replayed; natural: the operation in flight; read: a second operation,
a duplicate effect when it completes); everything counted in the ledger, and kept across a
restart with a state file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests

from cancel_sandbox.vendor.operations import OperationSettings

from .test_mock_vendor import TOKEN, Vendor, start_vendor, stop_vendor


def poll(vendor: Vendor, location: str) -> requests.Response:
    return vendor.http.get(
        f"{vendor.url}{location}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )


def wait_done(vendor: Vendor, location: str, seconds: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:  # bounded by the deadline
        body: dict[str, Any] = poll(vendor, location).json()
        if body["status"] != "pending":
            return body
        assert time.monotonic() < deadline, "the operation did not complete in time"
        time.sleep(0.05)


def test_an_accepted_terminate_completes_later_and_each_poll_is_counted() -> None:
    vendor = start_vendor(mode="key", operations=OperationSettings(on=True, delay=0.5))
    try:
        accepted = vendor.post("SUB-1", key="K-1")
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["status"] == "pending" and body["subscription_id"] == "SUB-1"
        location = accepted.headers["Location"]
        assert location == f"/operations/{body['operation_id']}"
        assert poll(vendor, location).json()["status"] == "pending"
        assert vendor.status("SUB-1").json()["status"] == "terminating"  # in flight
        assert vendor.summary()["effective_terminations"] == 0
        done = wait_done(vendor, location)
        assert done["status"] == "done" and "completed_at" in done
        assert vendor.status("SUB-1").json()["status"] == "terminated"
        # The same key: the same 202, the same operation, no second effect.
        again = vendor.post("SUB-1", key="K-1")
        assert again.status_code == 202 and again.json()["operation_id"] == body["operation_id"]
        assert again.headers["Location"] == location
        summary = vendor.summary()
        assert summary["effective_terminations"] == 1 and summary["duplicate_terminations"] == 0
        assert summary["terminate_calls"] == 2 and summary["repeated_terminate_calls"] == 0
        assert summary["polls"] >= 3 and summary["operations_done"] == 1
        assert poll(vendor, "/operations/OP-999999").status_code == 404
        assert poll(vendor, location).status_code == 200
        unauthorised = vendor.http.get(f"{vendor.url}{location}", timeout=10)
        assert unauthorised.status_code == 401
    finally:
        stop_vendor(vendor)


def test_natural_mode_answers_the_operation_in_flight_and_read_mode_duplicates() -> None:
    vendor = start_vendor(mode="natural", operations=OperationSettings(on=True, delay=0.5))
    try:
        first = vendor.post("SUB-2").json()["operation_id"]
        assert vendor.post("SUB-2").json()["operation_id"] == first  # in flight: the same one
        wait_done(vendor, f"/operations/{first}")
        assert vendor.post("SUB-2").status_code == 409  # done: already terminated
        assert vendor.summary()["duplicate_terminations"] == 0
        vendor.set_mode("read")
        vendor.post("SUB-3")
        second = vendor.post("SUB-3").json()["operation_id"]  # a caller sending it again
        wait_done(vendor, f"/operations/{second}")
        summary = vendor.summary()
        # Two calls sent again: SUB-2's (answered by the operation in flight, no effect) and
        # SUB-3's (a second operation, a second effect).
        assert summary["duplicate_terminations"] == 1 and summary["repeated_terminate_calls"] == 2
    finally:
        stop_vendor(vendor)


def test_operations_fail_by_pattern_and_survive_a_restart(tmp_path: Path) -> None:
    state = str(tmp_path / "vendor.db")
    settings = OperationSettings(on=True, delay=60.0, fail_pattern="FAIL")
    vendor = start_vendor(mode="key", state_file=state, operations=settings)
    try:
        kept = vendor.post("SUB-4", key="K-4").headers["Location"]
        failing = vendor.post("SUB-FAIL-5", key="K-5").headers["Location"]
    finally:
        stop_vendor(vendor)
    again = start_vendor(mode="key", state_file=state, operations=settings)
    try:
        assert poll(again, kept).json()["status"] == "pending"
        assert again.admin("POST", "complete").json()["completed"] == 2
        assert poll(again, kept).json()["status"] == "done"
        failed = poll(again, failing).json()
        assert failed["status"] == "failed" and failed["error"]
        assert again.status("SUB-FAIL-5").json()["status"] == "active"
        counts = again.admin("GET", "operations").json()
        assert (counts["operations_done"], counts["operations_failed"]) == (1, 1)
        assert again.summary()["effective_terminations"] == 1
        assert again.admin("PUT", "operations", {"on": False}).status_code == 200
        assert again.post("SUB-6").status_code == 200  # synchronous again
        assert again.admin("PUT", "operations", {"fail_rate": 2}).status_code == 400
    finally:
        stop_vendor(again)
