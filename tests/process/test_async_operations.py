"""An asynchronous vendor, with real processes: the mock vendor answers every terminate ``202``
with an operation that completes (or fails) seconds later, and ``run --once`` processes -- each
one a restart, taking up the polling from the journal -- drive every request to its end:

- every request approved only after its operation completed at the vendor (the ledger's effect
  time before the journal's approve), failed operations failed on Connect (``poison: fail``),
  no duplicate effect and no terminate sent twice;
- an operation never done is parked with its id at its give-up time;
- SIGKILL at each new crash point (``after_accepted``, ``after_poll``) in modes key, natural and
  read: every invariant holds after a restart.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cancel_sandbox.local import Sandbox
from cancel_sandbox.vendor.operations import OperationSettings
from cancel_sandbox.vendor.outcomes import async_adapter_options
from processor.engine.crashpoints import ASYNC_POINTS
from processor.journal import open_journal
from processor.journal.base import State

from .test_crash import journal_states, processor_env, run_processor

pytestmark = pytest.mark.slow


def async_sandbox(mode: str, delay: float = 1.0, **operations: Any) -> Sandbox:
    settings = OperationSettings(on=True, delay=delay, **operations)
    return Sandbox(generate=10, seed=11, vendor_mode=mode, vendor_options={"operations": settings})


def write_config(sandbox: Sandbox, tmp_path: Path, **spec: Any) -> tuple[Path, str]:
    journal_url = f"sqlite:///{tmp_path}/journal.db"
    data = sandbox.config_data(
        journal_url,
        processing={"concurrency": 2, "poison": "fail", "once_max_wait": 5},
        journal={"lease_seconds": 3},
    )
    vendor = data["adapters"]["vendor"]
    vendor["options"] = async_adapter_options(vendor["options"], every=0.5, **spec)
    vendor["apply_horizon"] = 1
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path, journal_url


def run_until_settled(
    config: Path, env: dict[str, str], sandbox: Sandbox, runs: int = 12
) -> list[int]:
    """``run --once`` again while Connect still holds pending requests (each run a restart that
    finds the operations in the journal); bounded in runs."""
    codes = []
    for _ in range(runs):
        codes.append(run_processor(config, env, "--once").returncode)
        if not sandbox.pending_cancels():
            break
        time.sleep(0.5)
    return codes


def approved_after_completion(sandbox: Sandbox, journal_url: str, ids: set[str]) -> list[str]:
    """The approved requests whose journal approve is not after their termination's effect."""
    cancels = sandbox.cancel_requests()
    effects = {e["subscription_id"]: e["at"] for e in sandbox.vendor_effects()}
    journal = open_journal(journal_url)
    wrong = []
    try:
        for rid in ids:
            if cancels[rid]["status"] != "approved":
                continue
            record = journal.get(rid)
            assert record is not None
            approve = [t for t in journal.transitions(rid) if t.to_state is State.APPROVED]
            effect = effects.get(record.subscription_id or "")
            if effect is None:  # already gone at the vendor (404): no effect to follow
                continue
            if not approve or approve[0].at.isoformat() < effect:
                wrong.append(rid)
    finally:
        journal.close()
    return wrong


def test_requests_are_approved_only_after_their_operations_complete(tmp_path: Path) -> None:
    with async_sandbox("key", delay=1.5, fail_pattern="3$") as sandbox:
        before = sandbox.pending_cancels()
        config, journal_url = write_config(sandbox, tmp_path)
        env = processor_env(sandbox)
        first = run_processor(config, env, "--once", timeout=120)
        # While operations are pending: accepted rows wait in the journal, pending on Connect.
        states = journal_states(journal_url, before)
        started = time.monotonic()
        codes = run_until_settled(config, env, sandbox)
        elapsed = time.monotonic() - started
        check = sandbox.check(initially_pending=before)
        summary = sandbox.vendor_ledger()["summary"]
        final = journal_states(journal_url, before)
        print(
            f"\n[async key] requests={len(before)} first_run={first.returncode} runs={codes} "
            f"awaiting_after_first={sum(s is State.AWAITING_VENDOR for s in states.values())} "
            f"approved={check.approved} failed={check.failed} "
            f"terminate_calls={summary['terminate_calls']} polls={summary['polls']} "
            f"operations={summary['operations_accepted']} done={summary['operations_done']} "
            f"op_failed={summary['operations_failed']} "
            f"duplicates={summary['duplicate_terminations']} "
            f"repeated_calls={summary['repeated_terminate_calls']} took={elapsed:.1f}s"
        )
        assert check.ok, check
        assert check.pending == 0
        assert summary["duplicate_effects"] == 0 and summary["repeated_terminate_calls"] == 0
        assert summary["operations_pending"] == 0 and summary["operations_accepted"] >= 1
        assert summary["operations_failed"] >= 1  # the pattern failed some: failed on Connect
        assert check.failed >= summary["operations_failed"]
        assert approved_after_completion(sandbox, journal_url, before) == []
        assert all(s in (State.APPROVED, State.FAILED) for s in final.values()), final
        journal = open_journal(journal_url)
        try:
            for rid in before:
                path = [t.to_state for t in journal.transitions(rid)]
                if State.AWAITING_VENDOR in path:  # accepted once, never sent again
                    assert path.count(State.TERMINATING) == 1, (rid, path)
        finally:
            journal.close()


def test_an_operation_never_done_is_parked_with_its_id(tmp_path: Path) -> None:
    with async_sandbox("key", delay=600) as sandbox:
        before = sandbox.pending_cancels()
        config, journal_url = write_config(sandbox, tmp_path, give_up=2)
        env = processor_env(sandbox)
        run_until_settled(config, env, sandbox, runs=4)
        journal = open_journal(journal_url)
        try:
            records = [journal.get(rid) for rid in before]
        finally:
            journal.close()
        parked = [r for r in records if r is not None and r.state is State.PARKED]
        assert parked
        for record in parked:
            assert "gave up waiting" in (record.reason or "") and "/operations/OP-" in (
                record.reason or ""
            )
        check = sandbox.check(initially_pending=before)
        assert check.ok and check.approved == 0 or check.approved == check.requests - len(parked)
        assert sandbox.vendor_ledger()["summary"]["repeated_terminate_calls"] == 0


@pytest.mark.parametrize("point", ASYNC_POINTS)
@pytest.mark.parametrize("mode", ["key", "natural", "read"])
def test_sigkill_in_each_operation_window(mode: str, point: str, tmp_path: Path) -> None:
    with async_sandbox(mode, delay=1.0) as sandbox:
        before = sandbox.pending_cancels()
        config, journal_url = write_config(sandbox, tmp_path)
        crashed = run_processor(
            config, processor_env(sandbox, CANCEL_PROCESSOR_CRASH_AT=f"{point}:2"), "--once"
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
        run_until_settled(config, processor_env(sandbox), sandbox)
        check = sandbox.check(initially_pending=before)
        summary = sandbox.vendor_ledger()["summary"]
        states = journal_states(journal_url, before)
        assert check.lost == 0 and check.pending == 0, (check, states)
        assert summary["duplicate_effects"] == 0, summary
        assert check.approvals_without_termination == 0, check.details
        assert approved_after_completion(sandbox, journal_url, before) == []
        assert all(s in (State.APPROVED, State.FAILED) for s in states.values()), states
