"""The ``cancel-processor`` command line: subcommands, their options, and the types they parse.

Subcommands are registered by ``_add_*`` functions (or a module's ``configure_parser`` and ``run``)
called from :func:`build_parser`; each sets ``func``, the command :func:`processor.cli.main.main`
calls. Every option that matters in production can also come from the environment; ``--help`` names
the variable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from processor import __version__
from processor.cli.run import cmd_journal_migrate, cmd_run
from processor.model import ENVIRONMENTS, parse_datetime

__all__ = ["build_parser"]


def _env_default(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def _when(text: str) -> datetime:
    value = parse_datetime(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 date or time, got {text!r}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of worker threads, got {text!r}"
        ) from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"expected between 1 and 256 worker threads, got {value}")
    return value


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=_env_default("CANCEL_PROCESSOR_CONFIG"),
        help="YAML configuration file (env CANCEL_PROCESSOR_CONFIG); without it, built-in defaults "
        "and CANCEL_PROCESSOR_* variables",
    )


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="process pending cancel requests (daemon, --once, --dry-run)",
        description="Poll Connect for pending cancel requests and process them.",
    )
    _add_config(p)
    p.add_argument(
        "--once",
        action="store_true",
        help="drain what is pending, then exit (0 only if all is final)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be done for each request; touch nothing",
    )
    p.add_argument(
        "--request-id",
        action="append",
        default=[],
        metavar="PR-...",
        help="only this request (repeatable)",
    )
    p.add_argument(
        "--product",
        action="append",
        default=[],
        metavar="PRD-...",
        help="only this configured product (repeatable)",
    )
    p.add_argument(
        "--marketplace",
        action="append",
        default=[],
        metavar="MP-...",
        help="only this marketplace (repeatable)",
    )
    p.add_argument(
        "--environment",
        action="append",
        default=[],
        choices=ENVIRONMENTS,
        help="only this connection type (repeatable)",
    )
    p.add_argument(
        "--created-since", type=_when, help="only requests created at or after this time"
    )
    p.add_argument("--created-until", type=_when, help="only requests created before this time")
    p.add_argument(
        "--concurrency",
        type=_workers,
        help="worker threads, 1 to 256 (overrides processing.concurrency)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument(
        "--no-check", action="store_true", help="skip the preflight checks (cancel-processor check)"
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error (env CANCEL_PROCESSOR_DEBUG=1)",
    )
    p.set_defaults(func=cmd_run)


def _add_lazy(sub: Any, name: str, module: str, help_text: str, chosen: str | None) -> None:
    """A subcommand whose module is imported only when it is the one chosen: the mocks pull in
    web frameworks that ``run`` never needs, and every restart of the daemon pays for imports."""
    import importlib

    p = sub.add_parser(name, help=help_text, description=help_text)
    if chosen != name:
        return
    mod = importlib.import_module(module)
    mod.configure_parser(p)
    p.set_defaults(func=mod.run)


def _add_journal(sub: Any) -> None:
    p = sub.add_parser(
        "journal",
        help="journal maintenance: migrate the schema, export",
        description="Journal maintenance.",
    )
    jsub = p.add_subparsers(dest="journal_command", required=True)
    m = jsub.add_parser("migrate", help="create or upgrade the journal schema")
    _add_config(m)
    m.set_defaults(func=cmd_journal_migrate)
    from processor.ops.commands import JOURNAL_COMMANDS

    _add_commands(jsub, JOURNAL_COMMANDS)


def _add_commands(sub: Any, commands: Sequence[Any]) -> None:
    """Operator commands (processor.ops.commands): each brings its own options."""
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure_parser(p)
        p.set_defaults(func=command.run)


def _add_waiting(sub: Any) -> None:
    from processor.cli import waiting

    text = "requests waiting for a person (routed by a policy), and with --timers for a date"
    p = sub.add_parser("waiting", help=text, description=text)
    waiting.configure_parser(p)
    p.set_defaults(func=waiting.run)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole thing on one machine: mock marketplace, mock vendor, processor",
        description="Start the mock marketplace and mock vendor, generate cancel requests, "
        "process them "
        "with an SQLite journal and show the outcome.",
    )
    p.add_argument("--requests", type=int, default=60, help="pending cancels to generate")
    p.add_argument("--seed", type=int, default=7, help="generator seed (deterministic data)")
    p.add_argument(
        "--journal", default=None, help="SQLite journal path (default: a temporary file)"
    )
    p.add_argument(
        "--serve", action="store_true", help="keep the servers running afterwards (Ctrl-C to stop)"
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's temporary directory (its journal) and say where it is",
    )
    p.add_argument(
        "--vendor",
        choices=("static", "oauth", "mtls", "rate", "async"),
        default="static",
        help="the vendor API shape the mock vendor plays (config/processor.*.yaml): a static "
        "token (default), OAuth2 tokens living 1 s, mutual TLS with a CA made for the demo, a "
        "10 calls/s limit, or asynchronous terminations (202 and a poll)",
    )
    p.set_defaults(func=lambda args: __import__("cancel_sandbox.demo", fromlist=["run"]).run(args))


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in the CLI's one-line style (exit 2), the usage itself behind ``--help``."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: usage error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cancel-processor",
        description="Vendor-side processor for CloudBlue Connect subscription cancellations.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=_env_default("CANCEL_PROCESSOR_DEBUG") == "1",
        help="show the traceback of an error (env CANCEL_PROCESSOR_DEBUG=1)",
    )
    parser.add_argument(
        "--allow-writable-config",
        action="store_true",
        help="accept a configuration file (or its directory) writable by group or others "
        "(env CANCEL_PROCESSOR_ALLOW_WRITABLE_CONFIG=1); refused otherwise, as ssh refuses such "
        "a key file",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_demo(sub)
    _add_journal(sub)
    from processor.ops.commands import COMMANDS

    _add_commands(sub, COMMANDS)
    _add_waiting(sub)
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    chosen = words[0] if words else None
    _add_lazy(
        sub,
        "check",
        "processor.ops.preflight",
        "preflight: configuration, Connect, products and templates, adapters and their probes",
        chosen,
    )
    _add_lazy(
        sub,
        "resume",
        "processor.ops.resume",
        "lift the anomaly guard's latch on an adapter",
        chosen,
    )
    _add_lazy(
        sub,
        "reconcile",
        "processor.ops.reconcile",
        "compare what the journal finished with the vendor's status of each subscription",
        chosen,
    )
    _add_lazy(
        sub,
        "mock-marketplace",
        "cancel_sandbox.marketplace.cli",
        "serve the local mock Connect marketplace",
        chosen,
    )
    _add_lazy(
        sub, "mock-vendor", "cancel_sandbox.vendor.cli", "serve the local mock vendor API", chosen
    )
    return parser
