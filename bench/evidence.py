"""What a soak keeps when an invariant fails: enough to tell what happened without running it again.

Into ``<workdir>/evidence/`` (the daemons' logs are in the work directory already, one file per
daemon across its restarts, and the work directory is kept):

- ``vendor-ledger.json``: the mock vendor's whole ledger (raw calls and effects);
- ``marketplace-ledger.json``: the mock marketplace's whole ledger (every status change, note, ...);
- ``offenders.json``: for each offending request, its journal row, its transitions, its Connect
  status changes and its vendor calls and effects;

and it prints each offending request's timeline, merged from the three sources in time order, so
that a duplicate termination shows which process sent which call after which takeover.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench.checker import Report, subscription_of
from cancel_sandbox.local import Sandbox
from processor.journal import open_journal
from processor.ops.private_files import write_private

__all__ = ["keep_evidence", "timeline"]

_SHOWN = 20  # offending requests printed with their timelines (all of them go to offenders.json)


def _marketplace_ledger(market_url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    since = 0
    for _ in range(10_000):  # pages of 10,000 entries: bounded far above any soak
        page = requests.get(
            f"{market_url}/admin/ledger", params={"since": since, "limit": 10000}, timeout=60
        ).json()
        if not page["entries"]:
            return entries
        entries += page["entries"]
        since = page["entries"][-1]["seq"]
    raise RuntimeError("the marketplace ledger did not end")


def _plain(value: Any) -> Any:
    """A record or transition as JSON: enums by value, datetimes as ISO text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return getattr(value, "value", value)


def timeline(story: dict[str, Any]) -> list[str]:
    """One offending request's events, in time order: journal transitions, Connect changes,
    vendor."""
    events: list[tuple[str, str]] = []
    for t in story["transitions"]:
        events.append(
            (
                t["at"],
                f"journal  {t['from_state']} -> {t['to_state']} fence {t['fence']} "
                f"by {t['owner']}: {t['detail']}",
            )
        )
    for e in story["connect"]:
        events.append((e["at"], f"connect  {e.get('from')} -> {e['to']}"))
    for c in story["vendor_calls"]:
        replay = " (replayed)" if c.get("replayed") else ""
        answer = f"{c['status_code']}{replay}"
        events.append(
            (c["at"], f"vendor   call {c['action']} -> {answer} key {c['idempotency_key']}")
        )
    for e in story["vendor_effects"]:
        mark = " DUPLICATE" if e.get("duplicate") else ""
        events.append((e["at"], f"vendor   effect {e['action']}{mark} key {e['idempotency_key']}"))
    return [f"  {at}  {what}" for at, what in sorted(events, key=lambda item: _moment(item[0]))]


def _moment(text: str) -> datetime:
    """The three sources write ISO times in slightly different shapes: compare them as times."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def keep_evidence(
    sandbox: Sandbox, journal_url: str, report: Report, workdir: Path, say: Callable[[str], None]
) -> Path:
    """Write the evidence of a failed soak to ``workdir/evidence`` and print the timelines."""
    folder = workdir / "evidence"
    folder.mkdir(parents=True, exist_ok=True)
    vendor = sandbox.vendor_ledger()
    market = _marketplace_ledger(sandbox.marketplace.url)
    # private, and never through a link planted in the work directory (processor.ops.private_files)
    write_private(folder / "vendor-ledger.json", json.dumps(vendor, indent=1))
    write_private(folder / "marketplace-ledger.json", json.dumps(market, indent=1))
    cancels = sandbox.cancel_requests()
    offenders = list(report.details.get("offenders", []))
    stories: dict[str, dict[str, Any]] = {}
    journal = open_journal(journal_url, pool_size=1)
    try:
        for rid in offenders:
            record = journal.get(rid)
            sub = subscription_of(cancels[rid]) if rid in cancels else None
            stories[rid] = {
                "subscription": sub,
                "record": _plain(asdict(record)) if record is not None else None,
                "transitions": [_plain(asdict(t)) for t in journal.transitions(rid)],
                "connect": [
                    e
                    for e in market
                    if e.get("kind") == "request"
                    and e.get("id") == rid
                    and e.get("event") == "status"
                ],
                "vendor_calls": [
                    c for c in vendor["calls"] if sub and c.get("subscription_id") == sub
                ],
                "vendor_effects": [
                    e for e in vendor["effects"] if sub and e.get("subscription_id") == sub
                ],
            }
    finally:
        journal.close()
    write_private(folder / "offenders.json", json.dumps(stories, indent=1))
    say(
        f"evidence kept in {folder} ({len(offenders)} offending requests; daemon logs in {workdir})"
    )
    for rid in offenders[:_SHOWN]:
        say(f"{rid} (subscription {stories[rid]['subscription']}):")
        for line in timeline(stories[rid]):
            say(line)
    return folder
