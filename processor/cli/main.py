"""The ``cancel-processor`` command.

Exit statuses: 0 success (``run --once``: everything reached a final state), 1 work left unfinished
or failed, 2 bad configuration or usage (the message names the file, the key and what was expected),
3 a dependency that cannot be reached (Connect, the journal's database). Every failure is one line
(:mod:`processor.cli.errors`); ``--debug`` or ``CANCEL_PROCESSOR_DEBUG=1`` shows the traceback too.
Every option that matters in production can also come from the environment; ``--help`` names the
variable.

Subcommands are registered by ``_add_*`` functions (or a module's ``configure_parser`` and ``run``)
called from :func:`build_parser`; a command returns its exit status and raises for failures.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from processor import __version__
from processor.cli.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNFINISHED, Where, explain
from processor.config.schema import Config, load_config, require_products
from processor.daemon import startup_checks
from processor.daemon.signals import MARGIN, Interrupted, StopRequests, exit_now, stray_threads
from processor.model import ENVIRONMENTS, parse_datetime

__all__ = ["main", "build_parser"]

_StopRequests = StopRequests  # the name the signal tests know
_WHERE = Where()  # what the running command knows, for its error line


def _load(path: str | None) -> Config:
    """The configuration, remembered for error lines (which file, which Connect, which journal)."""
    from processor.journal import redact_url

    _WHERE.source = path or "<defaults>"
    config = load_config(path)
    _WHERE.endpoint = config.connect.endpoint
    _WHERE.journal = redact_url(config.journal.url)
    _WHERE.api_key_env = config.connect.api_key_env
    return config


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
        description="Start the mock marketplace and mock vendor, generate cancel requests, process them "
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
    p.set_defaults(func=lambda args: __import__("cancel_sandbox.demo", fromlist=["run"]).run(args))


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in the CLI's one-line style (exit 2), the usage itself behind ``--help``."""

    def error(self, message: str) -> Any:  # type: ignore[override]
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


def cmd_journal_migrate(args: argparse.Namespace) -> int:
    from processor.journal import open_journal, redact_url

    config = _load(args.config)
    journal = open_journal(config.journal.url)
    try:
        journal.migrate()
    finally:
        journal.close()
    print(f"journal schema is current: {redact_url(config.journal.url)}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from processor.daemon.runtime import selector_for
    from processor.observe import configure_logging

    # Signals are caught from here on, not only once the daemon exists: a SIGTERM while the journal
    # and the Connect client are being set up (a rollout that changes its mind) ends the run cleanly
    # with status 0 before anything is claimed, instead of the default, abrupt death.
    stopping = StopRequests()
    _STOPPING.append(stopping)
    config = _load(args.config)
    if args.concurrency:
        processing = config.processing.model_copy(update={"concurrency": args.concurrency})
        config = config.model_copy(update={"processing": processing})
    interrupted = EXIT_UNFINISHED if args.once or args.dry_run else EXIT_OK
    stopping.bound(config.processing.shutdown_timeout + MARGIN, forced_status=interrupted)
    configure_logging(config.log.level, config.log.format)
    require_products(config)
    startup_checks.warn_at_start(config)
    selector = selector_for(
        config,
        products=tuple(args.product),
        marketplaces=tuple(args.marketplace),
        environments=tuple(args.environment),
        request_ids=tuple(args.request_id),
        created_since=args.created_since,
        created_until=args.created_until,
    )
    if args.dry_run:
        from processor.cli.report import dry_run
        from processor.ops.preflight import run_checks

        for check in run_checks(
            config, remote=False
        ):  # what would stop `run`, said before the plan
            if check.status == "config":
                print(
                    f"cancel-processor: warning: run would refuse to start: check {check.name}: {check.detail}",
                    file=sys.stderr,
                )
        stopping.interrupt_main()  # a dry run writes nothing: stop it wherever it is
        return dry_run(config, selector)
    if not args.no_check:
        from processor.ops.preflight import for_run

        if for_run(config):  # a policy its adapter cannot carry out, a product not visible...
            return EXIT_CONFIG
    return _run(args, config, selector, stopping)


def _run(args: argparse.Namespace, config: Config, selector: Any, stopping: StopRequests) -> int:
    from processor.cli.report import Progress, print_summary
    from processor.cli.ticker import Ticker
    from processor.daemon.core import Daemon
    from processor.daemon.runtime import build_runtime

    startup_checks.journal_directory(config)
    runtime = build_runtime(config)
    startup_checks.warn_slow_adapters(config, runtime.adapters)
    ops = None
    progress = Progress(None)
    ticker = None
    schedule = None
    try:
        if not args.once and config.http.enabled:
            server = _ops_server(config, runtime, selector)
            if server is not None:
                startup_checks.start_ops(config, server)
                ops = server  # stopped below only once it started
        if args.once:
            ticker = Ticker(
                runtime.marketplace.waiting,
                config.connect.endpoint,
                max_attempts=config.connect.retry.max_attempts,
            ).start()
        progress = Progress.start(runtime, selector, enabled=args.once and not args.no_progress)
        daemon = Daemon(
            runtime.engine,
            runtime.marketplace,
            selector,
            once=args.once,
            on_result=progress.advance,
        )
        if not args.once and config.reconcile.every is not None:
            from processor.ops.reconcile_schedule import ReconcileSchedule

            schedule = ReconcileSchedule(
                config, runtime.journal, runtime.adapters, runtime.metrics
            ).start()
        stopping.forward_to(daemon.stop if schedule is None else _both(schedule.stop, daemon.stop))
        summary = daemon.run()
    finally:
        if schedule is not None:
            schedule.join()  # within the shutdown budget; a read still in flight leaves a stray thread
        if ticker is not None:
            ticker.stop()
        progress.close()
        if ops is not None:
            ops.stop()
        if not (stopping.requested and stray_threads()):
            runtime.close()  # else a worker still waits on a remote call: exit_now below, no close
    if args.once:
        print_summary(summary)
        return EXIT_OK if summary.complete else EXIT_UNFINISHED
    return EXIT_OK


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()

    return both


def _ops_server(config: Any, runtime: Any, selector: Any) -> Any:
    """Health, readiness, metrics and the status page, next to the daemon."""
    from processor.ops.readiness import CachedCheck, make_readiness
    from processor.ops.server import build_ops_server

    readiness = make_readiness(
        journal=runtime.journal,
        connect=CachedCheck(
            lambda: runtime.marketplace.count_pending(selector) >= 0, name="connect"
        ),
        breakers=runtime.engine.breakers,
    )
    return build_ops_server(
        config, journal=runtime.journal, metrics=runtime.metrics, readiness=readiness
    )


_STOPPING: list[StopRequests] = []  # the running command's, when it catches signals


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a complaint at interpreter exit
    except Interrupted as exc:
        status = _say(f"cancel-processor: stopped by {exc}: nothing was changed", EXIT_UNFINISHED)
    except KeyboardInterrupt:
        status = _say("cancel-processor: interrupted", 130)
    except BrokenPipeError:
        status = _quiet_pipe()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (see processor.cli.errors)
        if debug:
            traceback.print_exc()
        line, status = explain(exc, _WHERE)
        status = _say(line, status)
    stopping = _STOPPING[-1] if _STOPPING else None
    if stopping is not None and stopping.requested:
        stopping.disarm()
        if stray_threads():  # a worker blocked on a remote call: the interpreter would wait for it
            exit_now(status)
    return status


def _say(line: str, status: int) -> int:
    try:
        print(line, file=sys.stderr)
    except (OSError, ValueError):
        pass
    return status


def _quiet_pipe() -> int:
    """The reader went away (``| head``): say nothing more, and keep Python from complaining about
    the unflushed stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
