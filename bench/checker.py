"""The soak's checker: both ledgers and the journal, read after the run, in one table.

Everything it counts comes from a party's own record, never from what the processor believed:

- the marketplace's API (each request's status now) and its ledger (every status change it made),
- the mock vendor's ledger (raw calls, and *effective* terminations marked ``duplicate`` when the
  subscription was already terminated),
- the journal (final states, why a request was parked, which processes wrote its transitions).

The invariants (each row marked "must be 0"): no request lost (every seeded request is final on
Connect, or parked in the journal for a person, and none has vanished); no subscription effectively
terminated twice; no approval without a termination; no request approved or failed twice; no
refusal the vendor did not make; journal and Connect agree on every final request; with a vendor
that offers neither idempotency nor a status read (mode ``none``), never a second terminate call for
a subscription; every daemon stops cleanly on SIGTERM.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from cancel_sandbox.local import Sandbox
from processor.journal import open_journal
from processor.journal.base import State

__all__ = ["Report", "Row", "RunFacts", "check", "git_commit", "render_markdown"]


@dataclass
class RunFacts:
    """What the soak did and measured; the checker adds what the records show."""

    seed: int
    store: str
    mode: str
    command: str
    kills: int = 0
    pauses: int = 0
    longest_pause: float = 0.0
    storms: Counter[str] = field(default_factory=Counter)
    injected: dict[str, int] = field(default_factory=dict)  # the mocks' own fault counters
    lease_steals: int = 0
    exits: dict[str, int | str] = field(default_factory=dict)
    converge_seconds: float | None = None  # None: not quiet within the budget
    baseline_requests: int = 0
    baseline_rate: float = 0.0
    fault_requests: int = 0
    fault_rate: float = 0.0
    fault_seconds: float = 0.0
    left_at_last_fault: int = 0  # requests still to finish when the last fault healed
    elapsed: float = 0.0


@dataclass(frozen=True)
class Row:
    name: str
    value: str
    must_be_zero: bool = False
    ok: bool = True


@dataclass
class Report:
    rows: list[Row]
    details: dict[str, Any]
    facts: RunFacts

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if not row.ok]


def git_commit(repo: Path | None = None) -> str:
    """The short hash of HEAD, or "unknown" outside a git checkout."""
    where = repo or Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def subscription_of(request: dict[str, Any]) -> str | None:
    for param in request["asset"].get("params", []):
        if param.get("id") == "subscription_id" and param.get("value"):
            return str(param["value"])
    external = request["asset"].get("external_id")
    return str(external) if external else None


def marketplace_status_changes(market_url: str) -> Counter[tuple[str, str]]:
    """(request id, new status) -> how many times the marketplace made that change (its ledger)."""
    changes: Counter[tuple[str, str]] = Counter()
    since = 0
    for _ in range(10_000):  # pages of 10,000 entries: bounded far above any soak
        page = requests.get(
            f"{market_url}/admin/ledger", params={"since": since, "limit": 10000}, timeout=60
        ).json()
        if not page["entries"]:
            return changes
        for entry in page["entries"]:
            if entry["kind"] == "request" and entry["event"] == "status":
                changes[(entry["id"], entry["to"])] += 1
        since = page["entries"][-1]["seq"]
    raise RuntimeError("the marketplace ledger did not end")


def final_times(market_url: str, request_ids: set[str]) -> dict[str, float]:
    """When each of ``request_ids`` was first approved or failed (epoch seconds, the ledger's
    clock)."""
    from datetime import datetime

    times: dict[str, float] = {}
    since = 0
    for _ in range(10_000):
        page = requests.get(
            f"{market_url}/admin/ledger", params={"since": since, "limit": 10000}, timeout=60
        ).json()
        if not page["entries"]:
            return times
        for entry in page["entries"]:
            if (
                entry["kind"] == "request"
                and entry["event"] == "status"
                and entry["to"] in ("approved", "failed")
                and entry["id"] in request_ids
                and entry["id"] not in times
            ):
                times[entry["id"]] = datetime.fromisoformat(entry["at"]).timestamp()
        since = page["entries"][-1]["seq"]
    raise RuntimeError("the marketplace ledger did not end")


def transition_owners(journal_url: str) -> dict[str, int]:
    """How many distinct processes wrote each request's transitions (owner = host:pid:nonce)."""
    query = (
        "SELECT request_id, COUNT(DISTINCT owner) FROM transitions WHERE owner IS NOT NULL "
        "GROUP BY request_id"
    )
    return {rid: int(n) for rid, n in _journal_query(journal_url, query)}


def suspensions(journal_url: str) -> tuple[int, int]:
    """Takeovers that waited for a previous holder still alive (processor/engine/liveness.py):
    transitions, and distinct requests."""
    query = (
        "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM transitions "
        "WHERE detail LIKE 'retry after %suspended: previous holder alive%'"
    )
    rows = _journal_query(journal_url, query)
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


def _journal_query(journal_url: str, query: str) -> list[tuple[Any, ...]]:
    if journal_url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(journal_url[len("sqlite:///") :], timeout=30)
        try:
            return list(conn.execute(query))
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(journal_url, autocommit=True) as pg:
        return list(pg.execute(query).fetchall())


def _reason_group(reason: str | None) -> str:
    """Parked reasons without the request-specific part (numbers, ids), to group them."""
    text = re.sub(r"\b(PR|AS|SUB|CT|MKP|PRD)-[\w-]+", "<id>", reason or "no reason recorded")
    return re.sub(r"\d+(\.\d+)?", "N", text)[:120]


def check(sandbox: Sandbox, journal_url: str, seeded: set[str], facts: RunFacts) -> Report:
    """Read every record and build the table. Call after the daemons have stopped."""
    cancels = sandbox.cancel_requests()
    ledger = sandbox.vendor_ledger()
    changes = marketplace_status_changes(sandbox.marketplace.url)
    journal = open_journal(journal_url, pool_size=2)
    try:
        records = {r.request_id: r for r in journal.records()}
    finally:
        journal.close()
    owners = transition_owners(journal_url)
    suspended, suspended_requests = suspensions(journal_url)

    status = {rid: cancels.get(rid, {}).get("status") for rid in seeded}
    approved = {rid for rid in seeded if status[rid] == "approved"}
    failed = {rid for rid in seeded if status[rid] == "failed"}
    parked = {rid for rid in seeded if rid in records and records[rid].state is State.PARKED}
    missing = {rid for rid in seeded if rid not in cancels}
    unfinished = {rid for rid in seeded if rid not in approved | failed | parked | missing}

    terminate_effects = [e for e in ledger["effects"] if e["action"] == "terminate"]
    effective = Counter(e["subscription_id"] for e in terminate_effects)
    # Subscriptions terminated more than once: a second effect, or one the vendor flagged as a
    # repeat.
    duplicated = {s for s, n in effective.items() if n > 1} | {
        e["subscription_id"] for e in terminate_effects if e.get("duplicate")
    }
    duplicates = len(duplicated)
    terminate_calls = [c for c in ledger["calls"] if c["action"] == "terminate"]
    refused_subs = {c["subscription_id"] for c in terminate_calls if c["status_code"] == 422}
    subs = {rid: subscription_of(cancels[rid]) for rid in seeded if rid in cancels}
    gone = {rid for rid, sub in subs.items() if sub and sub.startswith("SUB-GONE")}
    without = sorted(rid for rid in approved if subs.get(rid) not in effective and rid not in gone)
    refused_by_design = {rid for rid in failed if subs.get(rid) in refused_subs}
    refused_otherwise = sorted(failed - refused_by_design)
    twice = sorted(
        rid
        for (rid, to), n in changes.items()
        if rid in seeded and to in ("approved", "failed") and n > 1
    )
    journal_final = {"approved": State.APPROVED, "failed": State.FAILED}
    disagree = sorted(
        rid
        for rid in approved | failed
        if rid not in records or records[rid].state is not journal_final[status[rid]]
    )
    calls_per_sub = Counter(c["subscription_id"] for c in terminate_calls)
    blind_repeats = (
        sorted(s for s, n in calls_per_sub.items() if n > 1) if facts.mode == "none" else []
    )
    unclean = {name: code for name, code in facts.exits.items() if code != 0}
    taken_over = sum(1 for rid in seeded if owners.get(rid, 0) > 1)
    park_reasons = Counter(_reason_group(records[rid].reason) for rid in parked)

    def must(name: str, bad: int) -> Row:
        return Row(name, str(bad), must_be_zero=True, ok=bad == 0)

    rows = [
        Row("seed / commit", f"{facts.seed} / {git_commit()}"),
        Row("journal, processes", facts.store),
        Row("vendor idempotency mode", facts.mode),
        Row("requests seeded", str(len(seeded))),
        Row("approved", str(len(approved))),
        Row("refused by design (the vendor answered 422)", str(len(refused_by_design))),
        Row("parked for a person", str(len(parked))),
        *[Row(f"parked: {reason}", str(n)) for reason, n in park_reasons.most_common()],
        must("lost (neither final on Connect nor parked, or vanished)", len(unfinished | missing)),
        must("refused without a vendor refusal", len(refused_otherwise)),
        Row(
            "raw vendor calls (replayed by key)",
            f"{ledger['summary']['calls']} ({ledger['summary'].get('replayed_calls', 0)})",
        ),
        Row("effective terminations", str(len(effective))),
        must("duplicate effective terminations", duplicates),
        must("approvals without a termination", len(without)),
        must("requests approved or failed twice on Connect", len(twice)),
        must("journal and Connect disagree on a final request", len(disagree)),
    ]
    if facts.mode == "none":
        rows.append(
            must("second terminate call for a subscription (mode none)", len(blind_repeats))
        )
    storms = ", ".join(f"{kind} {n}" for kind, n in sorted(facts.storms.items())) or "none"
    rows += [
        Row("SIGKILLs (each followed by a restart)", str(facts.kills)),
        Row(
            "SIGSTOP pauses longer than the lease (longest)",
            f"{facts.pauses} ({facts.longest_pause:.1f} s)",
        ),
        Row("storms", storms),
        Row(
            "injected by the mocks: 5xx / 429 / apply-then-drop",
            " / ".join(str(facts.injected.get(k, 0)) for k in ("errors", "throttles", "drops")),
        ),
        Row(
            "lease steals (claims a paused daemon held, taken over while it slept)",
            str(facts.lease_steals),
        ),
        Row("requests finished by another process than the one that began them", str(taken_over)),
        Row(
            "takeovers suspended while the previous holder lived (requests)",
            f"{suspended} ({suspended_requests})",
        ),
        must("daemons not stopping cleanly on SIGTERM", len(unclean)),
        Row(
            "fault phase (requests still unfinished when the last fault healed)",
            f"{facts.fault_seconds:.0f} s ({facts.left_at_last_fault})",
        ),
        Row(
            "time to converge after the last fault",
            f"{facts.converge_seconds:.1f} s"
            if facts.converge_seconds is not None
            else "did not converge",
        ),
        Row(
            "throughput without faults",
            f"{facts.baseline_rate:.1f} requests/s ({facts.baseline_requests} requests)",
        ),
        Row(
            "throughput with faults (to quiescence)",
            f"{facts.fault_rate:.1f} requests/s ({facts.fault_requests} requests, ratio "
            f"{_ratio(facts.fault_rate, facts.baseline_rate):.2f})",
        ),
        Row("elapsed", f"{facts.elapsed:.0f} s"),
    ]
    details = {
        "unfinished": sorted(unfinished)[:20],
        "missing": sorted(missing)[:20],
        "without": without[:20],
        "refused_otherwise": refused_otherwise[:20],
        "twice": twice[:20],
        "disagree": disagree[:20],
        "blind_repeats": blind_repeats[:20],
        "unclean": unclean,
        "unfinished_states": {
            rid: (records[rid].state.value if rid in records else None, status[rid])
            for rid in sorted(unfinished)[:20]
        },
        "duplicates": sorted(duplicated)[:20],
        # Every request behind a failed invariant, for the evidence (bench/evidence.py).
        "offenders": sorted(
            unfinished
            | missing
            | set(without)
            | set(refused_otherwise)
            | set(twice)
            | set(disagree)
            | {rid for rid, sub in subs.items() if sub in duplicated or sub in blind_repeats}
        ),
    }
    return Report(rows, details, facts)


def _ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def render_markdown(report: Report, title: str | None = None) -> str:
    lines = [f"### {title}", ""] if title else []
    lines += ["| | value | invariant |", "|---|---:|:---:|"]
    for row in report.rows:
        mark = ("ok" if row.ok else "**FAILED**") if row.must_be_zero else ""
        lines.append(f"| {row.name} | {row.value} | {'must be 0: ' + mark if mark else ''} |")
    lines.append("")
    lines.append(f"All invariants hold: {'yes' if report.ok else '**no**'}.")
    return "\n".join(lines) + "\n"
