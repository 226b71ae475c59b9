"""How the operator commands write: records as JSON-safe rows, the report in three formats, tables.

Every text value from the journal passes through :func:`processor.observe.mask` on its way out, so
a secret that slipped into an error text never reaches a terminal, a CSV file or an export. Times
are ISO 8601 in UTC. Writers stream: a report over a million records holds one chunk of rows (the
table format) or one row (CSV, JSON) at a time.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from processor.journal.base import RequestRecord, State, Transition
from processor.observe import mask

__all__ = [
    "REPORT_FIELDS",
    "FORMATS",
    "record_row",
    "export_line",
    "read_export_line",
    "ExportLineError",
    "write_report",
    "attention_table",
    "age",
]

REPORT_FIELDS = (
    "request_id",
    "state",
    "outcome",
    "attempts",
    "product_id",
    "subscription_id",
    "marketplace_id",
    "environment",
    "reason",
    "last_error",
    "created_at",
    "updated_at",
)
FORMATS = ("table", "csv", "json")
_CHUNK = 200  # table rows rendered at a time: fixed column widths keep the chunks aligned


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, State):
        return value.value
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    return value


def record_row(record: RequestRecord, fields: Sequence[str] = REPORT_FIELDS) -> dict[str, Any]:
    return {name: _value(getattr(record, name)) for name in fields}


def export_line(record: RequestRecord, transitions: Sequence[Transition]) -> str:
    """One JSON line: every field of the record (lease and fence included) and its transitions."""
    row = {name: _value(getattr(record, name)) for name in RequestRecord.__dataclass_fields__}
    row["data"] = _value(dict(record.data))
    row["transitions"] = [
        {
            "at": _value(t.at),
            "from_state": _value(t.from_state),
            "to_state": _value(t.to_state),
            "fence": t.fence,
            "owner": _value(t.owner),
            "detail": _value(t.detail),
        }
        for t in transitions
    ]
    return json.dumps(row, ensure_ascii=False, sort_keys=False, default=str)


class ExportLineError(ValueError):
    """A line of a journal export that cannot be read back."""


def read_export_line(line: str) -> tuple[RequestRecord, list[Transition]]:
    """The record and transitions of one :func:`export_line` (``journal import``); raises
    :class:`ExportLineError` saying what is wrong."""
    from processor.model import parse_datetime

    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ExportLineError(f"not JSON: {exc}") from None
    if not isinstance(row, dict):
        raise ExportLineError("not a JSON object")

    def text(name: str, required: bool = False) -> str | None:
        value = row.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value):
            raise ExportLineError(f"{name} must be a non-empty string")
        return value

    def when(value: Any, name: str) -> datetime | None:
        if value is None:
            return None
        parsed = parse_datetime(value)
        if parsed is None:
            raise ExportLineError(f"{name} is not a date: {str(value)[:40]!r}")
        return parsed

    def number(name: str) -> int:
        value = row.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ExportLineError(f"{name} must be a whole number >= 0")
        return value

    try:
        state = State(row.get("state"))
    except ValueError:
        raise ExportLineError(f"unknown state {str(row.get('state'))[:40]!r}") from None
    data = row.get("data") or {}
    if not isinstance(data, dict):
        raise ExportLineError("data must be a JSON object")
    request_id = text("request_id", True)
    assert request_id is not None
    record = RequestRecord(
        request_id=request_id,
        state=state,
        idempotency_key=text("idempotency_key", True) or "",
        subscription_id=text("subscription_id"),
        asset_id=text("asset_id"),
        product_id=text("product_id"),
        marketplace_id=text("marketplace_id"),
        environment=text("environment"),
        customer_id=text("customer_id"),
        attempts=number("attempts"),
        fence=number("fence"),
        next_attempt_at=when(row.get("next_attempt_at"), "next_attempt_at"),
        outcome=text("outcome"),
        reason=text("reason"),
        last_error=text("last_error"),
        noted=text("noted"),
        data=data,
        created_at=when(row.get("created_at"), "created_at"),
        updated_at=when(row.get("updated_at"), "updated_at"),
    )
    moves = row.get("transitions") or []
    if not isinstance(moves, list):
        raise ExportLineError("transitions must be a list")
    transitions = []
    for move in moves:
        if not isinstance(move, dict):
            raise ExportLineError("a transition must be a JSON object")
        try:
            source = move.get("from_state")
            transitions.append(
                Transition(
                    request_id=request_id,
                    from_state=None if source is None else State(source),
                    to_state=State(move.get("to_state")),
                    fence=int(move.get("fence") or 0),
                    at=_required_time(when(move.get("at"), "a transition's at")),
                    owner=move.get("owner") if isinstance(move.get("owner"), str) else None,
                    detail=move.get("detail") if isinstance(move.get("detail"), str) else None,
                )
            )
        except (TypeError, ValueError) as exc:
            raise ExportLineError(f"a transition cannot be read: {exc}") from None
    if record.updated_at is None:
        raise ExportLineError("updated_at is missing: which version is newer cannot be told")
    return record, transitions


def _required_time(value: datetime | None) -> datetime:
    if value is None:
        raise ExportLineError("a transition has no time (at)")
    return value


def age(seconds: float) -> str:
    """``3d 4h``, ``2h 05m``, ``7m 30s``, ``12s``."""
    s = max(int(seconds), 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {s:02d}s" if minutes else f"{s}s"


def _cells(*values: Any) -> list[Text]:
    # Text, not str: rich would read "[...]" in an error message as markup (and fail on "[/]").
    return [Text("" if v is None else str(v)) for v in values]


def _report_table(show_header: bool) -> Table:
    table = Table(show_header=show_header, box=None, pad_edge=False, header_style="bold")
    for name, width in (
        ("request", 22),
        ("state", 13),
        ("outcome", 12),
        ("att.", 4),
        ("product", 20),
        ("subscription", 22),
        ("updated", 20),
    ):
        table.add_column(
            name, width=width, no_wrap=True, justify="right" if name == "att." else "left"
        )
    table.add_column("reason / last error", overflow="fold", min_width=20)
    return table


def write_report(
    records: Iterable[RequestRecord], fmt: str, out: IO[str], console: Console | None = None
) -> Counter[str]:
    """Write ``records`` as ``fmt`` to ``out``; returns the count of records by state."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")
    by_state: Counter[str] = Counter()
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=REPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            by_state[record.state.value] += 1
            writer.writerow(record_row(record))
    elif fmt == "json":
        # One JSON array, written row by row: valid JSON without holding the report in memory.
        out.write("[")
        for record in records:
            out.write(",\n " if by_state else "\n ")
            by_state[record.state.value] += 1
            out.write(json.dumps(record_row(record), ensure_ascii=False))
        out.write("\n]\n" if by_state else "]\n")
    else:
        console = console or Console(file=out, width=160, highlight=False)
        table = _report_table(show_header=True)
        for record in records:
            by_state[record.state.value] += 1
            row = record_row(record)
            table.add_row(
                *_cells(
                    row["request_id"],
                    row["state"],
                    row["outcome"],
                    row["attempts"],
                    row["product_id"],
                    row["subscription_id"],
                    row["updated_at"],
                    row["reason"] or row["last_error"],
                )
            )
            if table.row_count >= _CHUNK:
                console.print(table)
                table = _report_table(show_header=False)
        if table.row_count or not by_state:
            console.print(table)
        total = sum(by_state.values())
        summary = ", ".join(f"{state} {n}" for state, n in sorted(by_state.items()))
        console.print(f"{total} request(s)" + (f": {summary}" if summary else ""))
    return by_state


def attention_table(title: str, rows: Iterable[tuple[RequestRecord, str]]) -> Table:
    """Parked or waiting requests with why, newest first."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in ("request", "product", "subscription", "updated"):
        table.add_column(name, no_wrap=True)
    table.add_column("why", overflow="fold")
    for record, why in rows:
        row = record_row(record)
        table.add_row(
            *_cells(
                row["request_id"],
                row["product_id"],
                row["subscription_id"],
                row["updated_at"],
                mask(why),
            )
        )
    return table
