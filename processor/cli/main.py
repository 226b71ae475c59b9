"""The ``cancel-processor`` command.

Exit statuses: 0 success (``run --once``: everything reached a final state), 1 work left unfinished
or failed, 2 bad configuration or usage (the message names the file, the key and what was expected),
3 a dependency that cannot be reached (Connect, the journal's database). Every failure is one line
(:mod:`processor.cli.errors`); ``--debug`` or ``CANCEL_PROCESSOR_DEBUG=1`` shows the traceback too.

The subcommands and their options are :mod:`processor.cli.parser`; ``run`` is
:mod:`processor.cli.run`. A command returns its exit status and raises for failures.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from processor.cli.errors import EXIT_OK, EXIT_UNFINISHED, explain
from processor.cli.parser import build_parser
from processor.cli.run import STOPPING, WHERE
from processor.config.permissions import ALLOW_ENV
from processor.daemon.signals import Interrupted, exit_now, stray_threads

__all__ = ["main", "build_parser"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if getattr(args, "allow_writable_config", False):
        # read by processor.config.permissions wherever a command loads its configuration
        os.environ[ALLOW_ENV] = "1"
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
        line, status = explain(exc, WHERE)
        status = _say(line, status)
    stopping = STOPPING[-1] if STOPPING else None
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
