"""The chaos soak in small: real daemons (subprocesses) on SQLite and on PostgreSQL, SIGKILLed
about a dozen times and restarted, paused with SIGSTOP for longer than the lease, and put through
one storm of each kind on the live mocks (5xx, 429 with Retry-After, apply-then-drop, latency
beyond the client timeouts, the vendor down). The checker reads both ledgers and the journal; any
broken invariant fails the test. A third test proves the checker itself sees a broken invariant
when there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from bench.checker import RunFacts, check, render_markdown
from bench.soak import STORMS, SoakSettings, run_soak
from cancel_sandbox.local import SANDBOX_VENDOR_TOKEN, Sandbox
from processor.journal import open_journal

pytestmark = pytest.mark.slow

# Small, and paced so that the faults land on work in flight: a slow vendor and few workers.
# Twelve kills about two seconds apart: a restart (start-up, then the dead claims' lease) takes
# most of a second or two, so twenty kills 1.1-1.9 s apart left a loaded machine's daemon
# restarting nearly all the time, storms met no calls and most of the backlog waited for the
# drain. With the daemon up between kills the same invariants are exercised in a shorter run.
SMALL: dict[str, Any] = {
    "requests": 240,
    "kills": 12,
    "kill_every": (1.5, 2.5),
    "pauses": 2,
    "storm_seconds": 4.0,
    "fault_seconds": 30.0,
    "vendor_latency_ms": 250.0,
    "quiet_seconds": 60.0,
    "baseline_seconds": 60.0,
}


def assert_soak_held(settings: SoakSettings) -> RunFacts:
    report = run_soak(
        settings, command="tests/process/test_soak.py", say=lambda line: print(line, flush=True)
    )
    print("\n" + render_markdown(report))
    facts = report.facts
    assert report.ok, (report.failures, report.details)
    # The schedule ran as drawn: kills bounded by count and time, each pause, one storm of each
    # kind, and the mocks' own counters show the storms reached the daemons.
    assert facts.kills >= 10
    assert facts.pauses == 2 and facts.longest_pause > settings.lease_seconds
    assert facts.storms == {kind: 1 for kind in STORMS}
    assert all(facts.injected[kind] > 0 for kind in ("errors", "throttles", "drops")), (
        facts.injected
    )
    assert facts.converge_seconds is not None
    assert facts.baseline_requests == settings.baseline_requests
    rows = {row.name: row.value for row in report.rows}
    assert rows["requests seeded"] == str(settings.requests)
    # A vendor that honours an idempotency key settles every ambiguity: nothing waits for a person.
    assert settings.mode != "key" or rows["parked for a person"] == "0", rows
    # The kills landed on work in flight: a restarted process finished what a dead one began.
    assert int(rows["requests finished by another process than the one that began them"]) > 0
    return facts


def test_soak_sqlite_one_daemon(tmp_path: Path) -> None:
    assert_soak_held(SoakSettings(store="sqlite", concurrency=4, workdir=str(tmp_path), **SMALL))


@pytest.mark.postgres
def test_soak_postgres_three_replicas(postgres_url: str, tmp_path: Path) -> None:
    # Three replicas drain faster than one daemon: a larger backlog keeps work in flight until the
    # last storm has passed.
    settings = SoakSettings(
        store="postgres",
        postgres_url=postgres_url,
        concurrency=2,
        workdir=str(tmp_path),
        **{**SMALL, "requests": 300},
    )
    facts = assert_soak_held(settings)
    # A replica paused while holding claims, longer than the lease: the others took some over (and
    # the paused one, thawed, acted no further on them: no duplicate, checked above).
    assert facts.lease_steals > 0


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_soak_read_mode_with_a_vendor_that_applies_late(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Mode read (a status read, no idempotency) against a vendor behind a gateway: every call
    answered 504 and applied 1 to 2.5 s later, with SIGKILLs, pauses and storms. A status read
    says "active" in between; the apply horizon (3 s) keeps the processor from believing it
    too early. Every late application is counted before the check: no subscription twice."""
    extra: dict[str, Any] = {}
    if store == "postgres":
        extra = {"postgres_url": request.getfixturevalue("postgres_url"), "concurrency": 2}
    settings = SoakSettings(
        store=store,
        mode="read",
        workdir=str(tmp_path),
        late_delay=1.0,
        late_jitter=1.5,
        apply_horizon=3.0,
        **{"concurrency": 4, **SMALL, "requests": 150, **extra},
    )
    assert_soak_held(settings)


def test_checker_reports_broken_invariants(tmp_path: Path) -> None:
    """Break three invariants by hand, behind any processor's back: the checker must see each."""
    journal_url = f"sqlite:///{tmp_path / 'journal.db'}"
    journal = open_journal(journal_url)
    journal.migrate()
    journal.close()
    with Sandbox(generate=6, seed=3, vendor_mode="key", refuse_pattern="^$") as sandbox:
        seeded = sorted(sandbox.pending_cancels())
        cancels = sandbox.cancel_requests()
        approved_blind, twice, *_left_pending = seeded
        product = cancels[approved_blind]["asset"]["product"]["id"]
        # Approved on Connect with no vendor call at all.
        sandbox.act(approved_blind, "approve", {"template_id": sandbox.product_templates[product]})
        # Terminated twice at the vendor, with two different keys: two effects, one flagged.
        sub = next(
            p["value"] for p in cancels[twice]["asset"]["params"] if p["id"] == "subscription_id"
        )
        for key in ("k-1", "k-2"):
            reply = requests.post(
                f"{sandbox.vendor.url}/v1/subscriptions/{sub}/terminate",
                headers={"Authorization": f"Bearer {SANDBOX_VENDOR_TOKEN}", "Idempotency-Key": key},
                json={"request_id": twice},
                timeout=10,
            )
            assert reply.status_code == 200
        report = check(
            sandbox,
            journal_url,
            set(seeded),
            RunFacts(seed=3, store="sqlite, 0 processes", mode="key", command="test"),
        )
    rows = {row.name: row for row in report.rows}
    assert not report.ok
    assert (
        rows["approvals without a termination"].value == "1"
        and not rows["approvals without a termination"].ok
    )
    assert rows["duplicate effective terminations"].value == "1"
    # Five requests are neither final nor parked in a journal that never saw them: lost.
    assert rows["lost (neither final on Connect nor parked, or vanished)"].value == str(
        len(seeded) - 1
    )
    # The approved one is absent from the journal: the journal and Connect disagree on it.
    assert rows["journal and Connect disagree on a final request"].value == "1"
    assert {row.name for row in report.failures} == {
        "approvals without a termination",
        "duplicate effective terminations",
        "lost (neither final on Connect nor parked, or vanished)",
        "journal and Connect disagree on a final request",
    }
    assert "**FAILED**" in render_markdown(report)
