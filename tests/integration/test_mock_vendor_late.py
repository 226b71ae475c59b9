"""The mock vendor as unkind as a vendor behind a gateway: a call received, answered 504 (or not at
all), and applied later whatever its client did; pending applications that survive a restart;
the ledger that counts the late effect, and the duplicate a second call then makes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from cancel_sandbox.vendor.late import LateSettings

from .test_mock_vendor import TOKEN, Vendor, start_vendor, stop_vendor


def wait_for(check: object, seconds: float = 10.0) -> None:
    """Poll ``check()`` (bounded) until it is true."""
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def status_of(vendor: Vendor, sid: str) -> str:
    return str(vendor.status(sid).json()["status"])


def test_a_call_answered_504_is_applied_later_and_a_second_call_in_between_duplicates(
    tmp_path: Path,
) -> None:
    vendor = start_vendor(mode="read", late=LateSettings(delay=1.0))
    try:
        first = vendor.post("SUB-1")
        assert (first.status_code, first.json()) == (504, {"error": "gateway_timeout"})
        assert status_of(vendor, "SUB-1") == "active"  # what a status read sees in between
        assert [p["sid"] for p in vendor.admin("GET", "late").json()["pending"]] == ["SUB-1"]
        vendor.post("SUB-1")  # a caller that trusted "active": its call is applied later too
        wait_for(lambda: vendor.admin("GET", "late").json()["pending"] == [])
        assert status_of(vendor, "SUB-1") == "terminated"
        summary = vendor.summary()
        assert summary["effects"] == 2 and summary["duplicate_effects"] == 1
        assert vendor.admin("GET", "late").json()["applied"] == 2
    finally:
        stop_vendor(vendor)


def test_pending_applications_survive_a_restart_with_their_keys_reserved(tmp_path: Path) -> None:
    state = str(tmp_path / "vendor.db")
    vendor = start_vendor(mode="key", state_file=state, late=LateSettings(delay=60.0))
    try:
        assert vendor.post("SUB-2", key="K-2").status_code == 504
        assert vendor.post("SUB-2", key="K-2").status_code == 409  # received, not applied: in use
    finally:
        stop_vendor(vendor)
    again = start_vendor(mode="key", state_file=state, late=LateSettings(delay=60.0))
    try:
        pending = again.admin("GET", "late").json()["pending"]
        assert [(p["sid"], p["key"]) for p in pending] == [("SUB-2", "K-2")]
        assert again.post("SUB-2", key="K-2").status_code == 409  # still in use after the restart
        assert again.admin("POST", "apply").json() == {"applied": 1}
        replay = again.post("SUB-2", key="K-2")
        assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
        assert again.summary()["effects"] == 1 and again.summary()["duplicate_effects"] == 0
    finally:
        stop_vendor(again)


def test_a_hanging_answer_times_the_client_out_and_the_call_is_applied_anyway() -> None:
    vendor = start_vendor(mode="none", late=LateSettings(delay=1.0, answer="hang"))
    try:
        with pytest.raises(requests.Timeout):
            requests.post(
                f"{vendor.url}/v1/subscriptions/SUB-3/terminate",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=0.3,
            )
        wait_for(lambda: vendor.summary()["effects"] == 1)
        effects = vendor.ledger()["effects"]
        assert [(e["subscription_id"], e["action"]) for e in effects] == [("SUB-3", "terminate")]
    finally:
        stop_vendor(vendor)


@pytest.mark.parametrize(
    "body",
    [{"delay": -1}, {"delay": "soon"}, {"answer": "200"}, {"jitter": 1e9}, {"later": 1}],
)
def test_late_settings_out_of_range_are_refused_with_the_reason(body: dict[str, object]) -> None:
    vendor = start_vendor()
    try:
        refused = vendor.admin("PUT", "late", body)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_late"
        assert vendor.admin("GET", "late").json()["settings"]["delay"] == 0
    finally:
        stop_vendor(vendor)


def test_a_call_that_would_change_nothing_is_answered_at_once() -> None:
    """A gateway times out on slow work, not on a quick refusal: a late vendor still refuses
    (422), answers an unknown id (404) and a repeat at once."""
    vendor = start_vendor(mode="natural", late=LateSettings(delay=30.0))
    try:
        assert vendor.post("SUB-7").status_code == 422  # the mock refuses ids ending in 7
        assert vendor.post("SUB-GONE-1").status_code == 404
        vendor.admin("PUT", "subscriptions/SUB-4", {"status": "terminated"})
        assert vendor.post("SUB-4").status_code == 409  # natural mode: already terminated
        assert vendor.admin("GET", "late").json()["pending"] == []
        assert vendor.post("SUB-5").status_code == 504  # this one would act: applied later
    finally:
        stop_vendor(vendor)
