"""``cancel-processor waiting``: the cancellations waiting for a person, and (``--timers``) for a
date.

A policy's ``route_to`` hands requests to a person (a customer success manager, say): they are
assigned on Connect, noted once, and left pending. This command lists them from the journal, oldest
hand-over first, with who has them and under which policy. The person either acts on Connect
(approve or fail: the processor then closes its row) or sends the request back to the processor
with ``cancel-processor proceed REQUEST_ID``, which carries it out under its policy, routing
skipped (``retry`` refuses a routed request: sending it to the vendor is this explicit decision).

Answers the hold window keeps from Connect (a refusal or "already gone", state ``held``) are
listed too: until the end of their hold, or for a person while their adapter is latched.

``--timers`` adds what waits for a date: requests scheduled on Connect (until their effective date),
suspended for a grace period (until their termination), and approved ones whose data is purged
later.

Read-only: it never creates a journal (a missing SQLite file is an error, exit status 2) and never
calls Connect. ``--format json`` prints one JSON object per line, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.table import Table

from processor.config.schema import Config, load_config
from processor.engine.guard import latched
from processor.engine.rowdata import Routed, RowData
from processor.journal.base import Journal, JournalError, RequestRecord, SchemaError, State
from processor.ops.commands import existing_journal
from processor.policy.timing import from_iso, human

__all__ = ["configure_parser", "run", "Waiting", "waiting_rows"]

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Waiting:
    request_id: str
    product_id: str | None
    subscription_id: str | None
    waits_for: str  # a person's address, or what the date is for
    since: datetime | None
    until: datetime | None
    policy: str | None

    def as_json(self) -> dict[str, str | None]:
        return {
            "request_id": self.request_id,
            "product_id": self.product_id,
            "subscription_id": self.subscription_id,
            "waits_for": self.waits_for,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "policy": self.policy,
        }


def _person(record: RequestRecord) -> Waiting:
    data = RowData.of(record)
    routed = data.routed or Routed("", "", None)
    return Waiting(
        record.request_id,
        record.product_id,
        record.subscription_id,
        routed.to or "a person",
        from_iso(routed.at) or record.updated_at,
        None,
        routed.policy or data.policy,
    )


def _timer(record: RequestRecord) -> Waiting | None:
    data = RowData.of(record)
    dates, policy = data.dates, data.policy
    if record.state is State.SCHEDULED and dates is not None:
        what, until = "effective date (scheduled on Connect)", dates.effective_at
    elif record.state is State.SUSPENDED and dates is not None:
        what, until = "end of grace: terminate", dates.terminate_at
    elif record.state is State.APPROVED and record.next_attempt_at is not None:
        what, until = "end of retention: purge", record.next_attempt_at
    else:
        return None
    return Waiting(
        record.request_id,
        record.product_id,
        record.subscription_id,
        what,
        record.updated_at,
        until,
        policy,
    )


def _held(record: RequestRecord, latched: Collection[str]) -> Waiting:
    data = RowData.of(record)
    held = data.held
    if held is None:
        what, since, until = "a person: the held answer cannot be read", record.updated_at, None
    elif held.adapter in latched and held.choice is None:
        what = (
            f"a person: {held.kind} held, {held.adapter} latched; resume {held.adapter} "
            f"--release-held or --retry-held"
        )
        since, until = held.at, None
    else:
        what, since, until = f"end of hold: {held.kind} ({held.adapter})", held.at, held.until
    return Waiting(
        record.request_id,
        record.product_id,
        record.subscription_id,
        what,
        since,
        until,
        data.policy,
    )


def waiting_rows(
    journal: Journal, *, timers: bool = False, limit: int = 200, latched: Collection[str] = ()
) -> list[Waiting]:
    """People first (oldest hand-over first), then the answers held back from Connect (the hold
    window; ``latched``: the adapters latched now, whose held answers wait for a person), then
    dates (soonest first), ``limit`` of each."""
    people = sorted(
        (_person(r) for r in journal.records(states=[State.WAITING_HUMAN])),
        key=lambda w: (w.since is None, w.since or datetime.min, w.request_id),
    )[:limit]
    people += sorted(
        (_held(r, latched) for r in journal.records(states=[State.HELD])),
        key=lambda w: (w.since is None, w.since or datetime.min, w.request_id),
    )[:limit]
    if not timers:
        return people
    dated = [
        w
        for r in journal.records(states=[State.SCHEDULED, State.SUSPENDED, State.APPROVED])
        if (w := _timer(r)) is not None
    ]
    dated.sort(key=lambda w: (w.until is None, w.until or datetime.min, w.request_id))
    return people + dated[:limit]


def _latched(config: Config) -> set[str]:
    try:
        return set(latched(config))
    except OSError:  # an unreadable latch file: every held answer shows as waiting for a person
        return set(config.adapters)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("CANCEL_PROCESSOR_CONFIG"),
        help="YAML configuration file (env CANCEL_PROCESSOR_CONFIG); without it, built-in defaults "
        "and CANCEL_PROCESSOR_* variables",
    )
    parser.add_argument(
        "--timers",
        action="store_true",
        help="also what waits for a date: scheduled, suspended for grace, purge pending",
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="table (default) or JSON lines"
    )
    parser.add_argument(
        "--limit", type=int, default=200, metavar="N", help="at most N of each kind (default 200)"
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        with existing_journal(config) as journal:
            rows = waiting_rows(
                journal, timers=args.timers, limit=max(args.limit, 1), latched=_latched(config)
            )
    except SchemaError as exc:
        print(f"cancel-processor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except JournalError as exc:
        print(f"cancel-processor: journal error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.format == "json":
        for row in rows:
            print(json.dumps(row.as_json(), sort_keys=True))
        return EXIT_OK
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)
    if not rows:
        console.print("Nothing waits for a person" + (" or a date." if args.timers else "."))
        return EXIT_OK
    table = Table(title="Waiting", header_style="bold")
    for column in ("request", "product", "subscription", "waits for", "since", "until", "policy"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.request_id,
            row.product_id or "-",
            row.subscription_id or "-",
            row.waits_for,
            human(row.since) if row.since else "-",
            human(row.until) if row.until else "-",
            row.policy or "-",
        )
    console.print(table)
    return EXIT_OK
