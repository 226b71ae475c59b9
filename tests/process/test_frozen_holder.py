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
released by the kernel or the server when A dies -- or, on PostgreSQL, when A's sessions end while
A lives (``pg_terminate_backend``: a failover, a firewall). That case is closed by A's own check
just before its call leaves: more than a lease since its intent, so it sends nothing, and B
believes a status read "active" only from A's recorded send plus the lease plus the apply horizon
(docs/design.md, "The apply horizon"). In every case: exactly one termination. In mode ``none``
the operator's forced retry is refused until that same moment, and says until when.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.daemons import fresh_schema
from cancel_sandbox.local import Sandbox
from processor.journal import open_journal
from processor.journal.base import State
from processor.ops.actions import ActionRefused, resend_from, retry_request

pytestmark = pytest.mark.slow

LEASE = 2.0
HORIZON = 1.0  # the vendor mock applies at once; a short horizon keeps the waits short
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
    data["adapters"]["vendor"]["apply_horizon"] = HORIZON
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
        cwd=config.parent,
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
            cwd=config.parent,  # files kept in the working directory stay with this test
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


def cut_sessions(journal_url: str) -> int:
    """End every PostgreSQL session of the processor (a failover, a firewall dropping idle
    connections): only the frozen holder has any at that point. How many were ended."""
    import psycopg

    with psycopg.connect(journal_url.split("?")[0], autocommit=True) as conn:
        rows = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name like 'cancel-processor%' and pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def frozen_holder(mode: str, journal_url: str, tmp_path: Path, *, cut: bool) -> None:
    """A frozen after its intent; B takes over; A's PostgreSQL sessions ended (``cut``); the
    operator's step in mode ``none``; A thawed. Exactly one termination, and never two."""
    with Sandbox(generate=1, seed=3, vendor_mode=mode) as sandbox:
        before = sandbox.pending_cancels()
        (rid,) = before
        config = write_config(sandbox, tmp_path, journal_url)
        env = environ(sandbox)
        holder = freeze_after_intent(config, env, tmp_path / "holder.log")
        ended = 0
        try:
            assert (
                record_of(journal_url, rid).state is State.TERMINATING
            )  # intent recorded, call not sent
            time.sleep(LEASE + 1.0)  # A's lease runs out: nothing renews it while A is stopped
            takeover = run_once(config, env)  # B: the poll lists the request, B claims it
            after_takeover = record_of(journal_url, rid)
            if cut:
                ended = cut_sessions(journal_url)  # A's send right is gone; A is still frozen
                for _ in range(10):  # bounded: B may now take the right and act
                    run_once(config, env)
                    if record_of(journal_url, rid).state in (State.APPROVED, State.PARKED):
                        break
                    time.sleep(0.5)
        finally:
            code_a = thaw_and_finish(holder)  # A wakes: more than a lease after its intent
        for _ in range(10):  # bounded: a suspension (half a lease) may still be ahead
            final = run_once(config, env)
            if record_of(journal_url, rid).state in (State.APPROVED, State.PARKED):
                break
            time.sleep(0.5)
        operator = ""
        if record_of(journal_url, rid).state is State.PARKED:
            # Mode none: the operator checks the vendor and retries; before the last send plus
            # the lease plus the apply horizon the retry is refused, and says until when.
            assert not [e for e in sandbox.vendor_effects() if e["action"] == "terminate"]
            journal = open_journal(journal_url, pool_size=1)
            try:
                record = journal.get(rid)
                not_before = resend_from(record, LEASE, {"vendor": HORIZON})
                try:
                    retry_request(journal, rid, actor="operator", force=True, not_before=not_before)
                    operator = "retried at once"
                except ActionRefused as refused:
                    operator = f"refused: {refused}"
                    assert not_before is not None
                    time.sleep(max((not_before - datetime.now(UTC)).total_seconds(), 0) + 0.2)
                    retry_request(journal, rid, actor="operator", force=True, not_before=not_before)
            finally:
                journal.close()
            for _ in range(5):
                final = run_once(config, env)
                if record_of(journal_url, rid).state is State.APPROVED:
                    break
                time.sleep(0.5)

        check = sandbox.check(initially_pending=before)
        record = record_of(journal_url, rid)
        effects = [e for e in sandbox.vendor_effects() if e["action"] == "terminate"]
        summary = (
            f"mode={mode} cut={cut} ({ended} sessions) takeover_state={after_takeover.state.value} "
            f"final_state={record.state.value} reason={record.reason!r} operator={operator!r} "
            f"effects={[(e['duplicate'], e.get('request_id')) for e in effects]} "
            f"holder_exit={code_a} takeover_exit={takeover.returncode} "
            f"final_exit={final.returncode}"
        )
        print(summary)
        assert check.duplicate_terminations == 0, summary
        assert len(effects) == 1, summary  # one termination: A's call never left after its lease
        assert check.lost == 0 and check.approvals_without_termination == 0, check
        # While A could still send, B neither called the vendor nor parked the request.
        assert after_takeover.state is State.TERMINATING, summary
        assert record.state is State.APPROVED, summary
        if cut:
            assert ended >= 1, summary


@pytest.mark.parametrize("mode", ["read", "none"])
def test_a_frozen_holder_never_makes_a_second_termination(
    mode: str, journal_url: str, tmp_path: Path
) -> None:
    frozen_holder(mode, journal_url, tmp_path, cut=False)


@pytest.mark.parametrize("mode", ["read", "none"])
def test_a_frozen_holder_whose_sessions_end_never_makes_a_second_termination(
    mode: str, postgres_url: str, tmp_path: Path
) -> None:
    """The case the send right alone left open: A's PostgreSQL sessions end while A lives
    (``pg_terminate_backend``), B takes the right and acts, and A thaws with its call ready.
    A's own check (more than a lease since its intent) keeps it from sending."""
    with fresh_schema(postgres_url, prefix="frozen_cut") as url:
        frozen_holder(mode, url, tmp_path, cut=True)


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
        # A, thawed more than a lease after its intent, sent nothing: the vendor shows the
        # subscription active, and that is now the truth the person who retries will act on.
        assert not [e for e in sandbox.vendor_effects() if e["action"] == "terminate"]
