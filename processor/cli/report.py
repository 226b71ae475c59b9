"""What the terminal shows: the ``--dry-run`` plan, the ``--once`` progress bar and summary
table."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import (
    Progress as RichProgress,
)
from rich.table import Table

from processor.config.schema import Config, connect_api_key
from processor.marketplace import Selector
from processor.states import State

if TYPE_CHECKING:
    from processor.daemon.core import RunSummary
    from processor.daemon.runtime import Runtime

__all__ = ["dry_run", "Progress", "print_summary"]


def _console() -> Console:
    # Plain, wide output when piped (CI logs, files); rich formatting on a terminal.
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)


class _ReadNothing:
    """The journal stand-in when ``--dry-run`` finds no journal: it must not create one."""

    def get(self, request_id: str) -> None:
        return None

    def close(self) -> None:
        pass


def _journal_for_reading(config: Config) -> Any:
    from processor.journal import open_journal

    url = config.journal.url
    if url.startswith("sqlite:///"):
        import os

        path = url[len("sqlite:///") :]
        if path != ":memory:" and not os.path.exists(path):
            return _ReadNothing()
    journal = open_journal(url)
    journal.check_schema()
    return journal


def dry_run(config: Config, selector: Selector) -> int:
    """Print, per pending request, what ``run`` would do. Writes nothing anywhere."""
    from processor.daemon.runtime import gateway_settings, load_adapters
    from processor.engine.core import Engine
    from processor.marketplace import ConnectGateway
    from processor.observe import register_secret

    api_key = connect_api_key(config) or ""
    register_secret(api_key)
    marketplace = ConnectGateway(gateway_settings(config, api_key))
    journal = _journal_for_reading(config)
    engine = Engine(
        config=config,
        journal=journal,
        marketplace=marketplace,
        adapters=load_adapters(config),
        owner="dry-run",
    )
    table = Table(title="Dry run: nothing was changed", show_lines=False)
    for column in ("request", "product", "subscription", "env", "journal", "would do"):
        table.add_column(column, overflow="fold")
    count = 0
    from processor.cli.ticker import Ticker

    ticker = Ticker(
        marketplace.waiting, config.connect.endpoint, max_attempts=config.connect.retry.max_attempts
    )
    try:
        ticker.start()  # a line every 10 s while Connect is slow, instead of minutes of silence
        for payload in marketplace.iter_pending(selector):
            plan = engine.plan(payload)
            table.add_row(
                plan.request_id,
                plan.product_id or "-",
                plan.subscription_id or "-",
                plan.environment or "-",
                plan.journal_state or "-",
                plan.action,
            )
            count += 1
    finally:
        ticker.stop()
        marketplace.close()
        journal.close()
    console = _console()
    console.print(table)
    console.print(f"{count} pending cancel request(s) matched.")
    return 0


class Progress:
    """A progress bar over the backlog, on a terminal only."""

    def __init__(self, bar: RichProgress | None, task: Any = None) -> None:
        self._bar = bar
        self._task = task

    @classmethod
    def start(cls, runtime: Runtime, selector: Selector, enabled: bool) -> Progress:
        if not enabled or not sys.stderr.isatty():
            return cls(None)
        try:
            total = runtime.marketplace.count_pending(selector)
        except Exception:  # noqa: BLE001 - a progress bar is never worth failing a run
            total = None
        bar = RichProgress(
            TextColumn("[bold]cancels"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=True,
        )
        bar.start()
        return cls(bar, bar.add_task("processing", total=total))

    def advance(self, request_id: str, result: str) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def print_summary(summary: RunSummary) -> None:
    # Each request once, by where it ended; the passes' own counts (a parked request listed in
    # every pass counts in every pass) on a line of their own.
    requests = summary.by_request()
    table = Table(title="Run summary: requests by final state")
    table.add_column("state")
    table.add_column("requests", justify="right")
    for result, count in sorted(requests.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(result, str(count))
    table.add_row("total", str(requests.total()))
    console = _console()
    console.print(table)
    rate = summary.seen / summary.elapsed if summary.elapsed > 0 else 0.0
    console.print(
        f"{requests.total()} request(s), {summary.elapsed:.1f}s; unfinished: "
        f"{len(summary.unfinished)}; errors: {summary.errors}"
    )
    per_pass = ", ".join(
        f"{name} {count}"
        for name, count in sorted(summary.results.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    console.print(
        f"passes: {summary.passes}, {summary.seen} listed ({rate:.1f}/s); results over all "
        f"passes: {per_pass or 'none'}"
    )
    if summary.listing_failed is not None:
        console.print(f"[red]Connect could not be listed:[/red] {summary.listing_failed}")
    if summary.unaccounted:
        from processor.daemon.completeness import Gap

        gap = Gap(summary.unaccounted, summary.unaccounted_names)
        console.print(f"[red]still pending on Connect:[/red] {gap.describe()}")
    if summary.count_failed is not None:
        console.print(f"[red]Connect could not count what is left:[/red] {summary.count_failed}")
    for request_id, state in list(summary.unfinished.items())[:20]:
        console.print(f"  unfinished {request_id}: {state}")
    held = sum(1 for state in summary.unfinished.values() if state == State.HELD.value)
    if held:
        console.print(
            f"{held} held: a refusal or 'already gone' waits guard.hold before Connect is told; "
            f"run again after the hold, or end it now with cancel-processor resume ADAPTER "
            f"--release-held (see cancel-processor waiting)"
        )
