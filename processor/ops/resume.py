"""``cancel-processor resume ADAPTER``: lift the anomaly guard's latch on an adapter's circuit.

The guard (:mod:`processor.engine.guard`) latches an adapter when its answers look like a
misconfiguration (a burst of "already gone" or "refused"); only a person lifts it, after looking.
The latch lives in the guard's file, which every daemon process reads at most once a second, so
this works beside a running daemon. Exit 0 lifted, 1 the adapter was not latched, 2 an adapter
the configuration does not define (or a bad configuration).
"""

from __future__ import annotations

import argparse
import os
import sys

from processor.config.schema import load_config
from processor.engine.guard import LatchFile, latch_path

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", help="the adapter's name under adapters")
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("CANCEL_PROCESSOR_CONFIG"),
        help="YAML configuration file (env CANCEL_PROCESSOR_CONFIG)",
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.adapter not in config.adapters:
        known = ", ".join(sorted(config.adapters)) or "none defined"
        print(
            f"cancel-processor: resume: no adapter {args.adapter!r} under adapters ({known})",
            file=sys.stderr,
        )
        return 2
    latches = LatchFile(latch_path(config))
    try:
        lifted = latches.clear(args.adapter)
    except OSError as exc:
        print(f"cancel-processor: resume: {exc}", file=sys.stderr)
        return 2
    if lifted is None:
        print(f"adapter {args.adapter}: not latched ({latches.path})")
        return 1
    print(
        f"adapter {args.adapter}: resumed; it was latched since {lifted.get('since')}: "
        f"{lifted.get('reason')}"
    )
    return 0
