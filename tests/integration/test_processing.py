"""The processor against the live mock marketplace and mock vendor, in-process, over real HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import Sandbox
from processor.config.schema import Config
from processor.daemon.core import Daemon, RunSummary
from processor.daemon.runtime import build_runtime, selector_for
from processor.journal.base import State


def run_once(
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    connect: dict[str, Any] | None = None,
    **processing: Any,
) -> tuple[RunSummary, Any]:
    for name, value in sandbox.environ().items():
        monkeypatch.setenv(name, value)
    url = f"sqlite:///{tmp_path}/journal.db"
    config = Config.model_validate(
        sandbox.config_data(url, processing=processing, connect=connect or {})
    )
    runtime = build_runtime(config)
    try:
        summary = Daemon(runtime.engine, runtime.marketplace, selector_for(config), once=True).run()
        return summary, runtime
    finally:
        runtime.close()


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    options = getattr(request, "param", {})
    with Sandbox(**{"generate": 40, **options}) as box:
        yield box


def test_approves_what_the_vendor_ends_and_fails_what_it_refuses(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sandbox.pending_cancels()
    summary, runtime = run_once(sandbox, tmp_path, monkeypatch)
    check = sandbox.check(initially_pending=before)
    assert summary.complete and check.ok, (summary, check)
    assert check.approved + check.failed == len(before) and check.failed > 0 and check.approved > 0
    cancels = sandbox.cancel_requests()
    for request_id in before:
        request = cancels[request_id]
        sub = next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")
        assert request["status"] == ("failed" if sub.endswith("7") else "approved")
        if request["status"] == "failed":
            assert "outstanding balance" in request["reason"]
    # One note per outcome on each request's conversation.
    conversation = requests.get(
        f"{sandbox.endpoint}/conversations?instance_id={sorted(before)[0]}",
        headers={"Authorization": sandbox.api_key},
        timeout=10,
    ).json()[0]
    messages = requests.get(
        f"{sandbox.endpoint}/conversations/{conversation['id']}/messages",
        headers={"Authorization": sandbox.api_key},
        timeout=10,
    ).json()
    assert len([m for m in messages if "Cancellation" in m["text"]]) == 1


@pytest.mark.parametrize(
    "sandbox", [{"generate": 12, "refuse_pattern": "^$", "vendor_mode": "natural"}], indirect=True
)
def test_subscriptions_already_gone_at_the_vendor_are_approved(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sandbox.pending_cancels()
    victim = sorted(before)[0]
    sub = next(
        p["value"]
        for p in sandbox.cancel_requests()[victim]["asset"]["params"]
        if p["id"] == "subscription_id"
    )
    requests.put(
        f"{sandbox.vendor.url}/admin/subscriptions/{sub}", json={"status": "terminated"}, timeout=10
    )
    summary, runtime = run_once(sandbox, tmp_path, monkeypatch)
    assert summary.complete
    assert sandbox.cancel_requests()[victim]["status"] == "approved"
    assert sandbox.check(initially_pending=before).duplicate_terminations == 0


@pytest.mark.parametrize(
    "sandbox",
    [
        {
            "generate": 30,
            "vendor_faults": FaultSettings(
                throttle_rate=0.3, error_rate=0.1, retry_after=0, seed=3
            ),
        }
    ],
    indirect=True,
)
def test_vendor_throttling_and_outages_only_delay(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sandbox.pending_cancels()
    summary, runtime = run_once(sandbox, tmp_path, monkeypatch, retry_base=0.05, retry_max=0.2)
    check = sandbox.check(initially_pending=before)
    assert summary.complete and check.ok
    stats = sandbox.vendor_app.faults.stats
    assert (
        stats.throttles > 0 and stats.errors > 0
    )  # the vendor did push back, and that only delayed
    assert all(
        r["reason"] != runtime.config.processing.poison_reason
        for r in sandbox.cancel_requests().values()
        if r["status"] == "failed"
    )


@pytest.mark.parametrize(
    "sandbox",
    [
        {
            "generate": 30,
            "marketplace_faults": FaultSettings(
                error_rate=0.15, throttle_rate=0.15, retry_after=0.05, drop_rate=0.05, seed=5
            ),
        }
    ],
    indirect=True,
)
def test_connect_5xx_429_and_dropped_answers_lose_nothing(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.market_app.update(FaultSettings())
    before = sandbox.pending_cancels()
    sandbox.market_app.update(
        FaultSettings(error_rate=0.15, throttle_rate=0.15, retry_after=0.05, drop_rate=0.05, seed=5)
    )
    summary, runtime = run_once(sandbox, tmp_path, monkeypatch)
    sandbox.market_app.update(FaultSettings())
    check = sandbox.check(initially_pending=before)
    assert summary.complete and check.ok, (summary.results, check)
    assert sandbox.market_app.stats.throttles > 0 and sandbox.market_app.stats.errors > 0
    retries = {
        s.labels["cause"]
        for m in runtime.metrics.retries.collect()
        for s in m.samples
        if s.value > 0 and "cause" in s.labels
    }
    assert "throttled" in retries


# Twelve pages of 25 exercise the keyset over a set that shrinks under it as well as ten pages of
# the default 100 did, at a third of the requests.
@pytest.mark.parametrize("sandbox", [{"generate": 300}], indirect=True)
def test_one_pass_processes_every_request_while_the_pending_set_shrinks(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sandbox.pending_cancels()
    assert len(before) >= 300
    summary, runtime = run_once(
        sandbox, tmp_path, monkeypatch, {"page_size": 25}, once_max_wait=0, concurrency=16
    )
    assert summary.passes == 1
    assert summary.seen == len(before)
    assert sandbox.pending_cancels() == set()
    assert sandbox.check(initially_pending=before).ok


@pytest.mark.parametrize("sandbox", [{"generate": 10}], indirect=True)
def test_malformed_requests_are_recorded_and_the_loop_goes_on(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sorted(sandbox.pending_cancels())
    broken = before[0]
    reply = requests.put(
        f"{sandbox.endpoint}/requests/{broken}",
        headers={"Authorization": sandbox.api_key},
        json={"asset": {"params": [{"id": "subscription_id", "value": ""}]}},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    summary, runtime = run_once(sandbox, tmp_path, monkeypatch)
    from processor.journal import open_journal

    journal = open_journal(f"sqlite:///{tmp_path}/journal.db")
    record = journal.get(broken)
    journal.close()
    assert (
        record is not None
        and record.state is State.PARKED
        and "subscription id" in (record.reason or "")
    )
    cancels = sandbox.cancel_requests()
    assert (
        cancels[broken]["status"] == "pending"
    )  # a person decides; the customer is not refused for our problem
    assert all(cancels[rid]["status"] in ("approved", "failed") for rid in before[1:])


@pytest.mark.parametrize(
    "sandbox",
    [{"generate": 30, "vendor_faults": FaultSettings(error_rate=0.4, methods="POST", seed=11)}],
    indirect=True,
)
def test_the_summary_counts_each_request_once_by_its_final_state_and_passes_apart(
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A vendor answering 503 to 40 % of its calls makes several passes; each request still
    counts once, by the state the journal holds at the end, and the counts sum to the backlog."""
    from processor.cli.report import print_summary
    from processor.journal import open_journal

    before = sandbox.pending_cancels()
    summary, _ = run_once(sandbox, tmp_path, monkeypatch, retry_base=0.05, retry_max=0.2)
    assert summary.passes > 1, summary
    by_request = summary.by_request()
    assert by_request.total() == len(before), (by_request, len(before))
    assert summary.results.total() > len(before)  # the passes' own count: more than requests
    journal = open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        states = {rid: journal.get(rid).state.value for rid in before}  # type: ignore[union-attr]
    finally:
        journal.close()
    assert by_request == Counter(states.values())
    capsys.readouterr()
    print_summary(summary)
    out = capsys.readouterr().out
    rows = {
        cells[0]: cells[1]
        for line in out.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 2
    }
    assert rows.pop("total") == str(len(before)), out
    assert {k: int(v) for k, v in rows.items()} == dict(by_request), out
    assert f"passes: {summary.passes}" in out and "results over all passes" in out


@pytest.mark.parametrize("sandbox", [{"generate": 12}], indirect=True)
def test_a_request_parked_before_the_journal_saw_it_never_reaches_the_vendor(
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``park`` of a pending request no pass has listed yet: the daemon then processes every
    other request and leaves this one alone; the vendor's ledger holds no call for it and
    ``status`` shows it parked with the operator's reason."""
    import argparse

    import yaml

    from processor.ops.commands import PARK, STATUS, Command

    url = f"sqlite:///{tmp_path}/journal.db"
    config_file = tmp_path / "processor.yaml"
    config_file.write_text(yaml.safe_dump(sandbox.config_data(url)))

    def command(which: Command, *argv: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser()
        which.configure_parser(parser)
        capsys.readouterr()
        status = which.run(parser.parse_args(["--config", str(config_file), *argv]))
        return status, capsys.readouterr().out

    before = sandbox.pending_cancels()
    held = sorted(before)[0]
    request = sandbox.request(held)
    sub = next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")
    from processor.journal import open_journal

    empty = open_journal(url)  # the journal exists, empty: park writes its first row
    empty.migrate()
    empty.close()
    status, out = command(PARK, held, "--reason", "customer called: hold it")
    assert status == 0 and "not seen yet -> parked" in out, out
    summary, _ = run_once(sandbox, tmp_path, monkeypatch)
    assert summary.by_request()["parked"] == 1 and summary.by_request().total() == len(before)
    calls = [c for c in sandbox.vendor_ledger()["calls"] if sub in json_text(c)]
    assert calls == [], calls
    assert sandbox.request(held)["status"] == "pending"
    assert sandbox.pending_cancels() == {held}
    status, out = command(STATUS)
    assert status == 0 and held in out and "customer called: hold it" in out, out


def json_text(value: Any) -> str:
    import json

    return json.dumps(value)
