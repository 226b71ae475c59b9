"""``cancel-processor demo``: the whole flow on one machine, with nothing to configure.

Starts the mock marketplace and the mock vendor on loopback, generates pending cancel requests
(several products, marketplaces and environments; some subscriptions the vendor refuses to end),
runs the processor once over them with an SQLite journal, and prints what happened, read back
from the marketplace's and the vendor's own records.

The mocks live as long as the command: their URLs are printed only with ``--serve``, which keeps
them up until Ctrl-C. The temporary directory (the journal) is removed at the end unless ``--keep``
asks for it, and then its path is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from cancel_sandbox.local import Sandbox
from processor.config.schema import Config
from processor.daemon.core import Daemon
from processor.daemon.runtime import build_runtime, selector_for
from processor.observe import configure_logging

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    console = Console(width=None if os.isatty(1) else 120)
    configure_logging("warning", "console")
    workdir = tempfile.mkdtemp(prefix="cancel-processor-demo-")
    keep = bool(getattr(args, "keep", False))
    try:
        return _demo(args, console, workdir)
    finally:
        if keep:
            console.print(f"Kept the demo's files in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _demo(args: argparse.Namespace, console: Console, workdir: str) -> int:
    journal_path = args.journal or os.path.join(workdir, "journal.db")
    with Sandbox(generate=args.requests, seed=args.seed, vendor_mode="key") as sandbox:
        if args.serve:
            console.print(
                f"[bold]Mock marketplace[/] {sandbox.marketplace.url}  (web page: "
                f"{sandbox.marketplace.url}/)"
            )
            console.print(f"[bold]Mock vendor[/]      {sandbox.vendor.url}")
        else:  # their URLs would be dead once the demo exits
            console.print(
                "The mock marketplace and mock vendor run on loopback for this demo only; "
                "add --serve to keep them up (and see their URLs) until Ctrl-C."
            )
        before = sandbox.pending_cancels()
        console.print(
            f"Generated {len(before)} pending cancel requests; journal: sqlite:///{journal_path}"
            + ("" if args.journal or getattr(args, "keep", False) else " (removed at the end)")
            + "\n"
        )

        config = Config.model_validate(
            sandbox.config_data(
                f"sqlite:///{journal_path}", preview_noop=True, processing={"concurrency": 8}
            )
        )
        os.environ.update(sandbox.environ())
        runtime = build_runtime(config)
        started = time.monotonic()
        try:
            summary = Daemon(
                runtime.engine, runtime.marketplace, selector_for(config), once=True
            ).run()
        finally:
            runtime.close()
        elapsed = time.monotonic() - started

        cancels = sandbox.cancel_requests()
        table = Table(title=f"Cancel requests processed (first 15 of {len(before)})")
        for column in ("request", "environment", "subscription", "Connect status", "why / note"):
            table.add_column(column, overflow="fold")
        for request_id in sorted(before)[:15]:
            request = cancels[request_id]
            sub = next(
                (
                    p.get("value")
                    for p in request["asset"].get("params", [])
                    if p.get("id") == "subscription_id"
                ),
                "-",
            )
            status = request["status"]
            why = request.get("reason") or (
                "terminated at the vendor" if status == "approved" else ""
            )
            if status == "approved" and request["asset"]["connection"]["type"] == "preview":
                why = "preview: approved without a vendor call"
            colour = {"approved": "green", "failed": "red"}.get(status, "yellow")
            table.add_row(
                request_id,
                request["asset"]["connection"]["type"],
                sub,
                f"[{colour}]{status}[/]",
                why,
            )
        console.print(table)

        statuses = Counter(cancels[rid]["status"] for rid in before)
        console.print(
            f"\n[bold]Outcome[/] in {elapsed:.1f}s: "
            + ", ".join(f"{count} {status}" for status, count in statuses.most_common())
            + f"; journal: {dict(summary.results)}"
        )
        check = sandbox.check(initially_pending=before, noop_environments=("preview",))
        for label, value in check.rows():
            console.print(f"  {label:<36} {value}")
        previews = sum(
            1
            for rid in before
            if cancels[rid]["status"] == "approved"
            and cancels[rid]["asset"]["connection"]["type"] == "preview"
        )
        console.print(
            f"  {'of the approved, preview approvals':<36} {previews}\n"
            "Preview approvals: requests on preview connections (a vendor's own test listings, "
            "no real customer) are approved on Connect without a vendor call (the noop adapter, "
            "defaults.environments.preview), so they add no effective termination: approved "
            f"{statuses['approved']} = {statuses['approved'] - previews} terminated at the vendor "
            f"+ {previews} preview approvals."
        )
        console.print(
            "[bold green]Invariants hold.[/]" if check.ok else "[bold red]Invariant broken![/]"
        )
        if args.serve:
            stop = threading.Event()
            # caught before the line invites Ctrl-C, so an early one stops cleanly too
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            console.print("\nServers keep running; press Ctrl-C to stop.")
            stop.wait()
    return 0 if check.ok and summary.complete else 1
