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
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cancel_sandbox.local import Sandbox
from cancel_sandbox.vendor.operations import OperationSettings
from cancel_sandbox.vendor.outcomes import async_adapter_options
from cancel_sandbox.vendor.pki import Pki, make_pki
from processor.config.schema import Config
from processor.daemon.core import Daemon
from processor.daemon.runtime import build_runtime, selector_for
from processor.observe import configure_logging

__all__ = ["run", "SHAPES"]

# The vendor API shapes the demo can play (config/processor.*.yaml holds each as shipped): how the
# mock vendor is started, what the adapter is told, and the mock's ledger line that shows it.
_DEMO_SECRET = "demo-oauth-client-secret"
SHAPES = ("static", "oauth", "mtls", "rate", "async")


def _vendor_server(shape: str, workdir: str) -> tuple[dict[str, object] | None, Pki | None]:
    """uvicorn's TLS settings for the mock vendor, and the PKI (``mtls``: a CA made for this
    demo in its temporary directory, a server certificate and a client certificate)."""
    if shape != "mtls":
        return None, None
    pki = make_pki(Path(workdir))
    return pki.server_tls(), pki


def _vendor_options(shape: str) -> dict[str, object]:
    if shape == "oauth":  # tokens that live 1 s: the run outlives several
        return {
            "oauth_client_id": "cancel-processor",
            "oauth_client_secret": _DEMO_SECRET,
            "token_lifetime": 1,
            "work_ms": 150,
        }
    if shape == "rate":  # 10 calls a second, 429 past it
        return {"rate_calls": 10, "rate_per": 1}
    if shape == "async":  # 202 and an operation completed 1 s later
        return {"operations": OperationSettings(on=True, delay=1.0)}
    return {}


def _adapter_options(
    shape: str, options: dict[str, object], vendor_url: str, pki: Pki | None
) -> dict[str, object]:
    if shape == "mtls" and pki is not None:
        tls = {"cert": str(pki.client_cert), "key": str(pki.client_key)}
        return {**options, "base_url": vendor_url, "verify": str(pki.ca), "tls": tls}
    if shape == "oauth":
        auth = {
            "type": "oauth2",
            "token_url": f"{vendor_url}/oauth/token",
            "client_id": "cancel-processor",
            "env": "DEMO_VENDOR_CLIENT_SECRET",
        }
        return {**options, "auth": auth}
    if shape == "rate":
        return {**options, "rate": {"calls": 10, "per": 1}}
    if shape == "async":
        return async_adapter_options(options, every=0.3)
    return options


def _shape_line(shape: str, sandbox: Sandbox) -> str:
    summary = sandbox.vendor_ledger()["summary"]
    if shape == "oauth":
        refused = summary["expired_token_calls"] + summary["unknown_token_calls"]
        return (
            f"OAuth2: {summary['tokens_issued']} token(s) issued, each living 1 s; calls the "
            f"vendor refused for their token (401, then renewed): {refused}"
        )
    if shape == "rate":
        return f"rate limit 10/s: answers 429 from the vendor: {summary['rate_limited_calls']}"
    if shape == "mtls":
        return (
            f"mutual TLS: the vendor takes calls only with a client certificate of the demo's "
            f"CA; calls it took: {summary['calls']}"
        )
    if shape == "async":
        return (
            f"asynchronous: {summary['polls']} polls; each request approved after its operation "
            f"completed; terminate calls sent twice: {summary['repeated_terminate_calls']}"
        )
    return "static secret (bearer token)"


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
    shape = getattr(args, "vendor", "static") or "static"
    server, pki = _vendor_server(shape, workdir)
    with Sandbox(
        generate=args.requests,
        seed=args.seed,
        vendor_mode="key",
        vendor_options=_vendor_options(shape) or None,
        vendor_server=server,
        vendor_client=None
        if pki is None
        else (str(pki.ca), str(pki.client_cert), str(pki.client_key)),
    ) as sandbox:
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

        data = sandbox.config_data(
            f"sqlite:///{journal_path}", preview_noop=True, processing={"concurrency": 8}
        )
        vendor = data["adapters"]["vendor"]
        vendor_url = sandbox.vendor.url
        if pki is not None:  # the mock vendor listens for HTTPS on the same port
            vendor_url = f"https://127.0.0.1:{sandbox.vendor.port}"
        vendor["options"] = _adapter_options(shape, vendor["options"], vendor_url, pki)
        config = Config.model_validate(data)
        os.environ.update(sandbox.environ())
        if shape == "oauth":
            os.environ["DEMO_VENDOR_CLIENT_SECRET"] = _DEMO_SECRET
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
        console.print(f"  {'vendor API shape':<36} {_shape_line(shape, sandbox)}")
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
