"""``cancel-processor resume ADAPTER``: lift the anomaly guard's latch on an adapter's circuit, and
say what becomes of the answers the hold window kept from Connect.

The guard (:mod:`processor.engine.guard`) latches an adapter when its answers look like a
misconfiguration (a burst of "already gone" or "refused"); only a person lifts it, after looking.
The latch lives in the guard's file, which every daemon process reads at most once a second, so
this works beside a running daemon.

Refusals and "already gone" answers wait in the journal (state ``held``) before Connect is told
(:mod:`processor.engine.hold`); after a latch they stay held until the person chooses, and
``resume`` does not guess: with held answers of the adapter in the journal it needs one of

- ``--release-held``: the answers were right; Connect is told (refused, or approved as gone);
- ``--retry-held``: the vendor is called again for each (a refusal or "already gone" says the
  call did not act, so nothing is terminated twice).

Either marks every held row of the adapter with the choice by the operator's hand and makes it
due at once (the journal carries it, so every replica follows; the timer loop takes the rows up),
and only then lifts the latch. Either also works without a
latch, to end a hold early. Exit 0 done; 1 the adapter was not latched and nothing was held;
2 an adapter the configuration does not define,
a bad configuration, or held answers without a choice.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from processor.config.schema import load_config
from processor.engine.guard import LatchFile, latch_path
from processor.engine.rowdata import Held, RowData
from processor.exits import EXIT_CONFIG, EXIT_OK, EXIT_UNFINISHED
from processor.journal.base import Journal, RequestRecord, State
from processor.ops.commands import actor, existing_journal, journal_errors

__all__ = ["configure_parser", "run", "held_of", "mark_held", "Marked"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", help="the adapter's name under adapters")
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("CANCEL_PROCESSOR_CONFIG"),
        help="YAML configuration file (env CANCEL_PROCESSOR_CONFIG)",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--release-held",
        dest="held",
        action="store_const",
        const="release",
        help="tell Connect the held refusals and 'already gone' answers (they were right)",
    )
    choice.add_argument(
        "--retry-held",
        dest="held",
        action="store_const",
        const="retry",
        help="call the vendor again for every held answer (the call did not act)",
    )


def held_of(journal: Journal, adapter: str) -> list[tuple[RequestRecord, Held]]:
    """The rows of ``adapter`` whose answer is held now, with that answer."""
    return [
        (record, held)
        for record in journal.records(states=[State.HELD])
        if (held := RowData.of(record).held) is not None and held.adapter == adapter
    ]


@dataclass
class Marked:
    """What :func:`mark_held` did: rows marked, by held kind."""

    kinds: Counter[str] = field(default_factory=Counter)


def mark_held(journal: Journal, adapter: str, choice: str, *, actor: str) -> Marked:
    """Mark every held row of ``adapter`` with ``choice`` by the operator's hand
    (:meth:`Journal.force`: the fence moves on, so a worker holding one now writes nothing
    more, and the row is due at once: the timer loop takes it up)."""
    marked = Marked()
    for record, held in held_of(journal, adapter):
        data = RowData.of(record).with_held_choice(choice).json()
        detail = f"resume --{choice}-held by {actor} (held: {held.kind})"
        try:
            after = journal.force(
                record.request_id,
                State.HELD,
                detail=detail,
                actor=actor,
                data=data,
                expect=State.HELD,
                due=datetime.now(UTC),
            )
        except KeyError:  # no store deletes rows; kept for the protocol's sake
            continue
        mark = RowData.of(after).held
        if after.state is State.HELD and mark is not None and mark.choice == choice:
            marked.kinds[held.kind] += 1  # else released meanwhile (the hold ended): as it is
    return marked


def _held_text(kinds: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"


@journal_errors
def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.adapter not in config.adapters:
        known = ", ".join(sorted(config.adapters)) or "none defined"
        print(
            f"cancel-processor: resume: no adapter {args.adapter!r} under adapters ({known})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    choice: str | None = getattr(args, "held", None)
    marked = Marked()
    with existing_journal(config) as journal:
        if choice is None:
            held = Counter(answer.kind for _, answer in held_of(journal, args.adapter))
            if held:
                print(
                    f"cancel-processor: resume: adapter {args.adapter} has {sum(held.values())} "
                    f"answer(s) held back from Connect ({_held_text(held)}); choose "
                    f"--release-held (tell Connect) or --retry-held (call the vendor again); "
                    f"nothing changed",
                    file=sys.stderr,
                )
                return EXIT_CONFIG
        else:
            marked = mark_held(journal, args.adapter, choice, actor=actor())
    latches = LatchFile(latch_path(config))
    try:
        lifted = latches.clear(args.adapter)
    except OSError as exc:
        print(f"cancel-processor: resume: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if lifted is None:
        print(f"adapter {args.adapter}: not latched ({latches.path})")
    else:
        print(
            f"adapter {args.adapter}: resumed; it was latched since {lifted.get('since')}: "
            f"{lifted.get('reason')}"
        )
    if choice is not None:
        what = "Connect is told" if choice == "release" else "the vendor is called again"
        print(
            f"held answers of {args.adapter}: {_held_text(marked.kinds)} marked {choice}: {what} "
            f"at the daemon's next pass"
        )
    if lifted is None and not sum(marked.kinds.values()):
        return EXIT_UNFINISHED
    return EXIT_OK
