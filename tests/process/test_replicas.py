"""Replicas on PostgreSQL, proven with real processes.

Three ``processor run`` daemons share one PostgreSQL journal (a fresh schema, chosen through the
URL's ``options=-csearch_path=...``) and one sandbox (mock marketplace and mock vendor in this
process). While they work, one replica is SIGKILLed (while it holds claims) and restarted, again
and again, and another is frozen with SIGSTOP while it holds claims, for longer than the lease and
until the others have taken some of them over, then thawed with SIGCONT: the work it resumes must
find its leases lost (the fence moved on) and act no further on those requests.

After the faults, once the backlog is done, every daemon must stop cleanly on SIGTERM, and both
ledgers must show the invariants: every request final (journal and marketplace), no subscription
effectively terminated twice, no request approved (or failed) twice, no approval without a
termination; and the journal's history must hold no write under a superseded claim (a fence lower
than one already written for that request). Takeovers are read from fences: a claim is taken over
when its row's fence moved past it. Every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bench.daemons import Daemon, fresh_schema, held_by, taken_from
from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import Sandbox
from processor.journal import open_journal
from processor.journal.base import FINAL_STATES, State

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REQUESTS = 2000
REPLICAS = 3
LEASE_SECONDS = 3
KILLS = (
    8  # the killed replica: SIGKILL + restart this many times, every 1-2 s, while it holds claims
)
STOP_SECONDS = 5.0  # the frozen replica: SIGSTOP at least this long (longer than the lease) ...
# ... and until another replica re-claimed what it held, at most this long. The others look for
# stranded claims every half lease, so a takeover comes about a lease and a half after the freeze;
# the margin is for a loaded CI machine.
STOP_MAX_SECONDS = 20.0
FAULTS_BUDGET = (
    150.0  # seconds for the fault phase at most (a loaded machine); about 25 s otherwise
)
CLAIM_WAIT = 15.0  # seconds a restarted replica gets to hold a claim before it is killed anyway
SETTLE_SECONDS = 0.1  # after a SIGSTOP/SIGKILL, for the server to finish what the process had sent
QUIET_BUDGET = 45.0  # seconds to wait for the backlog to drain after the last fault


@pytest.fixture
def journal_url(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url, prefix="replicas_test") as url:
        yield url


def log_events(daemon: Daemon, event: str) -> int:
    """How many times ``daemon`` logged ``event`` (JSON lines, across its restarts)."""
    text = daemon.log.read_text(encoding="utf-8", errors="replace") if daemon.log.exists() else ""
    return len(re.findall(rf'"event": ?"{re.escape(event)}"', text))


def sql_rows(journal_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` on the test schema, behind the replicas' backs."""
    import psycopg

    with psycopg.connect(journal_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def stale_writes(journal_url: str) -> list[tuple[Any, ...]]:
    """Transitions written under a superseded claim: a fence lower than one already written for
    the same request. Fencing makes these impossible; this reads the whole history to prove it."""
    return sql_rows(
        journal_url,
        """
        SELECT request_id, id, fence, owner, previous FROM (
            SELECT request_id, id, fence, owner,
                   max(fence) OVER (PARTITION BY request_id ORDER BY id
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS previous
              FROM transitions) AS history
         WHERE fence < previous""",
    )


def written_after(
    journal_url: str, claims: Mapping[str, int], since: datetime
) -> list[tuple[Any, ...]]:
    """Transitions written under exactly these claims (request id -> fence) at or after
    ``since``."""
    if not claims:
        return []
    rows = sql_rows(
        journal_url,
        "SELECT request_id, fence, owner, at FROM transitions "
        "WHERE request_id = ANY (%s) AND at >= %s",
        list(claims),
        since,
    )
    return [row for row in rows if claims.get(row[0]) == row[1]]


def open_rows(journal_url: str) -> int:
    journal = open_journal(journal_url, pool_size=1)
    try:
        counts = journal.counts()
    finally:
        journal.close()
    return sum(n for state, n in counts.items() if state not in FINAL_STATES)


@dataclass
class Faults:
    """What was done to the replicas, and what they held when it was done."""

    kills: int = 0
    orphaned: dict[str, int] = field(
        default_factory=dict
    )  # request id -> fence of the killed holder's claim
    stops: int = 0
    frozen_pid: int = 0
    held_when_frozen: dict[str, int] = field(
        default_factory=dict
    )  # request id -> fence of its claim
    taken_while_frozen: set[str] = field(
        default_factory=set
    )  # of those, re-claimed before the thaw
    first_taken_after: float | None = None  # seconds from the freeze to the first takeover seen
    frozen_for: float = 0.0
    thawed_at: datetime | None = None  # wall clock, as the journal's transitions are stamped
    frozen_rows: list[tuple[Any, ...]] = field(
        default_factory=list
    )  # what it held, as the journal said


def inflict(journal_url: str, killed: Daemon, frozen: Daemon, rng: random.Random) -> Faults:
    """SIGKILL ``killed`` (and restart it) KILLS times, every 1-2 s, each time while it holds claims
    if it gets to hold any within CLAIM_WAIT; SIGSTOP ``frozen`` once while it holds claims, for at
    least STOP_SECONDS and until the others have re-claimed what it held (at most
    STOP_MAX_SECONDS)."""
    faults = Faults()
    now = time.monotonic()
    deadline, next_kill, freeze_at = now + FAULTS_BUDGET, now + rng.uniform(1.0, 2.0), now + 2.5
    frozen_since: float | None = None
    faults.frozen_pid = frozen.pid
    try:
        while time.monotonic() < deadline and (faults.kills < KILLS or faults.stops < 1):
            now = time.monotonic()
            if faults.stops < 1 and frozen_since is None and now >= freeze_at:
                frozen.freeze()
                time.sleep(SETTLE_SECONDS)  # statements it had already sent still run on the server
                faults.held_when_frozen = held_by(journal_url, faults.frozen_pid)  # stable now
                faults.frozen_rows = sql_rows(
                    journal_url,
                    "SELECT request_id, state, fence, lease_owner, lease_expires_at, "
                    "next_attempt_at FROM requests WHERE request_id = ANY (%s)",
                    list(faults.held_when_frozen),
                )
                if faults.held_when_frozen:
                    frozen_since = now
                else:  # between requests right now: try again shortly
                    frozen.thaw()
                    freeze_at = now + 0.2
            elif frozen_since is not None:
                taken = taken_from(journal_url, faults.held_when_frozen)
                if taken and faults.first_taken_after is None:
                    faults.first_taken_after = now - frozen_since
                if now - frozen_since >= STOP_SECONDS and (
                    taken or now - frozen_since >= STOP_MAX_SECONDS
                ):
                    faults.taken_while_frozen = taken
                    faults.thawed_at = datetime.now(UTC)
                    frozen.thaw()
                    faults.frozen_for, frozen_since = now - frozen_since, None
                    faults.stops += 1
            if faults.kills < KILLS and now >= next_kill:
                pid = killed.pid
                # Killed while it holds claims (what the test is about): a replica just restarted on
                # a loaded machine may take seconds to load Python and claim. Only one that never
                # claims within CLAIM_WAIT (the backlog drained) is killed without.
                if held_by(journal_url, pid) or now >= next_kill + CLAIM_WAIT:
                    killed.kill()
                    time.sleep(SETTLE_SECONDS)  # what it had sent before dying runs (or rolls back)
                    faults.orphaned.update(held_by(journal_url, pid))
                    faults.kills += 1
                    killed.start()
                    next_kill = now + rng.uniform(1.0, 2.0)
            time.sleep(0.05)
    finally:
        if frozen_since is not None:  # never leave a process frozen, whatever happened above
            frozen.thaw()
    return faults


def marketplace_status_changes(sandbox: Sandbox) -> Counter[tuple[str, str]]:
    """(request id, new status) -> how many times the marketplace made that change (its own
    ledger)."""
    changes: Counter[tuple[str, str]] = Counter()
    since = 0
    for _ in range(1000):  # pages of 10,000 entries; bounded
        page = requests.get(
            f"{sandbox.marketplace.url}/admin/ledger",
            params={"since": since, "limit": 10000},
            timeout=30,
        ).json()
        for entry in page["entries"]:
            if entry["kind"] == "request" and entry["event"] == "status":
                changes[(entry["id"], entry["to"])] += 1
        if not page["entries"]:
            return changes
        since = page["entries"][-1]["seq"]
    raise AssertionError("the marketplace ledger did not end")


def test_three_replicas_survive_kills_and_a_freeze(journal_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    vendor_latency = FaultSettings(latency_ms=2, latency_jitter_ms=3, seed=4)
    with Sandbox(
        generate=REQUESTS, seed=13, vendor_mode="key", vendor_faults=vendor_latency
    ) as sandbox:
        before = sandbox.pending_cancels()
        data = sandbox.config_data(
            journal_url,
            processing={
                "concurrency": 8,
                "poll_interval": 0.3,
                "notes": False,
                "shutdown_timeout": 10,
            },
            journal={"lease_seconds": LEASE_SECONDS, "pool_size": 10},
        )
        data["log"] = {"level": "info"}  # the takeovers are info events: counted from the logs
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
        }
        env.update(sandbox.environ())

        migrated = subprocess.run(
            [sys.executable, "-m", "processor", "journal", "migrate", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrated.returncode == 0, migrated.stderr

        replicas = [
            Daemon(f"replica-{i}", config, env, tmp_path / f"replica-{i}.log")
            for i in range(REPLICAS)
        ]
        killed, frozen, _steady = replicas
        for replica in replicas:
            replica.start()
        try:
            faults = inflict(journal_url, killed, frozen, random.Random(20261201))
            faults_done = time.monotonic()
            # Quiescence: nothing pending on the marketplace, nothing open in the journal.
            quiet_deadline = time.monotonic() + QUIET_BUDGET
            while time.monotonic() < quiet_deadline:
                if not (sandbox.pending_cancels() & before) and open_rows(journal_url) == 0:
                    break
                time.sleep(0.5)
            drained = time.monotonic()
        finally:
            codes = {replica.name: replica.stop(30) for replica in replicas}

        check = sandbox.check(initially_pending=before)
        journal = open_journal(journal_url, pool_size=2)
        try:
            states = {rid: (r.state if (r := journal.get(rid)) else None) for rid in before}
        finally:
            journal.close()
        changes = marketplace_status_changes(sandbox)
        terminations = Counter(
            e["subscription_id"]
            for e in sandbox.vendor_ledger()["effects"]
            if e["action"] == "terminate" and not e.get("duplicate")
        )
        orphans_taken = taken_from(journal_url, faults.orphaned)
        stale = stale_writes(journal_url)
        taken_claims = {rid: faults.held_when_frozen[rid] for rid in faults.taken_while_frozen}
        late = (
            written_after(journal_url, taken_claims, faults.thawed_at) if faults.thawed_at else []
        )
        lease_lost = log_events(frozen, "lease_lost")
        swept = sum(log_events(replica, "stranded_claim_taken_over") for replica in replicas)
    approved_twice = sorted(
        rid for (rid, status), n in changes.items() if status == "approved" and n > 1
    )
    failed_twice = sorted(
        rid for (rid, status), n in changes.items() if status == "failed" and n > 1
    )
    not_final = {
        rid: state for rid, state in states.items() if state not in (State.APPROVED, State.FAILED)
    }
    print(
        f"\n[replicas] requests={len(before)} replicas={REPLICAS} kills={faults.kills} "
        f"orphaned_claims={len(faults.orphaned)} re_claimed={len(orphans_taken)} "
        f"stops={faults.stops} frozen_for={faults.frozen_for:.1f}s "
        f"held_when_frozen={len(faults.held_when_frozen)} "
        f"taken_while_frozen={len(faults.taken_while_frozen)} "
        f"first_taken_after={faults.first_taken_after or 0:.1f}s "
        f"lease_lost_after_thaw={lease_lost} stranded_taken_over={swept} "
        f"stale_writes={len(stale)} approved={check.approved} failed={check.failed} "
        f"lost={check.lost} not_final={len(not_final)} vendor_calls={check.vendor_calls} "
        f"effective_terminations={check.effective_terminations} "
        f"duplicate_terminations={check.duplicate_terminations} "
        f"approved_twice={len(approved_twice)} "
        f"approvals_without_termination={check.approvals_without_termination} "
        f"faults={faults_done - started:.1f}s drain={drained - faults_done:.1f}s "
        f"elapsed={time.monotonic() - started:.1f}s"
    )
    assert faults.kills == KILLS and faults.stops == 1
    assert codes == {replica.name: 0 for replica in replicas}, codes
    assert check.lost == 0
    assert not not_final, dict(list(not_final.items())[:10])
    assert check.approved + check.failed == len(before), check
    assert check.duplicate_terminations == 0, check
    assert all(n == 1 for n in terminations.values()), terminations.most_common(3)
    assert not approved_twice and not failed_twice
    assert check.approvals_without_termination == 0, check.details
    # The kills hit work in flight, and every claim a dead process held was re-claimed (and, as
    # every request is final, finished) once its lease ran out.
    assert faults.orphaned and orphans_taken == set(faults.orphaned)
    # Claims the frozen replica held were re-claimed by the others while it slept ...
    assert faults.held_when_frozen and faults.taken_while_frozen, (
        faults.held_when_frozen,
        faults.frozen_rows,
    )
    # ... and once thawed it wrote nothing more under them, nor did anyone ever write under a
    # superseded claim.
    assert late == [], late
    assert stale == [], stale[:10]
