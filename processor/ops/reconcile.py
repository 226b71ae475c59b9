"""``cancel-processor reconcile -c CONFIG --since DATE``: do the vendor, Connect and the journal
agree on what happened?

Three sources, merged by request id before anything is judged, so that each request (and each
subscription for the last kind) is reported at most once:

- the journal: every request it approved, refused, parked or closed in the range (by last change);
- Connect (through the gateway): every cancel request approved, failed or revoked on Connect in the
  range (by ``updated``), whoever did it, and every one pending now;
- the vendor: the adapter's status read of each subscription those name (one read per
  subscription, however many requests name it).

The kinds, in the order they are tried (the first that fits a request is its one row):

- ``approved_but_active``: the journal approved it on Connect (the customer was told it ended), but
  the vendor has it active or suspended: re-activated behind our back, or never ended;
- ``refused_but_terminated``: the journal failed it (the customer was told no), but the vendor
  terminated (or purged) it;
- ``approved_on_connect_but_active``: approved on Connect by someone else (the journal did not
  approve it: no row, or a row it settled as ``closed``, parked, waiting...), and the vendor still
  has the subscription: nobody ended it;
- ``failed_on_connect_but_terminated``: failed on Connect by someone else, and the vendor has it
  terminated: the customer was told no, and it is gone;
- ``parked_but_terminated``: waiting for a person who should know that the vendor did end it;
- ``pending_not_in_journal``: pending on Connect for longer than ``--pending-grace`` (default 300
  s) and the journal has no row for it: the daemon is not listing it (a selector, a stopped
  daemon), or lags behind;
- ``terminated_but_asset_active``: the vendor has the subscription terminated, and its Connect
  asset is ``active`` (a cancellation revoked or failed after the vendor ended it, and nothing
  above said so): once per subscription.

Requests on an adapter without a status read (``noop``, a vendor without one) are skipped and
counted. Reads run ``reconcile.concurrency`` at a time and at most ``reconcile.rate`` per second, so
a reconciliation never becomes a load test of the vendor. Output: ``table`` (default), ``csv``,
``json``. Exit 0 no divergence, 1 any divergence, 3 none found but some reads failed (the vendor's,
or Connect's: said in the report), 2 configuration or journal problems.
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
from typing import IO, TYPE_CHECKING, Any

from processor.adapters.base import SubscriptionStatus, VendorAdapter, VendorCall, has_status_read
from processor.config.schema import Config, ReconcileConfig, load_config
from processor.engine.base import stub_request
from processor.engine.rowdata import RowData
from processor.exits import EXIT_CONFIG, for_journal
from processor.journal.base import Journal, JournalError, RequestRecord, SchemaError, State
from processor.model import CancelRequest, MalformedRequest, parse_request
from processor.observe import mask

if TYPE_CHECKING:
    from processor.marketplace import ConnectGateway, Selector

__all__ = [
    "KINDS",
    "PENDING_GRACE",
    "Divergence",
    "Reconciliation",
    "configure_parser",
    "reconcile",
    "run",
]

S = SubscriptionStatus
LIVE = frozenset({S.ACTIVE, S.SUSPENDED})
GONE = frozenset({S.TERMINATED, S.PURGED})
STATES = (State.APPROVED, State.FAILED, State.PARKED, State.CLOSED)
KINDS = (
    "approved_but_active",
    "refused_but_terminated",
    "approved_on_connect_but_active",
    "failed_on_connect_but_terminated",
    "parked_but_terminated",
    "pending_not_in_journal",
    "terminated_but_asset_active",
)
# Connect statuses read: the settled ones in the range, and what is pending now.
_LISTED = ("approved", "failed", "revoked", "pending")
# A pending request younger than this is not "unseen" yet: the daemon lists every poll_interval,
# and a backlog takes a while to be taken up. Five minutes covers both with room.
PENDING_GRACE = 300.0
FIELDS = (
    "divergence",
    "request_id",
    "journal_state",
    "vendor_status",
    "subscription_id",
    "adapter",
    "connect_status",
    "updated_at",
    "detail",
)


@dataclass(frozen=True, slots=True)
class Divergence:
    divergence: str  # a kind above, or "unreadable"
    request_id: str
    journal_state: str  # "unseen": the journal has no row
    vendor_status: str  # "not_read": not asked (pending_not_in_journal)
    subscription_id: str
    adapter: str
    updated_at: str
    detail: str = ""
    connect_status: str = "not_read"  # the request's status on Connect, when it was read


@dataclass
class Reconciliation:
    checked: int = 0
    skipped: int = 0  # no status read on the adapter, or no subscription id
    divergences: list[Divergence] = field(default_factory=list)
    unreadable: list[Divergence] = field(default_factory=list)
    interrupted: bool = False  # stopped before every read was made
    connect_listed: int = 0  # cancel requests read from Connect
    connect_error: str | None = None  # why Connect could not be read (whole or in part)

    @property
    def status(self) -> int:
        return 1 if self.divergences else 3 if self.unreadable or self.connect_error else 0


@dataclass
class _Case:
    """One request, as each source sees it."""

    request_id: str
    record: RequestRecord | None = None
    connect: CancelRequest | None = None
    vendor: Any = None  # the status read's answer, once read


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
    marketplace: ConnectGateway | None = None,
    selector: Selector | None = None,
    pending_grace: float = PENDING_GRACE,
) -> Reconciliation:
    """Merge the journal's, Connect's (when ``marketplace`` is given; ``selector``: the configured
    products by default) and the vendor's view of every request in the range, and judge each
    request once; see the module docstring.

    Once ``stop`` is set, no further read starts (reads in flight end by the adapter's own timeout)
    and the result is partial: :attr:`Reconciliation.interrupted` says so."""
    settings = settings or config.reconcile
    result = Reconciliation()
    cases = {
        r.request_id: _Case(r.request_id, record=r)
        for r in journal.records(states=STATES, updated_since=since, updated_until=until)
    }
    if marketplace is not None:
        _read_connect(config, journal, marketplace, selector, cases, result, since, until)
    todo: dict[tuple[str, str], list[_Case]] = {}  # one read per subscription and adapter
    for case in cases.values():
        if not _needs_vendor(case):
            continue
        name = _adapter_of(config, case)
        adapter = adapters.get(name)
        subscription = _subscription(case)
        if adapter is None or not has_status_read(adapter) or not subscription:
            result.skipped += 1
            continue
        todo.setdefault((name, subscription), []).append(case)
    _read_vendor(todo, adapters, settings, stop, result)
    now = datetime.now(UTC)
    asset_reported: set[str] = set()
    for case in sorted(cases.values(), key=lambda c: c.request_id):
        row = _judge(config, case, now, pending_grace, asset_reported)
        if row is not None:
            (result.unreadable if row.divergence == "unreadable" else result.divergences).append(
                row
            )
    return result


def _read_connect(
    config: Config,
    journal: Journal,
    marketplace: ConnectGateway,
    selector: Selector | None,
    cases: dict[str, _Case],
    result: Reconciliation,
    since: datetime,
    until: datetime | None,
) -> None:
    """Connect's side into ``cases``: the settled requests in the range, the pending ones now, and
    the status of each row the journal closed that those did not name."""
    from processor.daemon.runtime import selector_for
    from processor.marketplace import MarketplaceError

    chosen = selector or selector_for(config)
    param = config.processing.subscription_param
    try:
        for status in _LISTED:
            window = {} if status == "pending" else {"updated_since": since, "updated_until": until}
            for payload in marketplace.iter_cancels(chosen, status, **window):
                try:
                    request = parse_request(payload, subscription_param=param)
                except MalformedRequest:
                    continue  # the daemon records it as malformed; nothing here to compare
                result.connect_listed += 1
                case = cases.get(request.id)
                if case is None:
                    record = journal.get(request.id)
                    if status == "pending" and record is not None:
                        continue  # pending, and the journal has it: the daemon is on it
                    case = cases[request.id] = _Case(request.id, record=record)
                case.connect = request
        for case in cases.values():
            if case.connect is None and case.record is not None:
                if case.record.state is State.CLOSED:  # moved on Connect: where to?
                    payload = marketplace.get_request(case.request_id)
                    case.connect = parse_request(payload, subscription_param=param)
    except (MarketplaceError, MalformedRequest) as exc:
        result.connect_error = mask(f"{type(exc).__name__}: {exc}")[:300]


def _needs_vendor(case: _Case) -> bool:
    state = case.record.state if case.record is not None else None
    status = case.connect.status if case.connect is not None else None
    if state in (State.APPROVED, State.FAILED, State.PARKED, State.CLOSED):
        return True
    return status in ("approved", "failed", "revoked")


def _adapter_of(config: Config, case: _Case) -> str:
    record, request = case.record, case.connect
    if record is not None and RowData.of(record).adapter:
        return str(RowData.of(record).adapter)
    product = (record.product_id if record else None) or (request.product_id if request else "")
    environment = (record.environment if record else None) or (
        request.environment if request else ""
    )
    return str(config.adapter_for(product or "", environment or "") or "")


def _subscription(case: _Case) -> str:
    if case.record is not None and case.record.subscription_id:
        return case.record.subscription_id
    return (case.connect.subscription_id if case.connect is not None else None) or ""


def _read_vendor(
    todo: Mapping[tuple[str, str], list[_Case]],
    adapters: Mapping[str, VendorAdapter],
    settings: ReconcileConfig,
    stop: threading.Event | None,
    result: Reconciliation,
) -> None:
    pace, lock = _Pace(settings.rate), threading.Lock()

    def check(item: tuple[tuple[str, str], list[_Case]]) -> None:
        (name, subscription), group = item
        if stop is not None:
            pace.wait(stop)
            if stop.is_set():
                result.interrupted = True
                return
        else:
            pace.wait()
        first = group[0]
        key = first.record.idempotency_key if first.record else f"cancel-{first.request_id}"
        request = stub_request(first.request_id, first.record) if first.record else first.connect
        assert request is not None
        call = VendorCall(
            request=request, subscription_id=subscription, idempotency_key=f"{key}:reconcile"
        )
        try:
            status: Any = adapters[name].status(call)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a custom adapter may raise anything
            status = f"raised {type(exc).__name__}: {exc}"
        with lock:
            for case in group:
                case.vendor = status
                result.checked += 1

    with ThreadPoolExecutor(
        max_workers=settings.concurrency, thread_name_prefix="reconcile"
    ) as pool:
        list(pool.map(check, todo.items()))


def _judge(
    config: Config, case: _Case, now: datetime, grace: float, asset_reported: set[str]
) -> Divergence | None:
    """The one row a request gets, or None: the first kind that fits (module docstring)."""
    record, request, vendor = case.record, case.connect, case.vendor
    state = record.state if record is not None else None
    status = request.status if request is not None else None
    read = isinstance(vendor, SubscriptionStatus) and vendor is not S.UNKNOWN
    when = record.updated_at if record is not None and record.updated_at else None
    base = dict(
        request_id=case.request_id,
        journal_state=state.value if state is not None else "unseen",
        vendor_status=vendor.value if read else "not_read",
        subscription_id=_subscription(case),
        adapter=_adapter_of(config, case),
        updated_at=when.isoformat().replace("+00:00", "Z") if when else "",
        connect_status=status or "not_read",
    )
    if state is None and status == "pending":
        created = request.created if request is not None else None
        age = (now - created).total_seconds() if created is not None else None
        if age is None or age < grace:
            return None
        said = f"pending on Connect for {age / 3600:.1f} h; the journal has no row for it"
        return Divergence("pending_not_in_journal", detail=said, **base)
    if vendor is None:
        return None  # not read: skipped, or cut short by a stop
    if not read:
        detail = getattr(vendor, "detail", None) or str(getattr(vendor, "value", vendor))
        return Divergence(
            "unreadable", **{**base, "vendor_status": "unknown"}, detail=mask(detail)[:300]
        )
    kind, said = _kind(case, state, status, vendor)
    if kind is None and vendor in GONE and request is not None and request.asset_status == "active":
        asset = request.asset_id or _subscription(case)
        if asset not in asset_reported:
            asset_reported.add(asset)
            kind = "terminated_but_asset_active"
            said = f"asset {request.asset_id} is active on Connect (request {status})"
    if kind is None:
        return None
    return Divergence(kind, detail=mask(said)[:300], **base)


def _kind(
    case: _Case, state: State | None, status: str | None, vendor: SubscriptionStatus
) -> tuple[str | None, str]:
    record = case.record
    if state is State.APPROVED and vendor in LIVE:
        answered = (record.outcome if record is not None else None) or "nothing recorded"
        said = f"approved after the vendor answered {answered}"
        purge = RowData.of(record).purge if record is not None else None
        return "approved_but_active", said + (f"; purge {purge}" if purge else "")
    why = (record.reason or record.last_error or record.outcome or "") if record else ""
    if state is State.FAILED and vendor in GONE:
        return "refused_but_terminated", why
    elsewhere = "no journal row" if state is None else f"journal {state.value}"
    if status == "approved" and state is not State.APPROVED and vendor in LIVE:
        return (
            "approved_on_connect_but_active",
            f"approved on Connect by someone else ({elsewhere})",
        )
    if status == "failed" and state is not State.FAILED and vendor in GONE:
        return (
            "failed_on_connect_but_terminated",
            f"failed on Connect by someone else ({elsewhere})",
        )
    if state is State.PARKED and vendor in GONE:
        return "parked_but_terminated", why
    return None, ""


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
    parser.add_argument(
        "--pending-grace",
        type=float,
        default=PENDING_GRACE,
        metavar="SECONDS",
        help="a request pending on Connect this long without a journal row is a divergence "
        f"(default {PENDING_GRACE:g})",
    )


def run(args: argparse.Namespace) -> int:
    from processor.daemon.runtime import load_adapters
    from processor.ops.commands import existing_journal

    config = load_config(args.config)
    overrides = {k: v for k, v in (("concurrency", args.concurrency), ("rate", args.rate)) if v}
    settings = ReconcileConfig.model_validate({**config.reconcile.model_dump(), **overrides})
    adapters = load_adapters(config)
    marketplace, no_key = _gateway(config)
    try:
        with existing_journal(config) as journal:
            result = reconcile(
                config,
                journal,
                adapters,
                since=args.since,
                until=args.until,
                settings=settings,
                marketplace=marketplace,
                pending_grace=args.pending_grace,
            )
            if no_key:
                result.connect_error = no_key
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
        if marketplace is not None:
            marketplace.close()
        for adapter in adapters.values():
            close = getattr(adapter, "close", None)
            if callable(close):
                close()
    write(result, args.format, sys.stdout)
    return result.status


def _gateway(config: Config) -> tuple[ConnectGateway | None, str | None]:
    """The gateway for Connect's side, or None and why not (no API key: the vendor's side is
    still compared, and the report says what was left out)."""
    from processor.config.schema import connect_api_key
    from processor.daemon.runtime import gateway_settings
    from processor.marketplace import ConnectGateway
    from processor.observe import register_secret

    api_key = connect_api_key(config)
    if not api_key:
        return None, f"not read: no Connect API key (set {config.connect.api_key_env})"
    register_secret(api_key)
    return ConnectGateway(gateway_settings(config, api_key)), None


def write(result: Reconciliation, fmt: str, out: IO[str]) -> None:
    rows = result.divergences + result.unreadable
    if fmt == "json":
        json.dump(
            {
                "checked": result.checked,
                "skipped": result.skipped,
                "status": result.status,
                "connect_listed": result.connect_listed,
                "connect_error": result.connect_error,
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
        f"{len(result.unreadable)} unreadable, {result.skipped} skipped (no status read); "
        f"{result.connect_listed} read from Connect\n"
    )
    if result.connect_error:
        out.write(f"Connect: {result.connect_error}\n")


def _table(rows: Iterable[Divergence], out: IO[str]) -> None:
    listed = [asdict(d) for d in rows]
    if not listed:
        return
    columns = tuple(c for c in FIELDS if c != "updated_at")
    widths = {c: max(len(c), *(len(str(r[c])) for r in listed)) for c in columns}
    out.write("  ".join(c.ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in listed:
        out.write("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip() + "\n")
