"""``cancel-processor reconcile -c CONFIG --since DATE``: does the vendor agree with what we
finished?

For each request the journal approved, refused or parked in the range (by its last change), the
adapter's status read says where the subscription is now, and these are divergences:

- ``approved_but_active``: approved on Connect (the customer was told it ended), but the vendor has
  it active or suspended: re-activated behind our back, or never ended (a mis-read "gone");
- ``refused_but_terminated``: the customer was told no, but the vendor terminated (or purged) it;
- ``parked_but_terminated``: waiting for a person who should know that the vendor did end it.

Requests on an adapter without a status read (``noop``, a vendor without one) are skipped and
counted. Reads run ``reconcile.concurrency`` at a time and at most ``reconcile.rate`` per second, so
a reconciliation never becomes a load test of the vendor. Output: ``table`` (default), ``csv``,
``json``. Exit 0 no divergence, 1 any divergence, 3 none found but some reads failed (say which),
2 configuration or journal problems.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from processor.adapters.base import SubscriptionStatus, VendorAdapter, VendorCall, has_status_read
from processor.config.schema import Config, ReconcileConfig, load_config
from processor.engine.base import stub_request
from processor.engine.rowdata import RowData
from processor.exits import EXIT_CONFIG, for_journal
from processor.journal.base import Journal, JournalError, RequestRecord, SchemaError, State
from processor.observe import mask

__all__ = ["KINDS", "Divergence", "Reconciliation", "configure_parser", "reconcile", "run"]

S = SubscriptionStatus
STATES = (State.APPROVED, State.FAILED, State.PARKED)
_DIVERGES: dict[State, tuple[frozenset[SubscriptionStatus], str]] = {
    State.APPROVED: (frozenset({S.ACTIVE, S.SUSPENDED}), "approved_but_active"),
    State.FAILED: (frozenset({S.TERMINATED, S.PURGED}), "refused_but_terminated"),
    State.PARKED: (frozenset({S.TERMINATED, S.PURGED}), "parked_but_terminated"),
}
KINDS = tuple(kind for _, kind in _DIVERGES.values())
FIELDS = (
    "divergence",
    "request_id",
    "journal_state",
    "vendor_status",
    "subscription_id",
    "adapter",
    "updated_at",
    "detail",
)


@dataclass(frozen=True, slots=True)
class Divergence:
    divergence: str  # a kind above, or "unreadable"
    request_id: str
    journal_state: str
    vendor_status: str
    subscription_id: str
    adapter: str
    updated_at: str
    detail: str = ""


@dataclass
class Reconciliation:
    checked: int = 0
    skipped: int = 0  # no status read on the adapter, or no subscription id
    divergences: list[Divergence] = field(default_factory=list)
    unreadable: list[Divergence] = field(default_factory=list)
    interrupted: bool = False  # stopped before every read was made

    @property
    def status(self) -> int:
        return 1 if self.divergences else 3 if self.unreadable else 0


class _Pace:
    """At most ``rate`` calls per second across threads: each call takes the next free slot."""

    def __init__(self, rate: float) -> None:
        self._gap, self._next, self._lock = 1.0 / rate, 0.0, threading.Lock()

    def wait(self, stop: threading.Event | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._gap
        if slot > now:
            if stop is None:
                time.sleep(slot - now)
            else:
                stop.wait(slot - now)  # a shutdown ends the wait at once


def reconcile(
    config: Config,
    journal: Journal,
    adapters: Mapping[str, VendorAdapter],
    *,
    since: datetime,
    until: datetime | None = None,
    settings: ReconcileConfig | None = None,
    stop: threading.Event | None = None,
) -> Reconciliation:
    """Read the vendor's status of every finished request in the range; see the module docstring.

    Once ``stop`` is set, no further read starts (reads in flight end by the adapter's own timeout)
    and the result is partial: :attr:`Reconciliation.interrupted` says so."""
    settings = settings or config.reconcile
    result = Reconciliation()
    todo: list[tuple[RequestRecord, str, VendorAdapter]] = []
    for record in journal.records(states=STATES, updated_since=since, updated_until=until):
        name = str(
            RowData.of(record).adapter
            or config.adapter_for(record.product_id or "", record.environment or "")
            or ""
        )
        adapter = adapters.get(name)
        if adapter is None or not has_status_read(adapter) or not record.subscription_id:
            result.skipped += 1
            continue
        todo.append((record, name, adapter))
    pace, lock = _Pace(settings.rate), threading.Lock()

    def check(item: tuple[RequestRecord, str, VendorAdapter]) -> None:
        record, name, adapter = item
        if stop is not None:
            pace.wait(stop)
            if stop.is_set():
                result.interrupted = True
                return
        else:
            pace.wait()
        call = VendorCall(
            request=stub_request(record.request_id, record),
            subscription_id=record.subscription_id or "",
            idempotency_key=f"{record.idempotency_key}:reconcile",
        )
        try:
            status: Any = adapter.status(call)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a custom adapter may raise anything
            status = f"raised {type(exc).__name__}: {exc}"
        row = _row(record, name, status)
        with lock:
            result.checked += 1
            if row is not None:
                (
                    result.unreadable if row.divergence == "unreadable" else result.divergences
                ).append(row)

    with ThreadPoolExecutor(
        max_workers=settings.concurrency, thread_name_prefix="reconcile"
    ) as pool:
        list(pool.map(check, todo))
    result.divergences.sort(key=lambda d: d.request_id)
    result.unreadable.sort(key=lambda d: d.request_id)
    return result


def _row(record: RequestRecord, adapter: str, status: Any) -> Divergence | None:
    when = record.updated_at.isoformat().replace("+00:00", "Z") if record.updated_at else ""
    base = dict(
        request_id=record.request_id,
        journal_state=record.state.value,
        subscription_id=record.subscription_id or "",
        adapter=adapter,
        updated_at=when,
    )
    if not isinstance(status, SubscriptionStatus) or status is S.UNKNOWN:
        detail = getattr(status, "detail", None) or str(getattr(status, "value", status))
        return Divergence("unreadable", vendor_status="unknown", detail=mask(detail)[:300], **base)
    statuses, kind = _DIVERGES[record.state]
    if status not in statuses:
        return None
    if record.state is State.APPROVED:
        said = f"approved after the vendor answered {record.outcome or 'nothing recorded'}"
        purge = RowData.of(record).purge
        if purge:
            said += f"; purge {purge}"
    else:
        said = record.reason or record.last_error or record.outcome or ""
    return Divergence(kind, vendor_status=status.value, detail=mask(said)[:300], **base)


# -- the command -----------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from processor.ops.commands import _since, _until  # the same dates as report's

    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("CANCEL_PROCESSOR_CONFIG"),
        help="YAML configuration file (env CANCEL_PROCESSOR_CONFIG)",
    )
    parser.add_argument(
        "--since",
        type=_since,
        required=True,
        metavar="WHEN",
        help="requests last changed at or after WHEN (ISO 8601 date or time)",
    )
    parser.add_argument(
        "--until",
        type=_until,
        metavar="WHEN",
        help="and before WHEN (a bare date includes that whole day; default: now)",
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument(
        "--concurrency", type=int, help="status reads at a time (reconcile.concurrency)"
    )
    parser.add_argument(
        "--rate", type=float, help="status reads per second at most (reconcile.rate)"
    )


def run(args: argparse.Namespace) -> int:
    from processor.daemon.runtime import load_adapters
    from processor.ops.commands import existing_journal

    config = load_config(args.config)
    overrides = {k: v for k, v in (("concurrency", args.concurrency), ("rate", args.rate)) if v}
    settings = ReconcileConfig.model_validate({**config.reconcile.model_dump(), **overrides})
    adapters = load_adapters(config)
    try:
        with existing_journal(config) as journal:
            result = reconcile(
                config, journal, adapters, since=args.since, until=args.until, settings=settings
            )
    except (
        JournalError,
        SchemaError,
        OSError,
    ) as exc:  # a missing or unreachable journal: one line, the same status as for `run`
        print(f"cancel-processor: reconcile: {mask(str(exc))}", file=sys.stderr)
        if isinstance(exc, JournalError) and not isinstance(exc, SchemaError):
            return for_journal(config.journal.url)
        return EXIT_CONFIG
    finally:
        for adapter in adapters.values():
            close = getattr(adapter, "close", None)
            if callable(close):
                close()
    write(result, args.format, sys.stdout)
    return result.status


def write(result: Reconciliation, fmt: str, out: IO[str]) -> None:
    rows = result.divergences + result.unreadable
    if fmt == "json":
        json.dump(
            {
                "checked": result.checked,
                "skipped": result.skipped,
                "status": result.status,
                "divergences": [asdict(d) for d in result.divergences],
                "unreadable": [asdict(d) for d in result.unreadable],
            },
            out,
            indent=2,
        )
        out.write("\n")
        return
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(d) for d in rows)
        return
    _table(rows, out)
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    out.write(
        f"{now}: {result.checked} checked, {len(result.divergences)} divergent, "
        f"{len(result.unreadable)} unreadable, {result.skipped} skipped (no status read)\n"
    )


def _table(rows: Iterable[Divergence], out: IO[str]) -> None:
    listed = [asdict(d) for d in rows]
    if not listed:
        return
    columns = FIELDS[:-2] + ("detail",)
    widths = {c: max(len(c), *(len(str(r[c])) for r in listed)) for c in columns}
    out.write("  ".join(c.ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in listed:
        out.write("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip() + "\n")
