"""Operator commands: ``status``, ``report``, ``retry``, ``proceed``, ``park`` and ``journal
export``.

Each is a :class:`Command` with ``configure_parser(parser)`` and ``run(args) -> int``; the CLI adds
them as subcommands. All take ``-c/--config`` (env ``CANCEL_PROCESSOR_CONFIG``) and open the journal
that configuration names.

Exit statuses: 0 done; 1 refused (``retry`` of a final request or of one waiting for a person, an
unknown id) or the journal is unreachable; 2 the journal is missing or its schema is old (a
:class:`ConfigError` is left to the CLI, which answers 2 as for every command). Read-only
commands never create a journal: an SQLite file that does not exist is an error, not an empty
journal.

Records stream from the journal in pages; ``status`` and ``journal export`` read every record once
(``export`` also each record's transitions), ``report`` only those updated in its time range.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table
from rich.text import Text

from processor.config.schema import Config, configured_secrets, load_config
from processor.engine.guard import latched
from processor.exits import EXIT_CONFIG, EXIT_OK, EXIT_UNFINISHED, for_journal
from processor.journal import open_existing, redact_url
from processor.journal.base import (
    FINAL_STATES,
    Journal,
    JournalError,
    RequestRecord,
    SchemaError,
    State,
)
from processor.model import parse_datetime
from processor.observe import mask, register_secret
from processor.ops.actions import (
    ActionRefused,
    park_request,
    proceed_request,
    resend_from,
    retry_request,
)
from processor.ops.listing import Filters, newest, streamed, why_waiting
from processor.ops.output import (
    FORMATS,
    ExportLineError,
    age,
    attention_table,
    export_line,
    read_export_line,
    write_report,
)

__all__ = [
    "Command",
    "STATUS",
    "REPORT",
    "RETRY",
    "PROCEED",
    "PARK",
    "EXPORT",
    "COMMANDS",
    "JOURNAL_COMMANDS",
    "actor",
    "existing_journal",
    "journal_errors",
]

# A refused action (retry, park, export) is "work left unfinished" in the one table.
EXIT_REFUSED = EXIT_UNFINISHED
_OPENING: list[str] = []  # the journal URL being opened, for the exit status of its failure


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure_parser: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- shared ---------------------------------------------------------------------------------------


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("CANCEL_PROCESSOR_CONFIG"),
        help="YAML configuration file (env CANCEL_PROCESSOR_CONFIG); without it, built-in defaults "
        "and CANCEL_PROCESSOR_* variables",
    )


def _console() -> Console:
    # Looked up at call time (tests capture sys.stdout); wide plain output when piped.
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)


def _fail(message: str, status: int) -> int:
    print(f"cancel-processor: {mask(message)}", file=sys.stderr)
    return status


@contextlib.contextmanager
def existing_journal(config: Config) -> Iterator[Journal]:
    """The configured journal for an operator command (never created; see ``open_existing``)."""
    # What the journal holds was masked when written; masking again on the way out covers a
    # secret that reached it some other way (a vendor echoing a token into an error text).
    for secret in configured_secrets(config):
        register_secret(secret)
    register_secret(urlsplit(config.journal.url).password)
    _OPENING[:] = [config.journal.url]  # only the last: a command opens one journal
    with open_existing(config.journal.url, config.source) as journal:
        yield journal


def journal_errors(
    run: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Journal trouble as a message and an exit status, never a traceback."""

    @functools.wraps(run)
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except SchemaError as exc:
            return _fail(str(exc), EXIT_CONFIG)
        except JournalError as exc:
            # PostgreSQL down is 3, as for `run`; a SQLite file that cannot be used is 2
            return _fail(f"journal error: {exc}", for_journal(_OPENING[-1] if _OPENING else None))

    return guarded


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a container user without a passwd entry
        return "cli"


# -- status ---------------------------------------------------------------------------------------


def _status_parser(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument(
        "--limit",
        type=_positive,
        default=50,
        metavar="N",
        help="at most N parked and N waiting requests listed (default 50)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _oldest_unfinished(journal: Journal) -> RequestRecord | None:
    oldest: tuple[datetime, RequestRecord] | None = None
    with streamed(journal.records(states=[s for s in State if s not in FINAL_STATES])) as records:
        for record in records:
            if record.created_at is not None and (oldest is None or record.created_at < oldest[0]):
                oldest = (record.created_at, record)
    return None if oldest is None else oldest[1]


@journal_errors
def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with existing_journal(config) as journal:
        counts = journal.counts()
        oldest = _oldest_unfinished(journal)
        lists = {
            state: [
                (r, why_waiting(journal, r))
                for r in newest(journal, Filters(state=state), limit=args.limit).records
            ]
            for state in (State.PARKED, State.WAITING_HUMAN, State.HELD)
        }
    console = _console()
    console.print(Text.assemble("Journal ", (redact_url(config.journal.url), "bold")))
    try:
        for adapter, latch in sorted(latched(config).items()):
            console.print(
                Text.assemble(
                    ("Latched: ", "bold red"),
                    f"adapter {adapter} makes no vendor call since {latch.get('since')}: ",
                    str(latch.get("reason")),
                )
            )
    except OSError as exc:  # an unreadable latch file is said, not taken for "not latched"
        console.print(Text(f"Latches unknown: {exc}", style="bold red"))
    table = Table(header_style="bold")
    table.add_column("state")
    table.add_column("requests", justify="right")
    for state in State:
        if counts.get(state):
            table.add_row(state.value, str(counts[state]))
    table.add_row("total", str(sum(counts.values())), style="bold")
    console.print(table)
    if oldest is not None and oldest.created_at is not None:
        waited = (datetime.now(UTC) - oldest.created_at).total_seconds()
        console.print(
            Text(
                f"Oldest unfinished request: {oldest.request_id} ({oldest.state.value}), "
                f"created {age(waited)} ago"
            )
        )
    else:
        console.print("No unfinished request.")
    for state, title in (
        (State.PARKED, "Parked"),
        (State.WAITING_HUMAN, "Waiting for a person"),
        (State.HELD, "Held back from Connect (refused or already gone; guard.hold)"),
    ):
        total = counts.get(state, 0)
        if total:
            more = f", newest {len(lists[state])} shown" if total > len(lists[state]) else ""
            console.print(attention_table(f"{title} ({total}{more})", lists[state]))
    return EXIT_OK


STATUS = Command(
    "status",
    "counts by state, the oldest unfinished request, parked requests and why",
    _status_parser,
    _status,
)


# -- report ---------------------------------------------------------------------------------------


def _since(text: str) -> datetime:
    value = parse_datetime(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 date or time, got {text!r}")
    return value


def _until(text: str) -> datetime:
    # A bare date means "through that day": until its end, not its first instant.
    value = _since(text)
    return value + timedelta(days=1) if len(text.strip()) == 10 else value


def _report_parser(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only requests updated at or after WHEN (ISO 8601 date or time; UTC "
        "unless an offset is given)",
    )
    parser.add_argument(
        "--until",
        type=_until,
        metavar="WHEN",
        help="only requests updated before WHEN (a bare date includes that whole day)",
    )
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        choices=[s.value for s in State],
        help="only this state (repeatable)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="table", help="table (default), csv or json"
    )


@journal_errors
def _report(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.since and args.until and args.until <= args.since:
        return _fail("--until must be later than --since", EXIT_CONFIG)
    states = [State(s) for s in args.state] or None
    with existing_journal(config) as journal:
        selected = journal.records(
            states=states, updated_since=args.since, updated_until=args.until
        )
        with streamed(selected) as records:
            write_report(
                records, args.format, sys.stdout, _console() if args.format == "table" else None
            )
    return EXIT_OK


REPORT = Command(
    "report",
    "per-request outcomes over a time range, as a table, CSV or JSON",
    _report_parser,
    _report,
)


# -- retry and park --------------------------------------------------------------------------------


def _retry_parser(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("request_id", metavar="REQUEST_ID", help="the cancel request (PR-...)")
    parser.add_argument("--note", help="why, recorded in the request's timeline")
    parser.add_argument(
        "--force",
        action="store_true",
        help="also from a state in which the vendor may have acted (terminating, "
        "terminated, ...): check the vendor first",
    )


@journal_errors
def _retry(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    horizons = {name: spec.apply_horizon for name, spec in config.adapters.items()}
    with existing_journal(config) as journal:
        try:
            record = journal.get(args.request_id)
            not_before = (
                resend_from(record, config.journal.lease_seconds, horizons) if record else None
            )
            done = retry_request(
                journal,
                args.request_id,
                actor=actor(),
                note=args.note,
                force=args.force,
                not_before=not_before,
            )
        except ActionRefused as refused:
            return _fail(str(refused), EXIT_REFUSED)
    print(
        f"{done.request_id}: {done.before.value} -> {done.after.state.value}; "
        "the processor takes it up on its next pass"
    )
    return EXIT_OK


RETRY = Command(
    "retry",
    "send a parked request back to new (a request waiting for a person: proceed)",
    _retry_parser,
    _retry,
)


def _proceed_parser(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("request_id", metavar="REQUEST_ID", help="the cancel request (PR-...)")
    parser.add_argument("--note", help="who decided and why, recorded in the request's timeline")


@journal_errors
def _proceed(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with existing_journal(config) as journal:
        try:
            done = proceed_request(journal, args.request_id, actor=actor(), note=args.note)
        except ActionRefused as refused:
            return _fail(str(refused), EXIT_REFUSED)
    print(
        f"{done.request_id}: {done.before.value} -> {done.after.state.value}; the processor "
        "sends it to the vendor on its next pass"
    )
    return EXIT_OK


PROCEED = Command(
    "proceed",
    "send a request routed to a person (waiting_human) on to the vendor: the person's go-ahead",
    _proceed_parser,
    _proceed,
)


def _park_parser(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("request_id", metavar="REQUEST_ID", help="the cancel request (PR-...)")
    parser.add_argument(
        "--reason",
        required=True,
        help="why a person must look at it (shown by status and on the page)",
    )


@journal_errors
def _park(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with existing_journal(config) as journal:
        try:
            done = park_request(journal, args.request_id, reason=args.reason, actor=actor())
        except ActionRefused as refused:
            return _fail(str(refused), EXIT_REFUSED)
    if not done.changed:
        print(f"{done.request_id} is already parked; nothing changed")
    elif done.inserted:
        print(
            f"{done.request_id}: not seen yet -> parked; the processor will leave it alone "
            "(no vendor call) until a retry"
        )
    else:
        print(
            f"{done.request_id}: {done.before.value} -> parked; the processor leaves it alone "
            "until a retry"
        )
    return EXIT_OK


PARK = Command(
    "park", "set a request aside for a person; the processor leaves it alone", _park_parser, _park
)


# -- journal export --------------------------------------------------------------------------------


def _export_parser(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here (replaced only once the export is complete); default: standard output",
    )


@journal_errors
def _export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with existing_journal(config) as journal:
        if not args.output:
            _export_to(journal, sys.stdout)
            return EXIT_OK
        target = Path(args.output)
        # A temporary file beside the target, renamed at the end: a failed export leaves no half
        # file.
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        except OSError as exc:
            return _fail(f"cannot write beside {target}: {exc.strerror}", EXIT_REFUSED)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                n = _export_to(journal, out)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    print(f"exported {n} request(s) to {target}", file=sys.stderr)
    return EXIT_OK


def _export_to(journal: Journal, out: IO[str]) -> int:
    n = 0
    with streamed(journal.records()) as records:
        for record in records:
            out.write(export_line(record, journal.transitions(record.request_id)) + "\n")
            n += 1
    return n


EXPORT = Command(
    "export", "every record with its transitions, as JSON lines", _export_parser, _export
)

# -- journal import --------------------------------------------------------------------------------


def _import_parser(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("file", metavar="FILE", help="an export (`journal export`); - for stdin")


@journal_errors
def _import(args: argparse.Namespace) -> int:
    """Restore an export: rows the journal lacks are added, older ones replaced; a row the
    journal holds in a newer version is never overwritten (nor one leased now): exit 1 then."""
    config = load_config(args.config)
    counts: Counter[str] = Counter()
    kept: list[str] = []
    try:
        source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror}", EXIT_CONFIG)
    with source, existing_journal(config) as journal:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                record, transitions = read_export_line(line)
            except ExportLineError as exc:
                print(f"{args.file}:{number}: skipped: {exc}", file=sys.stderr)
                counts["unreadable"] += 1
                continue
            result = journal.restore(record, transitions)
            counts[result] += 1
            if result in ("kept", "busy") and len(kept) < 10:
                kept.append(f"{record.request_id} ({result})")
    print(
        f"imported {counts['inserted']} new and {counts['replaced']} older row(s); "
        f"{counts['unchanged']} already the same; kept {counts['kept']} the journal holds in a "
        f"newer version and {counts['busy']} leased now; {counts['unreadable']} unreadable line(s)"
    )
    if kept:
        print("not overwritten: " + ", ".join(kept), file=sys.stderr)
    refused = counts["kept"] + counts["busy"] + counts["unreadable"]
    return EXIT_UNFINISHED if refused else EXIT_OK


IMPORT = Command(
    "import",
    "restore an export; rows the journal holds in a newer version are never overwritten",
    _import_parser,
    _import,
)

COMMANDS = (STATUS, REPORT, RETRY, PROCEED, PARK)  # cancel-processor <name>
JOURNAL_COMMANDS = (EXPORT, IMPORT)  # cancel-processor journal <name>
