"""The mock vendor over real HTTP: each idempotency mode, replays and key conflicts, refusals,
missing subscriptions, suspend/purge/status, the ledger's raw calls versus effective changes
(also when the connection drops after the change), faults at run time, auth and persistence."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cancel_sandbox.vendor import Mode, VendorApp, VendorSettings, create_app
from cancel_sandbox.vendor.cli import configure_parser, run, settings_from_args
from processor.ops.serving import ServerThread

TOKEN = "test-vendor-token-9f3a"


class Vendor:
    """A running mock vendor and a client for it."""

    def __init__(self, app: VendorApp, server: ServerThread) -> None:
        self.app, self.server, self.url = app, server, server.url
        self.http = requests.Session()

    def post(
        self,
        sid: str,
        action: str = "terminate",
        key: str | None = None,
        body: dict[str, Any] | None = None,
        token: str | None = TOKEN,
    ) -> requests.Response:
        headers = {"Idempotency-Key": key} if key is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.post(
            f"{self.url}/v1/subscriptions/{sid}/{action}", json=body, headers=headers, timeout=10
        )

    def status(self, sid: str, token: str = TOKEN) -> requests.Response:
        return self.http.get(
            f"{self.url}/v1/subscriptions/{sid}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    def admin(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.http.request(method, f"{self.url}/admin/{path}", json=body, timeout=10)

    def set_mode(self, mode: str) -> None:
        assert self.admin("PUT", "mode", {"mode": mode}).json() == {"mode": mode}

    def set_faults(self, **faults: Any) -> None:
        assert self.admin("PUT", "faults", faults).status_code == 200

    def ledger(self) -> dict[str, Any]:
        ledger: dict[str, Any] = self.admin("GET", "ledger").json()
        return ledger

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.ledger()["summary"]
        return summary


def start_vendor(**settings: Any) -> Vendor:
    app = create_app(VendorSettings(token=TOKEN, **settings))
    return Vendor(app, ServerThread(app).start())


def stop_vendor(vendor: Vendor) -> None:
    vendor.http.close()
    vendor.server.stop()
    vendor.app.close()


@pytest.fixture(scope="module")
def shared_vendor() -> Iterator[Vendor]:
    vendor = start_vendor()
    yield vendor
    stop_vendor(vendor)


@pytest.fixture
def vendor(shared_vendor: Vendor) -> Vendor:
    """The shared server, reset to key mode, no faults, empty state and ledger."""
    shared_vendor.set_mode("key")
    shared_vendor.set_faults()
    assert shared_vendor.admin("POST", "reset").status_code == 200
    return shared_vendor


# -- auth ---------------------------------------------------------------------------------------


def test_calls_without_the_right_bearer_token_are_refused_and_the_token_is_never_echoed(
    vendor: Vendor,
) -> None:
    for token in (None, "wrong", TOKEN + "x"):
        response = vendor.post("SUB-1", token=token)
        assert (response.status_code, response.json()) == (401, {"error": "unauthorized"})
    assert vendor.status("SUB-1", token="nope").status_code == 401
    basic = vendor.http.get(
        f"{vendor.url}/v1/subscriptions/SUB-1", headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert basic.status_code == 401
    assert vendor.status("SUB-1").json() == {"id": "SUB-1", "status": "active"}
    ledger_text = vendor.admin("GET", "ledger").text
    assert TOKEN not in ledger_text and TOKEN not in repr(VendorSettings(token=TOKEN))
    assert vendor.summary()["effects"] == 0
    assert vendor.summary()["calls_by_status"] == {"200": 1, "401": 5}


# -- key mode ------------------------------------------------------------------------------------


def test_terminate_answers_the_new_state_and_the_status_endpoint_agrees(vendor: Vendor) -> None:
    response = vendor.post(
        "SUB-100", body={"request_id": "PR-1", "reason_code": "r", "comment": "c"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "SUB-100" and body["status"] == "terminated" and body["terminated_at"]
    assert vendor.status("SUB-100").json()["status"] == "terminated"
    (effect,) = vendor.ledger()["effects"]
    assert (
        effect["subscription_id"] == "SUB-100"
        and effect["request_id"] == "PR-1"
        and not effect["duplicate"]
    )


def test_key_mode_replays_a_repeated_key_without_acting_again(vendor: Vendor) -> None:
    first = vendor.post("SUB-101", key="k-101", body={"request_id": "PR-101"})
    # Same JSON with keys in another order and other spacing is the same request.
    again = vendor.http.post(
        f"{vendor.url}/v1/subscriptions/SUB-101/terminate",
        data='{ "request_id" : "PR-101" }',
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Idempotency-Key": "k-101",
            "Content-Type": "application/json",
        },
    )
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert (
        again.headers["Idempotent-Replayed"] == "true"
        and "Idempotent-Replayed" not in first.headers
    )
    ledger = vendor.ledger()
    assert [c["replayed"] for c in ledger["calls"]] == [False, True]
    assert len(ledger["effects"]) == 1
    assert (
        ledger["summary"]["effective_terminations"] == 1
        and ledger["summary"]["replayed_calls"] == 1
    )


def test_key_mode_rejects_a_key_reused_for_another_request(vendor: Vendor) -> None:
    assert vendor.post("SUB-102", key="k-102", body={"request_id": "PR-1"}).status_code == 200
    for sid, action, body in [
        ("SUB-102", "terminate", {"request_id": "PR-2"}),  # other body
        ("SUB-102", "suspend", {"request_id": "PR-1"}),  # other path
        ("SUB-103", "terminate", {"request_id": "PR-1"}),  # other subscription
    ]:
        response = vendor.post(sid, action, key="k-102", body=body)
        assert (response.status_code, response.json()) == (422, {"error": "idempotency_key_reuse"})
    assert vendor.status("SUB-103").json()["status"] == "active"
    assert vendor.summary()["effects"] == 1


def test_key_mode_without_a_key_or_with_a_new_key_terminates_again(vendor: Vendor) -> None:
    assert vendor.post("SUB-104", key="first").status_code == 200
    assert vendor.post("SUB-104").status_code == 200
    assert vendor.post("SUB-104", key="second").status_code == 200
    effects = vendor.ledger()["effects"]
    assert [(e["idempotency_key"], e["duplicate"]) for e in effects] == [
        ("first", False),
        (None, True),
        ("second", True),
    ]
    summary = vendor.summary()
    assert summary["effective_terminations"] == 3 and summary["duplicate_terminations"] == 2
    assert (
        summary["subscriptions_terminated"] == 1
        and summary["subscriptions_terminated_more_than_once"] == 1
    )


def test_key_mode_stores_and_replays_a_refusal(vendor: Vendor) -> None:
    first = vendor.post("SUB-107", key="k-107")
    replay = vendor.post("SUB-107", key="k-107")
    expected = {
        "error": "refused",
        "message": "Subscription has an outstanding balance; contact billing.",
    }
    assert (first.status_code, first.json()) == (422, expected)
    assert (replay.status_code, replay.json(), replay.headers["Idempotent-Replayed"]) == (
        422,
        expected,
        "true",
    )
    assert vendor.summary()["refusals"] == 1


def test_key_mode_answers_409_while_the_first_request_with_the_key_is_still_running() -> None:
    vendor = start_vendor(work_ms=1000)
    try:
        results: dict[str, requests.Response] = {}
        first = threading.Thread(
            target=lambda: results.update(first=vendor.post("SUB-110", key="slow"))
        )
        first.start()
        deadline = time.monotonic() + 5
        while vendor.app.state.keys.get("slow") is None and time.monotonic() < deadline:
            time.sleep(0.005)
        concurrent = requests.post(
            f"{vendor.url}/v1/subscriptions/SUB-110/terminate",
            headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "slow"},
            timeout=10,
        )
        first.join(10)
        assert (concurrent.status_code, concurrent.json()) == (
            409,
            {"error": "idempotency_key_in_use"},
        )
        assert results["first"].status_code == 200
        replay = vendor.post("SUB-110", key="slow")
        assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
        assert vendor.summary()["effective_terminations"] == 1
    finally:
        stop_vendor(vendor)


# -- the other modes ------------------------------------------------------------------------------


def test_natural_mode_answers_already_terminated_and_does_not_act(vendor: Vendor) -> None:
    vendor.set_mode("natural")
    assert vendor.post("SUB-120", key="k").status_code == 200
    for key in ("k", "other", None):  # keys mean nothing here: no replay
        response = vendor.post("SUB-120", key=key)
        assert (response.status_code, response.json()) == (409, {"error": "already_terminated"})
        assert "Idempotent-Replayed" not in response.headers
    assert vendor.status("SUB-120").json()["status"] == "terminated"
    summary = vendor.summary()
    assert summary["effective_terminations"] == 1 and summary["duplicate_terminations"] == 0
    assert summary["calls"] == 5


def test_read_mode_acts_again_on_repeats_but_tells_the_truth_on_reads(vendor: Vendor) -> None:
    vendor.set_mode("read")
    assert vendor.status("SUB-130").json() == {"id": "SUB-130", "status": "active"}
    assert vendor.post("SUB-130", key="same").status_code == 200
    assert vendor.status("SUB-130").json()["status"] == "terminated"
    repeat = vendor.post("SUB-130", key="same")
    assert repeat.status_code == 200 and "Idempotent-Replayed" not in repeat.headers
    assert vendor.summary()["duplicate_terminations"] == 1


def test_none_mode_acts_again_and_has_no_status_endpoint(vendor: Vendor) -> None:
    vendor.set_mode("none")
    status = vendor.status("SUB-140")
    assert (status.status_code, status.json()) == (405, {"error": "not_supported"})
    assert vendor.post("SUB-140").status_code == 200
    assert vendor.post("SUB-140").status_code == 200
    assert vendor.summary()["duplicate_terminations"] == 1
    vendor.set_mode("read")  # switching at run time brings the endpoint back
    assert vendor.status("SUB-140").json()["status"] == "terminated"


def test_mode_switches_are_validated_and_reported_by_healthz(vendor: Vendor) -> None:
    bad = vendor.admin("PUT", "mode", {"mode": "psychic"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_mode"
    vendor.set_mode("natural")
    assert vendor.http.get(f"{vendor.url}/healthz").json() == {"status": "ok", "mode": "natural"}


# -- subscriptions: gone, refused, suspend, purge, seeding ----------------------------------------


def test_gone_subscriptions_answer_not_found_everywhere(vendor: Vendor) -> None:
    for response in (
        vendor.post("SUB-GONE-1"),
        vendor.post("SUB-GONE-1", "suspend"),
        vendor.status("SUB-GONE-1"),
    ):
        assert (response.status_code, response.json()) == (404, {"error": "not_found"})
    assert vendor.admin("GET", "subscriptions/SUB-GONE-1").status_code == 404
    assert vendor.summary()["effects"] == 0


def test_refused_subscriptions_stay_active(vendor: Vendor) -> None:
    response = vendor.post("SUB-0007")
    assert response.status_code == 422 and response.json()["error"] == "refused"
    assert vendor.status("SUB-0007").json()["status"] == "active"
    assert vendor.post("SUB-0007", "suspend").status_code == 200  # only termination is refused


def test_patterns_are_configurable() -> None:
    vendor = start_vendor(refuse_pattern="^DEBT-", gone_pattern="^MISSING-")
    try:
        assert vendor.post("SUB-17").status_code == 200
        assert vendor.post("SUB-GONE-2").status_code == 200
        assert vendor.post("DEBT-1").status_code == 422
        assert vendor.post("MISSING-1").status_code == 404
    finally:
        stop_vendor(vendor)


def test_suspend_terminate_purge_lifecycle(vendor: Vendor) -> None:
    sid = "SUB-150"
    early = vendor.post(sid, "purge")
    assert (early.status_code, early.json()) == (409, {"error": "not_terminated"})
    suspended = vendor.post(sid, "suspend", body={"request_id": "PR-150"})
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert suspended.json()["suspended_at"]
    assert vendor.post(sid).json()["status"] == "terminated"
    late = vendor.post(sid, "suspend")
    assert (late.status_code, late.json()) == (409, {"error": "already_terminated"})
    purged = vendor.post(sid, "purge")
    assert (
        purged.status_code == 200
        and purged.json()["status"] == "purged"
        and purged.json()["purged_at"]
    )
    assert vendor.status(sid).json()["status"] == "purged"
    vendor.set_mode("natural")
    assert vendor.post(sid, "purge").json() == {"error": "already_purged"}
    assert vendor.post(sid).json() == {"error": "already_terminated"}
    summary = vendor.summary()
    assert (summary["suspensions"], summary["effective_terminations"], summary["purges"]) == (
        1,
        1,
        1,
    )
    assert summary["duplicate_effects"] == 0


def test_seeded_states_override_first_sight_and_patterns(vendor: Vendor) -> None:
    seeded = vendor.admin("PUT", "subscriptions/SUB-GONE-9", {"status": "terminated"})
    assert seeded.status_code == 200 and seeded.json()["status"] == "terminated"
    assert vendor.status("SUB-GONE-9").json()["status"] == "terminated"
    assert (
        vendor.admin(
            "PUT", "subscriptions/SUB-160", {"status": "active", "refuse": True}
        ).status_code
        == 200
    )
    assert vendor.post("SUB-160").status_code == 422
    assert (
        vendor.admin(
            "PUT", "subscriptions/SUB-17", {"status": "active", "refuse": False}
        ).status_code
        == 200
    )
    assert vendor.post("SUB-17").status_code == 200
    assert vendor.post("SUB-GONE-9").status_code == 200  # key mode, no key: acts again
    assert vendor.ledger()["effects"][-1]["duplicate"] is True
    bad = vendor.admin("PUT", "subscriptions/SUB-161", {"status": "zombie"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_status"
    listed = {
        s["id"]: s["status"] for s in vendor.admin("GET", "subscriptions").json()["subscriptions"]
    }
    assert listed == {"SUB-GONE-9": "terminated", "SUB-160": "active", "SUB-17": "terminated"}


# -- ledger, faults, drops -----------------------------------------------------------------------


def test_a_dropped_connection_hides_an_applied_termination_that_the_ledger_shows(
    vendor: Vendor,
) -> None:
    vendor.set_faults(drop_rate=1.0)
    with pytest.raises(requests.RequestException):
        vendor.post("SUB-170", key="k-170", body={"request_id": "PR-170"})
    ledger = vendor.ledger()
    assert [(e["subscription_id"], e["duplicate"]) for e in ledger["effects"]] == [
        ("SUB-170", False)
    ]
    assert ledger["summary"]["faults"]["drops"] == 1
    vendor.set_faults()
    # The processor's retry with the same key is answered from the stored result: no second effect.
    retry = vendor.post("SUB-170", key="k-170", body={"request_id": "PR-170"})
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert vendor.summary()["effective_terminations"] == 1


def test_faults_change_at_run_time_and_injected_errors_do_not_act(vendor: Vendor) -> None:
    vendor.set_faults(error_rate=1.0)
    assert vendor.post("SUB-180").status_code == 503
    vendor.set_faults(throttle_rate=1.0, retry_after=2)
    throttled = vendor.post("SUB-180")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    shown = vendor.admin("GET", "faults").json()
    assert shown["settings"]["throttle_rate"] == 1.0 and shown["settings"]["error_rate"] == 0.0
    assert shown["stats"]["errors"] == 1 and shown["stats"]["throttles"] == 1
    assert (
        vendor.admin("GET", "subscriptions/SUB-180").status_code == 404
    )  # never reached the vendor
    bad = vendor.admin("PUT", "faults", {"drop_rate": 3})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_faults"
    assert vendor.admin("PUT", "faults", {"nonsense": 1}).status_code == 400
    vendor.set_faults()
    assert vendor.post("SUB-180").status_code == 200
    summary = vendor.summary()
    assert summary["calls"] == 1 and summary["faults"]["errors"] == 1


def test_ledger_summary_alone_and_reset(vendor: Vendor) -> None:
    vendor.post("SUB-190")
    vendor.post("SUB-191", "suspend")
    only = vendor.admin("GET", "ledger?summary=1").json()
    assert (
        set(only) == {"summary"}
        and only["summary"]["calls"] == 2
        and only["summary"]["suspensions"] == 1
    )
    assert vendor.admin("POST", "reset").json() == {"status": "reset"}
    assert vendor.ledger() == {"calls": [], "effects": [], "summary": vendor.summary()}
    assert vendor.summary()["calls"] == 0
    assert vendor.admin("GET", "subscriptions").json() == {"subscriptions": []}


def test_bad_bodies_and_unknown_routes_answer_json_errors(vendor: Vendor) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for data in ("{not json", "[1, 2]"):
        response = vendor.http.post(
            f"{vendor.url}/v1/subscriptions/SUB-1/terminate", data=data, headers=headers
        )
        assert (response.status_code, response.json()) == (400, {"error": "invalid_json"})
    assert vendor.post("SUB-1", "explode").json() == {"error": "no_route"}
    assert vendor.post("SUB-1", key="x" * 256).json() == {"error": "invalid_idempotency_key"}
    assert vendor.summary()["effects"] == 0


# -- persistence and the command line --------------------------------------------------------------


def test_a_restarted_vendor_with_a_state_file_keeps_subscriptions_keys_and_ledger(
    tmp_path: Path,
) -> None:
    state_file = str(tmp_path / "vendor.sqlite")
    vendor = start_vendor(state_file=state_file)
    try:
        assert vendor.post("SUB-200", key="k-200").status_code == 200
        vendor.post("SUB-201", "suspend")
    finally:
        stop_vendor(vendor)
    vendor = start_vendor(state_file=state_file)
    try:
        replay = vendor.post("SUB-200", key="k-200")
        assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
        assert vendor.status("SUB-201").json()["status"] == "suspended"
        summary = vendor.summary()
        assert (
            summary["calls"] == 4
            and summary["effective_terminations"] == 1
            and summary["suspensions"] == 1
        )
    finally:
        stop_vendor(vendor)


def test_command_line_options_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_VENDOR_TOKEN", "from-env")
    monkeypatch.setenv("MOCK_VENDOR_DROP_RATE", "0.25")
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    settings = settings_from_args(parser.parse_args(["--mode", "natural", "--latency-ms", "5"]))
    assert (settings.token, settings.mode) == ("from-env", Mode.NATURAL)
    assert (settings.faults.drop_rate, settings.faults.latency_ms) == (0.25, 5.0)
    assert "from-env" not in repr(settings)
    assert run(parser.parse_args(["--refuse-pattern", "("])) == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "psychic"])
