"""Safe by default at the vendor boundary, against the real mock marketplace and mock vendor.

A mistake in the configuration (a wrong path, a wrong base URL, a token without the write scope,
a body the vendor rejects) or an id that would change the URL must neither approve nor refuse a
single cancellation: each request is parked with a reason that says what happened, after the
configured attempts. And when an operator's outcome map does read a wrong path as "gone", the
anomaly guard stops the approvals at a handful and holds them until ``resume``.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cancel_sandbox.local import Sandbox
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from processor.config.schema import Config
from processor.daemon.core import Daemon
from processor.daemon.runtime import build_runtime, selector_for
from processor.engine.guard import LatchFile
from processor.journal import open_journal
from processor.journal.base import State
from processor.ops import resume
from processor.ops.readiness import is_ready, make_readiness

from ..mock_support import sandbox_api

READ_ONLY_TOKEN = "read-only-token-0815"
ATTEMPTS = 3


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(generate=8, seed=3, vendor_read_only_token=READ_ONLY_TOKEN) as box:
        for name, value in box.environ().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("READ_ONLY_VENDOR_TOKEN", READ_ONLY_TOKEN)
        yield box


def config_for(
    sandbox: Sandbox, tmp_path: Path, adapter: dict[str, Any], **processing: Any
) -> Config:
    data = sandbox.config_data(
        f"sqlite:///{tmp_path / 'journal.db'}",
        processing={
            "max_attempts": ATTEMPTS,
            "retry_base": 0.05,
            "retry_max": 0.1,
            "once_max_wait": 20,
            "notes": False,
            **processing,
        },
    )
    data["adapters"]["vendor"]["options"].update(adapter)
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data))
    return Config.model_validate({**data, "source": str(path)})


class Run:
    """One ``run --once`` in this process; the journal, breakers and metrics stay readable after
    it."""

    def __init__(self, config: Config) -> None:
        runtime = build_runtime(config)
        try:
            self.summary = Daemon(
                runtime.engine, runtime.marketplace, selector_for(config), once=True
            ).run()
        finally:
            runtime.close()
        self.engine, self.metrics = runtime.engine, runtime.metrics
        self.journal = open_journal(config.journal.url)


@pytest.fixture
def run_once() -> Iterator[Any]:
    runs: list[Run] = []

    def start(config: Config) -> tuple[Any, Run]:
        runs.append(Run(config))
        return runs[-1].summary, runs[-1]

    yield start
    for run in runs:
        run.journal.close()


def subscription_of(request: dict[str, Any]) -> str:
    return next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")


@pytest.mark.parametrize(
    ("case", "adapter", "expected"),
    [
        (
            "wrong path",
            {"terminate": {"path": "/v2/subscriptions/{subscription_id}/terminate"}},
            "terminate: HTTP 404 no_route from POST http://127.0.0.1:{port}/v2/subscriptions/{{subscription_id}}/"
            'terminate; body: {{"error":"no_route"}}',
        ),
        (
            "wrong base URL",
            {"base_url": "http://127.0.0.1:{port}/api"},
            "terminate: HTTP 404 no_route from POST http://127.0.0.1:{port}/api/v1/subscriptions/",
        ),
        (
            "token without the write scope",
            {"auth": {"type": "bearer", "env": "READ_ONLY_VENDOR_TOKEN"}},
            "terminate: HTTP 403 forbidden from POST http://127.0.0.1:{port}/v1/subscriptions/{{subscription_id}}/"
            'terminate; body: {{"error":"forbidden","message":"this token lacks the '
            'subscriptions:write scope"}}',
        ),
        (
            "a body the vendor rejects",
            {"body": {"request_id": "{request_id}", "reason_code": 7}},
            "terminate: HTTP 400 validation_failed from POST http://127.0.0.1:{port}/v1/subscriptions/",
        ),
    ],
)
def test_a_configuration_mistake_approves_nothing_refuses_nothing_and_parks_each_request(
    sandbox: Sandbox,
    tmp_path: Path,
    case: str,
    adapter: dict[str, Any],
    expected: str,
    run_once: Any,
) -> None:
    port = sandbox.vendor.url.rsplit(":", 1)[1]
    if "base_url" in adapter:
        adapter = {**adapter, "base_url": adapter["base_url"].format(port=port)}
    pending = sandbox.pending_cancels()
    summary, runtime = run_once(config_for(sandbox, tmp_path, adapter))
    cancels = sandbox.cancel_requests()
    assert [cancels[r]["status"] for r in pending] == ["pending"] * len(pending), (
        case
    )  # none approved or failed
    assert not summary.complete  # parked requests leave run --once unfinished (exit 1)
    calls = [c for c in sandbox.vendor_ledger()["calls"] if c["action"] == "terminate"]
    # The vendor's ledger sees the calls its routes matched: none on a wrong path.
    assert len(calls) == (0 if "no_route" in expected else ATTEMPTS * len(pending))
    assert sandbox.vendor_effects() == []
    for request_id in pending:
        record = runtime.journal.get(request_id)
        assert record is not None and record.state is State.PARKED
        assert record.attempts == ATTEMPTS and record.data["failures"] == ATTEMPTS  # then parked
        assert (
            record.reason
            == f"gave up after {ATTEMPTS} vendor errors during terminate: {record.last_error}"
        )
        assert (record.last_error or "").startswith(expected.format(port=port)), record.last_error


def test_an_id_that_would_change_the_url_is_parked_as_malformed_before_any_call(
    sandbox: Sandbox, tmp_path: Path, run_once: Any
) -> None:
    pending = sorted(sandbox.pending_cancels())
    bad = {pending[0]: "SUB-1/../../admin", pending[1]: "..", pending[2]: "SUB-2\u2028X"}
    for request_id, subscription in bad.items():
        sandbox_api(
            sandbox,
            "PUT",
            f"requests/{request_id}",
            {"asset": {"params": [{"id": "subscription_id", "value": subscription}]}},
        )
    summary, runtime = run_once(config_for(sandbox, tmp_path, {}))
    cancels = sandbox.cancel_requests()
    assert {r: cancels[r]["status"] for r in bad} == dict.fromkeys(bad, "pending")
    calls = {c["subscription_id"] for c in sandbox.vendor_ledger()["calls"]}
    assert not calls & set(bad.values()) and not any("admin" in c or c == ".." for c in calls)
    for request_id in bad:
        record = runtime.journal.get(request_id)
        assert record is not None and record.state is State.PARKED and record.attempts == 0
        reason = record.reason or ""
        if "\u2028" in bad[request_id]:  # a control character: refused when the request is read
            assert reason.startswith("malformed request: parameter subscription_id "), reason
            assert "holds a control character" in reason
        else:  # refused by the adapter's URL check
            assert reason.startswith("malformed request: subscription_id "), reason
            assert "for the URL /v1/subscriptions/{subscription_id}/terminate" in reason
    # The others went through as usual.
    assert all(cancels[r]["status"] in ("approved", "failed") for r in pending if r not in bad)


def test_the_guard_stops_a_wrong_path_read_as_gone_after_a_handful_until_resumed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run_once: Any
) -> None:
    with Sandbox(generate=30, seed=5, refuse_pattern="") as box:
        for name, value in box.environ().items():
            monkeypatch.setenv(name, value)
        # An operator's map that also reads the router's 404 as "gone", and a mistyped path.
        gone_too = {
            **MOCK_VENDOR_OUTCOMES,
            "404": [
                {"when": {"error": ["not_found", "no_route"]}, "outcome": "already_gone"},
                "failed",
            ],
        }
        config = config_for(
            box,
            tmp_path,
            {
                "outcomes": gone_too,
                "terminate": {"path": "/v1/subscription/{subscription_id}/terminate"},
            },
            concurrency=1,
            once_max_wait=0.5,
        )
        pending = box.pending_cancels()
        summary, runtime = run_once(config)
        approved = [
            r
            for r, c in box.cancel_requests().items()
            if r in pending and c["status"] == "approved"
        ]
        assert len(approved) == config.guard.in_a_row == 10  # stopped at a handful, not 30
        assert box.vendor_effects() == []  # what those 10 approvals were worth
        breaker = runtime.engine.breakers["vendor"]
        assert breaker.latched and "10 already_gone answers in a row" in breaker.latched
        report = make_readiness(journal=runtime.journal, breakers=runtime.engine.breakers)()
        assert (
            not is_ready(report)
            and "resume with: cancel-processor resume vendor" in report["errors"]["circuit vendor"]
        )
        metrics = runtime.metrics.registry.get_sample_value(
            "cancel_vendor_anomaly", {"adapter": "vendor"}
        )
        assert metrics == 1
        waiting = [runtime.journal.get(r) for r in pending if r not in approved]
        assert all(
            w is not None and w.state is State.NEW and "latched" in (w.last_error or "")
            for w in waiting
        )

        # A new process reads the latch from the file: nothing moves until a person resumes.
        run_once(config)

        def approvals() -> int:
            return sum(
                c["status"] == "approved" for r, c in box.cancel_requests().items() if r in pending
            )

        assert approvals() == 10
        args = argparse.Namespace(adapter="vendor", config=config.source)
        assert resume.run(args) == 0 and resume.run(args) == 1  # the second: nothing to resume
        latches = LatchFile(tmp_path / "journal.db.guard.json")
        assert latches.read() == {} and set(latches.resumed()) == {"vendor"}
        # Resumed (still mistyped, to show it): the guard counts again from zero and latches again.
        patient = config.processing.model_copy(update={"once_max_wait": 10})
        run_once(config.model_copy(update={"processing": patient}))  # the deferred rows fall due
        assert approvals() == 20


@pytest.mark.parametrize("name", ["processor.example.yaml", "processor.compose.yaml"])
def test_the_shipped_configurations_name_the_mock_vendor_map_explicitly(name: str) -> None:
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / name).read_text())
    assert data["adapters"]["vendor"]["options"]["outcomes"] == MOCK_VENDOR_OUTCOMES


def test_a_status_read_is_evidence_where_a_bare_error_is_not(
    sandbox: Sandbox, tmp_path: Path, run_once: Any
) -> None:
    """Mistyped terminate path, right status path: a subscription the vendor already ended is
    approved on the status read's word; the others stay parked."""
    pending = sorted(sandbox.pending_cancels())
    ended = sandbox.cancel_requests()[pending[0]]
    requests.put(
        f"{sandbox.vendor.url}/admin/subscriptions/{subscription_of(ended)}",
        json={"status": "terminated"},
        timeout=10,
    ).raise_for_status()
    adapter = {"terminate": {"path": "/v2/subscriptions/{subscription_id}/terminate"}}
    _, run = run_once(config_for(sandbox, tmp_path, adapter))
    cancels = sandbox.cancel_requests()
    assert cancels[pending[0]]["status"] == "approved"
    record = run.journal.get(pending[0])
    assert record is not None and record.outcome == "terminated"
    assert [
        t.detail for t in run.journal.transitions(pending[0]) if t.to_state is State.TERMINATED
    ] == [
        "confirmed by status read (terminated) after terminate: HTTP 404 no_route from POST "
        f"{sandbox.vendor.url}/v2/subscriptions/{{subscription_id}}/terminate; body: "
        '{"error":"no_route"}'
    ]
    assert {cancels[r]["status"] for r in pending[1:]} == {"pending"}
    assert all(run.journal.get(r).state is State.PARKED for r in pending[1:])  # type: ignore[union-attr]


def test_a_resume_beside_a_running_daemon_takes_effect_within_seconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The poll interval is 30 s: the requests a latch held back go on within seconds of the
    resume all the same (the daemon's wait ends on it, and a latched request is looked at again
    every couple of seconds)."""
    with Sandbox(generate=6, seed=5, refuse_pattern="") as box:
        for name, value in box.environ().items():
            monkeypatch.setenv(name, value)
        config = config_for(box, tmp_path, {}, poll_interval=30)
        latches = LatchFile(tmp_path / "journal.db.guard.json")
        latches.set("vendor", "a test latch; resume with: cancel-processor resume vendor")
        runtime = build_runtime(config)
        daemon = Daemon(runtime.engine, runtime.marketplace, selector_for(config))
        thread = threading.Thread(target=daemon.run)
        thread.start()
        try:
            deadline = time.monotonic() + 20
            passes = runtime.metrics.registry.get_sample_value
            while not passes("cancel_poll_passes_total") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert box.pending_cancels(), "nothing may move while latched"
            assert box.vendor_ledger()["calls"] == []
            assert latches.clear("vendor") is not None  # cancel-processor resume vendor
            resumed = time.monotonic()
            while box.pending_cancels() and time.monotonic() - resumed < 10:
                time.sleep(0.1)
            assert not box.pending_cancels(), "a resume waited for the poll interval"
        finally:
            daemon.stop()
            thread.join(timeout=30)
            runtime.close()
