"""``cancel-processor mock-vendor``: serve the mock vendor API in the foreground.

Every option can also come from a ``MOCK_VENDOR_*`` environment variable (named in ``--help``);
the token preferably so, since command lines are visible to other users of the machine. Exit
status 2 for unusable settings (a bad regex, a rate outside 0..1).
"""

from __future__ import annotations

import argparse
import os
import sys

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.vendor.settings import DEFAULT_TOKEN, VendorSettings
from cancel_sandbox.vendor.state import Mode

__all__ = ["configure_parser", "run", "settings_from_args"]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MOCK_VENDOR_{name}", default)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default=_env("HOST", "127.0.0.1"), help="listen address (env MOCK_VENDOR_HOST)")
    add("--port", type=int, default=_env("PORT", "8282"), help="listen port (env MOCK_VENDOR_PORT)")
    add(
        "--mode",
        choices=[m.value for m in Mode],
        default=_env("MODE", Mode.KEY.value),
        help="what a repeated call does: key = Idempotency-Key replay, natural = 409 "
        "already_terminated, read = acts again (status endpoint available), none = acts again, "
        "no status endpoint (env MOCK_VENDOR_MODE; default %(default)s)",
    )
    add(
        "--token",
        default=None,
        help="bearer token clients must send (env MOCK_VENDOR_TOKEN, preferred; default "
        f"{DEFAULT_TOKEN!r})",
    )
    add(
        "--refuse-pattern",
        default=_env("REFUSE_PATTERN", r"7$"),
        help="regex: matching subscription ids refuse termination (env MOCK_VENDOR_REFUSE_PATTERN; "
        "default %(default)s; empty: none)",
    )
    add(
        "--gone-pattern",
        default=_env("GONE_PATTERN", r"^SUB-GONE"),
        help="regex: matching subscription ids do not exist (env MOCK_VENDOR_GONE_PATTERN; "
        "default %(default)s; empty: none)",
    )
    add(
        "--work-ms",
        type=float,
        default=_env("WORK_MS", "0"),
        help="time each action takes inside the vendor (env MOCK_VENDOR_WORK_MS)",
    )
    add(
        "--latency-ms",
        type=float,
        default=_env("LATENCY_MS", "0"),
        help="injected latency before each API call (env MOCK_VENDOR_LATENCY_MS)",
    )
    add(
        "--error-rate",
        type=float,
        default=_env("ERROR_RATE", "0"),
        help="share of API calls answered 503 without acting (env MOCK_VENDOR_ERROR_RATE)",
    )
    add(
        "--throttle-rate",
        type=float,
        default=_env("THROTTLE_RATE", "0"),
        help="share of API calls answered 429 without acting (env MOCK_VENDOR_THROTTLE_RATE)",
    )
    add(
        "--drop-rate",
        type=float,
        default=_env("DROP_RATE", "0"),
        help="share of API calls applied, then the connection dropped (env MOCK_VENDOR_DROP_RATE)",
    )
    add(
        "--fault-seed",
        type=int,
        default=_env("FAULT_SEED"),
        help="random seed for the faults, for repeatable runs (env MOCK_VENDOR_FAULT_SEED)",
    )
    add(
        "--state-file",
        default=_env("STATE_FILE"),
        help="SQLite file keeping subscriptions, keys and ledger across restarts "
        "(env MOCK_VENDOR_STATE_FILE; default: memory only)",
    )


def settings_from_args(args: argparse.Namespace) -> VendorSettings:
    faults = FaultSettings(
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        throttle_rate=args.throttle_rate,
        drop_rate=args.drop_rate,
        seed=args.fault_seed,
    )
    return VendorSettings(
        token=args.token or _env("TOKEN") or DEFAULT_TOKEN,
        mode=args.mode,
        refuse_pattern=args.refuse_pattern,
        gone_pattern=args.gone_pattern,
        faults=faults,
        state_file=args.state_file,
        work_ms=args.work_ms,
    )


def run(args: argparse.Namespace) -> int:
    from cancel_sandbox.vendor.app import create_app
    from processor.ops.serving import serve

    try:
        settings = settings_from_args(args)
        app = create_app(settings)
    except ValueError as exc:
        print(f"mock-vendor: {exc}", file=sys.stderr)
        return 2
    print(
        f"mock vendor on http://{args.host}:{args.port} (mode {app.mode.value}, "
        f"state {settings.state_file or 'in memory'}); admin at /admin/ledger",
        file=sys.stderr,
    )
    try:
        serve(app, host=args.host, port=args.port)
    finally:
        app.close()
    return 0
