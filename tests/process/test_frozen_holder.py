"""A holder frozen between its fence check and its vendor call, with real processes.

Process A records the intent of a terminate (its fence check passes) and is frozen with SIGSTOP
before its call leaves (``CANCEL_PROCESSOR_PAUSE_AT=after_intent``). Its lease runs out. Process B
takes the claim over. Then A is thawed and sends the call it was about to send. No client-side
check closes that window: a freeze can fall between any check and the send, and last any time.
For a vendor that cannot deduplicate (mode ``read``: a status read, no idempotency; mode ``none``:
neither), only knowing that A can still send closes it: B must not act on the claim while A may
still act (the claim is suspended), and after ``journal.holder_wait`` it is parked for a person.

In mode ``none`` B cannot repeat the call anyway (it parks the request); the operator who then
checks the vendor sees the subscription still active -- A's call has not left -- and sends the
request back to ``new``. Whether that retry can terminate a second time is what the test shows.

Both stores: on SQLite the proof that A can still send is a byte-range lock on a file beside the
database; on PostgreSQL a session-level advisory lock. Both are held while A is frozen and
released by the kernel or the server when A dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.daemons import fresh_schema
from cancel_sandbox.local import Sandbox
from processor.journal import open_journal
from processor.journal.base import State
from processor.ops.actions import retry_request

pytestmark = pytest.mark.slow

LEASE = 2.0
STOP_BUDGET = 30.0  # seconds for process A to reach its crash point and stop


@pytest.fixture(params=["sqlite", "postgres"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/journal.db"
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with fresh_schema(postgres_url, prefix="frozen_test") as url:
        yield url


def write_config(sandbox: Sandbox, tmp_path: Path, journal_url: str, **journal: Any) -> Path:
    data = sandbox.config_data(
        journal_url,
        processing={"concurrency": 1, "poll_interval": 0.2, "notes": False, "once_max_wait": 0},
        journal={"lease_seconds": LEASE, "pool_size": 2, **journal},
    )
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    migrating = (
        open_journal(journal_url, pool_size=1) if journal_url.startswith("postgres") else None
    )
    if migrating is not None:
        try:
            migrating.migrate()
        finally:
            migrating.close()
    return path


def environ(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }
    return {**env, **sandbox.environ(), **extra}


def run_once(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processor", "run", "--config", str(config), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP): state T in /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def freeze_after_intent(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Process A, stopped by its own crash point after recording its first intent."""
    with log.open("wb") as err:
        holder = subprocess.Popen(
            [sys.executable, "-m", "processor", "run", "--config", str(config), "--once"],
            env={**env, "CANCEL_PROCESSOR_PAUSE_AT": "after_intent"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + STOP_BUDGET
    while time.monotonic() < deadline and holder.poll() is None and not stopped(holder.pid):
        time.sleep(0.05)
    if not stopped(holder.pid):
        holder.kill()
        holder.wait(timeout=10)
        pytest.fail(
            f"process A never reached its crash point: {log.read_text(errors='replace')[-2000:]}"
        )
    return holder


def record_of(journal_url: str, request_id: str) -> Any:
    journal = open_journal(journal_url, pool_size=1)
    try:
        return journal.get(request_id)
    finally:
        journal.close()


def thaw_and_finish(holder: subprocess.Popen[bytes]) -> int:
    holder.send_signal(signal.SIGCONT)
    try:
        return holder.wait(timeout=60)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait(timeout=10)
        raise


@pytest.mark.parametrize("mode", ["read", "none"])
def test_a_frozen_holder_never_makes_a_second_termination(
    mode: str, journal_url: str, tmp_path: Path
) -> None:
    with Sandbox(generate=1, seed=3, vendor_mode=mode) as sandbox:
        before = sandbox.pending_cancels()
        (rid,) = before
        config = write_config(sandbox, tmp_path, journal_url)
        env = environ(sandbox)
        holder = freeze_after_intent(config, env, tmp_path / "holder.log")
        try:
            assert (
                record_of(journal_url, rid).state is State.TERMINATING
            )  # intent recorded, call not sent
            time.sleep(LEASE + 1.0)  # A's lease runs out: nothing renews it while A is stopped
            takeover = run_once(config, env)  # B: the poll lists the request, B claims it
            after_takeover = record_of(journal_url, rid)
            if after_takeover.state is State.PARKED:
                # The operator checks the vendor (still active: A's call has not left) and retries.
                assert not [e for e in sandbox.vendor_effects() if e["action"] == "terminate"]
                journal = open_journal(journal_url, pool_size=1)
                try:
                    retry_request(journal, rid, actor="operator", force=True)
                finally:
                    journal.close()
                run_once(config, env)
        finally:
            code_a = thaw_and_finish(holder)  # A wakes and sends the call it was about to send
        for _ in range(5):  # bounded: the suspension's retry time (half a lease) may still be ahead
            final = run_once(config, env)
            if record_of(journal_url, rid).state in (State.APPROVED, State.PARKED):
                break
            time.sleep(0.5)

        check = sandbox.check(initially_pending=before)
        record = record_of(journal_url, rid)
        effects = [e for e in sandbox.vendor_effects() if e["action"] == "terminate"]
        summary = (
            f"mode={mode} takeover_state={after_takeover.state.value} "
            f"final_state={record.state.value} reason={record.reason!r} "
            f"effects={[(e['duplicate'], e.get('request_id')) for e in effects]} "
            f"holder_exit={code_a} takeover_exit={takeover.returncode} "
            f"final_exit={final.returncode}"
        )
        print(summary)
        assert check.duplicate_terminations == 0, summary
        assert len(effects) == 1, summary  # A's call, the only one
        assert check.lost == 0 and check.approvals_without_termination == 0, check
        # While A could still send, B neither called the vendor nor parked the request.
        assert after_takeover.state is State.TERMINATING, summary
        if mode == "read":
            assert record.state is State.APPROVED, summary  # the status read confirms A's call
        else:
            assert record.state is State.PARKED, summary  # nothing can tell whether A's call acted


def test_a_holder_frozen_past_the_wait_limit_is_parked_for_a_person(
    journal_url: str, tmp_path: Path
) -> None:
    with Sandbox(generate=1, seed=4, vendor_mode="read") as sandbox:
        before = sandbox.pending_cancels()
        (rid,) = before
        config = write_config(sandbox, tmp_path, journal_url, holder_wait=1.5)
        env = environ(sandbox)
        holder = freeze_after_intent(config, env, tmp_path / "holder.log")
        try:
            time.sleep(LEASE + 1.0)
            run_once(config, env)  # suspended: A is alive
            suspended = record_of(journal_url, rid)
            time.sleep(2.0)  # past holder_wait
            for _ in range(10):  # bounded: the retry time of the suspension may still be ahead
                run_once(config, env)
                if (parked := record_of(journal_url, rid)).state is State.PARKED:
                    break
                time.sleep(0.5)
            assert not [e for e in sandbox.vendor_effects() if e["action"] == "terminate"]
        finally:
            thaw_and_finish(holder)
        run_once(config, env)
        check = sandbox.check(initially_pending=before)
        assert suspended.state is State.TERMINATING and "previous holder alive" in (
            suspended.last_error or ""
        )
        assert parked.state is State.PARKED and "previous holder" in (parked.reason or ""), parked
        final = record_of(journal_url, rid)
        assert (
            final.state is State.PARKED
        )  # parked stays parked: a person decides, with the vendor's word
        assert check.duplicate_terminations == 0 and check.lost == 0
        assert (
            len([e for e in sandbox.vendor_effects() if e["action"] == "terminate"]) == 1
        )  # A's call only
