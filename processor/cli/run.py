"""The ``run`` and ``journal migrate`` commands, and what the running command remembers for its
error line (:data:`WHERE`) and its signal handling (:data:`STOPPING`).

``run`` catches signals from its first line (see :func:`cmd_run`), builds the runtime, starts the
ops server (daemon) or the retry ticker (``--once``), and hands the request loop to
:class:`~processor.daemon.core.Daemon`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from processor.cli.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNFINISHED, Where
from processor.config.schema import Config, load_config, require_products
from processor.daemon import startup_checks
from processor.daemon.signals import MARGIN, StopRequests, stray_threads

__all__ = ["WHERE", "STOPPING", "cmd_run", "cmd_journal_migrate"]

WHERE = Where()  # what the running command knows, for its error line
STOPPING: list[StopRequests] = []  # the running command's, when it catches signals


def load(path: str | None) -> Config:
    """The configuration, remembered for error lines (which file, which Connect, which journal)."""
    from processor.journal import redact_url

    WHERE.source = path or "<defaults>"
    config = load_config(path)
    WHERE.endpoint = config.connect.endpoint
    WHERE.journal = redact_url(config.journal.url)
    WHERE.api_key_env = config.connect.api_key_env
    return config


def cmd_journal_migrate(args: argparse.Namespace) -> int:
    from processor.journal import open_journal, redact_url

    config = load(args.config)
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
    STOPPING.append(stopping)
    config = load(args.config)
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
                    f"cancel-processor: warning: run would refuse to start: check {check.name}: "
                    f"{check.detail}",
                    file=sys.stderr,
                )
        stopping.interrupt_main()  # a dry run writes nothing: stop it wherever it is
        return dry_run(config, selector)
    if not args.no_check:
        from processor.ops.preflight import for_run

        # a policy its adapter cannot carry out, a product not visible... (--once: below)
        if for_run(config, connect=not args.once):
            return EXIT_CONFIG
    if args.once:
        from processor.ops.preflight import for_once

        # even with --no-check: a backfill's exit status must not be 0 for a key or a product
        # Connect refuses, nor 1 after minutes of retries on a 401
        with stopping.interruptible():  # the check writes nothing: a signal ends it at once
            status = for_once(config, tuple(args.product), watch=_ticking(config))
        if status != EXIT_OK:
            return status
    return _run(args, config, selector, stopping)


def _run(args: argparse.Namespace, config: Config, selector: Any, stopping: StopRequests) -> int:
    from processor.cli.report import Progress, print_summary
    from processor.cli.ticker import Ticker
    from processor.daemon.core import Daemon

    startup_checks.journal_directory(config)
    runtime = _when_the_disk_allows(config, stopping, once=args.once)
    if runtime is None:
        return EXIT_OK  # stopped while waiting: nothing was started
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
                config, runtime.journal, runtime.adapters, runtime.metrics, runtime.marketplace
            ).start()
        stopping.forward_to(daemon.stop if schedule is None else _both(schedule.stop, daemon.stop))
        summary = daemon.run()
    finally:
        if schedule is not None:
            # within the shutdown budget; a read still in flight leaves a stray thread
            schedule.join()
        if ticker is not None:
            ticker.stop()
        progress.close()
        if ops is not None:
            ops.stop()
        if not (stopping.requested and stray_threads()):
            runtime.close()  # else a worker still waits on a remote call: exit_now below, no close
    if args.once:
        print_summary(summary)
        latches = {n: b.latched for n, b in runtime.engine.breakers.items() if b.latched}
        for name, why in sorted(latches.items()):
            # The reason ends with the command that resumes it (processor.engine.guard).
            print(f"cancel-processor: adapter {name} is latched: {why}", file=sys.stderr)
        return EXIT_OK if summary.complete and not latches else EXIT_UNFINISHED
    return EXIT_OK


def _when_the_disk_allows(config: Config, stopping: StopRequests, *, once: bool) -> Any:
    """The runtime, once the journal can be written. A full disk at start is weather: wait for
    space with one line per attempt (``--once``: within ``processing.once_max_wait``, then the
    error, which names disk space), instead of exiting as for a configuration error that a
    supervisor would restart into. None when a stop was asked while waiting."""
    from processor.daemon.runtime import build_runtime
    from processor.journal.base import JournalFull
    from processor.observe import get_logger

    deadline = time.monotonic() + config.processing.once_max_wait
    every = min(max(config.processing.poll_interval, 1.0), 30.0)
    while True:
        try:
            return build_runtime(config)
        except JournalFull as exc:
            if once and time.monotonic() + every > deadline:
                raise
            get_logger(component="cli").warning("journal_full_at_start", error=str(exc))
            if stopping.requested:
                return None
            with stopping.interruptible():  # a stop while waiting: nothing was changed
                time.sleep(every)


def _ticking(config: Config) -> Callable[[Any], Callable[[], None]]:
    """A line at least every 10 s while Connect keeps the check waiting, as for the run itself."""
    from processor.cli.ticker import Ticker

    def watch(gateway: Any) -> Callable[[], None]:
        ticker = Ticker(gateway.waiting, config.connect.endpoint, max_attempts=2).start()
        return ticker.stop

    return watch


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()

    return both


def _ops_server(config: Any, runtime: Any, selector: Any) -> Any:
    """Health, readiness, metrics and the status page, next to the daemon."""
    from processor.ops.readiness import CachedCheck, make_readiness, vendor_checks
    from processor.ops.server import build_ops_server

    readiness = make_readiness(
        journal=runtime.journal,
        connect=CachedCheck(
            lambda: runtime.marketplace.count_pending(selector) >= 0, name="connect"
        ),
        breakers=runtime.engine.breakers,
        vendors=vendor_checks(runtime.adapters),  # each adapter's probe, at most every 15 s
    )
    return build_ops_server(
        config, journal=runtime.journal, metrics=runtime.metrics, readiness=readiness
    )
