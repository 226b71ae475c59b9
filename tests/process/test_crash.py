"""Crash tests with real processes: SIGKILL the processor inside each crash window, restart it,
and check both ledgers (the marketplace's and the vendor's): no request lost, no subscription
effectively terminated twice, no approval without a termination, and requests parked for a human
only where the vendor offers neither idempotency nor a status read (mode ``none``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import Sandbox
from processor.engine.crashpoints import ASYNC_POINTS, POINTS
from processor.journal import open_journal
from processor.journal.base import State

pytestmark = pytest.mark.slow

MODES = ("key", "natural", "read", "none")


def write_config(sandbox: Sandbox, tmp_path: Path, **processing: Any) -> tuple[Path, str]:
    journal_url = f"sqlite:///{tmp_path}/journal.db"
    # A short lease: the restarted process waits for the dead one's claims to expire.
    data = sandbox.config_data(
        journal_url, processing={"concurrency": 2, **processing}, journal={"lease_seconds": 3}
    )
    # The mock vendor applies each call as it answers (no late application here): a one-second
    # apply horizon is true of it, and keeps a status read's wait (lease + horizon) short.
    data["adapters"]["vendor"]["apply_horizon"] = 1
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path, journal_url


def processor_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }
    return {**env, **sandbox.environ(), **extra}


def run_processor(
    config: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processor", "run", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def journal_states(journal_url: str, request_ids: set[str]) -> dict[str, State | None]:
    journal = open_journal(journal_url)
    try:
        return {
            rid: (record.state if (record := journal.get(rid)) else None) for rid in request_ids
        }
    finally:
        journal.close()


# The windows of an asynchronous vendor's operations are covered with the async mock vendor in
# tests/process/test_async_operations.py; this vendor answers at once and never reaches them.
@pytest.mark.parametrize(
    "point", [point for point in POINTS if point not in ASYNC_POINTS and point != "after_hold"]
)
@pytest.mark.parametrize("mode", MODES)
def test_sigkill_in_each_crash_window(mode: str, point: str, tmp_path: Path) -> None:
    with Sandbox(generate=8, seed=11, vendor_mode=mode) as sandbox:
        before = sandbox.pending_cancels()
        config, journal_url = write_config(sandbox, tmp_path)

        crashed = run_processor(
            config, processor_env(sandbox, CANCEL_PROCESSOR_CRASH_AT=f"{point}:2"), "--once"
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]

        resumed = run_processor(config, processor_env(sandbox), "--once")
        check = sandbox.check(initially_pending=before)
        states = journal_states(journal_url, before)
        parked = {rid for rid, state in states.items() if state is State.PARKED}

        assert check.lost == 0
        assert check.duplicate_terminations == 0, check
        assert check.approvals_without_termination == 0, check.details
        if mode == "none":
            # The restarted processor cannot know whether the vendor acted on a request that was
            # mid-terminate when the process died: a person decides. The other worker (concurrency
            # 2) may have been mid-terminate too, whatever the crash point.
            assert len(parked) <= 2, states
            if point in ("after_intent", "after_vendor"):
                assert parked
            assert resumed.returncode == (1 if parked else 0)
        else:
            assert not parked, states
            assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        cancels = sandbox.cancel_requests()
        for request_id in before:
            status = cancels[request_id]["status"]
            if request_id in parked:
                assert status == "pending", (
                    request_id,
                    status,
                )  # a person decides; Connect untouched
            else:
                # Closed on Connect, and the journal says the same, or (killed between approving and
                # recording it) still says terminated: the request left the pending list, so the
                # stale-row sweep records it once the row has been quiet for a lease.
                assert status in ("approved", "failed"), (request_id, status)
                agreeing = {State(status)} | (
                    {State.TERMINATED} if point == "after_approve" else set()
                )
                assert states[request_id] in agreeing, (request_id, status, states[request_id])
        if mode == "key" and point == "after_vendor":
            assert (
                sandbox.vendor_ledger()["summary"]["replayed_calls"] >= 1
            )  # same key, vendor deduplicated


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_right_after_a_refusal_is_held(mode: str, tmp_path: Path) -> None:
    """The window ``after_hold``: the vendor's refusal is held in the journal, Connect not told.
    The next process tells Connect once the hold is over, without calling the vendor again."""
    with Sandbox(generate=12, seed=11, vendor_mode=mode, refuse_pattern=r"[0-7]$") as sandbox:
        before = sandbox.pending_cancels()
        config, journal_url = write_config(sandbox, tmp_path)
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["guard"] = {"hold": 1}
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        crashed = run_processor(
            config, processor_env(sandbox, CANCEL_PROCESSOR_CRASH_AT="after_hold:1"), "--once"
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
        held = {r for r, s in journal_states(journal_url, before).items() if s is State.HELD}
        assert held  # the refusal the process died after is in the journal, held
        calls = len(sandbox.vendor_ledger()["calls"])
        held_calls = sum(
            1
            for c in sandbox.vendor_ledger()["calls"]
            if c["subscription_id"] in {sub_of(sandbox, r) for r in held}
        )
        resumed = run_processor(config, processor_env(sandbox), "--once")
        check = sandbox.check(initially_pending=before)
        assert check.lost == 0 and check.duplicate_terminations == 0, check
        assert check.approvals_without_termination == 0, check.details
        cancels = sandbox.cancel_requests()
        states = journal_states(journal_url, before)
        for request_id in held:
            assert cancels[request_id]["status"] == "failed", request_id
            assert states[request_id] is State.FAILED
        again = sum(
            1
            for c in sandbox.vendor_ledger()["calls"][calls:]
            if c["subscription_id"] in {sub_of(sandbox, r) for r in held}
        )
        assert held_calls >= len(held) and again == 0  # the held refusals were not asked again
        parked = {rid for rid, state in states.items() if state is State.PARKED}
        assert resumed.returncode == (1 if parked else 0), resumed.stderr[-2000:]
        assert mode == "none" or not parked, states


def sub_of(sandbox: Sandbox, request_id: str) -> str:
    request = sandbox.cancel_requests()[request_id]
    return next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")


@pytest.mark.parametrize("mode", ["key", "read"])
def test_many_sigkills_at_random_moments(mode: str, tmp_path: Path) -> None:
    rng = random.Random(20261124)
    with Sandbox(
        generate=250,
        seed=5,
        vendor_mode=mode,
        vendor_faults=FaultSettings(latency_ms=60, latency_jitter_ms=40, seed=1),
    ) as sandbox:
        before = sandbox.pending_cancels()
        config, journal_url = write_config(sandbox, tmp_path, concurrency=8, poll_interval=0.2)
        env = processor_env(sandbox)
        kills = 0
        deadline = time.monotonic() + 60
        # Eight kills at random moments of a run with eight workers: every crash window is also
        # covered one by one above; these sample the interleavings of concurrent workers.
        while kills < 8 and time.monotonic() < deadline and sandbox.pending_cancels():
            process = subprocess.Popen(
                [sys.executable, "-m", "processor", "run", "--config", str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.6, 1.4))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            kills += 1
        # No sleep for the dead processes' leases: --once waits for claims until they run out
        # (processing.once_max_wait), as the resumed runs above do.
        final = run_processor(config, env, "--once")
        check = sandbox.check(initially_pending=before)
        states = journal_states(journal_url, before)
        print(
            f"\n[random kills, mode {mode}] requests={check.requests} kills={kills} "
            f"approved={check.approved} failed={check.failed} lost={check.lost} "
            f"vendor_calls={check.vendor_calls} effective={check.effective_terminations} "
            f"duplicates={check.duplicate_terminations} "
            f"approvals_without_termination={check.approvals_without_termination}"
        )
        assert kills >= 3
        assert final.returncode == 0, final.stdout[-3000:]
        assert check.ok, check
        assert check.approved + check.failed == len(before)
        assert all(state in (State.APPROVED, State.FAILED) for state in states.values())
