"""The hold window, against the real mock marketplace and mock vendor (issue: protect customers
before they are affected).

A refusal or an "already gone" closes a request on Connect without a termination at the vendor.
Each is recorded at once and held for ``guard.hold`` before Connect is told; the guard watches the
rate of such answers meanwhile, and when it latches, every held answer stays held until an
operator chooses (``resume --release-held`` or ``--retry-held``). Each test counts on the mocks'
own ledgers: refused on Connect, approved without termination, held, released.
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


def subscription_of(request: dict[str, Any]) -> str:
    return next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")


def make_config(box: Sandbox, tmp_path: Path, guard: dict[str, Any], **processing: Any) -> Config:
    data = box.config_data(
        f"sqlite:///{tmp_path / 'journal.db'}",
        processing={
            "max_attempts": 3,
            "retry_base": 0.05,
            "retry_max": 0.1,
            "once_max_wait": 20,
            "notes": False,
            "concurrency": 2,
            **processing,
        },
        guard=guard,
    )
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data))
    return Config.model_validate({**data, "source": str(path)})


class Once:
    """One ``run --once`` in this process; the journal and the breakers readable after it."""

    def __init__(self, config: Config) -> None:
        runtime = build_runtime(config)
        try:
            daemon = Daemon(runtime.engine, runtime.marketplace, selector_for(config), once=True)
            self.summary = daemon.run()
        finally:
            runtime.close()
        self.engine, self.metrics = runtime.engine, runtime.metrics


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(generate=20, seed=5, refuse_pattern="") as sandbox:
        for name, value in sandbox.environ().items():
            monkeypatch.setenv(name, value)
        yield sandbox


def refuse_everything(box: Sandbox) -> None:
    """The vendor suddenly refuses every pending subscription (a vendor bug, a misread map)."""
    for request in box.cancel_requests().values():
        if request["status"] == "pending":
            requests.put(
                f"{box.vendor.url}/admin/subscriptions/{subscription_of(request)}",
                json={"status": "active", "refuse": True},
                timeout=10,
            ).raise_for_status()


def more_cancels(box: Sandbox, count: int) -> set[str]:
    before = box.pending_cancels()
    requests.post(
        f"{box.marketplace.url}/admin/seed", json={"generate": count}, timeout=10
    ).raise_for_status()
    return box.pending_cancels() - before


def ledger(box: Sandbox, ids: set[str]) -> dict[str, int]:
    """What Connect and the vendor show for ``ids``: refused on Connect, approved, and approved
    without a termination at the vendor."""
    cancels = box.cancel_requests()
    ended = {e["subscription_id"] for e in box.vendor_effects() if e["action"] == "terminate"}
    approved = [r for r in ids if cancels[r]["status"] == "approved"]
    return {
        "refused": sum(cancels[r]["status"] == "failed" for r in ids),
        "approved": len(approved),
        "approved_without_termination": sum(
            subscription_of(cancels[r]) not in ended for r in approved
        ),
        "pending": sum(cancels[r]["status"] == "pending" for r in ids),
    }


def held_rows(config: Config, ids: set[str]) -> list[str]:
    journal = open_journal(config.journal.url)
    try:
        return sorted(r for r in ids if (rec := journal.get(r)) and rec.state is State.HELD)
    finally:
        journal.close()


def resume_args(config: Config, held: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(adapter="vendor", config=config.source, held=held)


def test_a_vendor_that_suddenly_refuses_everything_refuses_no_customer(
    box: Sandbox, tmp_path: Path
) -> None:
    config = make_config(box, tmp_path, {"hold": 600})
    first = box.pending_cancels()
    assert Once(config).summary.complete  # the history: every cancel terminated and approved
    assert ledger(box, first)["approved"] == len(first)

    fresh = more_cancels(box, 20)
    refuse_everything(box)
    run = Once(config)  # a new process: the guard recalls the history from the journal
    seen = ledger(box, fresh)
    held = held_rows(config, fresh)
    assert seen["refused"] == 0 and seen["approved"] == 0  # no customer affected
    assert 10 <= len(held) <= 10 + config.processing.concurrency  # ten in a row, plus in flight
    assert seen["pending"] == len(fresh)
    assert not run.summary.complete
    breaker = run.engine.breakers["vendor"]
    assert breaker.latched and "10 refused answers in a row" in breaker.latched
    report = make_readiness(journal=open_journal(config.journal.url), breakers=run.engine.breakers)
    assert not is_ready(report())
    assert run.metrics.registry.get_sample_value(
        "cancel_held_outcomes_total", {"adapter": "vendor"}
    ) == len(held)

    # The operator must choose; a bare resume changes nothing.
    assert resume.run(resume_args(config)) == 2
    assert LatchFile(tmp_path / "journal.db.guard.json").read()  # still latched
    # The vendor fixed, the held answers are retried: the vendor is called again for each.
    for request in box.cancel_requests().values():
        if request["id"] in fresh:
            requests.put(
                f"{box.vendor.url}/admin/subscriptions/{subscription_of(request)}",
                json={"status": "active", "refuse": False},
                timeout=10,
            ).raise_for_status()
    assert resume.run(resume_args(config, "retry")) == 0
    assert Once(config).summary.complete
    after = ledger(box, fresh)
    assert after["refused"] == 0 and after["approved"] == len(fresh)
    assert after["approved_without_termination"] == 0
    terminations = [
        e["subscription_id"] for e in box.vendor_effects() if e["action"] == "terminate"
    ]
    assert len(terminations) == len(set(terminations))  # none twice


def test_a_vendor_that_answers_gone_for_everything_approves_nothing_until_released(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A mistyped path whose router 404 the operator's map reads as "gone": before the hold,
    ten approvals without a termination; with it, none until a person releases them."""
    with Sandbox(generate=30, seed=5, refuse_pattern="") as box:
        for name, value in box.environ().items():
            monkeypatch.setenv(name, value)
        config = make_config(box, tmp_path, {"hold": 600}, concurrency=1)
        data = yaml.safe_load(Path(config.source or "").read_text())
        data["adapters"]["vendor"]["options"].update(
            {
                "outcomes": {
                    **MOCK_VENDOR_OUTCOMES,
                    "404": [
                        {"when": {"error": ["not_found", "no_route"]}, "outcome": "already_gone"},
                        "failed",
                    ],
                },
                "terminate": {"path": "/v1/subscription/{subscription_id}/terminate"},
            }
        )
        Path(config.source or "").write_text(yaml.safe_dump(data))
        config = Config.model_validate({**data, "source": config.source})
        pending = box.pending_cancels()
        run = Once(config)
        seen = ledger(box, pending)
        assert seen["approved"] == 0 and seen["refused"] == 0
        held = held_rows(config, pending)
        assert len(held) == config.guard.in_a_row == 10  # then it latched
        assert "10 already_gone answers in a row" in str(run.engine.breakers["vendor"].latched)
        # Released: the operator says they were right (here they are not: it shows the cost).
        assert resume.run(resume_args(config, "release")) == 0
        Once(
            config.model_copy(
                update={"processing": config.processing.model_copy(update={"once_max_wait": 2})}
            )
        )
        assert ledger(box, pending)["approved"] == 10


def test_one_genuine_refusal_among_terminations_reaches_connect_within_the_hold(
    box: Sandbox, tmp_path: Path
) -> None:
    pending = sorted(box.pending_cancels())
    genuine = pending[3]
    requests.put(
        f"{box.vendor.url}/admin/subscriptions/{subscription_of(box.request(genuine))}",
        json={"status": "active", "refuse": True},
        timeout=10,
    ).raise_for_status()
    hold = 2.0
    config = make_config(box, tmp_path, {"hold": hold})
    started = time.monotonic()
    run = Once(config)  # --once waits for the hold to end (within once_max_wait)
    took = time.monotonic() - started
    assert run.summary.complete
    seen = ledger(box, set(pending))
    assert seen["refused"] == 1 and seen["approved"] == len(pending) - 1
    assert box.request(genuine)["status"] == "failed"
    assert took >= hold  # it was held first
    assert run.engine.breakers["vendor"].latched is None
    journal = open_journal(config.journal.url)
    try:
        path = [t.to_state for t in journal.transitions(genuine)]
    finally:
        journal.close()
    assert path[-3:] == [State.HELD, State.REFUSING, State.FAILED]


def test_a_restart_during_the_hold_keeps_it(box: Sandbox, tmp_path: Path) -> None:
    """Held answers are in the journal: a process that dies during the hold leaves them held;
    the next one tells Connect when the hold is over, not before."""
    pending = sorted(box.pending_cancels())
    refusing = set(pending[:3])
    for request_id in refusing:
        requests.put(
            f"{box.vendor.url}/admin/subscriptions/{subscription_of(box.request(request_id))}",
            json={"status": "active", "refuse": True},
            timeout=10,
        ).raise_for_status()
    config = make_config(box, tmp_path, {"hold": 4}, once_max_wait=0.5)
    first = Once(config)  # gives up waiting before the hold ends: the process exits
    assert not first.summary.complete
    assert held_rows(config, refusing) == sorted(refusing)
    assert ledger(box, refusing)["refused"] == 0
    # A new process at once: still held (the hold is the journal's, not the process's).
    Once(config)
    assert ledger(box, refusing)["refused"] == 0
    time.sleep(4)
    assert Once(config).summary.complete
    assert ledger(box, refusing)["refused"] == 3


def test_a_running_daemon_follows_resume_release_held(box: Sandbox, tmp_path: Path) -> None:
    refuse_everything(box)
    config = make_config(box, tmp_path, {"hold": 600}, poll_interval=30)
    runtime = build_runtime(config)
    daemon = Daemon(runtime.engine, runtime.marketplace, selector_for(config))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while runtime.engine.breakers["vendor"].latched is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runtime.engine.breakers["vendor"].latched
        pending = box.pending_cancels()
        held = held_rows(config, pending)
        assert held and ledger(box, pending)["refused"] == 0
        assert resume.run(resume_args(config, "release")) == 0
        resumed = time.monotonic()
        while ledger(box, set(held))["refused"] < len(held) and time.monotonic() - resumed < 15:
            time.sleep(0.1)
        assert ledger(box, set(held))["refused"] == len(held), "the release waited for a poll"
    finally:
        daemon.stop()
        thread.join(timeout=30)
        runtime.close()
